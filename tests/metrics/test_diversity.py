"""Diversity metrics against vendi-score, scipy's sqrtm-based FID, direct SVD formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from vendi_score import vendi

from collapse_monitor.errors import ConfigError, InputError
from collapse_monitor.metrics import vendi_score
from collapse_monitor.metrics.diversity import (
    MahalanobisTail,
    bootstrap_spectra,
    effective_rank,
    frechet_distance,
    frechet_from_moments,
    group_moments,
    hill_number,
    sqrtm_psd,
    tail_mass_ratio,
    variance_ratio,
)


@pytest.mark.parametrize(("n", "d"), [(200, 16), (50, 80), (30, 30), (500, 3)])
@pytest.mark.parametrize("q", [1.0, 0.5, 2.0, "inf"])
def test_vendi_equals_score_dual(n: int, d: int, q: float | str) -> None:
    x = np.random.default_rng(n * d).normal(loc=0.5, size=(n, d))
    # with d >= n the d x d dual has d - n round-off eigenvalues (~1e-17) that score_dual keeps
    # when positive; for q < 1 their p^q adds ~1e-9 each, so allow that there
    rel = 1e-9 if d < n or q != 0.5 else 1e-6
    assert vendi_score(x, q=q) == pytest.approx(vendi.score_dual(x, q=q), rel=rel)
    assert vendi_score(x, q=q, normalize=False) == pytest.approx(vendi.score_dual(x, q=q, normalize=False), rel=rel)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # vendi_score uses scipy.sparse.csr
@pytest.mark.parametrize(("n", "d"), [(120, 10), (40, 64)])
def test_vendi_equals_score_x(n: int, d: int) -> None:
    x = np.random.default_rng(1).normal(size=(n, d))
    x[3] = 0.0  # a zero row stays zero under normalisation, as in sklearn
    assert vendi_score(x) == pytest.approx(vendi.score_X(x), rel=1e-9)
    assert vendi_score(x) == pytest.approx(vendi.score_dual(x), rel=1e-9)


def test_vendi_degenerate_cases() -> None:
    assert vendi_score(np.ones((1, 4))) == pytest.approx(1.0)
    assert vendi_score(np.tile([1.0, 2.0], (50, 1))) == pytest.approx(1.0)
    assert vendi_score(np.zeros((5, 3))) == 1.0
    with pytest.raises(ConfigError):
        vendi_score(np.eye(3), q=-1)
    with pytest.raises(InputError):
        vendi_score(np.array([[np.inf, 1.0]]))


def test_hill_number() -> None:
    assert hill_number([1.0]) == 1.0
    assert hill_number([0.25] * 4, q="inf") == pytest.approx(4.0)
    assert hill_number([0.0, -1e-18]) == 1.0


def _erank_svd(x: np.ndarray) -> float:
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2  # covariance eigenvalues, up to scale
    p = s[s > s.max() * 1e-12] / s[s > s.max() * 1e-12].sum()
    return float(np.exp(-np.sum(p * np.log(p))))


@pytest.mark.parametrize(("n", "d"), [(300, 10), (20, 50)])
def test_effective_rank_matches_svd_formula(n: int, d: int) -> None:
    x = np.random.default_rng(2).normal(size=(n, d)) * np.linspace(0.1, 3.0, d)
    assert effective_rank(x) == pytest.approx(_erank_svd(x), rel=1e-9)


def test_effective_rank_properties() -> None:
    rng = np.random.default_rng(3)
    assert effective_rank(rng.normal(size=(20000, 8))) == pytest.approx(8.0, rel=0.01)
    low = rng.normal(size=(500, 2)) @ rng.normal(size=(2, 10))
    assert 1.0 <= effective_rank(low) <= 2.0 + 1e-9
    assert effective_rank(np.ones((10, 4))) == 1.0
    assert effective_rank(np.ones((1, 4))) == 1.0


def test_variance_ratio() -> None:
    rng = np.random.default_rng(4)
    ref, gen = rng.normal(size=(100, 5)), rng.normal(size=(80, 5)) * 0.5
    expected = np.trace(np.cov(gen, rowvar=False)) / np.trace(np.cov(ref, rowvar=False))
    assert variance_ratio(ref, gen) == pytest.approx(expected, rel=1e-12)
    assert variance_ratio(ref, gen[:1]) == 0.0
    assert np.isfinite(variance_ratio(np.ones((3, 2)), gen[:, :2]))


def _fid_scipy(x: np.ndarray, y: np.ndarray) -> float:
    """The pytorch-fid formula (Heusel et al. 2017) with scipy.linalg.sqrtm."""
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


@pytest.mark.parametrize(("n", "m", "d"), [(400, 300, 8), (200, 250, 32)])
def test_frechet_matches_scipy_sqrtm(n: int, m: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(n, d)) @ a
    y = rng.normal(size=(m, d)) @ a * 1.3 + 0.2
    assert frechet_distance(x, y) == pytest.approx(_fid_scipy(x, y), rel=1e-7, abs=1e-9)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_from_moments_gaussians() -> None:
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_from_moments([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    c = np.diag([1.0, 4.0])
    assert frechet_from_moments(np.zeros(2), c, np.zeros(2), c, sqrt_cov1=sqrtm_psd(c)) == pytest.approx(0.0, abs=1e-12)
    # singular covariances are fine (no sqrtm of a non-symmetric product)
    assert np.isfinite(frechet_from_moments(np.zeros(3), np.zeros((3, 3)), np.ones(3), np.eye(3)))


def test_tail_mass_ratio_is_about_one_for_an_independent_draw() -> None:
    """Cross-fitting keeps the ratio near 1 even where in-sample radii are biased (d = 40)."""
    rng = np.random.default_rng(6)
    ref = rng.normal(size=(3000, 40)) * np.linspace(0.5, 2.0, 40)
    gen = rng.normal(size=(3000, 40)) * np.linspace(0.5, 2.0, 40)
    assert 0.5 < tail_mass_ratio(ref, gen) < 1.7
    assert tail_mass_ratio(ref, gen * 0.6) == 0.0
    assert tail_mass_ratio(ref, gen * 1.5) > 5.0


def test_mahalanobis_tail_with_more_dims_than_rows() -> None:
    rng = np.random.default_rng(7)
    tail = MahalanobisTail.fit(rng.normal(size=(30, 60)))
    assert 0.0 < tail.shrinkage <= 1.0 and tail.radius > 0
    assert np.isfinite(tail.distances(rng.normal(size=(5, 60)))).all()
    flat = MahalanobisTail.fit(np.ones((50, 3)))
    assert flat.radius == 0.0 and flat.exceed_count(np.ones((4, 3))) == 0


def test_group_moments_bootstrap_equals_resampled_rows() -> None:
    """A replicate that takes groups with multiplicities equals the statistic of the rows
    repeated that many times."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(37, 5))
    groups = np.arange(37) % 6
    gm = group_moments(x, groups, 6)
    w = np.array([[2.0, 0.0, 1.0, 1.0, 0.0, 2.0], [1.0] * 6])
    eig_c, n_b, s_b = bootstrap_spectra(gm, w, centred=True)
    eig_u, _, _ = bootstrap_spectra(gm, w, centred=False)
    for b in range(2):
        rows = np.concatenate([np.repeat(x[groups == g], int(w[b, g]), axis=0) for g in range(6)])
        assert n_b[b] == len(rows)
        np.testing.assert_allclose(s_b[b], rows.sum(axis=0), atol=1e-10)
        np.testing.assert_allclose(eig_c[b], np.linalg.eigvalsh(np.cov(rows, rowvar=False)), atol=1e-10)
        np.testing.assert_allclose(eig_u[b], np.linalg.eigvalsh(rows.T @ rows / len(rows)), atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 30), d=st.integers(1, 6), seed=st.integers(0, 2**16), identical=st.booleans())
