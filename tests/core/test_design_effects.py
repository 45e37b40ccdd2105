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
        assert base.items[f"design.{key}"].shape == (1,) and base.items[f"design.{key}"][0] >= 1.0
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
