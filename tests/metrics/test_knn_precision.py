"""float32 vs float64 in the k-NN passes, on inputs built to defeat float32, against the
``prdc`` package (Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative
Models", ICML 2020; float64 dense distances).

The passes expand ``|x - y|^2 = |x|^2 + |y|^2 - 2 x.y``; in float32 that cancels away
distances that are small next to ``|x|^2``. The exact and inverted-file paths, the functional
``prdc`` and the monitor's generator panel must all notice it (per row: a few rows of a tight
cluster far from the centre as well as far-apart modes) and fall back to float64, and the
inverted file must centre on the exact path's grid-rounded centre, so that probing every cell
reproduces the exact values. Complex input is refused (the float64 cast would drop the
imaginary part with a warning only)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import prdc as prdc_ref
import pytest
import torch
from scipy.spatial.distance import cdist

from collapse_monitor.errors import InputError
from collapse_monitor.metrics import prdc, vendi_score
from collapse_monitor.metrics.approx import centred_tensor
from collapse_monitor.metrics.generator import build_generator_state, generator_panel
from collapse_monitor.metrics.knn import as_matrix, kth_nn_radii, prdc_pass, unresolved_rows

KEYS = ("precision", "recall", "density", "coverage")
ALL_CELLS = 10**6  # nprobe above nlist: every cell probed, the inverted file is exact


def _reference_prdc(ref: np.ndarray, gen: np.ndarray, k: int) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        out = prdc_ref.compute_prdc(real_features=ref, fake_features=gen, nearest_k=k)
    return {key: float(v) for key, v in out.items()}


def _tight_far_cluster(spread: float, seed: int, n_bulk: int = 400, n_tight: int = 40) -> np.ndarray:
    """``n_bulk`` rows of N(0, I) and ``n_tight`` rows of spread ``spread`` at 20 e1 (d = 16):
    the median k-NN radius is that of the bulk, the cluster's radii are ~1e-3 of it or less."""
    rng = np.random.default_rng(seed)
    c = np.zeros(16)
    c[0] = 20.0
    return np.vstack([rng.normal(size=(n_bulk, 16)), c + spread * rng.normal(size=(n_tight, 16))])


def _two_modes(m: int, sep: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(size=(m, 4)), rng.normal(size=(m, 4)) + sep])


@pytest.mark.parametrize("spread", [1e-3, 1e-4])
def test_tight_cluster_far_from_the_centre_matches_prdc(spread: float) -> None:
    """Before: the float32 test compared eps * max|x|^2 with the *median* squared radius, which
    the 400 bulk rows set; the 40 cluster rows kept float32 radii of pure round-off and none of
    their balls held a sample (coverage 0.886 against prdc's 0.975 at spread 1e-3)."""
    ref, gen = _tight_far_cluster(spread, 0), _tight_far_cluster(spread, 1)
    theirs = _reference_prdc(ref, gen, 5)
    ours = prdc(ref, gen, 5)  # float32 default
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), (key, ours, theirs)
    p = prdc_pass(ref, gen, 5)
    assert p.covered[400:].mean() > 0.9  # the cluster's own balls hold its samples
    # only the cluster's rows are recomputed: the bulk keeps its float32 radii
    r32 = torch.from_numpy((ref - ref.mean(axis=0)).astype(np.float32))
    bad = unresolved_rows(r32, kth_nn_radii(ref, 5, dtype="float64", squared=True))
    assert bad[400:].all() and not bad[:400].any()
    np.testing.assert_allclose(kth_nn_radii(ref, 5)[400:], kth_nn_radii(ref, 5, dtype="float64")[400:], rtol=1e-6)
    small = prdc_pass(ref, gen, 5, chunk_size=7)  # the float64 patches in small blocks too
    for field in ("ball_counts", "ref_covered", "ref_in_sample_ball"):
        np.testing.assert_array_equal(getattr(small, field), getattr(p, field))


def test_tight_cluster_through_the_generator_panel_matches_prdc() -> None:
    """The monitor's path: the state's cached radii and the panel's pass (before: coverage 0.889
    with the default float32 state against 0.977 with a float64 one)."""
    ref, gen = _tight_far_cluster(1e-3, 2), _tight_far_cluster(1e-3, 3)
    theirs = _reference_prdc(ref, gen, 5)
    state = build_generator_state(ref, n_clusters=4)
    assert state.dtype == "float32"  # a few rows patched in float64, not the whole pass
    ours = generator_panel(state, ref, gen, n_boot=10).metrics
    for key in KEYS:
        assert ours[key].value == pytest.approx(theirs[key], abs=1e-9), key


@pytest.mark.parametrize("sep", [3e3, 1e4])
def test_ivf_two_far_modes_every_cell_probed_matches_prdc(sep: float) -> None:
    """Before: the inverted file ran in float32 with no fallback; at sep = 1e4 coverage came out
    0.003 against 0.947."""
    ref, gen = _two_modes(150, sep, 0), _two_modes(150, sep, 1)
    theirs = _reference_prdc(ref, gen, 5)
    ours = prdc(ref, gen, 5, knn="ivf", nprobe=ALL_CELLS)
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), (key, ours, theirs)


