"""PRDC against the reference ``prdc`` package, coverage properties, rare-mode helpers."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import prdc as prdc_ref
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import pairwise_distances_argmin

from collapse_monitor.errors import InputError
from collapse_monitor.metrics import prdc
from collapse_monitor.metrics.coverage import assign_to_centroids, cluster_mass, group_coverage, rare_modes_kept

KEYS = ("precision", "recall", "density", "coverage")


def _reference_prdc(ref: np.ndarray, gen: np.ndarray, k: int) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        out = prdc_ref.compute_prdc(real_features=ref, fake_features=gen, nearest_k=k)
    return {key: float(v) for key, v in out.items()}


@pytest.mark.parametrize(
    ("n", "m", "d", "k"),
    [(40, 40, 2, 1), (100, 80, 5, 3), (150, 220, 16, 5), (300, 250, 64, 5), (200, 120, 8, 10)],
)
def test_equal_to_prdc_package_float64(n: int, m: int, d: int, k: int) -> None:
    rng = np.random.default_rng(n + m + d + k)
    ref = rng.normal(size=(n, d))
    gen = rng.normal(size=(m, d)) * 1.2 + 0.3
    ours = prdc(ref, gen, k, dtype="float64")
    theirs = _reference_prdc(ref, gen, k)
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key


@pytest.mark.parametrize(("n", "m", "k"), [(100, 80, 3), (300, 300, 5)])
def test_float32_agrees_with_prdc_package(n: int, m: int, k: int) -> None:
    rng = np.random.default_rng(7)
    ref = rng.normal(loc=2.0, size=(n, 32)).astype(np.float32)
    gen = (rng.normal(loc=2.0, size=(m, 32)) * 0.9).astype(np.float32)
    ours = prdc(ref, gen, k)
    theirs = _reference_prdc(ref, gen, k)
    assert ours["precision"] == pytest.approx(theirs["precision"], abs=1.0 / m + 1e-12)
    assert ours["recall"] == pytest.approx(theirs["recall"], abs=1.0 / n + 1e-12)
    assert ours["coverage"] == pytest.approx(theirs["coverage"], abs=1.0 / n + 1e-12)
    assert ours["density"] == pytest.approx(theirs["density"], abs=1.0 / (k * m) + 1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("d", "top"), [(1, 6), (3, 4), (8, 2)])
def test_grid_data_decide_ties_exactly_as_prdc(dtype: str, d: int, top: int) -> None:
    """Integer (count, one-hot) features put samples exactly on ball boundaries; prdc, on the
    raw values, says outside. The k-NN centre is rounded to the data's grid (knn_center), so
    the centred distances stay exact and every seed matches prdc (before: 99 of 100 seeds at
    d = 3 differed, by up to 0.39)."""
    for seed in range(12):
        rng = np.random.default_rng(seed)
        ref = rng.integers(0, top, size=(60, d)).astype(float)
        gen = rng.integers(0, top, size=(50, d)).astype(float)
        ours, theirs = prdc(ref, gen, 3, dtype=dtype), _reference_prdc(ref, gen, 3)
        assert ours == pytest.approx(theirs, abs=1e-12), (seed, ours, theirs)
    ref, gen = np.array([[5.0], [4.0], [2.0]]), np.array([[0.0], [0.0], [2.0]])
    assert prdc(ref, gen, 1, dtype=dtype) == pytest.approx(_reference_prdc(ref, gen, 1), abs=1e-12)


@pytest.mark.parametrize(("sep", "spread"), [(1e3, 0.1), (1e4, 1.0), (1e3, 1.0)])
def test_float32_falls_back_to_float64_where_it_cannot_resolve_the_modes(sep: float, spread: float) -> None:
    """Two reference modes far apart, samples on one: centred on the mean, every row is
    sep / 2 from the centre, and float32's expansion cancelled the unit distances away (all
    PRDC values 0 at sep = 1e4). float32_is_enough notices and the pass runs in float64."""
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.normal(size=(150, 4)) * spread, rng.normal(size=(150, 4)) * spread + sep])
    gen = rng.normal(size=(200, 4)) * spread * 1.1
    theirs = _reference_prdc(ref, gen, 5)
    assert prdc(ref, gen, 5) == pytest.approx(theirs, abs=1e-9)  # float32 default
    assert prdc(ref.astype(np.float32), gen.astype(np.float32), 5) == pytest.approx(
        _reference_prdc(ref.astype(np.float32).astype(float), gen.astype(np.float32).astype(float), 5), abs=1e-9
    )


def test_chunk_sizes_give_identical_prdc() -> None:
    rng = np.random.default_rng(3)
    ref, gen = rng.normal(size=(70, 4)), rng.normal(size=(90, 4))
    results = [prdc(ref, gen, 5, chunk_size=c) for c in (1, 7, 64, None)]
    assert all(r == results[0] for r in results[1:])


def test_identical_sets_are_fully_covered() -> None:
    x = np.random.default_rng(0).normal(size=(120, 6))
    r = prdc(x, x, 5)
    assert r["coverage"] == 1.0 and r["precision"] == 1.0 and r["recall"] == 1.0


def test_expected_coverage_of_two_draws() -> None:
    """Naeem et al. 2020: for N reference and M sample points drawn from one continuous
    distribution, E[coverage] = 1 - prod_{i=1..k} (N - i) / (N + M - i), distribution-free;
    tends to 1 - 2^-k from above as N = M grows (the
    ball of a reference point misses every sample iff its k nearest neighbours among the other
    N - 1 references and the M samples are all references). Density's expectation is 1."""
    n = m = 300
    k = 5
    expected = 1.0 - math.prod((n - i) / (n + m - i) for i in range(1, k + 1))
    assert 1 - 2.0**-k < expected < 1 - 2.0**-k + 0.002  # each factor is just under 1/2
    rng = np.random.default_rng(11)
    cov, dens = [], []
    for _ in range(8):
        ref, gen = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
        r = prdc(ref, gen, k)
        cov.append(r["coverage"])
        dens.append(r["density"])
    assert np.mean(cov) == pytest.approx(expected, abs=0.012)
    assert np.mean(dens) == pytest.approx(1.0, abs=0.06)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 40),
    m=st.integers(1, 40),
    d=st.integers(1, 5),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.01, 100.0),
)
def test_prdc_ranges(n: int, m: int, d: int, k: int, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n, d)) * scale
    gen = rng.normal(size=(m, d)) * scale + rng.normal() * scale
    r = prdc(ref, gen, k)
    for key in ("precision", "recall", "coverage"):
        assert 0.0 <= r[key] <= 1.0
    assert 0.0 <= r["density"] <= n / k
    # translation invariance and order invariance of the sample set
    shift = rng.normal(size=d) * scale
    r2 = prdc(ref + shift, gen[::-1] + shift, k, dtype="float64")
    r3 = prdc(ref, gen, k, dtype="float64")
    assert r2["coverage"] == pytest.approx(r3["coverage"], abs=1.0 / n + 1e-12)


