"""Small, exact statistics used by the metrics and by detection.

Pure ``math`` / ``numpy`` at import time; only :func:`clopper_pearson` loads
``scipy.special`` (lazily, for the inverse regularised incomplete beta function).

* binomial intervals: Wilson (1927) score interval, Clopper & Pearson (1934) exact interval;
* paired proportions: exact McNemar (1947) test, i.e. a sign test on the discordant pairs;
* multiplicity: Benjamini & Hochberg (1995) step-up q-values;
* trends: Mann (1945) / Kendall (1975) trend test and the Theil (1950) / Sen (1968) slope;
* change detection: Page's (1954) one-sided CUSUM;
* bootstrap helpers: percentile interval (Efron & Tibshirani 1993), normal-approximation
  decline test.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError

__all__ = [
    "MKResult",
    "benjamini_hochberg",
    "binom_cdf",
    "binom_sf_half",
    "clopper_pearson",
    "cusum_decline",
    "design_effect",
    "grouped_design_effect",
    "grouped_jackknife_variance",
    "mann_kendall",
    "mcnemar_exact",
    "mcnemar_mid_p",
    "mcnemar_scaled",
    "normal_decline_p",
    "normal_quantile",
    "percentile_interval",
    "se_from_interval",
    "theil_sen",
    "wilson_interval",
    "wilson_interval_real",
]

_STD_NORMAL = NormalDist()
_SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------- validation


def _count(x: Any, field: str) -> int:
    """A non-negative integer (bool, float and other non-integral types are rejected)."""
    if isinstance(x, (bool, np.bool_)):
        raise InputError(field, f"expected a non-negative integer, got {x!r}")
    if isinstance(x, (float, np.floating)) and float(x).is_integer():
        x = int(x)
    try:
        v = int(x) if isinstance(x, (int, np.integer)) else None
    except (TypeError, ValueError):
        v = None
    if v is None:
        raise InputError(field, f"expected a non-negative integer, got {type(x).__name__}")
    if v < 0:
        raise InputError(field, f"expected a non-negative integer, got {v}")
    return v


def _confidence(confidence: Any) -> float:
    try:
        c = float(confidence)
    except (TypeError, ValueError):
        raise InputError("confidence", f"expected a number in (0, 1), got {type(confidence).__name__}") from None
    if not 0.0 < c < 1.0:
        raise InputError("confidence", f"expected a number in (0, 1), got {confidence!r}")
    return c


def _finite(x: Any, field: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InputError(field, f"expected a finite number, got {type(x).__name__}") from None
    if not math.isfinite(v):
        raise InputError(field, f"expected a finite number, got {v!r}")
    return v


def _series(y: Any, field: str, *, min_len: int = 1) -> np.ndarray:
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(field, "expected a 1-D sequence of numbers") from None
    if arr.ndim != 1:
        raise InputError(field, f"expected a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size < min_len:
        raise InputError(field, f"expected at least {min_len} value(s), got {arr.size}")
    if not np.isfinite(arr).all():
        raise InputError(field, "contains NaN or infinite values")
    return arr


def normal_quantile(q: float) -> float:
    """Standard normal quantile ``Phi^{-1}(q)`` (Wichura 1988, AS 241, via ``statistics``).

    >>> round(normal_quantile(0.975), 6)
    1.959964
    """
    if not 0.0 < q < 1.0:
        raise InputError("q", f"expected a probability strictly between 0 and 1, got {q!r}")
    return _STD_NORMAL.inv_cdf(q)


def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / _SQRT2)


# --------------------------------------------------------------------------- binomial


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson (1927) score interval for a binomial proportion, no continuity
    correction; the same numbers as ``scipy.stats.binomtest(k, n).proportion_ci(
    confidence_level, method="wilson")`` (Newcombe 1998, method 3), including its convention
    that the bound at 0 (k = 0) or 1 (k = n) is exact. ``n == 0`` gives ``(0.0, 1.0)``.

    >>> lo, hi = wilson_interval(7, 50)
    >>> round(lo, 4), round(hi, 4)
    (0.0695, 0.2619)
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    k = _count(successes, "successes")
    n = _count(n, "n")
    c = _confidence(confidence)
    if k > n:
        raise InputError("successes", f"must be <= n={n}, got {k}")
    if n == 0:
        return 0.0, 1.0
    return _wilson(k / n, float(n), c, k == 0, k == n)


def wilson_interval_real(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """:func:`wilson_interval` on an effective sample size: ``successes`` and ``n`` may be
    fractional, as ``k / deff`` and ``n / deff`` are for correlated items with design effect
    ``deff`` (Kish 1965; the Wilson form of Korn & Graubard 1998, "Confidence intervals for
    proportions with small expected number of positive counts estimated from survey data").
    Equal to :func:`wilson_interval` on integers.

    >>> wilson_interval_real(7.0, 50.0) == wilson_interval(7, 50)
    True
    >>> lo, hi = wilson_interval_real(3.5, 25.0)  # deff 2: wider than (7, 50)
    >>> round(lo, 4), round(hi, 4)
    (0.0525, 0.3234)
    """
    k, n = float(successes), float(n)
    if not (math.isfinite(k) and math.isfinite(n)) or n < 0 or not 0 <= k <= n:
        raise InputError("successes", f"expected 0 <= successes <= n, got {successes!r} of {n!r}")
    c = _confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    return _wilson(k / n, n, c, k == 0, k == n)


def _wilson(p: float, n: float, confidence: float, at_zero: bool, at_one: bool) -> tuple[float, float]:
    z = normal_quantile(0.5 + 0.5 * confidence)
    denom = 2.0 * (n + z * z)
    center = (2.0 * n * p + z * z) / denom
    delta = z / denom * math.sqrt(4.0 * n * p * (1.0 - p) + z * z)
    lo = 0.0 if at_zero else max(0.0, center - delta)
    hi = 1.0 if at_one else min(1.0, center + delta)
    return lo, hi


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper & Pearson (1934) exact two-sided interval for a binomial proportion, from beta
    quantiles: ``[B(a/2; k, n-k+1), B(1-a/2; k+1, n-k)]``; the same numbers as
    ``scipy.stats.binomtest(k, n).proportion_ci(confidence_level, method="exact")``.
    ``n == 0`` gives ``(0.0, 1.0)``.

    >>> lo, hi = clopper_pearson(7, 50)
    >>> round(lo, 4), round(hi, 4)
    (0.0582, 0.2674)
    """
    k = _count(successes, "successes")
    n = _count(n, "n")
    c = _confidence(confidence)
    if k > n:
        raise InputError("successes", f"must be <= n={n}, got {k}")
    if n == 0:
        return 0.0, 1.0
    from scipy.special import betaincinv  # lazy: keeps the module light

    alpha = (1.0 - c) / 2.0
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1.0 - alpha))
    return lo, hi


