"""Distance blocks of the exact k-NN engine (:mod:`.knn`): the operands, the products into an
aligned buffer, the candidate filters and merges of the symmetric self pass, and the reference x
samples cross pass. Exact: every function here returns what a dense ``n x n`` computation in the
same dtype would (up to the last-ulp rounding of the product).

Costs (d = 512, float32, the benchmark's 2 cores): a block's product is ``2 d`` flops per entry,
about 4.7 ns at 220 GFLOP/s; each comparison or reduction pass over it costs 0.3-0.4 ns per entry
in numpy (single-threaded, so the passes run on row ranges over threads, :class:`_Parts`). A
self-pass block needs two comparison passes (its rows' and its columns' thresholds) and merges a
few candidates; a cross-pass block four passes. Blocks are sized by the caller (:mod:`.knn`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

_SUM_ROWS = 255  # rows per uint8 partial count (no overflow)


def _operands(x: torch.Tensor, *, lhs: bool = True, rhs: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` of width ``d + 2`` with ``A[i] . B[j] = |x_i|^2 + |x_j|^2 - 2 x_i . x_j``:
    ``A = [x, |x|^2, 1]``, ``B = [-2x, 1, |x|^2]``. One plain matrix product then yields the
    squared distances of a block, with no bias copy, no ``beta = 1`` read of the output and
    no separate pass adding the row norms (each of those is a full pass over a block that is
    as large as the memory budget). The scaling by -2 is exact. ``B`` has ``_ALIGN - 1``
    extra zero rows, so that a block's product can always be computed :func:`_aligned` wide
    (see :class:`_Products`). Either side may be skipped (an empty tensor comes back)."""
    import torch

    n, d = x.shape
    sq = (x * x).sum(dim=1)
    a = torch.empty((n if lhs else 0, d + 2), dtype=x.dtype, device=x.device)
    b = torch.zeros((n + _ALIGN - 1 if rhs else 0, d + 2), dtype=x.dtype, device=x.device)
    if lhs:
        a[:, :d] = x
        a[:, d] = sq
        a[:, d + 1] = 1.0
    if rhs:
        torch.mul(x, -2.0, out=b[:n, :d])
        b[:n, d] = 1.0
        b[:n, d + 1] = sq
    return a, b


_ALIGN = 16
"""Output rows of a distance product are padded to a multiple of this many elements (64 bytes
in float32): MKL's sgemm ran about 1.4x faster into ``1250 x 18752`` or ``3125 x 14320``
outputs than into ``1250 x 18750`` or ``3125 x 14316`` ones (measured on the benchmark's
2-core machine; ``d`` = 512)."""


