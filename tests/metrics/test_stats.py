"""collapse_monitor.metrics.stats against scipy (and exact rational arithmetic)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from collapse_monitor.errors import InputError
from collapse_monitor.metrics.stats import (
    MKResult,
    benjamini_hochberg,
    binom_cdf,
    binom_sf_half,
    clopper_pearson,
    cusum_decline,
    mann_kendall,
    mcnemar_exact,
    mcnemar_mid_p,
    normal_decline_p,
    normal_quantile,
    percentile_interval,
    se_from_interval,
    theil_sen,
    wilson_interval,
)


def _cases(rng: np.random.Generator, sizes=(1, 2, 5, 17, 100, 1000, 12_345)):
    for n in sizes:
        ks = {0, n, n // 2, *rng.integers(0, n + 1, size=4).tolist()}
        for k in sorted(ks):
            yield int(k), int(n)


# --------------------------------------------------------------------------- binomial intervals


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy(confidence: float) -> None:
    rng = np.random.default_rng(1)
    for k, n in _cases(rng):
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        lo, hi = wilson_interval(k, n, confidence)
        assert lo == pytest.approx(ref.low, rel=1e-12, abs=1e-15), (k, n)
        assert hi == pytest.approx(ref.high, rel=1e-12, abs=1e-15), (k, n)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_clopper_pearson_matches_scipy(confidence: float) -> None:
    rng = np.random.default_rng(2)
    for k, n in _cases(rng):
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
        lo, hi = clopper_pearson(k, n, confidence)
        # scipy root-finds with brentq (xtol 2e-12); ours inverts the beta function directly
        assert lo == pytest.approx(ref.low, rel=1e-9, abs=1e-11), (k, n)
        assert hi == pytest.approx(ref.high, rel=1e-9, abs=1e-11), (k, n)


def test_clopper_pearson_closed_form_at_zero_and_n() -> None:
    # k = 0: upper bound solves (1-p)^n = alpha/2; k = n: lower bound solves p^n = alpha/2
    n = 100_000
    assert clopper_pearson(0, n)[1] == pytest.approx(-math.expm1(math.log(0.025) / n), rel=1e-12)
    assert clopper_pearson(n, n)[0] == pytest.approx(math.exp(math.log(0.025) / n), rel=1e-12)
    assert clopper_pearson(1, n)[0] == pytest.approx(-math.expm1(math.log(0.975) / n), rel=1e-10)


def test_binomial_intervals_empty_and_bad_input() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(InputError) as ei:
        wilson_interval(5, 4)
    assert ei.value.field == "successes"
    with pytest.raises(InputError) as ei:
        clopper_pearson(-1, 4)
    assert ei.value.field == "successes"
    with pytest.raises(InputError) as ei:
        wilson_interval(1, 4, confidence=1.0)
    assert ei.value.field == "confidence"
    with pytest.raises(InputError):
        wilson_interval(1.5, 4)  # type: ignore[arg-type]
    assert wilson_interval(np.int64(3), np.int64(10)) == wilson_interval(3, 10)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), st.floats(0.5, 0.999))
def test_binomial_intervals_contain_estimate(kn: tuple[int, int], confidence: float) -> None:
    k, n = kn
    for lo, hi in (wilson_interval(k, n, confidence), clopper_pearson(k, n, confidence)):
        assert 0.0 <= lo <= hi <= 1.0
        if n:
            assert lo <= k / n + 1e-12 and k / n - 1e-12 <= hi
    # Clopper-Pearson is conservative: it contains the Wilson interval's exact ends at 0 / n
    if n and k == 0:
        assert wilson_interval(k, n, confidence)[0] == clopper_pearson(k, n, confidence)[0] == 0.0


# --------------------------------------------------------------------------- binomial tail / McNemar


def test_binom_sf_half_is_exact_for_small_n() -> None:
    for n in (1, 2, 3, 7, 10, 31, 64, 200):
        for b in range(-1, n + 2):
            exact = Fraction(sum(math.comb(n, j) for j in range(max(b, 0), n + 1)), 2**n)
            assert binom_sf_half(b, n) == pytest.approx(float(exact), rel=1e-15, abs=0.0), (b, n)


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000])
def test_binom_sf_half_matches_scipy_for_large_n(n: int) -> None:
    sd = math.sqrt(n) / 2
    for b in (0, 1, n // 2 - int(3 * sd), n // 2, n // 2 + 1, n // 2 + int(5 * sd), n - 1, n):
        ref = stats.binom.sf(b - 1, n, 0.5)
        got = binom_sf_half(b, n)
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-300), (b, n)
    assert binom_sf_half(n + 1, n) == 0.0


def test_binom_sf_half_beyond_the_exact_sums_agrees_with_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above EXACT_BINOM_MAX_N trials the incomplete beta takes over (the exact sums cost n^1.5
    time); it agrees with the exact sums to 1e-12 relative, deep into the tail."""
    import collapse_monitor.metrics.stats as st

    n = st.EXACT_BINOM_MAX_N + 1
    sd = math.sqrt(n) / 2
    points = [0, n // 2 - int(3 * sd), n // 2, n // 2 + 1, n // 2 + int(5 * sd), n // 2 + int(30 * sd), n]
    fast = [binom_sf_half(b, n) for b in points]
    fast_mid = mcnemar_mid_p(points[4], n - points[4])
    monkeypatch.setattr(st, "EXACT_BINOM_MAX_N", 10 * n)
    exact = [binom_sf_half(b, n) for b in points]
    assert fast == pytest.approx(exact, rel=1e-12, abs=1e-300)
    assert fast[-2] > 0 and fast[-2] < 1e-150  # still resolved, not flushed to 0
    assert fast_mid == pytest.approx(mcnemar_mid_p(points[4], n - points[4]), rel=1e-12)


def test_binom_cdf_matches_scipy() -> None:
    rng = np.random.default_rng(11)
    cases = [(0, 0, 0.5), (0, 5, 0.3), (5, 5, 0.3), (3, 10, 0.0), (3, 10, 1.0), (1, 7, 0.5)]
    cases += [(int(rng.integers(0, n + 1)), n, float(rng.random())) for n in rng.integers(1, 5000, size=40)]
    for x, n, p in cases:
        assert binom_cdf(x, n, p) == pytest.approx(stats.binom.cdf(x, n, p), rel=1e-10, abs=1e-300), (x, n, p)
    assert binom_cdf(-1, 5, 0.5) == 0.0
    with pytest.raises(InputError):
        binom_cdf(1, 5, 1.5)
    with pytest.raises(InputError):
        binom_cdf(1, -5, 0.5)


def test_mcnemar_matches_scipy_binomtest() -> None:
    rng = np.random.default_rng(3)
    pairs = [(0, 0), (1, 0), (0, 1), (5, 5), (8, 2), (2, 8), (30, 12), (0, 25)]
    pairs += [tuple(map(int, rng.integers(0, 200, size=2))) for _ in range(25)]
    pairs += [(5200, 4800), (4800, 5200)]
    for b, c in pairs:
        n = b + c
        if n == 0:
            for alt in ("greater", "less", "two-sided"):
                assert mcnemar_exact(b, c, alt) == 1.0
            continue
        for alt, scipy_alt in (("greater", "greater"), ("less", "less"), ("two-sided", "two-sided")):
            ref = stats.binomtest(b, n, 0.5, alternative=scipy_alt).pvalue
            assert mcnemar_exact(b, c, alt) == pytest.approx(ref, rel=1e-9, abs=1e-300), (b, c, alt)


def test_mcnemar_mid_p_matches_scipy() -> None:
    """mid-p = P(X > b) + P(X = b) / 2 (Lancaster 1961), computed here from scipy's binomial."""
    rng = np.random.default_rng(5)
    pairs = [(7, 0), (8, 2), (2, 8), (1, 0), (0, 1), (30, 12)]
    pairs += [tuple(map(int, rng.integers(0, 300, size=2))) for _ in range(25)] + [(5200, 4800)]
    for b, c in pairs:
        n = b + c
        up_b = stats.binom.sf(b, n, 0.5) + stats.binom.pmf(b, n, 0.5) / 2
        up_c = stats.binom.sf(c, n, 0.5) + stats.binom.pmf(c, n, 0.5) / 2
        assert mcnemar_mid_p(b, c) == pytest.approx(up_b, rel=1e-9, abs=1e-300), (b, c)
        assert mcnemar_mid_p(b, c, "less") == pytest.approx(up_c, rel=1e-9, abs=1e-300), (b, c)
        assert mcnemar_mid_p(b, c, "two-sided") == pytest.approx(min(1.0, 2 * min(up_b, up_c)), rel=1e-9, abs=1e-300)
        # never above the exact p; below it by exactly half the point probability
        assert mcnemar_mid_p(b, c) <= mcnemar_exact(b, c)
    assert mcnemar_mid_p(0, 0) == 1.0
    # the case it exists for: 7 of 7 discordant items lost cannot reach 0.005 exactly, can with mid-p
    assert mcnemar_exact(7, 0) == 2**-7 > 0.005 > mcnemar_mid_p(7, 0) == 2**-8
    with pytest.raises(InputError) as ei:
        mcnemar_mid_p(1, 2, "bigger")
    assert ei.value.field == "alternative"


def test_mcnemar_default_is_one_sided_greater_and_validates() -> None:
    assert mcnemar_exact(8, 2) == mcnemar_exact(8, 2, "greater")
    assert mcnemar_exact(8, 2) < 0.06 < mcnemar_exact(2, 8)
    with pytest.raises(InputError) as ei:
        mcnemar_exact(1, 2, "bigger")
    assert ei.value.field == "alternative"
    with pytest.raises(InputError) as ei:
        mcnemar_exact(-1, 2)
    assert ei.value.field == "b"


def test_tiny_p_values_stay_positive_down_to_the_smallest_double() -> None:
    """No premature underflow: a p-value is 0.0 only where the exact value is below the
    smallest subnormal double (2**-1074), so Benjamini-Hochberg still orders very strong
    findings. References: exact rational arithmetic, and scipy's log-space binomial."""
    for n in (900, 1000, 1073, 1074):
        assert mcnemar_exact(n, 0) == 2.0**-n > 0.0
    assert mcnemar_mid_p(1000, 0) == 2.0**-1001
    assert mcnemar_exact(1075, 0) == 0.0  # 2**-1075: not representable
    for b, c in ((1040, 3), (3, 1040)):
        n = b + c
        for alt, k in (("greater", b), ("less", c)):
            exact = Fraction(sum(math.comb(n, j) for j in range(k, n + 1)), 2**n)
            assert mcnemar_exact(b, c, alt) == float(exact)
            mid = exact - Fraction(math.comb(n, k), 2**n) / 2
            assert mcnemar_mid_p(b, c, alt) == pytest.approx(float(mid), rel=1e-15)
    # rate test's P(X <= 0) = 0.5**1000 for X ~ Binomial(1000, 1/2): 9.3e-302
    p = binom_cdf(0, 1000, 0.5)
    assert p == pytest.approx(math.exp(stats.binom.logcdf(0, 1000, 0.5)), rel=1e-12) and p > 0.0
    # the z-test down to Phi(-37.5) ~ 4.6e-308
    assert normal_decline_p(-37.5, 1.0, 0.0, 0.0) == pytest.approx(math.exp(stats.norm.logcdf(-37.5)), rel=1e-10)


# --------------------------------------------------------------------------- Benjamini-Hochberg


@pytest.mark.parametrize("m", [1, 2, 5, 40, 1000])
def test_bh_matches_scipy(m: int) -> None:
    rng = np.random.default_rng(m)
    p = np.concatenate([rng.uniform(size=m - m // 4), rng.uniform(0, 1e-3, size=m // 4)])
    p[: m // 10] = p[0]  # ties
    rng.shuffle(p)
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"), rtol=1e-13)


def test_bh_keeps_shape_and_handles_empty() -> None:
    p = np.array([[0.01, 0.2], [0.03, 0.04]])
    q = benjamini_hochberg(p)
    assert q.shape == (2, 2)
    np.testing.assert_allclose(q.ravel(), stats.false_discovery_control(p.ravel()))
    assert benjamini_hochberg([]).size == 0
    with pytest.raises(InputError) as ei:
        benjamini_hochberg([0.1, float("nan")])
    assert ei.value.field == "pvalues"
    with pytest.raises(InputError):
        benjamini_hochberg([0.1, 1.2])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60))
def test_bh_properties(pvals: list[float]) -> None:
    p = np.array(pvals)
    q = benjamini_hochberg(p)
    assert (q >= p - 1e-15).all()
    assert (q <= 1.0).all()
    order = np.argsort(p, kind="mergesort")
    assert (np.diff(q[order]) >= -1e-15).all()  # monotone in p
    m = len(p)
    assert q.min() == pytest.approx(min(1.0, float((np.sort(p) * m / np.arange(1, m + 1)).min())))


# --------------------------------------------------------------------------- Mann-Kendall


_MK_ALT = {"decreasing": "less", "increasing": "greater", "two-sided": "two-sided"}


@pytest.mark.parametrize("n", [2, 3, 4, 6, 8, 10])
def test_mann_kendall_exact_matches_kendalltau(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    series = [rng.permutation(n).astype(float) for _ in range(15)]
    series += [np.arange(n, dtype=float), np.arange(n, 0, -1, dtype=float)]
    for y in series:
        for alt, scipy_alt in _MK_ALT.items():
            res = mann_kendall(y, alt)
            ref = stats.kendalltau(np.arange(n), y, method="exact", alternative=scipy_alt)
            assert isinstance(res, MKResult)
            assert res.n == n
            assert res.tau == pytest.approx(ref.statistic, abs=1e-12)
            assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15), (y, alt)
            assert res.s == round(ref.statistic * n * (n - 1) / 2)


@pytest.mark.parametrize("n", [11, 25, 50])
def test_mann_kendall_exact_up_to_fifty_points(n: int) -> None:
    rng = np.random.default_rng(7 + n)
    for y in (np.cumsum(rng.normal(size=n)), np.arange(n, 0, -1, dtype=float)):
        for alt, scipy_alt in _MK_ALT.items():
            ref = stats.kendalltau(np.arange(n), y, method="exact", alternative=scipy_alt)
            assert mann_kendall(y, alt).p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    # 11 strictly falling points: exactly 1 / 11! (the normal approximation said 1.3e-5)
    if n == 11:
        assert mann_kendall(np.arange(11, 0, -1.0)).p_value == pytest.approx(1 / math.factorial(11), rel=1e-12)
    # beyond exact_max_n: the normal approximation, as scipy's asymptotic method
    y = np.cumsum(rng.normal(size=n))
    ref = stats.kendalltau(np.arange(n), y, method="asymptotic", alternative="less").pvalue
    assert mann_kendall(y, exact_max_n=n - 1, continuity=False).p_value == pytest.approx(ref, rel=1e-9)


def _brute_force_mk(y: np.ndarray) -> dict[str, float]:
    """P(S <= s), P(S >= s) over every distinct arrangement of the values (the exact
    permutation null given the ties), by enumeration."""

    def s_of(v: tuple[float, ...]) -> int:
        return sum(int(np.sign(v[j] - v[i])) for i in range(len(v)) for j in range(i + 1, len(v)))

    s0 = s_of(tuple(y.tolist()))
    perms = [s_of(p) for p in set(itertools.permutations(y.tolist()))]
    le = sum(x <= s0 for x in perms) / len(perms)
    ge = sum(x >= s0 for x in perms) / len(perms)
    return {"decreasing": le, "increasing": ge, "two-sided": min(1.0, 2 * min(le, ge))}


def test_mann_kendall_exact_with_ties_matches_enumeration() -> None:
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(60):
        n = int(rng.integers(3, 9))
        y = rng.integers(0, int(rng.integers(2, 5)), size=n).astype(float)
        ref = _brute_force_mk(y)
        for alt, p in ref.items():
            assert mann_kendall(y, alt).p_value == pytest.approx(p, rel=1e-12, abs=1e-15), (y, alt)
        checked += len(np.unique(y)) < n
    assert checked > 40  # most series had ties
    # with ties at n = 6 the normal approximation is 1.7 times the exact p (1/180)
    y = np.array([3.0, 3.0, 2.0, 1.0, 1.0, 0.0])
    exact, approx = mann_kendall(y).p_value, mann_kendall(y, exact_max_n=0).p_value
    assert exact == pytest.approx(_brute_force_mk(y)["decreasing"], rel=1e-12)
    assert exact == pytest.approx(1 / 180, rel=1e-12)
    assert approx > 1.7 * exact


@pytest.mark.parametrize("n", [5, 11, 20, 60])
def test_mann_kendall_normal_approximation_matches_kendalltau(n: int) -> None:
    rng = np.random.default_rng(200 + n)
    for trial in range(10):
        y = np.round(rng.normal(size=n) - 0.05 * trial * np.arange(n), 1)  # rounding makes ties
        for alt, scipy_alt in _MK_ALT.items():
            ref = stats.kendalltau(np.arange(n), y, method="asymptotic", alternative=scipy_alt)
            res = mann_kendall(y, alt, continuity=False, exact_max_n=0)
            assert res.tau == pytest.approx(ref.statistic, abs=1e-12)
            assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15), (trial, alt)


def test_mann_kendall_continuity_correction() -> None:
    rng = np.random.default_rng(5)
    y = np.round(np.cumsum(rng.normal(size=30)) - 0.2 * np.arange(30), 0)
    two = stats.kendalltau(np.arange(30), y, method="asymptotic").pvalue
    res = mann_kendall(y, "decreasing", exact_max_n=0)
    assert res.s != 0
    sd = abs(res.s) / stats.norm.isf(two / 2)  # the tie-corrected sd scipy used
    assert res.p_value == pytest.approx(stats.norm.cdf((res.s + 1) / sd), rel=1e-9)
    up = mann_kendall(y, "increasing", exact_max_n=0).p_value
    assert up == pytest.approx(stats.norm.sf((res.s - 1) / sd), rel=1e-9)
    two_sided = mann_kendall(y, "two-sided", exact_max_n=0).p_value
    assert two_sided == pytest.approx(2 * stats.norm.sf((abs(res.s) - 1) / sd), rel=1e-9)


def test_mann_kendall_edge_cases() -> None:
    flat = mann_kendall([0.5] * 12)
    assert (flat.s, flat.tau, flat.p_value) == (0, 0.0, 1.0)
    assert mann_kendall([1.0, 0.5], "decreasing").p_value == 0.5
    with pytest.raises(InputError) as ei:
        mann_kendall([1.0])
    assert ei.value.field == "y"
    with pytest.raises(InputError):
        mann_kendall([1.0, float("nan"), 2.0])
    with pytest.raises(InputError) as ei:
        mann_kendall([1.0, 2.0], "down")
    assert ei.value.field == "alternative"


def test_mann_kendall_detects_slow_decline() -> None:
    rng = np.random.default_rng(0)
    y = 1.0 - 0.02 * np.arange(15) + rng.normal(scale=0.02, size=15)
    assert mann_kendall(y).p_value < 0.01
    assert mann_kendall(y, "increasing").p_value > 0.99


# --------------------------------------------------------------------------- Theil-Sen


@pytest.mark.parametrize("n", [2, 3, 9, 40])
def test_theil_sen_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(300 + n)
    for _ in range(5):
        y = rng.normal(size=n) - 0.3 * np.arange(n)
        res = stats.theilslopes(y)
        assert theil_sen(y) == pytest.approx((res.slope, res.intercept), rel=1e-12, abs=1e-12)
        x = rng.integers(0, max(2, n // 2), size=n).astype(float)  # with ties in x
        if np.ptp(x) == 0:
            x[0] += 1
        res = stats.theilslopes(y, x)
        assert theil_sen(y, x) == pytest.approx((res.slope, res.intercept), rel=1e-12, abs=1e-12)


def test_theil_sen_bad_input() -> None:
    with pytest.raises(InputError) as ei:
        theil_sen([1.0, 2.0], [3.0, 3.0])
    assert ei.value.field == "x"
    with pytest.raises(InputError) as ei:
        theil_sen([1.0, 2.0, 3.0], [1.0, 2.0])
    assert ei.value.field == "x"


# --------------------------------------------------------------------------- intervals / z tests


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95])
def test_percentile_interval_matches_numpy(confidence: float) -> None:
    rng = np.random.default_rng(9)
    r = rng.gamma(2.0, size=999)
    a = (1 - confidence) / 2 * 100
    assert percentile_interval(r, confidence) == pytest.approx(tuple(np.percentile(r, [a, 100 - a])), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0.01, 0.99))
def test_percentile_interval_properties(reps: list[float], confidence: float) -> None:
    lo, hi = percentile_interval(reps, confidence)
    assert min(reps) <= lo <= hi <= max(reps)


def test_normal_decline_p_matches_scipy() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        v, b = rng.uniform(0, 1, size=2)
        s1, s0 = rng.uniform(0, 0.1, size=2)
        ref = stats.norm.cdf(v - b, scale=math.hypot(s1, s0))
        assert normal_decline_p(v, s1, b, s0) == pytest.approx(ref, rel=1e-10, abs=1e-300)
    assert normal_decline_p(0.5, 0.0, 0.5, 0.0) == 1.0
    assert normal_decline_p(0.6, 0.0, 0.5, 0.0) == 1.0
    assert normal_decline_p(0.4, 0.0, 0.5, 0.0) == 0.0
    assert normal_decline_p(0.5, 0.1, 0.5, 0.0) == 0.5
    with pytest.raises(InputError) as ei:
        normal_decline_p(0.5, -0.1, 0.5, 0.0)
    assert ei.value.field == "se"
    with pytest.raises(InputError) as ei:
        normal_decline_p(float("inf"), 0.1, 0.5, 0.0)
    assert ei.value.field == "value"


def test_se_from_interval_and_quantile() -> None:
    for c in (0.5, 0.9, 0.95, 0.99):
        assert normal_quantile(0.5 + c / 2) == pytest.approx(stats.norm.ppf(0.5 + c / 2), rel=1e-14)
        lo, hi = stats.norm.interval(c, loc=3.0, scale=0.25)
        assert se_from_interval(lo, hi, c) == pytest.approx(0.25, rel=1e-12)
    assert se_from_interval(1.0, 1.0) == 0.0
    with pytest.raises(InputError) as ei:
        se_from_interval(2.0, 1.0)
    assert ei.value.field == "hi"


# --------------------------------------------------------------------------- CUSUM

# Montgomery, Introduction to Statistical Quality Control (6th ed.), Example 9.1 / Table 9.1:
# 30 observations, target mu0 = 10, sigma = 1, k = 0.5, H = 5. Table 9.2 lists the tabular
# CUSUM; the upper CUSUM signals at period 29 with C+ = 5.28.
_MONTGOMERY = [
    9.45,
    7.99,
    9.29,
    11.66,
    12.16,
    10.18,
    8.04,
    11.46,
    9.20,
    10.34,
    9.03,
    11.47,
    10.51,
    9.40,
    10.08,
    9.37,
    10.62,
    10.31,
    8.52,
    10.84,
    10.90,
    9.33,
    12.29,
    11.50,
    10.60,
    11.08,
    10.38,
    11.62,
    11.31,
    10.52,
]


def test_cusum_reproduces_montgomery_example() -> None:
    x = np.array(_MONTGOMERY)
    # lower CUSUM of the data itself (Table 9.2, C- column): never signals
    alarm, idx, c_minus = cusum_decline(x, 10.0, 1.0, k=0.5, h=5.0)
    assert (alarm, idx) == (False, None)
    np.testing.assert_allclose(c_minus[:4], [0.05, 1.56, 1.77, 0.0], atol=1e-9)
    np.testing.assert_allclose(c_minus[6], 1.46, atol=1e-9)
    # mirrored data: its lower CUSUM is the upper CUSUM of the original (C+ column)
    alarm, idx, c_plus = cusum_decline(20.0 - x, 10.0, 1.0, k=0.5, h=5.0)
    assert (alarm, idx) == (True, 28)  # period 29
    np.testing.assert_allclose(c_plus[[3, 4, 28]], [1.16, 2.82, 5.28], atol=1e-9)


def test_cusum_scaling_and_inputs() -> None:
    # a 2-sd drop accumulates 1.5 per step: 1.5, 3.0, 4.5 > 4 -> alarm at index 2
    alarm, idx, c = cusum_decline([8.0] * 6, 10.0, 1.0)
    assert (alarm, idx) == (True, 2)
    np.testing.assert_allclose(c, 1.5 * np.arange(1, 7))
    # sd scaling: same series in other units gives the same statistic
    np.testing.assert_allclose(cusum_decline(np.array([8.0] * 6) * 10, 100.0, 10.0)[2], c)
    # no shift, no alarm; an upward shift never accumulates
    assert cusum_decline([10.0] * 50, 10.0, 1.0)[:2] == (False, None)
    assert not cusum_decline([15.0] * 50, 10.0, 1.0)[2].any()
    empty = cusum_decline([], 0.0, 1.0)
    assert empty[0] is False and empty[2].size == 0
    with pytest.raises(InputError) as ei:
        cusum_decline([1.0], 0.0, 0.0)
    assert ei.value.field == "baseline_sd"
    with pytest.raises(InputError) as ei:
        cusum_decline([1.0, float("nan")], 0.0, 1.0)
    assert ei.value.field == "series"


def test_module_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import collapse_monitor.metrics.stats as s; "
        "assert 'scipy' not in sys.modules, 'scipy imported at module level'; "
        "s.wilson_interval(1, 2); s.mann_kendall([3.0, 2.0, 1.0]); s.binom_sf_half(3, 10); "
        "assert 'scipy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