def _tail_sum(n: int, k: int, step: int) -> int:
    """Sum of C(n, j) for j = k, k+step, ... while the terms decrease, in exact integers.

    The terms are monotone decreasing along ``step``, so once ``term * remaining`` is below
    ``total * 2**-64`` the rest cannot change a double; it is dropped (this keeps n = 10**5
    cheap: only ~10 standard deviations of terms are summed).
    """
    term = math.comb(n, k)
    total = term
    j = k
    while True:
        if step > 0:
            if j >= n:
                break
            term = term * (n - j) // (j + 1)
            j += 1
            remaining = n - j + 1
        else:
            if j <= 0:
                break
            term = term * j // (n - j + 1)
            j -= 1
            remaining = j + 1
        total += term
        if (term * remaining) << 64 < total:
            break
    return total


#: above this many trials :func:`binom_sf_half` uses the incomplete beta function instead of
#: exact integer sums, whose cost grows as n^1.5 (16 s at n = 10**6 on the 2-core machine)
EXACT_BINOM_MAX_N = 20_000


def binom_sf_half(b: int, n: int) -> float:
    """``P(X >= b)`` for ``X ~ Binomial(n, 1/2)``. Up to ``EXACT_BINOM_MAX_N`` trials, from
    exact integer sums of binomial coefficients (correct to double precision); beyond it,
    from the regularised incomplete beta function ``I_{1/2}(b, n - b + 1)`` (Abramowitz &
    Stegun 26.5.24; relative error below 1e-12 against the exact sums at n = 10**6, in
    milliseconds rather than seconds).

    >>> binom_sf_half(8, 10)  # (45 + 10 + 1) / 1024
    0.0546875
    >>> binom_sf_half(0, 5), binom_sf_half(6, 5)
    (1.0, 0.0)
    """
    n = _count(n, "n")
    if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)):
        b = _count(b, "b")
    b = int(b)
    if b <= 0:
        return 1.0
    if b > n:
        return 0.0
    if n > EXACT_BINOM_MAX_N:
        from scipy.special import betainc

        return float(betainc(b, n - b + 1, 0.5))
    full = 1 << n
    if 2 * b > n:  # upper tail: terms C(n, j) decrease for j >= b > n/2
        return _tail_sum(n, b, +1) / full
    # lower tail j = b-1, b-2, ..., 0: terms decrease going down (b-1 < n/2)
    return (full - _tail_sum(n, b - 1, -1)) / full


