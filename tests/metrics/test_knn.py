"""Exact chunked k-NN: equal to prdc's dense computation and to brute force, chunk-size
invariant, bounded in memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import prdc as prdc_ref
import pytest
from scipy.spatial.distance import cdist

from collapse_monitor.errors import ConfigError, InputError
from collapse_monitor.metrics.knn import as_matrix, kth_nn_radii, prdc_pass


def _brute_radii(x: np.ndarray, k: int) -> np.ndarray:
    d = cdist(x, x)
    return np.sort(d, axis=1)[:, min(k, len(x) - 1)]


@pytest.mark.parametrize(("n", "d", "k"), [(30, 3, 1), (120, 8, 5), (200, 33, 10), (6, 4, 5)])
def test_radii_equal_prdc_float64(n: int, d: int, k: int) -> None:
    x = np.random.default_rng(n).normal(size=(n, d))
    ours = kth_nn_radii(x, k, dtype="float64")
    if k + 1 < n:  # prdc's argpartition needs k + 1 < n
        ref = prdc_ref.prdc.compute_nearest_neighbour_distances(x, k)
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours, _brute_radii(x, k), rtol=1e-12, atol=1e-12)


def test_radii_float32_close_to_float64() -> None:
    x = np.random.default_rng(0).normal(loc=5.0, size=(300, 16))  # off-centre: centring matters
    np.testing.assert_allclose(kth_nn_radii(x, 5), kth_nn_radii(x, 5, dtype="float64"), rtol=2e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chunk_sizes_give_the_same_results(dtype: str) -> None:
    rng = np.random.default_rng(1)
    ref, gen = rng.normal(size=(90, 6)), rng.normal(size=(70, 6)) + 0.2
    passes = [prdc_pass(ref, gen, 4, chunk_size=c, dtype=dtype) for c in (1, 7, 64, None)]
    tol = 1e-5 if dtype == "float32" else 1e-12
    for p in passes[1:]:
        np.testing.assert_array_equal(p.ball_counts, passes[0].ball_counts)
        np.testing.assert_array_equal(p.covered, passes[0].covered)
        np.testing.assert_array_equal(p.ref_in_sample_ball, passes[0].ref_in_sample_ball)
        np.testing.assert_allclose(p.ref_radii2, passes[0].ref_radii2, rtol=tol)
        np.testing.assert_allclose(p.sample_radii2, passes[0].sample_radii2, rtol=tol)


def test_cross_pass_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    ref, gen = rng.normal(size=(80, 5)), rng.normal(size=(60, 5)) * 1.3
    k = 3
    p = prdc_pass(ref, gen, k, dtype="float64", chunk_size=13)
    r_ref, r_gen = _brute_radii(ref, k), _brute_radii(gen, k)
    d = cdist(ref, gen)
    np.testing.assert_array_equal(p.ball_counts, (d < r_ref[:, None]).sum(axis=0))
    np.testing.assert_array_equal(p.ref_in_sample_ball, (d < r_gen[None, :]).any(axis=1))
    np.testing.assert_array_equal(p.covered, d.min(axis=1) < r_ref)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (7, 5), (13, 60), (80, 17), (200, None)])
def test_cross_pass_blocks_in_both_directions_match_brute_force(dtype: str, rows: int, cols: int | None) -> None:
    """Row and column blocks (the wide-m tiling of :func:`cross_tiles`) give the dense answer:
    counts summed per column block, coverage and recall or-ed over a row's column blocks."""
    import torch

    from collapse_monitor.metrics._knn_blocks import _cross_pass, cross_tiles

    rng = np.random.default_rng(3)
    ref, gen = rng.normal(size=(80, 5)), rng.normal(size=(60, 5)) * 1.2
    k = 3
    r2_ref, r2_gen = _brute_radii(ref, k) ** 2, _brute_radii(gen, k) ** 2
    r2_ref[4] = 0.0  # a radius-0 ball contains nothing, not even a sample at distance 0
    tdt = getattr(torch, dtype)
    t = [torch.from_numpy(a).to(tdt) for a in (ref, gen, r2_ref, r2_gen)]
    counts, covered, in_ball = _cross_pass(*t, rows, cols=cols)
    d2 = cdist(ref, gen, "sqeuclidean")
    inside = d2 < np.where(r2_ref > 0, r2_ref, -np.inf)[:, None]
    np.testing.assert_array_equal(counts.numpy(), inside.sum(axis=0))
    np.testing.assert_array_equal(covered.numpy(), inside.any(axis=1))
    np.testing.assert_array_equal(in_ball.numpy(), (d2 < r2_gen[None, :]).any(axis=1))
    assert cross_tiles(50_000, 900) == (4500, 10_000)  # wide m: 5 column blocks, 5 x taller
    assert cross_tiles(10_000, 900) == (900, 10_000)
    assert cross_tiles(60, 13, 17) == (13, 17)


def test_small_sets_and_duplicates() -> None:
    assert kth_nn_radii(np.ones((1, 3)), 5).tolist() == [0.0]
    # fewer rows than k + 1: the farthest other row
    x = np.array([[0.0], [1.0], [3.0]])
    assert kth_nn_radii(x, 5, dtype="float64").tolist() == [3.0, 2.0, 3.0]
    # k + 1 identical rows: radius 0, and nothing is strictly inside a radius-0 ball
    dup = np.zeros((4, 2))
    assert kth_nn_radii(dup, 3).tolist() == [0.0] * 4
    p = prdc_pass(dup, dup, 3)
    assert p.ball_counts.tolist() == [0] * 4
    assert not p.covered.any() and not p.ref_in_sample_ball.any()