def test_diversity_metrics_are_finite(n: int, d: int, seed: int, identical: bool) -> None:
    rng = np.random.default_rng(seed)
    x = np.tile(rng.normal(size=d), (n, 1)) if identical else rng.normal(size=(n, d))
    ref = rng.normal(size=(40, d))
    v = vendi_score(x)
    assert 1.0 - 1e-9 <= v <= min(n, d) + 1e-9
    assert 1.0 - 1e-9 <= effective_rank(x) <= d + 1e-9
    for value in (variance_ratio(ref, x), frechet_distance(ref, x), tail_mass_ratio(ref, x)):
        assert np.isfinite(value) and value >= 0.0


@pytest.mark.parametrize("max_dim", [64, 10])
@pytest.mark.parametrize("centred", [True, False])
def test_scatter_bootstrap_equals_row_bootstrap(monkeypatch: pytest.MonkeyPatch, max_dim: int, centred: bool) -> None:
    """The group-scatter path (many rows) gives the per-row path's point and replicates, also
    for transformed rows ``X T`` (the Frechet term) and in the projected regime (d > max_dim)."""
    from collapse_monitor.metrics import _bootstrap

    rng = np.random.default_rng(11)
    m, d, g = 600, 24, 20
    x = 0.5 + rng.normal(size=(m, d)) * np.linspace(0.2, 2.0, d)
    t = np.linalg.qr(rng.normal(size=(d, d)))[0] * np.linspace(0.5, 1.5, d)
    groups = rng.permutation(np.arange(m) % g)
    weights = rng.multinomial(g, np.full(g, 1.0 / g), size=30).astype(np.float64)

    def stat(w: np.ndarray) -> float:  # the Frechet trace term
        return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))

    assert _bootstrap.scatters_pay(m, d, g)
    sc = _bootstrap.scatters(x, groups, g, workers=3)
    monkeypatch.setattr(_bootstrap, "scatters_pay", lambda *a: False)
    for transform in (None, t):
        rows = x if transform is None else x @ transform
        p_rows, b_rows = _bootstrap.spectral_bootstrap(
            rows, groups, g, weights, centred=centred, stat=stat, max_dim=max_dim
        )
        p_sc, b_sc = _bootstrap.spectral_bootstrap_scatters(
            sc, weights, centred=centred, stat=stat, max_dim=max_dim, workers=2, transform=transform
        )
        assert p_sc == pytest.approx(p_rows, rel=1e-10)
        np.testing.assert_allclose(b_sc, b_rows, rtol=1e-9)
        # the split from float32 row projections: the same point, replicates to float32 round-off,
        # and not a bit of difference between thread counts
        p_32, b_32 = _bootstrap.spectral_bootstrap_scatters(
            sc, weights, centred=centred, stat=stat, max_dim=max_dim, workers=2, transform=transform, rows=(x, groups)
        )
        b_32_one = _bootstrap.spectral_bootstrap_scatters(
            sc, weights, centred=centred, stat=stat, max_dim=max_dim, workers=1, transform=transform, rows=(x, groups)
        )[1]
        assert p_32 == p_sc
        np.testing.assert_allclose(b_32, b_rows, rtol=2e-6)
        np.testing.assert_array_equal(b_32, b_32_one)