def binom_cdf(x: int, n: int, p: float) -> float:
    """``P(X <= x)`` for ``X ~ Binomial(n, p)``: the regularised incomplete beta function
    ``I_{1-p}(n - x, x + 1)`` (Abramowitz & Stegun 26.5.24), equal to
    ``scipy.stats.binom.cdf``.

    >>> round(binom_cdf(1, 7, 0.5), 6)  # (1 + 7) / 128
    0.0625
    >>> binom_cdf(3, 3, 0.2), binom_cdf(0, 0, 0.5)
    (1.0, 1.0)
    """
    n = _count(n, "n")
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        x = _count(x, "x")
    pf = _finite(p, "p")
    if not 0.0 <= pf <= 1.0:
        raise InputError("p", f"must be in [0, 1], got {pf}")
    x = int(x)
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    from scipy.special import betainc

    return float(betainc(n - x, x + 1, 1.0 - pf))


def mcnemar_exact(b: int, c: int, alternative: str = "greater") -> float:
    """Exact McNemar (1947) test for paired binary outcomes: conditional on the ``b + c``
    discordant pairs, ``b ~ Binomial(b + c, 1/2)`` under the null of no change.

    ``b`` counts pairs in the direction of interest (e.g. probe items right at baseline and
    wrong now), ``c`` the reverse. ``"greater"``: ``P(X >= b)``; ``"less"``: ``P(X <= b)``;
    ``"two-sided"``: ``min(1, 2 * smaller tail)``, equal to statsmodels'
    ``mcnemar(..., exact=True)`` and ``scipy.stats.binomtest(b, b + c).pvalue``.
    ``b + c == 0`` gives 1.0.

    >>> mcnemar_exact(8, 2)
    0.0546875
    >>> mcnemar_exact(8, 2, alternative="two-sided")
    0.109375
    """
    return _mcnemar(b, c, alternative, mid_p=False)


def mcnemar_mid_p(b: int, c: int, alternative: str = "greater") -> float:
    """Mid-p McNemar test: the exact conditional test's p minus half the probability of the
    observed count, ``P(X > b) + P(X = b) / 2`` for ``X ~ Binomial(b + c, 1/2)`` (Lancaster
    1961). The exact test's discreteness makes it conservative at small ``b + c`` (b = 7,
    c = 0 cannot reach p < 0.005); the mid-p keeps the type I error close to the nominal level
    and is the version Fagerland, Lydersen & Laake (2013, BMC Med Res Methodol 13:91)
    recommend. ``"two-sided"`` doubles the smaller one-sided mid-p. ``b + c == 0`` gives 1.0.

    >>> mcnemar_mid_p(7, 0)  # exact: 1/128
    0.00390625
    >>> mcnemar_mid_p(8, 2)  # exact 0.0546875 minus 45/1024 / 2
    0.032714...
    """
    return _mcnemar(b, c, alternative, mid_p=True)


