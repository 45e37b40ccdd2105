"""The coverage shares' design effects through the monitor: kept with the baseline, used by
the paired tests, and borrowed by a baseline stored before they existed."""

from __future__ import annotations

import numpy as np

import collapse_monitor as cm
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
    assert tests["tail_coverage"] == "mcnemar-exact" and tests["head_coverage"] == "mcnemar-exact"
    assert "design.tail_coverage" not in HistoryStore(tmp_path).baseline("deff").items  # not grown from a later check
    assert report.stage is cm.Stage.HEALTHY
