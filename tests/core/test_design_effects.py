"""The coverage shares' design effects through the monitor: kept with the baseline, used by
the paired tests, and borrowed by a baseline stored before they existed."""

from __future__ import annotations

import numpy as np
import pytest

import collapse_monitor as cm
from collapse_monitor.detection import detect
from collapse_monitor.history import HistoryStore


def _rows(seed: int, m: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, 16))
    x[rng.random(m) < 0.05] += 5.0
    return x


def _monitor(home) -> cm.CollapseMonitor:
    return cm.CollapseMonitor("deff", reference=cm.Reference(embeddings=_rows(0, 1500)), sinks=[], home=home)


def test_the_baseline_keeps_design_effects_and_an_older_one_borrows_them(tmp_path) -> None:
    mon = _monitor(tmp_path)
    mon.check(cm.Observation(embeddings=_rows(1, 800), generation=0))
    store = HistoryStore(tmp_path)
    base = store.baseline("deff")
    for key in ("coverage", "tail_coverage", "head_coverage", "recall"):
        deff, var = base.items[f"design.{key}"]  # the effect (intervals) and the variance (paired tests)
        assert deff >= 1.0 and var >= 0.0
    # a baseline stored by a version without them: the paired tests still run (no note that
    # the items are missing), on the current check's design effects
    for key in [k for k in base.items if k.startswith("design.")]:
        del base.items[key]
    store.save_baseline("deff", base)
    report = _monitor(tmp_path).check(cm.Observation(embeddings=_rows(2, 800), generation=1))
    assert not any("per-item vectors" in n for n in report.notes), report.notes
    tests = {f.key: f.test for f in report.findings if f.kind == "baseline"}
    # the reports say the counts were scaled (these samples' points are correlated: deff > 1)
    assert tests["tail_coverage"] == tests["head_coverage"] == "mcnemar-exact+design-effect"
    assert "design.tail_coverage" not in HistoryStore(tmp_path).baseline("deff").items  # not grown from a later check
    assert report.stage is cm.Stage.HEALTHY


def test_the_fisher_fallback_divides_the_counts_by_the_design_effect() -> None:
    """A baseline without item vectors (read back from MLflow's metrics alone): the share is
    tested on its counts, which for correlated points are divided by the design effect."""
    from scipy.stats import fisher_exact

    def mv(k: int, n: int) -> cm.MetricValue:
        return cm.MetricValue(k / n, 0.0, 1.0, n=n)

    plain = detect({"tail_coverage": mv(150, 200)}, rules=cm.Rules(), baseline={"tail_coverage": mv(180, 200)})
    scaled = detect(
        {"tail_coverage": mv(150, 200)},
        rules=cm.Rules(),
        baseline={"tail_coverage": mv(180, 200)},
        items={"design.tail_coverage": np.array([3.0])},
    )
    (f0,) = [f for f in plain.findings if f.kind == "baseline"]
    (f1,) = [f for f in scaled.findings if f.kind == "baseline"]
    assert f0.test == "fisher-exact" and f1.test == "fisher-exact+design-effect"
    assert f0.p_value == pytest.approx(fisher_exact([[150, 50], [180, 20]], alternative="less").pvalue)
    assert f1.p_value == pytest.approx(fisher_exact([[50, 17], [60, 7]], alternative="less").pvalue)
    assert f0.significant and not f1.significant


def test_an_unreadable_design_item_is_ignored() -> None:
    """A design item read back from elsewhere may be empty or not a number: the plain test."""
    from collapse_monitor.detection import _paired_p

    base = np.array([True] * 40 + [False] * 10)
    cur = base.copy()
    cur[:12] = False
    paired = {"tail_coverage": ("coverage.covered", np.ones(50, bool))}
    for bad in (np.array([]), np.array([np.nan]), np.array(["x"])):
        p = _paired_p(
            "tail_coverage", paired, {"coverage.covered": cur, "design.tail_coverage": bad}, {"coverage.covered": base}
        )
        assert p == pytest.approx(0.5**12)
    scaled = _paired_p(
        "tail_coverage",
        paired,
        {"coverage.covered": cur, "design.tail_coverage": np.array([2.0])},
        {"coverage.covered": base},
    )
    assert scaled > 0.5**12