def grouped_design_effect(hits: Any, mask: Any) -> float:
    """How much the sampling variance of a coverage share (the reference points of ``mask``
    whose ball holds a sample) exceeds the binomial ``p (1 - p) / n`` the Wilson interval and
    McNemar's test assume: at least 1. ``hits`` (``n x G``): per point, which sample groups
    cover it (:attr:`~.knn.NeighbourPass.ref_cover_groups`).

    The points are not independent items: one sample inside overlapping balls covers them
    together, so their indicators are positively correlated and the binomial variance is
    too small (measured: 95 % Wilson intervals held the truth 71-72 % of the time at
    d = 32; ``tests/metrics/test_interval_coverage.py``). The variance here is the
    delete-a-group jackknife's over the ``G`` random sample groups of the bootstrap (Quenouille
    1956; Tukey 1958; the grouped form: Efron & Tibshirani 1993, sec. 11.5; Shao & Tu, "The
    Jackknife and Bootstrap", 1995, ch. 2): removing group ``g`` uncovers exactly the points
    only its samples cover (``hits``, per point and group, from the k-NN pass), so
    each leave-one-out share costs one count, ``n x G`` in all. The ratio of the two variances
    is Kish's design effect, applied as in Rao & Scott (1992, "A simple method for the
    analysis of clustered binary data", Biometrics 48:577): intervals and exact tests on the
    effective size ``n / deff``. The jackknife over-states the variance (Efron & Stein 1981:
    it is biased upward, most for points one or two samples cover; the 95 % intervals held
    the truth 0.96-1.00 of the time, ``benchmarks/shares.py``); the floor at 1 keeps the
    binomial where it finds less.

    Recall takes the same estimate from ``ref_ball_groups`` (a point inside a ball of some
    sample of the group) and the points each group's removal brings inside the remaining
    samples' regrown balls (``gains``, :mod:`._regrow`); with the radii held at their
    full-sample values its intervals held only 0.79-0.89 at d >= 32. (Not for the text panel's rare n-grams: over random groups of texts it gave a
    design effect of 1.3 where the plain Wilson interval already held the sampling spread,
    its half-width 1.03 x the Monte Carlo standard deviation, coverage 0.95, over 150
    zipf_text samples of 1,000 texts: texts bring several rare types together, but their
    unequal frequencies narrow the variance below the binomial about as much.)

    >>> cg = np.zeros((4, 2), dtype=bool); cg[:2, 0] = True; cg[2:, 1] = True
    >>> grouped_design_effect(cg, np.ones(4, dtype=bool))  # 2 groups, each alone covering 2
    1.0
    """
    return design_effect(grouped_jackknife_variance(hits, mask))


def design_effect(variances: tuple[float, float] | None) -> float:
    """The design effect of ``(jackknife, binomial)`` variances
    (:func:`grouped_jackknife_variance`): their ratio, at least 1; 1 without a jackknife or
    where the binomial variance is 0 (every point covered, or none)."""
    if variances is None or variances[1] <= 0:
        return 1.0
    return max(1.0, variances[0] / variances[1])


def grouped_jackknife_variance(hits: Any, mask: Any, gains: Any = None) -> tuple[float, float] | None:
    """``(jackknife, binomial)``: the delete-a-group jackknife variance of the share of the
    points of ``mask`` that some group covers (``hits``, ``n x G``), and the binomial
    ``p (1 - p) / n``, both of the share (:func:`grouped_design_effect` is their ratio, floored
    at 1). The jackknife's is kept for the paired tests, which need the variance itself: the
    binomial overstates it wherever the points' chances differ (points always or never
    covered add nothing to it; McNemar's variance leaves them out too). None without two
    groups or any point: there is no jackknife.

    ``gains`` (``n x G``, optional): the points that removing group ``g`` brings *inside*
    (recall: the remaining samples' k-NN balls grow, :mod:`._regrow`); a point counts as gained
    only where no other group already holds it.

    >>> cg = np.zeros((4, 2), dtype=bool); cg[:2, 0] = True; cg[2:3, 1] = True
    >>> [round(v, 6) for v in grouped_jackknife_variance(cg, np.ones(4, dtype=bool))]
    [0.015625, 0.046875]
    """
    if hits is None:
        return None
    cg = np.asarray(hits)[np.asarray(mask, dtype=bool)]
    n, groups = cg.shape
    if n == 0 or groups < 2:
        return None
    per_point = cg.sum(axis=1)
    x = int(np.count_nonzero(per_point))
    binomial = x * (n - x) / n  # n p (1 - p): the count's variance for independent points
    lost = cg[per_point == 1].sum(axis=0).astype(np.float64)  # points only group g covers
    if gains is not None:  # less the points g's removal brings in (no other group holds them)
        gained = np.asarray(gains, dtype=bool)[np.asarray(mask, dtype=bool)] & (per_point[:, None] == cg)
        lost -= gained.sum(axis=0)
    jack = (groups - 1) / groups * float(np.sum((lost - lost.mean()) ** 2))
    return jack / (n * n), binomial / (n * n)