def test_ivf_tight_cluster_every_cell_probed_matches_prdc() -> None:
    """A few unresolved rows on the inverted-file path: they are recomputed exactly in float64."""
    ref, gen = _tight_far_cluster(1e-3, 4), _tight_far_cluster(1e-3, 5)
    theirs = _reference_prdc(ref, gen, 5)
    ours = prdc(ref, gen, 5, knn="ivf", nprobe=ALL_CELLS)
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), (key, ours, theirs)


def test_ivf_generator_panel_on_far_modes_matches_the_exact_panel() -> None:
    """Before: an ivf state on two modes 1e4 apart reported coverage 0.003 and tail coverage
    0.03 (a false late collapse) where the exact panel reported 0.97 and 1.0."""
    ref, gen = _two_modes(150, 1e4, 6), _two_modes(150, 1e4, 7)
    exact = generator_panel(build_generator_state(ref, n_clusters=4), ref, gen, n_boot=10).metrics
    ivf_state = build_generator_state(ref, n_clusters=4, knn="ivf", nprobe=ALL_CELLS)
    ivf = generator_panel(ivf_state, ref, gen, n_boot=10).metrics
    theirs = _reference_prdc(ref, gen, 5)
    for key in (*KEYS, "tail_coverage", "head_coverage"):
        assert ivf[key].value == pytest.approx(exact[key].value, abs=1e-12), key
    for key in KEYS:
        assert ivf[key].value == pytest.approx(theirs[key], abs=1e-9), key


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ivf_integer_grid_every_cell_probed_matches_prdc(dtype: str) -> None:
    """Before: the inverted file centred on the raw mean, off the integer grid, so exact ties at
    a ball's boundary fell inside (precision 0.652 / density 0.518 in float32, 0.716 / 0.575 in
    float64, against prdc's 0.616 / 0.434)."""
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 4, (300, 3)).astype(float)
    gen = rng.integers(0, 4, (250, 3)).astype(float)
    theirs = _reference_prdc(ref, gen, 5)
    ours = prdc(ref, gen, 5, knn="ivf", nprobe=ALL_CELLS, dtype=dtype)
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), (key, ours, theirs)


def test_complex_input_is_refused_naming_the_field() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20, 3)) + 1j * rng.normal(size=(20, 3))
    x = rng.normal(size=(20, 3))
    cases = [
        (lambda: prdc(z, x), "reference"),
        (lambda: prdc(x, z), "samples"),
        (lambda: prdc(x, z, knn="ivf"), "samples"),
        (lambda: prdc(z, x, knn="ivf"), "reference"),
        (lambda: vendi_score(z), "X"),
        (lambda: as_matrix(z.tolist(), "emb"), "emb"),
        (lambda: as_matrix(torch.from_numpy(z), "emb"), "emb"),
        (lambda: centred_tensor(z.astype(np.complex64), "emb", None, torch.float32, "cpu"), "emb"),
    ]
    for call, field in cases:
        with pytest.raises(InputError) as e:
            call()
        assert e.value.field == field


def _brute_prdc(ref: np.ndarray, gen: np.ndarray, k: int) -> dict[str, float]:
    """PRDC from scipy's direct distances (``sqrt(sum (x - y)^2)``: exactly 0 between copies,
    where ``prdc``'s expansion leaves a round-off of up to ``1e-7`` in the radius)."""
    r_ref = np.sort(cdist(ref, ref), axis=1)[:, k]
    r_gen = np.sort(cdist(gen, gen), axis=1)[:, k]
    dist = cdist(ref, gen)
    inside = dist < r_ref[:, None]
    return {
        "precision": float(inside.any(axis=0).mean()),
        "recall": float((dist < r_gen[None, :]).any(axis=1).mean()),
        "density": float(inside.sum() / (k * gen.shape[0])),
        "coverage": float((dist.min(axis=1) < r_ref).mean()),
    }


@pytest.mark.parametrize("d", [16, 64])
def test_duplicates_away_from_the_centre_keep_an_empty_ball(d: int) -> None:
    """k + 1 copies of a row away from the centre: float32 cannot tell their radius 0 from
    round-off (before: radii of 1.5e-5 at d = 16, and a copy among the samples fell inside
    them), so they are recomputed in float64, where copies are at distance exactly 0 (the
    expansion alone leaves ``eps |x|^2``, as in ``prdc``, whose radii there are up to 5e-7):
    an empty ball, and a sample equal to them is not inside it."""
    k = 5
    for seed in range(10):
        rng = np.random.default_rng(seed)
        dup = rng.normal(size=(1, d)) + 3.0
        ref = np.vstack([rng.normal(size=(40, d)), np.repeat(dup, k + 1, axis=0)])
        gen = np.vstack([rng.normal(size=(40, d)), dup])
        p = prdc_pass(ref, gen, k)
        assert p.ref_radii2[-(k + 1) :].tolist() == [0.0] * (k + 1)
        assert not p.covered[-(k + 1) :].any() and p.ball_counts[-1] == 0
        ours, brute = prdc(ref, gen, k), _brute_prdc(ref, gen, k)
        for key in KEYS:
            assert ours[key] == pytest.approx(brute[key], abs=1e-12), (seed, key)
