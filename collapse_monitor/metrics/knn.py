"""Exact k-nearest-neighbour distances in bounded memory (torch matmul, chunked).

Everything here is *exact* (no approximate index): squared Euclidean distances come from
``||x||^2 + ||y||^2 - 2 x.y`` computed block by block with one ``torch.addmm`` per block,
clamped at 0. No function ever holds an ``n x n`` array: the self pass (k-NN radii of one
set) works on ``c x c`` blocks and the cross pass (reference x samples) on ``c x m`` row
blocks, where ``c`` is ``chunk_size`` or is chosen from a memory budget
(:data:`DEFAULT_MEMORY_BUDGET`, 256 MiB, for the block and its temporaries).

Semantics follow the reference ``prdc`` package (Naeem et al., "Reliable Fidelity and
Diversity Metrics for Generative Models", ICML 2020): the radius of a point is the distance
to its k-th nearest *other* point (``prdc`` includes the point itself at distance 0 and takes
the (k+1)-th smallest: the same number), and "inside a ball" is the strict ``d < r``. With
fewer than ``k + 1`` rows the radius is taken to the farthest other row (``k_eff = n - 1``);
a single row has radius 0 (an empty ball: nothing is strictly inside it).

Numerics: both sets are centred by the same vector (the reference mean, in float64) before the
cast to the compute dtype, which keeps ``||x||^2`` small and the cancellation error of the
expansion low. ``dtype="float32"`` (default) is the fast path; ``dtype="float64"`` reproduces
``prdc``'s float64 results bit for bit up to ties at the last ulp. torch's thread count is
left as the caller set it (``torch.set_num_threads``); nothing here changes global state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .approx import IVFIndex

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "NeighbourPass",
    "as_matrix",
    "kth_nn_radii",
    "prdc_pass",
    "resolve_device",
]

DEFAULT_MEMORY_BUDGET = 256 * 2**20
"""Bytes one distance block and its temporaries may take when ``chunk_size`` is None."""

_SUM_ROWS = 255  # rows per uint8 partial count (no overflow)


# --------------------------------------------------------------------------- inputs / options


def as_matrix(x: Any, field: str, *, width: int | None = None) -> np.ndarray:
    """A finite 2-D float64 array with at least one row (torch tensors accepted); raises
    :class:`~collapse_monitor.errors.InputError` naming ``field`` otherwise."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(field, "could not be read as a 2-D numeric array") from None
    if arr.ndim != 2:
        raise InputError(field, f"expected a 2-D array of shape (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(field, f"is empty: expected at least one row and one column, got shape {arr.shape}")
    if width is not None and arr.shape[1] != width:
        raise InputError(field, f"expected width d={width} (the reference's), got d={arr.shape[1]}")
    if not np.isfinite(arr).all():
        raise InputError(field, "contains NaN or infinite values")
    return arr


def resolve_device(device: Any = None) -> torch.device:
    """``None`` / ``"cpu"`` -> CPU; ``"auto"`` -> CUDA when available, else CPU; ``"cuda[:i]"``
    -> that GPU (a :class:`~collapse_monitor.errors.ConfigError` when CUDA is unavailable)."""
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError("device", f"expected None, 'cpu', 'cuda', 'cuda:<i>' or 'auto', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA was asked for but torch.cuda.is_available() is False")
    return dev


def _resolve_dtype(dtype: Any) -> tuple[torch.dtype, np.dtype[Any]]:
    import torch

    name = str(getattr(dtype, "__name__", dtype)).replace("torch.", "")
    if name in ("float32", "single"):
        return torch.float32, np.dtype(np.float32)
    if name in ("float64", "double"):
        return torch.float64, np.dtype(np.float64)
    raise ConfigError("dtype", f"expected 'float32' or 'float64', got {dtype!r}")


def _check_chunk(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ConfigError("chunk_size", f"expected a positive integer or None, got {chunk_size!r}")
    return int(chunk_size)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError("k", f"expected a positive integer, got {k!r}")
    return int(k)


def _row_block(n_cols: int, itemsize: int, chunk_size: int | None, budget: int) -> int:
    """Rows of a ``rows x n_cols`` block: the block, one bool mask and slack fit ``budget``."""
    if chunk_size is not None:
        return chunk_size
    return max(1, budget // (n_cols * (itemsize + 2)))


def _square_block(n: int, itemsize: int, chunk_size: int | None, budget: int) -> int:
    """Side of a ``c x c`` block of the symmetric self pass: the block and its transposed copy
    fit ``budget``, and there are about 16 row blocks (at least 1024 rows each) so that the
    diagonal blocks, computed whole, add little to the half product."""
    if chunk_size is not None:
        return chunk_size
    return max(1, min(math.isqrt(budget // (2 * itemsize + 2)), max(1024, -(-n // 16))))


def _to_tensor(arr: np.ndarray, center: np.ndarray, np_dtype: np.dtype[Any], dev: torch.device) -> torch.Tensor:
    import torch

    centred = np.ascontiguousarray(arr - center, dtype=np_dtype)
    return torch.from_numpy(centred).to(dev)


# --------------------------------------------------------------------------- kernels (torch)


def _merge_topk(best: torch.Tensor, a: int, b: int, block: torch.Tensor, kk: int) -> None:
    """Keep in ``best[a:b]`` the ``kk`` smallest of ``best[a:b]`` and each row of ``block``."""
    import torch

    t = torch.topk(block, min(kk, block.shape[1]), dim=1, largest=False, sorted=False).values
    both = torch.cat([best[a:b], t], dim=1)
    best[a:b] = torch.topk(both, kk, dim=1, largest=False, sorted=False).values


_MAX_CANDIDATES = 32  # per row and block on average; above it a plain top-k is cheaper


def _add_rows(block: torch.Tensor, v: torch.Tensor) -> None:
    """``block += v[:, None]`` in place. On the CPU through numpy (one thread, the same
    IEEE sums): a memory-bound pass gains little from torch's intra-op threads, whose
    barriers stall for milliseconds when the cores are shared with other work."""
    if block.device.type == "cpu":
        bn = block.numpy()
        np.add(bn, v.numpy()[:, None], out=bn)
    else:
        block.add_(v.unsqueeze(1))


def _below(
    block: torch.Tensor, thr: torch.Tensor, mask: torch.Tensor, *, by_column: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices and values of the entries of ``block`` strictly below the threshold of
    their row (``thr[:, None]``) or column (``by_column``: ``thr[None, :]``). On the CPU
    through numpy (``flatnonzero`` is several times faster than ``torch.nonzero``)."""
    import torch

    if block.device.type == "cpu":
        bn, mn, tn = block.numpy(), mask.numpy(), thr.numpy()
        np.less(bn, tn[None, :] if by_column else tn[:, None], out=mn)
        pos = np.flatnonzero(mn)
        return torch.from_numpy(pos), torch.from_numpy(bn.reshape(-1)[pos])
    torch.lt(block, thr.unsqueeze(0) if by_column else thr.unsqueeze(1), out=mask)
    flat = mask.view(-1).nonzero().squeeze(1)
    return flat, block.view(-1)[flat]


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
    import torch

    kk = best.shape[1]
    r = block.shape[1] if by_column else block.shape[0]
    flat, vals = _below(block, thr[a : a + r], mask, by_column=by_column)
    n_cand = flat.shape[0]
    if n_cand == 0:
        return
    if n_cand > _MAX_CANDIDATES * r:  # loose thresholds (first blocks of sorted data): top-k
        _merge_topk(best, a, a + r, block.T if by_column else block, kk)
        thr[a : a + r] = best[a : a + r].amax(dim=1)
        return
    flat = flat.to(block.device)
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


def _strip_width(side: int, n: int, itemsize: int, chunk_size: int | None, budget: int) -> int:
    """Columns of one ``side x width`` block of the symmetric self pass: ``chunk_size`` when
    given (square blocks), else as wide as the budget allows for the block and its mask
    (fewer, larger products: each block costs a fixed number of passes and thread wake-ups)."""
    if chunk_size is not None:
        return chunk_size
    return max(side, min(n, budget // (side * (itemsize + 2))))


def _self_kth_d2(x: torch.Tensor, k: int, block: int, width: int | None = None) -> torch.Tensor:
    """Squared distance of each row of ``x`` to its ``min(k, n-1)``-th nearest other row.

    Symmetric blocks: the diagonal ``block x block`` blocks first, then for each row block
    the products with the rows after it only, in ``block x width`` pieces (``width``
    defaults to ``block``); each piece serves its rows and (as columns) the later rows, so
    the pass costs about half a full ``n x n x d`` product. Starting from the diagonal
    blocks gives every row a running ``kk``-th smallest from its own block, and each later
    piece only contributes the few entries below it (:func:`_merge_filtered`). The block and
    mask buffers are allocated once and reused.
    """
    import torch

    n = x.shape[0]
    width = block if width is None else max(width, 1)
    kk = min(k, n - 1) + 1  # the row itself is among the kk smallest, at distance 0
    norms = (x * x).sum(dim=1)
    best = torch.full((n, kk), math.inf, dtype=x.dtype, device=x.device)
    side = min(block, n)
    cols = min(width, max(n - side, 1))
    buf = torch.empty(max(side * side, side * cols), dtype=x.dtype, device=x.device)
    mbuf = torch.empty(side * cols, dtype=torch.bool, device=x.device)

    def distances(i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        d2 = buf[: (i1 - i0) * (j1 - j0)].view(i1 - i0, j1 - j0)
        torch.addmm(norms[j0:j1].unsqueeze(0), x[i0:i1], x[j0:j1].T, beta=1.0, alpha=-2.0, out=d2)
        _add_rows(d2, norms[i0:i1])
        return d2

    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        d2 = distances(i0, i1, i0, i1)
        d2.fill_diagonal_(0.0)
        _merge_topk(best, i0, i1, d2, kk)
    thr = best.amax(dim=1)
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        for j0 in range(i1, n, cols):
            j1 = min(n, j0 + cols)
            d2 = distances(i0, i1, j0, j1)
            mask = mbuf[: d2.numel()].view(d2.shape)
            _merge_filtered(best, thr, i0, d2, mask, by_column=False)
            _merge_filtered(best, thr, j0, d2, mask, by_column=True)
    return best.amax(dim=1).clamp_min_(0.0)


def _self_radii2(x: torch.Tensor, k: int, chunk_size: int | None, budget: int | None = None) -> torch.Tensor:
    """:func:`_self_kth_d2` with blocks sized from ``chunk_size`` or the memory budget."""
    import torch

    n = x.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=x.dtype, device=x.device)
    budget = DEFAULT_MEMORY_BUDGET if budget is None else budget
    itemsize = x.element_size()
    side = _square_block(n, itemsize, chunk_size, budget)
    return _self_kth_d2(x, k, side, _strip_width(side, n, itemsize, chunk_size, budget))


def _cross_block_numpy(
    h: np.ndarray,
    mask: np.ndarray,
    i0: int,
    thr_ref: torch.Tensor,
    s_shift: torch.Tensor,
    nr: torch.Tensor,
    counts: torch.Tensor,
    min_d2: torch.Tensor,
    in_sample_ball: torch.Tensor,
) -> None:
    """The per-block reductions of :func:`_cross_pass` on CPU tensors' numpy views."""
    i1 = i0 + h.shape[0]
    nr_b = nr.numpy()[i0:i1]
    np.less(h, thr_ref.numpy()[i0:i1, None], out=mask)
    as_u8, cnt = mask.view(np.uint8), counts.numpy()
    for a in range(0, h.shape[0], _SUM_ROWS):  # uint8 partial counts: no int64 copy of the mask
        cnt += as_u8[a : a + _SUM_ROWS].sum(axis=0, dtype=np.uint8)
    np.maximum(h.min(axis=1) + nr_b, 0.0, out=min_d2.numpy()[i0:i1])
    np.subtract(h, s_shift.numpy()[None, :], out=h)
    np.less(h.min(axis=1), -nr_b, out=in_sample_ball.numpy()[i0:i1])


def _cross_pass(
    r: torch.Tensor, s: torch.Tensor, r2_ref: torch.Tensor, r2_s: torch.Tensor, rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over the (reference x samples) distances, ``rows`` reference rows at a time.

    Returns per sample the number of reference balls that strictly contain it, per reference
    point the squared distance to its nearest sample, and per reference point whether some
    sample ball strictly contains it. ``max(h + |x|^2, 0) < r2`` is evaluated as
    ``h < r2 - |x|^2`` with balls of radius 0 excluded (nothing is strictly inside them).
    The block and mask buffers are allocated once and reused.
    """
    import torch

    n, m = r.shape[0], s.shape[0]
    nr = (r * r).sum(dim=1)
    ns = (s * s).sum(dim=1)
    neg_inf = torch.tensor(-math.inf, dtype=r.dtype, device=r.device)
    thr_ref = torch.where(r2_ref > 0, r2_ref - nr, neg_inf)
    s_shift = torch.where(r2_s > 0, r2_s, neg_inf)
    counts = torch.zeros(m, dtype=torch.int64, device=r.device)
    min_d2 = torch.empty(n, dtype=r.dtype, device=r.device)
    in_sample_ball = torch.empty(n, dtype=torch.bool, device=r.device)
    rows = min(rows, n)
    buf = torch.empty(rows * m, dtype=r.dtype, device=r.device)
    mbuf = torch.empty(rows * m, dtype=torch.bool, device=r.device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        h = buf[: (i1 - i0) * m].view(i1 - i0, m)
        torch.addmm(ns.unsqueeze(0), r[i0:i1], s.T, beta=1.0, alpha=-2.0, out=h)  # d2 - |r_i|^2
        mask = mbuf[: (i1 - i0) * m].view(i1 - i0, m)
        if r.device.type == "cpu":  # one-thread numpy passes (see _add_rows), same IEEE results
            _cross_block_numpy(h.numpy(), mask.numpy(), i0, thr_ref, s_shift, nr, counts, min_d2, in_sample_ball)
            continue
        inside = torch.lt(h, thr_ref[i0:i1].unsqueeze(1), out=mask)
        # count in uint8 over <= 255 rows at a time (a plain bool sum would upcast the whole
        # mask to int64: 8x its memory and most of this loop's time)
        as_u8 = inside.view(torch.uint8)
        for a in range(0, i1 - i0, _SUM_ROWS):
            counts += as_u8[a : a + _SUM_ROWS].sum(dim=0, dtype=torch.uint8)
        min_d2[i0:i1] = (h.amin(dim=1) + nr[i0:i1]).clamp_min_(0.0)
        # radius-0 sample balls become +inf (never inside); inside some ball <=> min < -|r_i|^2
        in_sample_ball[i0:i1] = h.sub_(s_shift.unsqueeze(0)).amin(dim=1) < -nr[i0:i1]
    return counts, min_d2, in_sample_ball


# --------------------------------------------------------------------------- public API


def kth_nn_radii(
    X: Any,
    k: int,
    *,
    chunk_size: int | None = None,
    device: Any = None,
    dtype: Any = "float32",
    squared: bool = False,
) -> np.ndarray:
    """Distance of each row of ``X`` to its k-th nearest *other* row (float64 array).

    Same numbers as ``prdc.compute_nearest_neighbour_distances(X, k)`` (Naeem et al. 2020),
    which counts the row itself and takes the (k+1)-th smallest distance. Memory is bounded
    by ``chunk_size x chunk_size`` (or the 256 MiB budget); never ``n x n``. ``squared=True``
    returns squared distances (as compared internally).

    >>> X = np.array([[0.0], [1.0], [3.0], [7.0]])
    >>> kth_nn_radii(X, 1).tolist()
    [1.0, 1.0, 2.0, 4.0]
    >>> kth_nn_radii(X, 2, dtype="float64").tolist()
    [3.0, 2.0, 3.0, 6.0]
    """
    import torch

    arr = as_matrix(X, "X")
    k = _check_k(k)
    chunk = _check_chunk(chunk_size)
    ndt = _resolve_dtype(dtype)[1]
    dev = resolve_device(device)
    if arr.shape[0] == 1:
        return np.zeros(1)
    with torch.inference_mode():
        x = _to_tensor(arr, arr.mean(axis=0), ndt, dev)
        d2 = _self_radii2(x, k, chunk)
        out = d2.cpu().numpy().astype(np.float64)
    return out if squared else np.sqrt(out)


@dataclass(frozen=True)
class NeighbourPass:
    """Everything PRDC needs, from one reference x samples pass plus the two radius passes.

    ``ref_radii2`` / ``sample_radii2``: squared k-NN radii (as compared);
    ``ball_counts``: per sample, the number of reference balls strictly containing it
    (density; precision is ``ball_counts > 0``); ``ref_min_d2``: per reference point, the
    squared distance to its nearest sample (coverage); ``ref_in_sample_ball``: per reference
    point, whether some sample ball strictly contains it (recall).
    """

    k: int
    ref_radii2: np.ndarray
    sample_radii2: np.ndarray
    ball_counts: np.ndarray
    ref_min_d2: np.ndarray
    ref_in_sample_ball: np.ndarray

    @property
    def sample_in_reference(self) -> np.ndarray:
        """Per sample: inside at least one reference ball (the precision indicator)."""
        return np.asarray(self.ball_counts > 0)

    @property
    def covered(self) -> np.ndarray:
        """Per reference point: its ball strictly contains a sample (the coverage indicator)."""
        return np.asarray(self.ref_min_d2 < self.ref_radii2)


def prdc_pass(
    reference: Any,
    samples: Any,
    k: int = 5,
    *,
    ref_radii2: np.ndarray | None = None,
    center: np.ndarray | None = None,
    chunk_size: int | None = None,
    device: Any = None,
    dtype: Any = "float32",
    knn: str = "exact",
    nlist: int | None = None,
    nprobe: int | None = None,
    ref_index: IVFIndex | None = None,
    seed: int = 0,
) -> NeighbourPass:
    """Chunked exact distances for PRDC: the samples' k-NN radii (one symmetric self pass),
    the reference's radii unless given (``ref_radii2``, squared, e.g. from the reference
    cache) and one pass over the reference x samples products.

    ``center`` (default: the reference mean) is subtracted from both sets before the cast to
    ``dtype``; cached ``ref_radii2`` must have been computed with the same ``center`` and
    ``dtype`` to be bit-consistent.

    ``knn="ivf"`` swaps every pass for its inverted-file approximation
    (:mod:`.approx`: ``nlist`` cells per set, default ``round(sqrt(rows))``, ``nprobe``
    cells scanned per query, default 8, k-means with ``seed``; ``ref_index`` may pass the
    reference's cached index, built on the centred reference rows); ``chunk_size`` does not
    apply there.

    >>> ref = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> p = prdc_pass(ref, np.array([[0.4], [10.0]]), k=1)
    >>> p.ball_counts.tolist(), p.covered.tolist()
    ([2, 0], [True, True, False, False])
    """
    import torch

    from .approx import check_knn

    method, nlist, nprobe = check_knn(knn, nlist, nprobe)
    k = _check_k(k)
    chunk = _check_chunk(chunk_size)
    tdt, ndt = _resolve_dtype(dtype)
    dev = resolve_device(device)
    if method == "ivf":
        return _prdc_pass_ivf(reference, samples, k, ref_radii2, center, dev, tdt, nlist, nprobe, ref_index, seed)
    ref = as_matrix(reference, "reference")
    gen = as_matrix(samples, "samples", width=ref.shape[1])
    n = ref.shape[0]
    if center is None:
        center = ref.mean(axis=0)
    ref_radii2 = _check_radii(ref_radii2, n)
    with torch.inference_mode():
        r = _to_tensor(ref, center, ndt, dev)
        s = _to_tensor(gen, center, ndt, dev)
        if ref_radii2 is None:
            r2_ref = _self_radii2(r, k, chunk)
        else:
            r2_ref = torch.from_numpy(ref_radii2).to(device=dev, dtype=tdt)
        r2_s = _self_radii2(s, k, chunk)
        rows = _row_block(gen.shape[0], ndt.itemsize, chunk, DEFAULT_MEMORY_BUDGET)
        return _neighbour_pass(k, r2_ref, r2_s, *_cross_pass(r, s, r2_ref, r2_s, rows))


def _check_radii(ref_radii2: Any, n: int) -> np.ndarray | None:
    if ref_radii2 is None:
        return None
    out = np.asarray(ref_radii2, dtype=np.float64)
    if out.shape != (n,):
        raise InputError("ref_radii2", f"expected shape ({n},), got {out.shape}")
    return out


def _neighbour_pass(
    k: int, r2_ref: torch.Tensor, r2_s: torch.Tensor, counts: torch.Tensor, min_d2: torch.Tensor, in_ball: torch.Tensor
) -> NeighbourPass:
    return NeighbourPass(
        k=k,
        ref_radii2=r2_ref.cpu().numpy().astype(np.float64),
        sample_radii2=r2_s.cpu().numpy().astype(np.float64),
        ball_counts=counts.cpu().numpy(),
        ref_min_d2=min_d2.cpu().numpy().astype(np.float64),
        ref_in_sample_ball=in_ball.cpu().numpy(),
    )


def _prdc_pass_ivf(
    reference: Any,
    samples: Any,
    k: int,
    ref_radii2: Any,
    center: np.ndarray | None,
    dev: torch.device,
    tdt: torch.dtype,
    nlist: int | None,
    nprobe: int | None,
    ref_index: IVFIndex | None,
    seed: int,
) -> NeighbourPass:
    import torch

    from .approx import DEFAULT_NPROBE, build_ivf, centred_tensor, ivf_cross_pass, ivf_kth_d2

    probe = DEFAULT_NPROBE if nprobe is None else nprobe
    with torch.inference_mode():
        r, center = centred_tensor(reference, "reference", center, tdt, dev)
        s, _ = centred_tensor(samples, "samples", center, tdt, dev, width=r.shape[1])
        radii = _check_radii(ref_radii2, r.shape[0])
        if ref_index is None:
            ref_index = build_ivf(r, nlist, seed)
        elif ref_index.assign.shape != (r.shape[0],):
            raise InputError("ref_index", f"indexes {ref_index.assign.shape[0]} rows, the reference has {r.shape[0]}")
        if radii is None:
            r2_ref = ivf_kth_d2(r, k, ref_index, probe)
        else:
            r2_ref = torch.from_numpy(radii).to(device=dev, dtype=tdt)
        gen_index = build_ivf(s, nlist, seed)
        r2_s = ivf_kth_d2(s, k, gen_index, probe)
        return _neighbour_pass(k, r2_ref, r2_s, *ivf_cross_pass(r, s, r2_ref, r2_s, ref_index, gen_index, probe))