def mcnemar_scaled(b: int, c: int, design_effect: float, *, mid_p: bool = False) -> float:
    """One-sided (``"greater"``) McNemar p for correlated items: the exact (or mid-p) test on
    the discordant counts divided by the ``design_effect`` of their difference (Rao & Scott
    1992, Biometrics 48:577, for clustered binary data; for matched pairs Durkalski, Palesch,
    Lipsitz & Rust 2003, Stat Med 22:2417). ``P(X >= b)`` for ``X ~ Binomial(b + c, 1/2)`` is
    the regularized incomplete beta ``I_{1/2}(b, c + 1)``, which extends it to the fractional
    counts; a design effect of 1 or less is the exact test itself.

    >>> mcnemar_scaled(8, 2, 1.0) == mcnemar_exact(8, 2)
    True
    >>> round(mcnemar_scaled(16, 4, 2.0), 6) == round(mcnemar_exact(8, 2), 6)
    True
    >>> mcnemar_scaled(30, 5, 3.0) > mcnemar_exact(30, 5)
    True
    """
    b, c = _count(b, "b"), _count(c, "c")
    deff = float(design_effect)
    if not math.isfinite(deff) or deff <= 1.0:
        return _mcnemar(b, c, "greater", mid_p=mid_p)
    if b + c == 0:
        return 1.0
    from scipy.special import betainc

    bs, cs = b / deff, c / deff

    def upper(x: float, rest: float) -> float:  # P(X >= x), X ~ Bin(x + rest, 1/2), x > 0
        return 1.0 if x <= 0 else float(betainc(x, rest + 1.0, 0.5))

    p = upper(bs, cs)
    if mid_p:  # P(X > b) + P(X = b) / 2 = (P(X >= b) + P(X >= b + 1)) / 2
        p = 0.5 * (p + (float(betainc(bs + 1.0, cs, 0.5)) if cs > 0 else 0.0))
    return min(1.0, max(0.0, p))


