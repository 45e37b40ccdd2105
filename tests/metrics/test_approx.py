"""The approximate (IVF) k-NN mode: options, the index, the generator state and panel with
``knn="ivf"``, caching, and the chunked input conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from collapse_monitor.errors import ConfigError, InputError
from collapse_monitor.metrics import prdc
from collapse_monitor.metrics.approx import (
    IVFIndex,
    build_ivf,
    centred_tensor,
    check_knn,
    default_nlist,
    ivf_cross_pass,
    ivf_kth_d2,
)
from collapse_monitor.metrics.cache import ReferenceCache
from collapse_monitor.metrics.generator import (
    GeneratorRefState,
    build_generator_state,
    generator_panel,
    get_generator_state,
)
from collapse_monitor.metrics.knn import knn_center, prdc_pass
from collapse_monitor.types import Reference


def blobs(n: int, seed: int, d: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(100).normal(size=(8, d)) * 5.0
    return centres[rng.integers(0, 8, size=n)] + rng.normal(size=(n, d))


def test_options_are_validated() -> None:
    assert check_knn("exact") == ("exact", None, None)
    assert check_knn("ivf", 10, 3) == ("ivf", 10, 3)
    for bad in ("hnsw", None, "IVF"):
        with pytest.raises(ConfigError) as e:
            check_knn(bad)
        assert e.value.key == "knn"
    for key, kw in (("nlist", {"nlist": 0}), ("nprobe", {"nprobe": 2.5}), ("nprobe", {"nprobe": True})):
        with pytest.raises(ConfigError) as e:
            check_knn("ivf", **kw)
        assert e.value.key == key
    with pytest.raises(ConfigError):
        prdc(blobs(50, 0), blobs(50, 1), knn="annoy")


def test_default_nlist() -> None:
    assert default_nlist(1) == 1
    assert default_nlist(10_000) == 100
    assert default_nlist(2) == 1


def test_index_assigns_each_row_to_its_nearest_centroid_deterministically() -> None:
    x = torch.from_numpy(blobs(600, 0)).float()
    a, b = build_ivf(x, 16, seed=3), build_ivf(x, 16, seed=3)
    np.testing.assert_array_equal(a.assign, b.assign)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.nlist == 16 and a.assign.shape == (600,)
    d2 = ((x.numpy()[:, None, :] - a.centroids[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(a.assign, d2.argmin(axis=1))
    assert build_ivf(x[:5], 16).nlist == 5  # never more cells than rows


def test_cross_pass_with_all_cells_probed_matches_brute_force() -> None:
    from scipy.spatial.distance import cdist

    ref, gen = blobs(300, 1), blobs(200, 2) * 1.2
    r, s = torch.from_numpy(ref), torch.from_numpy(gen)
    ri, si = build_ivf(r, 7), build_ivf(s, 5)
    with torch.inference_mode():
        r2_ref, r2_s = ivf_kth_d2(r, 3, ri, 7), ivf_kth_d2(s, 3, si, 5)
        counts, min_d2, in_ball = ivf_cross_pass(r, s, r2_ref, r2_s, ri, si, nprobe=7)
    d2 = cdist(ref, gen, "sqeuclidean")
    np.testing.assert_array_equal(counts.numpy(), (d2 < r2_ref.numpy()[:, None]).sum(axis=0))
    np.testing.assert_allclose(min_d2.numpy(), d2.min(axis=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(in_ball.numpy(), (d2 < r2_s.numpy()[None, :]).any(axis=1))


def test_small_and_degenerate_sets() -> None:
    one = torch.zeros((1, 3))
    assert ivf_kth_d2(one, 5, build_ivf(one)).tolist() == [0.0]
    dup = np.zeros((6, 2))
    r = prdc(dup, dup, 3, knn="ivf")
    assert r == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}  # radius-0 balls are empty


def test_generator_state_and_panel_with_ivf() -> None:
    ref, gen = blobs(1500, 3), blobs(1000, 4)
    exact_state = build_generator_state(ref, n_clusters=8)
    state = build_generator_state(ref, n_clusters=8, knn="ivf", nlist=20, nprobe=4)
    assert state.knn == "ivf" and state.nprobe == 4 and state.ivf_index is not None
    assert state.ivf_index.nlist == 20 and exact_state.ivf_index is None
    assert np.all(state.radii2 >= exact_state.radii2 * (1 - 1e-5) - 1e-6)
    res = generator_panel(state, ref, gen, n_boot=20)
    exact = generator_panel(exact_state, ref, gen, n_boot=20)
    assert set(res.metrics) == set(exact.metrics)
    for key in ("coverage", "precision", "tail_coverage"):
        assert abs(res.metrics[key].value - exact.metrics[key].value) <= 0.03, key
    for key in ("vendi_score", "variance_ratio", "frechet_distance"):  # not k-NN based: identical
        assert res.metrics[key].value == exact.metrics[key].value, key
    # probing every cell reproduces the exact coverage (the radii stay the state's, at nprobe=4)
    allcells = generator_panel(state, ref, gen, n_boot=20, nprobe=10_000)
    assert allcells.metrics["coverage"].value >= res.metrics["coverage"].value - 1e-12
    with pytest.raises(ConfigError):
        generator_panel(state, ref, gen, knn="exact")


def test_ivf_state_round_trips_through_the_disk_cache(tmp_path: object) -> None:
    ref_emb = blobs(800, 5)
    reference = Reference(embeddings=ref_emb)
    cache = ReferenceCache(tmp_path)  # type: ignore[arg-type]
    a = get_generator_state(reference, cache, knn="ivf", nprobe=3)
    fresh = ReferenceCache(tmp_path)  # type: ignore[arg-type]
    b = get_generator_state(reference, fresh, knn="ivf", nprobe=3)
    assert fresh.hits == 1 and fresh.misses == 0  # read from disk
    assert b.knn == "ivf" and b.nprobe == 3
    np.testing.assert_array_equal(a.ivf_assign, b.ivf_assign)
    np.testing.assert_array_equal(a.radii2, b.radii2)
    exact = get_generator_state(reference, cache)
    assert exact.knn == "exact" and cache.misses == 2  # a different key, built anew


def test_state_files_from_before_knn_load_as_exact() -> None:
    state = build_generator_state(blobs(300, 6), n_clusters=4)
    arrays = state.to_arrays()
    for key in ("knn", "nprobe", "ivf_centroids", "ivf_assign"):
        del arrays[key]
    old = GeneratorRefState.from_arrays(arrays)
    assert old.knn == "exact" and old.ivf_index is None
    np.testing.assert_array_equal(old.radii2, state.radii2)


def test_centred_tensor_checks_and_converts_in_blocks() -> None:
    x = np.random.default_rng(0).normal(loc=3.0, size=(1000, 4)).astype(np.float32)
    t, center = centred_tensor(x, "samples", None, torch.float32, "cpu", rows=128)
    x64 = x.astype(np.float64)
    # the exact pass's centre: the mean rounded to the data's grid (knn_center)
    np.testing.assert_array_equal(center, knn_center(x64.mean(axis=0), x64.std(axis=0, ddof=1)))
    np.testing.assert_allclose(t.numpy(), (x - center).astype(np.float32), rtol=1e-6, atol=1e-6)
    bad = x.copy()
    bad[900, 2] = np.inf
    with pytest.raises(InputError) as e:
        centred_tensor(bad, "samples", None, torch.float32, "cpu", rows=128)
    assert e.value.field == "samples"
    with pytest.raises(InputError):
        centred_tensor(x, "samples", center, torch.float32, "cpu", width=5)
    with pytest.raises(InputError):
        centred_tensor(np.ones(4), "samples", None, torch.float32, "cpu")
    with pytest.raises(InputError):
        centred_tensor([["a", "b"]], "samples", None, torch.float32, "cpu")
    with pytest.raises(InputError) as e:
        prdc_pass(blobs(100, 0), blobs(100, 1), knn="ivf", ref_index=IVFIndex(np.zeros((2, 6)), np.zeros(5, np.int64)))
    assert e.value.field == "ref_index"
