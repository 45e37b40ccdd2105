"""The end state of collapse (every sample the same point) must give a report and a page, in
any embedding size: it once crashed the spectral bootstrap when samples < dimensions > 128."""

from __future__ import annotations

import numpy as np
import pytest

import collapse_monitor as cm


@pytest.mark.parametrize(("m", "d"), [(200, 768), (150, 300), (60, 129), (2000, 300), (40, 16)])
def test_identical_samples_are_late_collapse_in_any_dimension(tmp_path, m, d) -> None:
    rng = np.random.default_rng(d)
    ref = cm.Reference(embeddings=rng.normal(size=(300, d)))
    mon = cm.CollapseMonitor("m", reference=ref, sinks=[], home=tmp_path)
    mon.check(cm.Observation(embeddings=rng.normal(size=(m, d))))
    report = mon.check(cm.Observation(embeddings=np.tile(rng.normal(size=(1, d)), (m, 1))))
    assert report.stage is cm.Stage.LATE_COLLAPSE
    for key in ("effective_rank", "vendi_score", "variance_ratio"):
        mv = report.metrics[key]
        assert np.isfinite(mv.value) and mv.ci_low <= mv.value <= mv.ci_high, (key, mv)
    assert report.metrics["variance_ratio"].value == 0.0


def test_a_constant_reference_in_high_dimension_still_checks(tmp_path) -> None:
    rng = np.random.default_rng(1)
    ref = cm.Reference(embeddings=np.ones((300, 300)) + np.arange(300)[:, None] * 0.0)
    mon = cm.CollapseMonitor("m", reference=ref, sinks=[], home=tmp_path)
    gen = rng.normal(size=(200, 300))
    report = mon.check(cm.Observation(embeddings=gen))
    assert report.generation == 0 and report.errors == ()
    assert {"precision", "coverage", "vendi_score", "effective_rank", "frechet_distance"} <= set(report.metrics)
    for key, mv in report.metrics.items():  # finite numbers with their intervals, not NaN
        assert np.isfinite([mv.value, mv.ci_low, mv.ci_high]).all() and mv.ci_low <= mv.value <= mv.ci_high, key
    # no generated sample lies in the reference's (single-point) manifold
    assert report.metrics["precision"].value == 0.0 and report.metrics["coverage"].value == 0.0
    # Frechet distance to a zero-covariance reference, by hand: |mu_g - mu_r|^2 + tr(Sigma_g)
    want = float(((gen.mean(0) - 1.0) ** 2).sum() + np.trace(np.cov(gen.T)))
    assert report.metrics["frechet_distance"].value == pytest.approx(want, rel=1e-6)
