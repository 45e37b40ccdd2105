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


def test_a_constant_reference_is_refused_before_anything_is_written(tmp_path) -> None:
    """A reference whose rows are all one point has no neighbourhoods, tail or diversity (every
    sample scored precision 0 and coverage 0 against it): an InputError naming the field, raised
    when the Reference is built, before a monitor or its home exists."""
    with pytest.raises(cm.InputError) as err:
        cm.Reference(embeddings=np.ones((300, 300)))
    assert err.value.field == "reference.embeddings" and "all 300 rows are identical" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_nearly_constant_reference_in_high_dimension_still_checks(tmp_path) -> None:
    """299 identical rows and one other (rank 1 after centring, 300 dimensions): degenerate but
    not constant, it gives a report with finite values and intervals, not NaN or a crash."""
    rng = np.random.default_rng(1)
    rows = np.ones((300, 300))
    rows[-1] += rng.normal(size=300)
    mon = cm.CollapseMonitor("m", reference=cm.Reference(embeddings=rows), sinks=[], home=tmp_path)
    gen = rng.normal(size=(200, 300))
    report = mon.check(cm.Observation(embeddings=gen))
    assert report.generation == 0 and report.errors == ()
    assert {"precision", "coverage", "vendi_score", "effective_rank", "frechet_distance"} <= set(report.metrics)
    for key, mv in report.metrics.items():  # finite numbers with their intervals, not NaN
        assert np.isfinite([mv.value, mv.ci_low, mv.ci_high]).all() and mv.ci_low <= mv.value <= mv.ci_high, key
    # Frechet distance to a rank-1 reference, from scipy's matrix square root
    from scipy import linalg

    mu_r, cov_r = rows.mean(0), np.cov(rows.T)
    mu_g, cov_g = gen.mean(0), np.cov(gen.T)
    cross = linalg.sqrtm(cov_r @ cov_g).real
    want = float(((mu_g - mu_r) ** 2).sum() + np.trace(cov_r) + np.trace(cov_g) - 2 * np.trace(cross))
    assert report.metrics["frechet_distance"].value == pytest.approx(want, rel=1e-4)