def _aligned(width: int) -> int:
    return -(-width // _ALIGN) * _ALIGN


class _Products:
    """Distance blocks ``lhs[i0:i1] @ rhs[j0:j1].T`` computed into one reusable buffer whose
    rows are :func:`_aligned` wide (the extra columns, products with the zero rows or the next
    rows of ``rhs``, are never read: the block is the ``[:, :j1 - j0]`` view). The buffer is
    written once (zeroed) when allocated: faulting its pages in from inside the first product
    made that product up to 2x slower (10,000 x 10,000 cross pass: 0.55 s for the first
    4,473-row block, 0.28 s for the second, against 0.06 s to zero its 179 MB first; prdc at
    10k best of 5: 2.00-2.11 s against 2.22-2.28 s, measured on a 2-core AMD EPYC)."""

    def __init__(self, lhs: torch.Tensor, rhs: torch.Tensor, rows: int, cols: int) -> None:
        import torch

        self.lhs, self.rhs = lhs, rhs
        self.buf = torch.empty(rows * _aligned(cols), dtype=lhs.dtype, device=lhs.device)
        self.buf.zero_()  # fault the pages in here, not inside the first product

    def __call__(self, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        import torch

        ld = _aligned(j1 - j0)
        full = self.buf[: (i1 - i0) * ld].view(i1 - i0, ld)
        torch.mm(self.lhs[i0:i1], self.rhs[j0 : j0 + ld].T, out=full)
        return full[:, : j1 - j0]


def _workers() -> int:
    """Threads for the memory-bound passes over a distance block: torch's intra-op thread
    count (what the caller allows), at most 8."""
    import torch

    return max(1, min(8, torch.get_num_threads()))


class _Parts:
    """Runs one function on row ranges of a block, on ``workers`` threads when the block is
    large. numpy releases the GIL inside its loops, so the comparison / reduction passes
    (single-threaded in numpy) use every core the caller gave torch; each range's results are
    returned in row order, so the outcome does not depend on the thread count."""

    _MIN_ROWS = 64

    def __init__(self, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    def map(self, fn: Callable[[int, int], Any], rows: int, cols: int) -> list[Any]:
        parts = 1 if self.pool is None or rows * cols < 2**20 else min(self.workers, rows // self._MIN_ROWS)
        if parts <= 1:
            return [fn(0, rows)]
        bounds = [rows * p // parts for p in range(parts + 1)]
        assert self.pool is not None
        return list(self.pool.map(fn, bounds[:-1], bounds[1:]))

    def __enter__(self) -> _Parts:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _merge_topk(best: torch.Tensor, a: int, b: int, block: torch.Tensor, kk: int) -> None:
    """Keep in ``best[a:b]`` the ``kk`` smallest of ``best[a:b]`` and each row of ``block``."""
    import torch

    t = torch.topk(block, min(kk, block.shape[1]), dim=1, largest=False, sorted=False).values
    both = torch.cat([best[a:b], t], dim=1)
    best[a:b] = torch.topk(both, kk, dim=1, largest=False, sorted=False).values


def _merge_candidates(
    best: np.ndarray,
    thr: np.ndarray | None,
    a: int,
    owner: np.ndarray,
    vals: np.ndarray,
    ids: np.ndarray | None = None,
    cand_ids: np.ndarray | None = None,
) -> None:
    """Merge candidate values into the running ``kk`` smallest of their rows (numpy views of
    CPU tensors, updated in place): ``owner`` holds local row indices (``a + owner`` in
    ``best``), sorted ascending, ``vals`` the values in the same order. With ``ids`` (beside
    ``best``) the candidates' indices ``cand_ids`` are carried along; ``thr`` (each row's
    ``kk``-th smallest), when given, is updated.

    The rows that got candidates are laid out as a dense ``rows x (kk + most candidates)``
    matrix (padded with inf) and partitioned; when a few rows got far more candidates than
    the others (the padding would dominate), (row, value) pairs are sorted instead."""
    kk = best.shape[1]
    counts = np.bincount(owner)
    rows = np.flatnonzero(counts)
    c = counts[rows]
    width = int(c.max())
    rowid = np.repeat(np.arange(rows.size), c)
    if rows.size * (kk + width) <= 4 * (owner.size + rows.size * kk) + 65536:
        slot = np.arange(owner.size) - np.repeat(np.cumsum(c) - c, c)
        dense = np.full((rows.size, kk + width), np.inf, dtype=best.dtype)
        dense[:, :kk] = best[a + rows]
        dense[rowid, kk + slot] = vals
        if ids is None or cand_ids is None:
            top = np.partition(dense, kk - 1, axis=1)[:, :kk]
        else:
            keep = np.argpartition(dense, kk - 1, axis=1)[:, :kk]
            dense_ids = np.full(dense.shape, -1, dtype=np.int64)
            dense_ids[:, :kk] = ids[a + rows]
            dense_ids[rowid, kk + slot] = cand_ids
            top = np.take_along_axis(dense, keep, axis=1)
            ids[a + rows] = np.take_along_axis(dense_ids, keep, axis=1)
    else:
        owners = np.concatenate([np.repeat(np.arange(rows.size), kk), rowid])
        v = np.concatenate([best[a + rows].reshape(-1), vals])
        order = np.lexsort((v, owners))
        starts = np.cumsum(c + kk) - (c + kk)
        pick = order[(starts[:, None] + np.arange(kk)).reshape(-1)]
        top = v[pick].reshape(rows.size, kk)
        if ids is not None and cand_ids is not None:
            ids[a + rows] = np.concatenate([ids[a + rows].reshape(-1), cand_ids])[pick].reshape(rows.size, kk)
    best[a + rows] = top
    if thr is not None:
        thr[a + rows] = top.max(axis=1)


def _group_by_column(flat: np.ndarray, vals: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major flat positions of a ``? x width`` block -> (column, value) sorted by column
    (a stable radix sort on 16-bit keys when the block is at most 65,536 wide)."""
    col = flat % width
    key = col.astype(np.uint16) if width <= 65536 else col
    order = np.argsort(key, kind="stable")
    return col[order], vals[order]


def _too_many(n_cand: int, block_size: int) -> bool:
    """Above one candidate in 8 entries, a plain top-k over the block is cheaper (loose
    thresholds: the first blocks a row meets in sorted data)."""
    return n_cand * 8 > block_size


def _merge_filtered(
    best: torch.Tensor, thr: torch.Tensor, a: int, block: torch.Tensor, mask: torch.Tensor, *, by_column: bool
) -> None:
    """Merge one distance block into the running ``kk`` smallest of the rows ``a .. a + r``.

    Only entries strictly below the row's current ``kk``-th smallest value (``thr``) can
    change the multiset of the ``kk`` smallest (an entry equal to it would replace an equal
    value), so they are the only ones gathered: after the first block a row gets a handful of
    candidates per block instead of a top-k over every entry. ``by_column=True`` merges the
    columns of ``block`` (the transposed side of a symmetric block) without copying it.
    Exact: the result equals :func:`_merge_topk` on the same block.
    """
    r = block.shape[1] if by_column else block.shape[0]
    if block.device.type != "cpu":
        _merge_filtered_torch(best, thr, a, block, mask, by_column=by_column)
        return
    bn, mn, tn = block.numpy(), mask.numpy(), thr.numpy()[a : a + r]
    np.less(bn, tn[None, :] if by_column else tn[:, None], out=mn)
    flat = np.flatnonzero(mn)
    _merge_flat(best, thr, a, block, flat, _values(bn, flat), by_column=by_column)


def _values(block: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Entries of a (possibly row-padded) block at row-major positions of its shape."""
    rows, cols = np.divmod(flat, block.shape[1])
    return block[rows, cols]


def _merge_flat(
    best: torch.Tensor,
    thr: torch.Tensor,
    a: int,
    block: torch.Tensor,
    flat: np.ndarray,
    vals: np.ndarray,
    *,
    by_column: bool,
) -> None:
    """Merge the candidates at row-major positions ``flat`` of a CPU ``block`` (values
    ``vals``) into rows (``by_column=False``) or columns of it, offset by ``a``."""
    if flat.size == 0:
        return
    r = block.shape[1] if by_column else block.shape[0]
    if _too_many(flat.size, block.numel()):
        _merge_topk(best, a, a + r, block.T if by_column else block, best.shape[1])
        thr[a : a + r] = best[a : a + r].amax(dim=1)
        return
    width = block.shape[1]
    owner, vals = _group_by_column(flat, vals, width) if by_column else (flat // width, vals)
    _merge_candidates(best.numpy(), thr.numpy(), a, owner, vals)


def _merge_filtered_torch(
    best: torch.Tensor, thr: torch.Tensor, a: int, block: torch.Tensor, mask: torch.Tensor, *, by_column: bool
) -> None:
    """:func:`_merge_filtered` in torch ops (accelerator devices)."""
    import torch

    kk = best.shape[1]
    r = block.shape[1] if by_column else block.shape[0]
    torch.lt(block, thr[a : a + r].unsqueeze(0) if by_column else thr[a : a + r].unsqueeze(1), out=mask)
    flat = mask.view(-1).nonzero().squeeze(1)
    n_cand = flat.shape[0]
    if n_cand == 0:
        return
    if _too_many(n_cand, block.numel()):
        _merge_topk(best, a, a + r, block.T if by_column else block, kk)
        thr[a : a + r] = best[a : a + r].amax(dim=1)
        return
    vals = block[flat // block.shape[1], flat % block.shape[1]]  # the block may be a row-padded view
    if by_column:  # row-major order: group the candidates by column
        owner = flat % block.shape[1]
        order = torch.argsort(owner, stable=True)
        owner, vals = owner[order], vals[order]
    else:
        owner = flat // block.shape[1]
    counts = torch.bincount(owner, minlength=r)
    rows = torch.nonzero(counts).squeeze(1)
    width = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_cand, device=block.device) - starts[owner]
    dense = torch.full((r, width), math.inf, dtype=block.dtype, device=block.device)
    dense[owner, slot] = vals
    both = torch.cat([best[a + rows], dense[rows]], dim=1)
    merged = torch.topk(both, kk, dim=1, largest=False, sorted=False).values
    best[a + rows] = merged
    thr[a + rows] = merged.amax(dim=1)


def _self_pass(
    x: torch.Tensor,
    kk: int,
    block: int,
    width: int | None,
    operands: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    with_ids: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each row's ``kk`` smallest squared distances to the rows of ``x`` (itself included at 0),
    unsorted, with those rows' indices when ``with_ids``: the symmetric block pass of
    :func:`_self_kth_d2` and :func:`_self_knn_ids`.

    The diagonal ``block x block`` blocks first, then for each row block the products with the
    rows after it only, in ``block x width`` pieces (``width`` defaults to ``block``); each
    piece serves its rows and (as columns) the later rows, so the pass costs about half a full
    ``n x n x d`` product. Starting from the diagonal blocks gives every row a running
    ``kk``-th smallest from its own block, and each later piece only contributes the few
    entries below it (:func:`_merge_filtered`). A piece is one product of the ``d + 2``-wide
    operands (:func:`_operands`) and two comparison passes (rows' and columns' thresholds),
    split over threads by row ranges (:class:`_Parts`); the operands may be passed in
    (``operands``, from :func:`_operands` of ``x``). The block and mask buffers are allocated
    once and reused. Both callers run the same blocks and products, so their values agree bit
    for bit (tested)."""
    import torch

    n = x.shape[0]
    width = block if width is None else max(width, 1)
    best = torch.full((n, kk), math.inf, dtype=x.dtype, device=x.device)
    ids = torch.full((n, kk), -1, dtype=torch.int64, device=x.device) if with_ids else None
    side = min(block, n)
    cols = min(width, max(n - side, 1))
    distances = _Products(*(operands or _operands(x)), side, max(side, cols))
    mbuf = torch.empty(side * cols, dtype=torch.bool, device=x.device)

    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        d2 = distances(i0, i1, i0, i1)
        d2.fill_diagonal_(0.0)
        if ids is None:
            _merge_topk(best, i0, i1, d2, kk)
        else:
            _merge_topk_ids(best, ids, i0, i1, d2, i0)
    thr = best.amax(dim=1)
    cpu = x.device.type == "cpu"
    with _Parts(_workers() if cpu else 1) as parts:
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            for j0 in range(i1, n, cols):
                j1 = min(n, j0 + cols)
                d2 = distances(i0, i1, j0, j1)
                mask = mbuf[: d2.numel()].view(d2.shape)
                if cpu:
                    _self_block_numpy(best, thr, i0, j0, d2, mask, parts, ids)
                elif ids is None:
                    _merge_filtered(best, thr, i0, d2, mask, by_column=False)
                    _merge_filtered(best, thr, j0, d2, mask, by_column=True)
                else:
                    _merge_topk_ids(best, ids, i0, i1, d2, j0)
                    _merge_topk_ids(best, ids, j0, j1, d2, i0, by_column=True)  # no threshold here
    return best, ids


def _self_kth_d2(
    x: torch.Tensor,
    k: int,
    block: int,
    width: int | None = None,
    operands: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Squared distance of each row of ``x`` to its ``min(k, n-1)``-th nearest other row
    (:func:`_self_pass`)."""
    kk = min(k, x.shape[0] - 1) + 1  # the row itself is among the kk smallest, at distance 0
    return _self_pass(x, kk, block, width, operands, with_ids=False)[0].amax(dim=1).clamp_min_(0.0)


def _merge_topk_ids(
    best: torch.Tensor, ids: torch.Tensor, a: int, b: int, block: torch.Tensor, offset: int, *, by_column: bool = False
) -> None:
    """:func:`_merge_topk` carrying indices: keep in ``best[a:b]`` / ``ids[a:b]`` the ``kk``
    smallest of ``best[a:b]`` and each row of ``block`` (or each column, ``by_column``), a
    block entry's index being ``offset`` plus its column (row)."""
    import torch

    kk = best.shape[1]
    rows = block.T.contiguous() if by_column else block  # top-k along a stride was 2x slower
    t = torch.topk(rows, min(kk, rows.shape[1]), dim=1, largest=False, sorted=False)
    both = torch.cat([best[a:b], t.values], dim=1)
    both_ids = torch.cat([ids[a:b], t.indices + offset], dim=1)
    sel = torch.topk(both, kk, dim=1, largest=False, sorted=False)
    best[a:b] = sel.values
    ids[a:b] = both_ids.gather(1, sel.indices)


def _merge_ids_flat(
    best: torch.Tensor,
    ids: torch.Tensor,
    thr: torch.Tensor,
    a: int,
    block: torch.Tensor,
    flat: np.ndarray,
    offset: int,
    *,
    by_column: bool,
) -> None:
    """Merge the entries at row-major positions ``flat`` of a CPU ``block`` (gathered below
    their owners' current ``kk``-th smallest, as :func:`_merge_filtered` gathers values) into
    the rows (``by_column=False``) or columns of it, offset by ``a``, with their indices
    (``offset`` plus their column, or row); ``thr`` is updated."""
    if flat.size == 0:
        return
    bn, bv, iv = block.numpy(), best.numpy(), ids.numpy()
    if _too_many(flat.size, bn.size):
        r = bn.shape[1] if by_column else bn.shape[0]
        _merge_topk_ids(best, ids, a, a + r, block, offset, by_column=by_column)
        thr[a : a + r] = best[a : a + r].amax(dim=1)
        return
    width = bn.shape[1]
    brow, bcol = np.divmod(flat, width)
    vals = bn[brow, bcol]
    owner, other = (bcol, brow) if by_column else (brow, bcol)
    if by_column:  # the candidates grouped by column, as _merge_candidates needs
        order = np.argsort(owner, kind="stable")
        owner, other, vals = owner[order], other[order], vals[order]
    _merge_candidates(bv, thr.numpy(), a, owner, vals, iv, other + offset)


def _self_knn_ids(
    x: torch.Tensor,
    kk: int,
    block: int,
    width: int | None = None,
    operands: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)``, ascending: each row's ``min(kk, n)`` smallest squared distances to
    the rows of ``x``, itself included at 0, with those rows' indices. The blocks and products
    are :func:`_self_kth_d2`'s (:func:`_self_pass`), so its radius is the ``k``-th value here,
    bit for bit (tested); the merges carry the indices (the samples' neighbours for recall's
    jackknife, :class:`~._regrow.Regrow`)."""
    import torch

    best, ids = _self_pass(x, min(kk, x.shape[0]), block, width, operands, with_ids=True)
    assert ids is not None
    order = torch.argsort(best, dim=1, stable=True)
    return best.gather(1, order).clamp_min_(0.0), ids.gather(1, order)


def _self_block_numpy(
    best: torch.Tensor,
    thr: torch.Tensor,
    i0: int,
    j0: int,
    d2: torch.Tensor,
    mask: torch.Tensor,
    parts: _Parts,
    ids: torch.Tensor | None = None,
) -> None:
    """One off-diagonal block of the self pass on the CPU: gather the entries below their row's
    and their column's thresholds (both read before either side is merged, as the sequential
    order would: a row's merge never changes a column threshold of the same block, the two
    sets of rows being disjoint), then merge each side (with their indices into ``ids``, when
    given)."""
    bn, mn, tn = d2.numpy(), mask.numpy(), thr.numpy()
    w = bn.shape[1]
    t_rows, t_cols = tn[i0 : i0 + bn.shape[0], None], tn[None, j0 : j0 + w]

    def gather(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        np.less(bn[a:b], t_rows[a:b], out=mn[a:b])
        f_row = np.flatnonzero(mn[a:b])
        np.less(bn[a:b], t_cols, out=mn[a:b])
        f_col = np.flatnonzero(mn[a:b])
        return f_row + a * w, f_col + a * w

    got = parts.map(gather, bn.shape[0], w)
    f_row = np.concatenate([g[0] for g in got]) if len(got) > 1 else got[0][0]
    f_col = np.concatenate([g[1] for g in got]) if len(got) > 1 else got[0][1]
    if ids is not None:
        _merge_ids_flat(best, ids, thr, i0, d2, f_row, j0, by_column=False)
        _merge_ids_flat(best, ids, thr, j0, d2, f_col, i0, by_column=True)
        return
    _merge_flat(best, thr, i0, d2, f_row, _values(bn, f_row), by_column=False)
    _merge_flat(best, thr, j0, d2, f_col, _values(bn, f_col), by_column=True)


_CROSS_WIDTH = 12_288
"""Widest column block of the cross pass: products into ``rows x m`` blocks of a wide ``m``
(50,000) ran about 8 % slower than the same entries as ``4 x`` taller, ~10,000-column blocks
(154-174 against 183-189 GFLOP/s, measured on the benchmark's 2-core machine; MKL re-packs
the whole right operand for every row block)."""


def cross_tiles(m: int, rows: int, cols: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of a cross-pass block: ``cols`` when given, else ``m`` split into equal
    blocks of at most :data:`_CROSS_WIDTH` columns with ``rows`` scaled up by the same factor
    (the same entries per block, so the same memory)."""
    if cols is not None:
        return max(1, rows), max(1, min(cols, m))
    parts = max(1, -(-m // _CROSS_WIDTH))
    cols = -(-m // parts)
    return max(1, rows * m // cols), cols


def _cross_pass(
    r: torch.Tensor,
    s: torch.Tensor,
    r2_ref: torch.Tensor,
    r2_s: torch.Tensor,
    rows: int,
    *,
    cols: int | None = None,
    lhs: torch.Tensor | None = None,
    rhs: torch.Tensor | None = None,
    hits: GroupHits | None = None,
    shells: Shells | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over the (reference x samples) distances in ``rows x cols`` blocks
    (:func:`cross_tiles`: ``rows x m`` for ``m`` up to :data:`_CROSS_WIDTH`, else taller
    blocks of fewer columns with as many entries).

    Returns per sample the number of reference balls that strictly contain it, per reference
    point whether its ball strictly contains some sample (coverage: the nearest sample is
    inside, read off the same mask as the counts, so no separate nearest-distance pass), and
    per reference point whether some sample ball strictly contains it (recall), with squared
    radii ``r2_ref`` / ``r2_s`` and balls of radius 0 excluded (their threshold is -inf:
    nothing is strictly inside them). Each block is one product of the ``d + 2``-wide operands
    (:func:`_operands`); on the CPU its passes run on row ranges over threads
    (:class:`_Parts`), per-range counts summed in integers; the per-row results of a row
    block's column blocks are combined exactly (or). ``lhs`` (of ``r``) and ``rhs`` (of ``s``)
    may be passed in. The block and mask buffers are allocated once and reused.

    ``hits`` (:class:`GroupHits`, the samples sorted by group) also records, per reference
    point and sample group, the two tests for that group's samples alone (for the grouped
    jackknife of :func:`~.stats.grouped_design_effect`): one more read of each mask, no
    product. ``shells`` (:class:`Shells`) also collects the entries between each
    sample's squared radius and its ``reach`` (recall's regrown balls): one more comparison
    pass over each block, and the few entries it finds.
    """
    import torch

    n, m = r.shape[0], s.shape[0]
    rows, cols = cross_tiles(m, rows, cols)
    rows = min(rows, n)
    lhs = _operands(r, rhs=False)[0] if lhs is None else lhs
    rhs = _operands(s, lhs=False)[1] if rhs is None else rhs
    products = _Products(lhs, rhs, rows, cols)
    neg_inf = torch.tensor(-math.inf, dtype=r.dtype, device=r.device)
    thr_ref = torch.where(r2_ref > 0, r2_ref, neg_inf)
    thr_s = torch.where(r2_s > 0, r2_s, neg_inf)
    counts = torch.zeros(m, dtype=torch.int64, device=r.device)
    covered = torch.zeros(n, dtype=torch.bool, device=r.device)
    in_sample_ball = torch.zeros(n, dtype=torch.bool, device=r.device)
    mbuf = torch.empty(rows * cols, dtype=torch.bool, device=r.device)
    with _Parts(_workers() if r.device.type == "cpu" else 1) as parts:
        for i0 in range(0, n, rows):
            i1 = min(n, i0 + rows)
            for j0 in range(0, m, cols):
                j1 = min(m, j0 + cols)
                d2 = products(i0, i1, j0, j1)
                mask = mbuf[: d2.numel()].view(d2.shape)
                spans = None if hits is None else hits.block(i0, i1, j0, j1)
                if r.device.type == "cpu":
                    views = (d2.numpy(), mask.numpy(), thr_ref.numpy()[i0:i1], thr_s.numpy()[j0:j1])
                    outs = (covered.numpy()[i0:i1], in_sample_ball.numpy()[i0:i1])
                    count_np = counts.numpy()[j0:j1]
                    shell = None if shells is None else (shells.reach.numpy()[j0:j1], shells.lower.numpy()[j0:j1])
                    job = partial(_cross_rows_numpy, views=views, outs=outs, spans=spans, shell=shell)
                    for part in parts.map(job, i1 - i0, j1 - j0):
                        count_np += part[0]
                        if shells is not None:
                            shells.add(part[1], i0, j0)
                    continue
                _cross_block_torch(
                    d2, mask, thr_ref[i0:i1], thr_s[j0:j1], counts[j0:j1], covered[i0:i1], in_sample_ball[i0:i1], spans
                )
                if shells is not None:
                    shells.add(_shell_torch(d2, mask, shells.reach[j0:j1], shells.lower[j0:j1]), i0, j0)
    return counts, covered, in_sample_ball


def _shell_torch(d2: torch.Tensor, mask: torch.Tensor, reach: torch.Tensor, lower: torch.Tensor) -> Any:
    """:func:`_cross_rows_numpy`'s shell entries of one block in torch ops (accelerators):
    ``lower <= d2 < reach`` as numpy ``(rows, columns, values)``, None when they alone pass
    :data:`SHELL_LIMIT` (as :func:`_shell_rows`)."""
    import torch

    torch.lt(d2, reach.unsqueeze(0), out=mask)
    mask &= d2 >= lower.unsqueeze(0)
    at = mask.nonzero()
    if at.shape[0] > SHELL_LIMIT:
        return None
    if at.shape[0] == 0:
        return ()
    vals = d2[at[:, 0], at[:, 1]].to(torch.float64)
    return at[:, 0].cpu().numpy(), at[:, 1].cpu().numpy(), vals.cpu().numpy()


@dataclass(frozen=True)
class GroupHits:
    """Per reference point and sample group (samples sorted by group: group ``g`` is columns
    ``starts[g]:starts[g + 1]``): ``covered``, a sample of the group inside the point's ball;
    ``in_ball``, the point inside a ball of one of the group's samples (``n x G`` bool, or-ed)."""

    starts: np.ndarray
    covered: torch.Tensor
    in_ball: torch.Tensor

    @classmethod
    def empty(cls, starts: np.ndarray, n: int, device: Any) -> GroupHits:
        import torch

        g = len(starts) - 1
        return cls(starts, *(torch.zeros((n, g), dtype=torch.bool, device=device) for _ in range(2)))

    def block(
        self, i0: int, i1: int, j0: int, j1: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int]]]:
        """Rows ``i0:i1`` of both outputs and the groups ``(g, a, b)`` meeting columns ``j0:j1``
        (as that block's columns ``a:b``)."""
        spans = []
        for g in range(len(self.starts) - 1):
            a, b = max(int(self.starts[g]), j0), min(int(self.starts[g + 1]), j1)
            if a < b:
                spans.append((g, a - j0, b - j0))
        return self.covered[i0:i1], self.in_ball[i0:i1], spans


SHELL_LIMIT = 1 << 22
"""Most shell entries one pass collects (about 100 MB); beyond, recall's radii stay fixed."""


class Shells:
    """What :func:`_cross_pass` collects for recall's regrown balls: per sample (column) a
    ``reach`` (the largest squared radius its ball takes when a group of samples is left out;
    ``-inf`` where it never grows) and ``lower`` (its squared radius; ``-inf`` for a radius of
    0, an empty ball, as in the pass's own test), and the entries with
    ``lower <= d2 < reach`` as global ``(reference rows, sample columns, values)``, typically a
    few per sample. ``overflow``: more than :data:`SHELL_LIMIT` of them (samples so spread out
    that their balls hold much of the reference); the caller then keeps the radii fixed. The
    limit is on the total, so the outcome does not depend on the block sizes."""

    def __init__(self, reach: torch.Tensor, lower: torch.Tensor) -> None:
        self.reach, self.lower = reach, lower
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.count = 0
        self.overflow = False

    def add(self, found: Any, i0: int, j0: int) -> None:
        if found is None:
            self._give_up()
        elif found and not self.overflow:
            rows, cols, vals = found
            self.parts.append((rows + i0, cols + j0, vals))
            self.count += rows.size
            if self.count > SHELL_LIMIT:
                self._give_up()

    def _give_up(self) -> None:
        self.overflow, self.parts, self.count = True, [], 0

    def take(self, other: Shells, columns: np.ndarray) -> None:
        """Keep ``other``'s entries (a pass over the samples ``columns`` alone) as these
        samples' (only theirs: its parts are cleared)."""
        other.parts = [(rows, columns[cols], vals) for rows, cols, vals in other.parts]
        self.merge(other)
        other.parts, other.count = [], 0

    def merge(self, other: Shells) -> None:
        """Add ``other``'s entries (already in this pass's sample indices)."""
        self.overflow |= other.overflow
        self.parts += other.parts
        self.count += other.count
        if self.overflow or self.count > SHELL_LIMIT:
            self._give_up()

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if self.overflow:
            return None
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return tuple(np.concatenate(x) for x in zip(*self.parts, strict=True))  # type: ignore[return-value]


def _cross_block_torch(
    d2: torch.Tensor,
    mask: torch.Tensor,
    thr_ref: torch.Tensor,
    thr_s: torch.Tensor,
    counts: torch.Tensor,
    covered: torch.Tensor,
    in_ball: torch.Tensor,
    spans: Any = None,
) -> None:
    """The reductions of :func:`_cross_pass` over one block in torch ops (accelerators):
    ``counts`` (this block's columns) accumulates, ``covered`` / ``in_ball`` (this block's
    rows, all false before the row block's first column block) are or-ed, and so are the
    per-group rows of ``spans`` (:meth:`GroupHits.block`)."""
    import torch

    inside = torch.lt(d2, thr_ref.unsqueeze(1), out=mask)
    if spans is not None:
        for g, a, b in spans[2]:
            spans[0][:, g] |= inside[:, a:b].any(dim=1)
    # uint8 partial counts (a block of _SUM_ROWS rows cannot reach 256): no int64 copy of the
    # mask, and exact
    as_u8 = inside.view(torch.uint8)
    for a in range(0, d2.shape[0], _SUM_ROWS):
        counts += as_u8[a : a + _SUM_ROWS].sum(dim=0, dtype=torch.uint8)
    covered |= inside.any(dim=1)
    in_ball |= torch.lt(d2, thr_s.unsqueeze(0), out=mask).any(dim=1)
    if spans is not None:
        for g, a, b in spans[2]:
            spans[1][:, g] |= mask[:, a:b].any(dim=1)


def _or_groups(mk: np.ndarray, spans: Any, which: int, a: int, b: int) -> None:
    """Or each group's columns of the mask rows ``mk`` into output ``which`` of ``spans``."""
    if spans is None:
        return
    rows_out = spans[which].numpy()[a:b]
    for g, c0, c1 in spans[2]:
        rows_out[:, g] |= np.any(mk[:, c0:c1], axis=1)


def _cross_rows_numpy(
    a: int,
    b: int,
    *,
    views: tuple[np.ndarray, ...],
    outs: tuple[np.ndarray, np.ndarray],
    spans: Any = None,
    shell: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, Any]:
    """The reductions of :func:`_cross_pass` over rows ``a:b`` of one block (numpy views:
    distances, mask, reference and sample thresholds; outputs, or-ed: covered,
    inside-a-sample-ball); returns those rows' contribution to the block's per-sample ball
    counts, and with ``shell`` (``(reach, lower)`` of this block's columns) the entries with
    ``lower <= d2 < reach`` as ``(rows, columns, values)`` of the block (None when they are more
    than :data:`SHELL_LIMIT`: :class:`Shells` then gives up)."""
    d2, mask, thr_ref, thr_s = views
    covered, in_ball = outs
    h, mk = d2[a:b], mask[a:b]
    np.less(h, thr_ref[a:b, None], out=mk)
    as_u8 = mk.view(np.uint8)
    cnt = np.zeros(h.shape[1], dtype=np.int64)
    for s0 in range(0, h.shape[0], _SUM_ROWS):  # uint8 partial counts: no int64 copy of the mask
        cnt += as_u8[s0 : s0 + _SUM_ROWS].sum(axis=0, dtype=np.uint8)
    covered[a:b] |= np.any(mk, axis=1)
    _or_groups(mk, spans, 0, a, b)
    np.less(h, thr_s[None, :], out=mk)
    in_ball[a:b] |= np.any(mk, axis=1)
    _or_groups(mk, spans, 1, a, b)
    found: Any = ()
    if shell is not None:
        found = _shell_rows(h, mk, *shell, a)
    return cnt, found


def _shell_rows(h: np.ndarray, mk: np.ndarray, reach: np.ndarray, lower: np.ndarray, a: int) -> Any:
    """The shell entries ``lower <= h < reach`` of the block rows ``h`` (``mk``: their mask
    buffer), as ``(rows + a, columns, values)``; None when they alone pass :data:`SHELL_LIMIT`
    (then so does the pass's total: the outcome does not depend on the block sizes). Gathered
    in row chunks, so the indices of the entries inside the balls, which the first comparison
    also finds, never take more than a few MB."""
    np.less(h, reach[None, :], out=mk)
    step = max(1, _SHELL_CHUNK // max(1, h.shape[1]))
    rows_out, cols_out, vals_out, kept = [], [], [], 0
    for r0 in range(0, h.shape[0], step):
        flat = np.flatnonzero(mk[r0 : r0 + step])
        if flat.size == 0:
            continue
        rows, cols = np.divmod(flat, h.shape[1])
        rows += r0
        vals = h[rows, cols]
        keep = vals >= lower[cols]
        kept += int(keep.sum())
        if kept > SHELL_LIMIT:
            return None
        rows_out.append(rows[keep] + a)
        cols_out.append(cols[keep])
        vals_out.append(vals[keep].astype(np.float64))
    if not rows_out:
        return ()
    return np.concatenate(rows_out), np.concatenate(cols_out), np.concatenate(vals_out)


_SHELL_CHUNK = 1 << 20  # mask entries per chunk of :func:`_shell_rows`'s gathering