def _mcnemar(b: int, c: int, alternative: str, *, mid_p: bool) -> float:
    b = _count(b, "b")
    c = _count(c, "c")
    if alternative not in ("greater", "less", "two-sided"):
        raise InputError("alternative", f"expected 'greater', 'less' or 'two-sided', got {alternative!r}")
    n = b + c
    if n == 0:
        return 1.0

    def upper(x: int) -> float:  # P(X >= x) (minus P(X = x) / 2): exact integers to the last division
        p = binom_sf_half(x, n)
        if not mid_p:
            return p
        if n > EXACT_BINOM_MAX_N:
            from scipy.stats import binom

            return p - float(binom.pmf(x, n, 0.5)) / 2.0
        return p - math.comb(n, x) / (1 << n) / 2.0

    if alternative == "greater":
        return upper(b)
    if alternative == "less":
        return upper(c)  # P(X <= b) = P(n - X >= c)
    if alternative == "two-sided":
        return min(1.0, 2.0 * min(upper(b), upper(c)))
    raise InputError("alternative", f"expected 'greater', 'less' or 'two-sided', got {alternative!r}")


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini & Hochberg (1995) step-up adjusted p-values (q-values) controlling the
    false discovery rate: ``q_(i) = min_{j >= i} p_(j) * m / j``, clipped to 1. Same as
    ``scipy.stats.false_discovery_control(p, method="bh")`` and statsmodels'
    ``multipletests(p, method="fdr_bh")[1]``. Keeps the input's order and shape.

    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.5]).round(4).tolist()
    [0.04, 0.0533, 0.0533, 0.5]
    """
    try:
        p = np.asarray(pvalues, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("pvalues", "expected a sequence of numbers in [0, 1]") from None
    if p.size == 0:
        return p.copy()
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise InputError("pvalues", "expected finite numbers in [0, 1]")
    flat = p.ravel()
    m = flat.size
    order = np.argsort(flat, kind="mergesort")
    scaled = flat[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m, dtype=np.float64)
    out[order] = np.minimum(q_sorted, 1.0)
    return out.reshape(p.shape)


# --------------------------------------------------------------------------- trends


class MKResult(NamedTuple):
    """Mann-Kendall result: ``s`` = concordant - discordant pairs of (time, value),
    ``tau`` = Kendall's tau-b of y against time, ``p_value`` for the chosen alternative,
    ``n`` = series length."""

    s: int
    tau: float
    p_value: float
    n: int


@functools.lru_cache(maxsize=64)
def _mahonian_counts(n: int) -> tuple[int, ...]:
    """Number of permutations of n items with k inversions, k = 0..n(n-1)/2 (exact ints).
    Cached: every tie pattern of a series of n points starts from it."""
    counts = [1]
    for m in range(2, n + 1):  # insert item m: adds 0..m-1 inversions
        new = [0] * (len(counts) + m - 1)
        window = 0
        for k in range(len(new)):
            if k < len(counts):
                window += counts[k]
            if k - m >= 0:
                window -= counts[k - m]
            new[k] = window
        counts = new
    return tuple(counts)


# one per tie pattern: a check with many classes tests as many recall series, and series of
# recalls tie in many patterns (64 entries missed at 1,000 classes, and the exact test took
# seconds a check at 30-50 generations); an entry is at most ~1,200 integers
@functools.lru_cache(maxsize=2048)
def _inversion_counts(multiplicities: tuple[int, ...]) -> tuple[int, ...]:
    """Number of distinct arrangements of a multiset (``multiplicities`` copies of each value)
    with k strict inversions, k = 0..: the coefficients of the q-multinomial coefficient
    ``[n]_q! / prod [m_i]_q!`` (MacMahon 1916; Andrews, *The Theory of Partitions*, 3.4), the
    exact permutation null of Kendall's S given its ties (Kendall 1975, ch. 4). Exact integers:
    ``[n]_q!`` is built by insertion, and each ``[j]_q = (1 - q^j) / (1 - q)`` of a tie group
    is divided out as a multiplication by ``1 - q`` and a strided running sum."""
    n = sum(multiplicities)
    # Python integers in object arrays: exact, with numpy's loops instead of Python's
    poly = np.array(_mahonian_counts(n), dtype=object)
    for m in multiplicities:
        for j in range(2, m + 1):
            times = np.empty(poly.size + 1, dtype=object)  # poly * (1 - q)
            times[0] = poly[0]
            times[1:-1] = poly[1:] - poly[:-1]
            times[-1] = -poly[-1]
            out = times[: times.size - j]  # (1 - q^j) divides exactly: degree drops by j
            for r in range(j):  # out[k] += out[k - j]: a running sum over each residue class
                out[r::j] = np.cumsum(out[r::j])
            poly = out
    return tuple(int(c) for c in poly)


def _mk_exact_p(values: np.ndarray, s: int, alternative: str) -> float:
    """Exact p-value of Mann-Kendall's S under the permutation null given the ties:
    ``S = N - 2 I`` with ``N`` the untied pairs and ``I`` the strict inversions."""
    _, mult = np.unique(values, return_counts=True)
    counts = _inversion_counts(tuple(sorted(int(m) for m in mult)))
    total = sum(counts)
    untied = len(counts) - 1  # N: the largest inversion count
    # S <= s  <=>  I >= (N - s) / 2 ;  S >= s  <=>  I <= (N - s) / 2
    inv = (untied - s) // 2
    le = sum(counts[inv:]) / total  # P(S <= s)
    ge = sum(counts[: inv + 1]) / total  # P(S >= s)
    if alternative == "decreasing":
        return le
    if alternative == "increasing":
        return ge
    return min(1.0, 2.0 * min(le, ge))


def mann_kendall(
    y: Sequence[float] | np.ndarray,
    alternative: str = "decreasing",
    *,
    exact_max_n: int = 50,
    continuity: bool = True,
) -> MKResult:
    """Mann (1945) / Kendall (1975) non-parametric test for a monotone trend in ``y`` over
    its index (``S = sum_{i<j} sign(y_j - y_i)``).

    For a series of length ``n <= exact_max_n`` the p-value comes from the exact permutation
    null distribution of S given the series' ties (inversion counts of the multiset's
    arrangements, Kendall 1975 ch. 4: every arrangement of the observed values over time is
    equally likely when there is no trend); a tie-free series of 11 strictly falling points
    gets ``1 / 11!`` (2.5e-8) where the normal approximation gives 1.3e-5, and with ties at
    n = 5 the approximation is off by up to 0.06. Beyond ``exact_max_n`` (or with
    ``exact_max_n=0``) the p-value comes from the normal approximation with the tie-corrected variance
    ``[n(n-1)(2n+5) - sum t(t-1)(2t+5)] / 18`` and a continuity correction of 1 towards
    zero (Hipel & McLeod 1994), the usual hydrology/climate practice. ``alternative`` is
    ``"decreasing"`` (the default: a sustained decline), ``"increasing"`` or
    ``"two-sided"``. ``tau`` is tau-b (0 when every value is tied). Needs ``n >= 2``.

    >>> r = mann_kendall([0.9, 0.85, 0.86, 0.8, 0.7, 0.72, 0.6])
    >>> r.s, round(r.tau, 3), round(r.p_value, 4)
    (-17, -0.81, 0.0054)
    """
    arr = _series(y, "y", min_len=2)
    if alternative not in ("decreasing", "increasing", "two-sided"):
        raise InputError("alternative", f"expected 'decreasing', 'increasing' or 'two-sided', got {alternative!r}")
    n = arr.size
    diff = np.sign(arr[None, :] - arr[:, None])
    s = int(np.triu(diff, k=1).sum())
    _, tie_counts = np.unique(arr, return_counts=True)
    t = tie_counts[tie_counts > 1].astype(np.float64)
    tot = n * (n - 1) / 2.0
    ties_pairs = float((t * (t - 1) / 2.0).sum())
    denom = math.sqrt(tot * (tot - ties_pairs))
    tau = s / denom if denom > 0 else 0.0
    tau = max(-1.0, min(1.0, tau))
    if n <= exact_max_n:
        return MKResult(s, tau, _mk_exact_p(arr, s, alternative), n)
    var = (n * (n - 1) * (2 * n + 5) - float((t * (t - 1) * (2 * t + 5)).sum())) / 18.0
    if var <= 0.0:
        return MKResult(s, tau, 1.0, n)
    sd = math.sqrt(var)
    cc = 1.0 if continuity else 0.0  # S moves in steps of 2 (1 with ties): correct by 1
    if alternative == "decreasing":
        p = _norm_cdf((s + cc) / sd)  # P(S <= s)
    elif alternative == "increasing":
        p = _norm_sf((s - cc) / sd)  # P(S >= s)
    else:
        p = min(1.0, 2.0 * _norm_sf((abs(s) - cc) / sd))
    return MKResult(s, tau, float(p), n)


def theil_sen(y: Sequence[float] | np.ndarray, x: Sequence[float] | np.ndarray | None = None) -> tuple[float, float]:
    """Theil (1950) / Sen (1968) robust slope: the median of pairwise slopes over pairs with
    distinct x; intercept ``median(y) - slope * median(x)``. Same values as
    ``scipy.stats.theilslopes(y, x)`` (``method="separate"``). ``x`` defaults to 0..n-1.

    >>> slope, intercept = theil_sen([1.0, 0.9, 0.85, 0.7, 0.65])
    >>> round(slope, 5), round(intercept, 5)
    (-0.09375, 1.0375)
    """
    ya = _series(y, "y", min_len=2)
    xa = np.arange(ya.size, dtype=np.float64) if x is None else _series(x, "x", min_len=2)
    if xa.size != ya.size:
        raise InputError("x", f"has {xa.size} values but y has {ya.size}")
    dx = xa[None, :] - xa[:, None]
    dy = ya[None, :] - ya[:, None]
    mask = dx > 0
    if not mask.any():
        raise InputError("x", "all x values are equal: the slope is undefined")
    slope = float(np.median(dy[mask] / dx[mask]))
    intercept = float(np.median(ya) - slope * np.median(xa))
    return slope, intercept


# --------------------------------------------------------------------------- bootstrap / z


def percentile_interval(replicates: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Bootstrap percentile interval (Efron & Tibshirani 1993, ch. 13): the ``(1-c)/2`` and
    ``(1+c)/2`` quantiles of the replicates (linear interpolation, numpy's default).

    >>> lo, hi = percentile_interval(range(101), 0.9)
    >>> round(lo, 9), round(hi, 9)
    (5.0, 95.0)
    """
    arr = _series(replicates, "replicates", min_len=1)
    c = _confidence(confidence)
    lo, hi = np.quantile(arr, [(1.0 - c) / 2.0, (1.0 + c) / 2.0])
    return float(lo), float(hi)