def test_group_coverage() -> None:
    covered = np.array([True, False, True, True, False])
    tail = np.array([False, True, False, False, True])
    assert group_coverage(covered, tail) == 0.0
    assert group_coverage(covered, ~tail) == 1.0
    with pytest.raises(InputError):
        group_coverage(covered, np.zeros(5, dtype=bool))
    with pytest.raises(InputError):
        group_coverage(covered, np.ones(4, dtype=bool))


def test_assign_to_centroids_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    x, c = rng.normal(size=(500, 7)), rng.normal(size=(9, 7))
    np.testing.assert_array_equal(assign_to_centroids(x, c, chunk_size=37), pairwise_distances_argmin(x, c))


def test_cluster_mass_and_rare_modes() -> None:
    mass = cluster_mass([0, 0, 0, 1, 2, 2, 2, 2], 4)
    np.testing.assert_allclose(mass, [3 / 8, 1 / 8, 4 / 8, 0.0])
    kept = rare_modes_kept([0.5, 0.04, 0.02, 0.44], [0.55, 0.02, 0.009, 0.421], [False, True, True, False])
    assert kept.tolist() == [True, False]  # exactly half is kept; under half is not
    with pytest.raises(InputError):
        rare_modes_kept([0.5], [0.5, 0.5], [True])