def test_scatters_and_tail_distances_do_not_depend_on_the_thread_count() -> None:
    from collapse_monitor.metrics._bootstrap import scatters

    rng = np.random.default_rng(12)
    x = rng.normal(size=(20_000, 6))
    groups = rng.integers(0, 7, size=20_000)
    one, three = scatters(x, groups, 7, workers=1), scatters(x, groups, 7, workers=3)
    for a, b in (
        (one.total, three.total),
        (one.total_sum, three.total_sum),
        (one.groups.scatters, three.groups.scatters),
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(one.total, x.T @ x, rtol=1e-12)
    tail = MahalanobisTail.fit(rng.normal(size=(500, 6)))
    np.testing.assert_array_equal(tail.distances(x, workers=1), tail.distances(x, workers=4))
    # the float32 whitening product against scipy's float64 Mahalanobis distance
    from scipy.spatial.distance import cdist

    vi = tail.whiten @ tail.whiten.T
    want = cdist(x[:500], tail.mean[None, :], "mahalanobis", VI=vi)[:, 0]
    np.testing.assert_allclose(tail.distances(x[:500]), want, rtol=1e-5)


@pytest.mark.parametrize(("n", "d"), [(300, 20), (30, 80), (2, 3), (5000, 64)])
def test_ledoit_wolf_shrinkage_equals_sklearn(n: int, d: int) -> None:
    from sklearn.covariance import ledoit_wolf_shrinkage as sklearn_lw

    from collapse_monitor.metrics.diversity import ledoit_wolf_shrinkage

    x = np.random.default_rng(n + d).normal(size=(n, d)) * np.linspace(0.1, 3.0, d)
    xc = x - x.mean(axis=0)
    assert ledoit_wolf_shrinkage(xc) == pytest.approx(float(sklearn_lw(xc, assume_centered=True)), rel=1e-9, abs=1e-12)


def test_centred_and_unit_grams_block_by_block_equal_the_full_copies() -> None:
    from collapse_monitor.metrics._bootstrap import entropy_influence, gram, normalize_rows

    rng = np.random.default_rng(11)
    x = rng.normal(size=(2500, 9)) * rng.uniform(0.2, 4.0, size=9) + 3.0  # several row blocks
    x[17] = 0.0  # a zero row stays zero when normalised
    mu = x.mean(axis=0)
    for a, b in zip(gram(x, center=mu), gram(x - mu), strict=True):
        np.testing.assert_array_equal(a, b)
    unit = normalize_rows(x)
    for a, b in zip(gram(x, unit=True), gram(unit), strict=True):
        np.testing.assert_array_equal(a, b)
    g_u = gram(unit)[0]
    blocks = entropy_influence(x, g_u, float(len(x)), unit=True)
    full = entropy_influence(unit, g_u, float(len(x)))
    assert (blocks.entropy, blocks.se) == (full.entropy, full.se)


def test_vendi_at_q0_counts_distinct_rows_not_round_off_eigenvalues() -> None:
    x = np.random.default_rng(0).normal(size=(5, 40))
    assert vendi_score(np.repeat(x, 20, axis=0), q=0) == pytest.approx(5.0)  # was 12 or 7