def se_from_interval(lo: float, hi: float, confidence: float = 0.95) -> float:
    """Standard error implied by a symmetric normal interval: ``(hi - lo) / 2 / z``.

    >>> round(se_from_interval(-1.959964, 1.959964), 6)
    1.0
    """
    lo_f = _finite(lo, "lo")
    hi_f = _finite(hi, "hi")
    if hi_f < lo_f:
        raise InputError("hi", f"must be >= lo={lo_f}, got {hi_f}")
    c = _confidence(confidence)
    return (hi_f - lo_f) / 2.0 / normal_quantile(0.5 + 0.5 * c)


def normal_decline_p(value: float, se: float, baseline: float, baseline_se: float) -> float:
    """One-sided p-value that ``value`` is below ``baseline`` (Wald z test for the difference
    of two independent estimates): ``Phi((value - baseline) / sqrt(se^2 + baseline_se^2))``.
    With both standard errors 0 the answer is 0.0 when value < baseline, else 1.0.

    >>> round(normal_decline_p(0.8, 0.05, 1.0, 0.05), 5)
    0.00234
    >>> normal_decline_p(1.0, 0.0, 1.0, 0.0)
    1.0
    """
    v = _finite(value, "value")
    b = _finite(baseline, "baseline")
    s1 = _finite(se, "se")
    s0 = _finite(baseline_se, "baseline_se")
    if s1 < 0:
        raise InputError("se", f"must be >= 0, got {s1}")
    if s0 < 0:
        raise InputError("baseline_se", f"must be >= 0, got {s0}")
    sd = math.hypot(s1, s0)
    if sd == 0.0:
        return 0.0 if v < b else 1.0
    return _norm_cdf((v - b) / sd)