def test_bad_inputs_and_options() -> None:
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(InputError) as e:
        kth_nn_radii(np.array([1.0, 2.0]), 1)
    assert e.value.field == "X"
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputError):
        kth_nn_radii(bad, 1)
    with pytest.raises(InputError) as e:
        prdc_pass(x, np.ones((4, 2)))
    assert e.value.field == "samples"
    with pytest.raises(ConfigError):
        kth_nn_radii(x, 0)
    with pytest.raises(ConfigError):
        kth_nn_radii(x, 2, chunk_size=0)
    with pytest.raises(ConfigError):
        kth_nn_radii(x, 2, dtype="float16")
    with pytest.raises(InputError):
        prdc_pass(x, x, 2, ref_radii2=np.ones(3))


def test_does_not_change_torch_threads() -> None:
    import torch

    before = torch.get_num_threads()
    kth_nn_radii(np.random.default_rng(0).normal(size=(50, 4)), 3)
    assert torch.get_num_threads() == before


def test_cuda_request_without_cuda_is_a_config_error() -> None:
    import torch

    x = np.random.default_rng(0).normal(size=(10, 3))
    if torch.cuda.is_available():
        np.testing.assert_allclose(kth_nn_radii(x, 2, device="cuda"), kth_nn_radii(x, 2), rtol=1e-5)
    else:
        with pytest.raises(ConfigError):
            kth_nn_radii(x, 2, device="cuda")
    np.testing.assert_array_equal(kth_nn_radii(x, 2, device="auto"), kth_nn_radii(x, 2, device=None))


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from collapse_monitor.metrics import knn

    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    def peak():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

    n, chunk = int(sys.argv[1]), None if sys.argv[2] == "None" else int(sys.argv[2])
    knn.DEFAULT_MEMORY_BUDGET = int(sys.argv[3])
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(n, 4)).astype(np.float32)
    gen = rng.normal(size=(n, 4)).astype(np.float32)
    knn.prdc_pass(ref[:300], gen[:300], 5)  # warm up torch's allocator and thread pool
    base = rss()
    p = knn.prdc_pass(ref, gen, 5, chunk_size=chunk)
    print(json.dumps({"growth": peak() - base, "coverage": float(p.covered.mean())}))
    """
)


@pytest.mark.parametrize(("chunk", "budget"), [(512, 256 * 2**20), (None, 24 * 2**20)])
def test_memory_stays_below_n_by_n(chunk: int | None, budget: int) -> None:
    """At n = 10,000 one n x n float32 matrix is 400 MB; the whole prdc pass (two self passes
    and the cross pass) must peak far below it: blocks are chunk x n, or sized from the
    memory budget (24 MiB here, so the automatic choice is what is checked)."""
    n = 10_000
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(n), str(chunk), str(budget)],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    n_by_n = n * n * 4
    assert res["growth"] < 0.25 * n_by_n, res
    assert 0.9 < res["coverage"] <= 1.0


def test_default_blocks_fit_the_budget() -> None:
    from collapse_monitor.metrics.knn import DEFAULT_MEMORY_BUDGET, _row_block, _square_block

    for m in (10, 10_000, 50_000, 1_000_000):
        for itemsize in (4, 8):
            rows = _row_block(m, itemsize, None, DEFAULT_MEMORY_BUDGET)
            assert rows >= 1
            assert rows == 1 or rows * m * (itemsize + 2) <= DEFAULT_MEMORY_BUDGET
    for n in (10, 10_000, 50_000, 1_000_000):
        side = _square_block(n, 4, None, DEFAULT_MEMORY_BUDGET)
        assert side >= 1 and side * side * 10 <= DEFAULT_MEMORY_BUDGET
    assert _square_block(1_000_000, 4, None, DEFAULT_MEMORY_BUDGET) ** 2 * 10 > DEFAULT_MEMORY_BUDGET * 0.99
    assert _row_block(50_000, 4, 7, DEFAULT_MEMORY_BUDGET) == _square_block(50_000, 4, 7, DEFAULT_MEMORY_BUDGET) == 7


def test_float32_inputs_are_validated_without_a_copy_and_give_the_same_bits() -> None:
    x = np.ones((4, 3), dtype=np.float32)
    assert as_matrix(x, "x", keep_float32=True) is x
    assert as_matrix(x, "x").dtype == np.float64
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        as_matrix(bad, "x", keep_float32=True)
    rng = np.random.default_rng(5)
    ref = (rng.normal(size=(300, 7)) * 3 + 2).astype(np.float32)
    gen = (rng.normal(size=(250, 7)) * 2.5 + 2).astype(np.float32)
    for dtype in ("float32", "float64"):
        p32 = prdc_pass(ref, gen, 4, dtype=dtype)  # kept float32 until the cast
        p64 = prdc_pass(ref.astype(np.float64), gen.astype(np.float64), 4, dtype=dtype)
        for field in ("ref_radii2", "sample_radii2", "ball_counts", "ref_covered", "ref_in_sample_ball"):
            np.testing.assert_array_equal(getattr(p32, field), getattr(p64, field))