def _independent_draw(rng, pi: np.ndarray, groups: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Covered flags of independent points with cover chances ``pi`` (each of ``groups``
    independent sample groups covers a point with the chance that gives ``pi`` in all), and the
    ``design.coverage`` item the generator panel would store for them."""
    from collapse_monitor.metrics.generator import _design

    q = 1 - (1 - pi) ** (1 / groups)
    hits = rng.random((pi.size, groups)) < q[:, None]
    return hits.any(axis=1), _design(hits, np.ones(pi.size, bool))


def test_independent_points_of_unequal_chances_keep_the_paired_tests_power() -> None:
    """An audit (2026-12-07): the paired test scaled the binomial ``n p q`` of each side by its
    design effect floored at 1, which counts the points that are (almost) always or never
    covered; McNemar's variance leaves them out. On independent points (the plain test is
    valid), half covered 97 % of the time and half 10 %, it rejected 0 % of null pairs and 0.3 %
    of pairs whose well-covered points dropped to 93 % (plain McNemar: 4 % and 19 %). With each
    side's jackknife variance: at or below the level, and most of the plain test's power."""
    from collapse_monitor.detection import _paired_test
    from collapse_monitor.metrics.stats import mcnemar_exact

    rng = np.random.default_rng(0)
    n = 400
    pi = np.where(rng.random(n) < 0.5, 0.97, 0.10)
    alt = np.where(pi > 0.5, 0.93, pi)
    paired = {"coverage": ("coverage.covered", np.ones(n, bool))}

    def rejections(cur_pi: np.ndarray, reps: int = 200) -> tuple[float, float]:
        plain = scaled = 0
        for _ in range(reps):
            base, d0 = _independent_draw(rng, pi)
            cur, d1 = _independent_draw(rng, cur_pi)
            p, _ = _paired_test(
                "coverage",
                paired,
                {"coverage.covered": cur, "design.coverage": d1},
                {"coverage.covered": base, "design.coverage": d0},
            )
            b, c = int(np.sum(base & ~cur)), int(np.sum(~base & cur))
            plain += mcnemar_exact(b, c) < 0.05
            scaled += p < 0.05
        return plain / reps, scaled / reps

    null_plain, null_scaled = rejections(pi)
    alt_plain, alt_scaled = rejections(alt)
    assert null_scaled <= 0.06, (null_plain, null_scaled)  # 200 pairs: sd of a 5 % rate is 1.5 points
    assert alt_plain >= 0.12 and alt_scaled >= 0.5 * alt_plain, (alt_plain, alt_scaled)


def test_the_paired_design_effect_reads_each_sides_variance() -> None:
    """b = c = 1 of 1,000 points at p = 0.5 on both sides, stored design effects 1: the old
    formula divided the counts by 250. With the sides' variances (as small as McNemar's
    here), the plain test; a stored ``[deff]`` alone (before the variance was kept) is read
    as ``deff`` times its binomial, as it was."""
    from collapse_monitor.detection import _paired_design_effect

    cur = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    base = cur.copy()
    cur[0], cur[-1] = False, True  # b = c = 1
    var = 2.0 / 1000**2 / 2  # each side's variance: together McNemar's (b + c) / n^2
    d = _paired_design_effect(
        "coverage",
        cur,
        base,
        1,
        1,
        {"design.coverage": np.array([1.0, var])},
        {"design.coverage": np.array([1.0, var])},
    )
    assert d == pytest.approx(1.0)
    old = _paired_design_effect(
        "coverage", cur, base, 1, 1, {"design.coverage": np.array([1.0])}, {"design.coverage": np.array([1.0])}
    )
    assert old == pytest.approx(250.0)  # (what every stored item of the first version reads as)
    twice = _paired_design_effect(
        "coverage",
        cur,
        base,
        1,
        1,
        {"design.coverage": np.array([1.0, 4 * var])},
        {"design.coverage": np.array([1.0, 4 * var])},
    )
    assert twice == pytest.approx(4.0)
    lent = _paired_design_effect("coverage", cur, base, 1, 1, {"design.coverage": np.array([1.0, 4 * var])}, {})
    assert lent == pytest.approx(4.0)  # the baseline borrows the current side's ratio


def test_the_fisher_fallback_scales_each_side_by_its_own_design_effect() -> None:
    """An audit: both sides were divided by the current check's effect alone (the same data
    gave p = 0.007 or 0.20 by which side carried the larger one), and rounding the counts apart
    could move a share: 31/33 became 30/31 at 1.05, p 0.057 -> 0.030."""
    from scipy.stats import fisher_exact

    from collapse_monitor.detection import _fisher_p

    def mv(k: int, n: int) -> cm.MetricValue:
        return cm.MetricValue(k / n, 0.0, 1.0, n=n)

    now, then = mv(150, 200), mv(180, 200)
    p_now6 = _fisher_p("tail_coverage", now, then, (), design_effects=(6.0, 1.0))
    p_then6 = _fisher_p("tail_coverage", now, then, (), design_effects=(1.0, 6.0))
    # n / 6 = 33 items now at the share 0.75 (25), 200 at baseline; and the other way round
    assert p_now6 == pytest.approx(fisher_exact([[25, 8], [180, 20]], alternative="less").pvalue)
    assert p_then6 == pytest.approx(fisher_exact([[150, 50], [30, 3]], alternative="less").pvalue)
    plain = fisher_exact([[150, 50], [180, 20]], alternative="less").pvalue
    assert min(p_now6, p_then6) > plain
    # never below the unscaled test
    small_now, small_then = mv(6, 9), mv(31, 33)
    base_p = _fisher_p("tail_coverage", small_now, small_then, ())
    assert base_p == pytest.approx(0.0572, abs=1e-4)
    for d in (1.05, 1.1, 1.5, 2.0, 3.0):
        assert _fisher_p("tail_coverage", small_now, small_then, (), design_effects=(d, d)) >= base_p
    # through detect: the baseline's own design effect is used (stored with its items)
    res = detect(
        {"tail_coverage": now},
        rules=cm.Rules(),
        baseline={"tail_coverage": then},
        items={"design.tail_coverage": np.array([1.0, 0.0])},
        base_items={"design.tail_coverage": np.array([6.0, 0.0])},
    )
    (f,) = [f for f in res.findings if f.kind == "baseline"]
    assert f.test == "fisher-exact+design-effect" and f.p_value == pytest.approx(p_then6)


def test_without_two_groups_the_design_item_holds_no_variance() -> None:
    """A review: with one sample group there is no jackknife, and ``[1, 0]`` read as a measured
    variance of 0 (the paired test then counted that side as certain); ``[1]`` reads as the
    binomial variance, as a side stored before the variance was kept."""
    from collapse_monitor.metrics.generator import build_generator_state, generator_panel

    rng = np.random.default_rng(5)
    ref = rng.normal(size=(300, 4))
    state = build_generator_state(ref, n_clusters=4)
    one = generator_panel(state, ref, rng.normal(size=(100, 4)), n_boot=10, n_groups=1)
    many = generator_panel(state, ref, rng.normal(size=(100, 4)), n_boot=10)
    for key in ("coverage", "tail_coverage", "head_coverage", "recall"):
        assert one.items[f"design.{key}"].tolist() == [1.0]
        assert many.items[f"design.{key}"].shape == (2,)