# --------------------------------------------------------------------------- CUSUM


def cusum_decline(
    series: Sequence[float] | np.ndarray,
    baseline_mean: float,
    baseline_sd: float,
    k: float = 0.5,
    h: float = 4.0,
) -> tuple[bool, int | None, np.ndarray]:
    """One-sided lower tabular CUSUM (Page 1954; Montgomery, *Statistical Quality Control*,
    sec. 9.1) in baseline-sd units: ``z_t = (x_t - mean) / sd``,
    ``C_t = max(0, C_{t-1} - z_t - k)``, ``C_0 = 0``; alarm at the first ``t`` with
    ``C_t > h``. ``k`` is the allowance (half the shift to detect, in sd), ``h`` the decision
    interval. Returns ``(alarm, first alarm index or None, C as an array)``.

    >>> alarm, idx, c = cusum_decline([1.0, 0.2, -1.0, -2.0, -2.0, -2.0], 0.0, 1.0)
    >>> alarm, idx, c.round(2).tolist()
    (True, 5, [0.0, 0.0, 0.5, 2.0, 3.5, 5.0])
    """
    x = _series(series, "series", min_len=0)
    mu = _finite(baseline_mean, "baseline_mean")
    sd = _finite(baseline_sd, "baseline_sd")
    kk = _finite(k, "k")
    hh = _finite(h, "h")
    if sd <= 0:
        raise InputError("baseline_sd", f"must be > 0, got {sd}")
    if kk < 0:
        raise InputError("k", f"must be >= 0, got {kk}")
    if hh <= 0:
        raise InputError("h", f"must be > 0, got {hh}")
    z = (x - mu) / sd
    c = np.empty_like(z)
    acc = 0.0
    first: int | None = None
    for t, zt in enumerate(z):
        acc = max(0.0, acc - float(zt) - kk)
        c[t] = acc
        if first is None and acc > hh:
            first = t
    return first is not None, first, c
