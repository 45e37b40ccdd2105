"""The k-NN paths agree: dense brute force, the chunked exact engine at any block layout,
the filtered top-k merge against the plain one, any torch thread count, and the approximate
(IVF) path within its error bound (equal to exact when it probes every cell)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import prdc as prdc_ref
import pytest
import torch
from scipy.spatial.distance import cdist

from collapse_monitor.metrics import prdc
from collapse_monitor.metrics.approx import build_ivf, ivf_kth_d2
from collapse_monitor.metrics.coverage import prdc_from_pass
from collapse_monitor.metrics.knn import _merge_filtered, _merge_topk, _self_kth_d2, _self_radii2, prdc_pass


def clustered(n: int, d: int, seed: int, *, sort: bool = False) -> np.ndarray:
    """A mixture of 12 tight clusters; ``sort=True`` orders the rows by cluster, so that the
    first blocks a row meets hold no neighbour of it (the filtered merge's worst case)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d)) * 6.0
    comp = rng.integers(0, 12, size=n)
    if sort:
        comp = np.sort(comp)
    return centres[comp] + rng.normal(size=(n, d))


def brute_kth_d2(x: np.ndarray, k: int) -> np.ndarray:
    d2 = cdist(x, x, "sqeuclidean")
    return np.sort(d2, axis=1)[:, min(k, len(x) - 1)]


@pytest.mark.parametrize("sort", [False, True])
@pytest.mark.parametrize(("side", "width"), [(64, None), (64, 150), (37, 1000), (500, 500), (1, 3)])
def test_self_pass_equals_brute_force_at_any_layout(sort: bool, side: int, width: int | None) -> None:
    x = clustered(300, 7, 0, sort=sort)
    t = torch.from_numpy(x - x.mean(axis=0))  # float64: exact comparison with scipy
    with torch.inference_mode():
        got = _self_kth_d2(t, 5, side, width).numpy()
    np.testing.assert_allclose(got, brute_kth_d2(x, 5), rtol=1e-10, atol=1e-10)


def test_ties_and_duplicates_match_brute_force() -> None:
    # integer grid points with many exact duplicates: every order statistic is a tie
    x = np.random.default_rng(3).integers(0, 3, size=(400, 3)).astype(np.float64)
    t = torch.from_numpy(x)
    for side, width in ((50, 50), (50, 400), (7, 13)):
        with torch.inference_mode():
            got = _self_kth_d2(t, 5, side, width).numpy()
        np.testing.assert_array_equal(got, brute_kth_d2(x, 5))


@pytest.mark.parametrize("by_column", [False, True])
def test_filtered_merge_equals_plain_top_k(by_column: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        rows, cols, kk = 40, 90, 6
        block = torch.randint(0, 30, (rows, cols), generator=gen).float()  # many ties
        n_owner = cols if by_column else rows
        best = torch.sort(torch.randint(0, 40, (n_owner, kk), generator=gen).float(), dim=1).values
        if trial % 3 == 0:
            best[: n_owner // 2] = float("inf")  # rows not seen yet
        thr = best.amax(dim=1)
        expected = best.clone()
        _merge_topk(expected, 0, n_owner, block.T if by_column else block, kk)
        mask = torch.empty(block.shape, dtype=torch.bool)
        _merge_filtered(best, thr, 0, block, mask, by_column=by_column)
        torch.testing.assert_close(torch.sort(best, dim=1).values, torch.sort(expected, dim=1).values)
        torch.testing.assert_close(thr, expected.amax(dim=1))


def test_chunked_paths_equal_dense_prdc() -> None:
    rng = np.random.default_rng(5)
    ref = clustered(700, 10, 1)
    gen = clustered(500, 10, 2) * 1.1 + rng.normal(size=(1, 10))
    dense = prdc_ref.compute_prdc(real_features=ref, fake_features=gen, nearest_k=5)
    for chunk in (None, 33, 256, 5000):
        got = prdc(ref, gen, 5, chunk_size=chunk, dtype="float64")
        assert got == pytest.approx({k: float(v) for k, v in dense.items()}, abs=1e-12), chunk


def test_budget_sized_strips_equal_square_blocks() -> None:
    x = torch.from_numpy(clustered(2000, 16, 4).astype(np.float32))
    with torch.inference_mode():
        default = _self_radii2(x, 5, None)
        narrow = _self_radii2(x, 5, None, budget=300 * 2000)  # several column pieces per strip
        square = _self_radii2(x, 5, 128)
    torch.testing.assert_close(default, narrow, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(default, square, rtol=1e-6, atol=1e-6)


_THREADS_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np, torch
    torch.set_num_threads(int(sys.argv[1]))
    from collapse_monitor.metrics.knn import prdc_pass
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(1500, 64)).astype(np.float32)
    gen = (rng.normal(size=(1200, 64)) * 1.1).astype(np.float32)
    out = {}
    for knn in ("exact", "ivf"):
        p = prdc_pass(ref, gen, 5, knn=knn)
        h = hashlib.sha256()
        for a in (p.ref_radii2, p.sample_radii2, p.ball_counts, p.ref_covered, p.ref_in_sample_ball):
            h.update(np.ascontiguousarray(a).tobytes())
        out[knn] = h.hexdigest()
    print(json.dumps({"threads": torch.get_num_threads(), **out}))
    """
)


def test_thread_count_does_not_change_results() -> None:
    runs = []
    for threads in (1, 2):
        proc = subprocess.run(
            [sys.executable, "-c", _THREADS_SCRIPT, str(threads)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert [r["threads"] for r in runs] == [1, 2]
    assert runs[0]["exact"] == runs[1]["exact"]
    assert runs[0]["ivf"] == runs[1]["ivf"]


def test_ivf_probing_every_cell_is_exact() -> None:
    ref = clustered(900, 8, 6)
    gen = clustered(700, 8, 7) * 0.9
    exact = prdc_from_pass(prdc_pass(ref, gen, 5, dtype="float64"))
    full = prdc_from_pass(prdc_pass(ref, gen, 5, dtype="float64", knn="ivf", nlist=12, nprobe=12))
    assert full == pytest.approx(exact, abs=1e-12)


def test_ivf_radii_never_below_exact() -> None:
    x = clustered(1500, 12, 8)
    t = torch.from_numpy((x - x.mean(axis=0)).astype(np.float32))
    with torch.inference_mode():
        exact = _self_radii2(t, 5, None)
        index = build_ivf(t, 40, seed=0)
        for nprobe in (1, 3, 40):
            approx = ivf_kth_d2(t, 5, index, nprobe)
            assert bool(torch.all(approx >= exact * (1 - 1e-5) - 1e-4)), nprobe
        torch.testing.assert_close(approx, exact, rtol=1e-5, atol=1e-4)  # nprobe = nlist


def test_ivf_within_measured_error_of_exact() -> None:
    """At default settings the approximate values stay close to the exact ones (the speed
    benchmark measures the error at 100,000 rows; this is a small-n guard on the same data
    shape: a 64-d subspace mixture in 128 dimensions)."""
    rng = np.random.default_rng(9)
    basis = np.linalg.qr(rng.normal(size=(128, 16)))[0]
    centres = rng.normal(size=(20, 16)) * 3.0

    def draw(n: int, scale: float, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        comp = r.integers(0, 20, size=n)
        return (centres[comp] + r.normal(size=(n, 16)) * scale) @ basis.T + r.normal(size=(n, 128)) * 0.3

    ref, gen = draw(6000, 1.0, 1), draw(6000, 0.9, 2)
    exact = prdc(ref, gen)
    approx = prdc(ref, gen, knn="ivf")
    assert abs(approx["coverage"] - exact["coverage"]) <= 0.01
    assert abs(approx["precision"] - exact["precision"]) <= 0.02
    assert abs(approx["recall"] - exact["recall"]) <= 0.03
    assert abs(approx["density"] - exact["density"]) <= 0.05 * exact["density"]


def test_threaded_block_passes_equal_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy passes over a block run on row ranges over threads; the outcome is the same
    bits at any thread count (blocks here are large enough, >= 2^20 entries, to be split)."""
    from collapse_monitor.metrics import _knn_blocks

    ref = clustered(2600, 8, 10).astype(np.float32)
    gen = (clustered(2200, 8, 11) * 1.05).astype(np.float32)
    runs = []
    for workers in (1, 3):
        monkeypatch.setattr(_knn_blocks, "_workers", lambda w=workers: w)
        runs.append(prdc_pass(ref, gen, 5))
    for field in ("ref_radii2", "sample_radii2", "ball_counts", "ref_covered", "ref_in_sample_ball"):
        np.testing.assert_array_equal(getattr(runs[0], field), getattr(runs[1], field), err_msg=field)
    exact = prdc_pass(ref, gen, 5, dtype="float64")
    np.testing.assert_allclose(runs[1].ref_radii2, exact.ref_radii2, rtol=1e-4)  # float32 vs float64


def test_candidate_merge_equals_top_k_when_a_few_rows_get_most_candidates() -> None:
    """Skewed candidates (one row with hundreds, the others one or two) take the sorting branch
    of the merge instead of the padded dense one; both equal a plain top-k."""
    from collapse_monitor.metrics._knn_blocks import _merge_candidates

    rng = np.random.default_rng(14)
    kk, rows = 6, 300
    best = np.sort(rng.integers(0, 50, size=(rows, kk)).astype(np.float32), axis=1)
    owner = np.concatenate([np.zeros(5000, dtype=np.int64), np.arange(1, rows, 2)])
    vals = rng.integers(0, 60, size=owner.size).astype(np.float32)  # ties included
    expected = best.copy()
    for r in range(rows):
        expected[r] = np.sort(np.concatenate([best[r], vals[owner == r]]))[:kk]
    thr = best.max(axis=1)
    _merge_candidates(best, thr, 0, owner, vals)
    np.testing.assert_array_equal(np.sort(best, axis=1), expected)
    np.testing.assert_array_equal(thr, expected.max(axis=1))


@pytest.mark.parametrize("width", [1, 15, 16, 17, 333])
def test_aligned_products_equal_plain_products(width: int) -> None:
    """Blocks are computed into rows padded to 16 elements; the visible block is the same."""
    from collapse_monitor.metrics._knn_blocks import _operands, _Products

    x = torch.from_numpy(clustered(400, 5, 15))
    lhs, rhs = _operands(x)
    products = _Products(lhs, rhs, 50, width)
    with torch.inference_mode():
        got = products(7, 57, 400 - width, 400).clone()
    d2 = cdist(x[7:57].numpy(), x[400 - width :].numpy(), "sqeuclidean")
    np.testing.assert_allclose(got.numpy(), d2, rtol=1e-9, atol=1e-9)


def test_accelerator_kernels_equal_the_cpu_ones_on_padded_blocks() -> None:
    """The torch-only block kernels (used on CUDA) run here on CPU tensors, on the same
    row-padded block views the engine produces, and agree with the numpy kernels."""
    from collapse_monitor.metrics._knn_blocks import (
        _cross_block_torch,
        _cross_rows_numpy,
        _merge_filtered_torch,
        _operands,
        _Products,
    )

    x = torch.from_numpy(clustered(500, 6, 16).astype(np.float32))
    lhs, rhs = _operands(x)
    with torch.inference_mode():
        block = _Products(lhs, rhs, 120, 333)(0, 120, 167, 500)  # 120 x 333 view of 120 x 336 rows
        assert not block.is_contiguous()
        for by_column in (False, True):
            n_owner = block.shape[1] if by_column else block.shape[0]
            best = torch.sort(torch.rand(n_owner, 6, generator=torch.Generator().manual_seed(3)) * 40, dim=1).values
            thr = best.amax(dim=1)
            expected = best.clone()
            _merge_topk(expected, 0, n_owner, block.T if by_column else block, 6)
            mask = torch.empty(block.shape, dtype=torch.bool)
            _merge_filtered_torch(best, thr, 0, block, mask, by_column=by_column)
            torch.testing.assert_close(torch.sort(best, dim=1).values, torch.sort(expected, dim=1).values)
        gen = torch.Generator().manual_seed(4)
        thr_r, thr_s = torch.rand(120, generator=gen) * 30, torch.rand(333, generator=gen) * 30
        got = (
            torch.zeros(333, dtype=torch.int64),
            torch.zeros(120, dtype=torch.bool),
            torch.zeros(120, dtype=torch.bool),
        )
        _cross_block_torch(block, torch.empty(block.shape, dtype=torch.bool), thr_r, thr_s, *got)
        want = (np.zeros(120, dtype=bool), np.zeros(120, dtype=bool))
        views = (block.numpy(), np.empty(block.shape, dtype=bool), thr_r.numpy(), thr_s.numpy())
        counts = _cross_rows_numpy(0, 120, views=views, outs=want)[0]
    np.testing.assert_array_equal(got[0].numpy(), counts)
    np.testing.assert_array_equal(got[1].numpy(), want[0])
    np.testing.assert_array_equal(got[2].numpy(), want[1])
    d2 = block.numpy()
    np.testing.assert_array_equal(want[0], (d2 < thr_r.numpy()[:, None]).any(axis=1))
    assert 0 < want[0].sum() < 120  # both outcomes occur


def test_the_accelerator_shell_kernel_equals_the_cpu_one() -> None:
    """Recall's regrown balls: the shell entries (``lower <= d2 < reach``) of a row-padded block
    view, collected by the torch kernel (accelerators) and by the numpy one, are the same."""
    from collapse_monitor.metrics._knn_blocks import _cross_rows_numpy, _operands, _Products, _shell_torch

    x = torch.from_numpy(clustered(500, 6, 16).astype(np.float32))
    lhs, rhs = _operands(x)
    with torch.inference_mode():
        block = _Products(lhs, rhs, 120, 333)(0, 120, 167, 500)
        gen = torch.Generator().manual_seed(5)
        lower = torch.rand(333, generator=gen) * 20
        reach = lower + torch.rand(333, generator=gen) * 10
        reach[::7] = -math.inf  # samples whose ball never grows
        got = _shell_torch(block, torch.empty(block.shape, dtype=torch.bool), reach, lower)
        views = (block.numpy(), np.empty(block.shape, dtype=bool), np.zeros(120, np.float32), np.zeros(333, np.float32))
        outs = (np.zeros(120, dtype=bool), np.zeros(120, dtype=bool))
        _, want = _cross_rows_numpy(0, 120, views=views, outs=outs, shell=(reach.numpy(), lower.numpy()))
    assert len(want[0]) > 100
    key = lambda e: sorted(zip(e[0].tolist(), e[1].tolist(), e[2].tolist(), strict=True))  # noqa: E731
    assert key(got) == key(want)


@pytest.mark.parametrize("skewed", [False, True])
def test_candidate_merge_carries_the_indices_on_both_branches(skewed: bool) -> None:
    """Recall's neighbour lists merge their candidates with indices through the same merge as
    the radii (the padded dense branch and, with skewed candidates, the sorting branch): every
    kept value comes with the index of the entry it came from."""
    from collapse_monitor.metrics._knn_blocks import _merge_candidates

    rng = np.random.default_rng(15)
    kk, rows = 6, 300
    best = np.sort(rng.random((rows, kk)).astype(np.float32), axis=1)
    ids = np.arange(rows * kk, dtype=np.int64).reshape(rows, kk)  # each initial value its own id
    n_first = 5000 if skewed else 3
    owner = np.concatenate([np.zeros(n_first, dtype=np.int64), np.arange(1, rows, 2)])
    vals = rng.random(owner.size).astype(np.float32)  # distinct values: the ids are determined
    cand_ids = rows * kk + np.arange(owner.size)
    value_of = dict(zip(ids.reshape(-1).tolist(), best.reshape(-1).tolist(), strict=True))
    value_of.update(zip(cand_ids.tolist(), vals.tolist(), strict=True))
    expected = best.copy()
    for r in range(rows):
        expected[r] = np.sort(np.concatenate([best[r], vals[owner == r]]))[:kk]
    _merge_candidates(best, None, 0, owner, vals, ids, cand_ids)
    np.testing.assert_array_equal(np.sort(best, axis=1), expected)
    got = np.vectorize(value_of.get)(ids).astype(np.float32)
    np.testing.assert_array_equal(got, best)
