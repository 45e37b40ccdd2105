"""Approximate k-NN for PRDC at a million rows and more: an inverted-file (IVF) index.

The exact path (:mod:`.knn`) costs ``O(n^2 d)``: minutes at 50,000 rows, hours at a million
on two cores. Here the rows are split into ``nlist`` cells by k-means (the coarse quantiser
of an inverted file: Sivic & Zisserman, "Video Google", ICCV 2003; Jegou, Douze & Schmid,
"Product quantization for nearest neighbor search", TPAMI 2011; the ``IndexIVFFlat`` of
faiss, Johnson, Douze & Jegou, IEEE TBD 2019), and a query only scans the rows of its
``nprobe`` nearest cells, with exact distances. Each pass costs about
``n_queries * nprobe / nlist * n * d`` plus ``n_queries * nlist * d`` for the probing, and
runs *list by list* as dense torch matmuls (queries of a cell x the cell's rows), so it uses
the same BLAS as the exact path and the same ``device`` (CPU or CUDA); no extra package.

What it approximates, and in which direction (measured against the exact path in
``benchmarks/speed.py``):

* k-NN radii: a neighbour in an unprobed cell is missed, so a radius can only come out
  *larger* than the exact one (more balls contain points: precision, recall, coverage up);
* the nearest-sample distance (coverage): the nearest sample can only be missed, so it can only come out
  larger (coverage down); the two errors partly cancel;
* ball counts (precision, density) and the recall indicator: balls whose centre lies in an
  unprobed cell are not seen (down).

Every row's own cell is always probed (its nearest centroid), so a point always finds
itself. Results are deterministic for a given ``seed``, ``nlist`` and ``nprobe``. The rows are
centred and judged for float32 precision as in the exact path (:mod:`.knn`: the grid-rounded
reference mean; rows float32 cannot resolve recomputed in float64), so that probing every cell
(``nprobe >= nlist``) reproduces the exact values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import tensor_to_numpy
from ..errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ._knn_blocks import GroupHits

__all__ = [
    "DEFAULT_NPROBE",
    "KNN_METHODS",
    "IVFIndex",
    "build_ivf",
    "check_knn",
    "default_nlist",
    "ivf_cross_pass",
    "ivf_kth_d2",
]

KNN_METHODS = ("exact", "ivf")
DEFAULT_NPROBE = 8
_KMEANS_ITERS = 10
_TRAIN_PER_LIST = 64  # k-means training rows per cell (faiss warns below 39)
_BLOCK_BUDGET = 64 * 2**20  # bytes of one (queries of a cell) x (rows of the cell) block


def check_knn(knn: Any, nlist: Any = None, nprobe: Any = None) -> tuple[str, int | None, int | None]:
    """Validate the ``knn`` / ``nlist`` / ``nprobe`` options (``ConfigError`` naming the key)."""
    if knn not in KNN_METHODS:
        raise ConfigError("knn", f"expected one of {', '.join(map(repr, KNN_METHODS))}, got {knn!r}")
    for key, v in (("nlist", nlist), ("nprobe", nprobe)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ConfigError(key, f"expected a positive integer or None, got {v!r}")
    return str(knn), None if nlist is None else int(nlist), None if nprobe is None else int(nprobe)


def default_nlist(n: int) -> int:
    """``round(sqrt(n))`` cells (at least 1): cells of about ``sqrt(n)`` rows, large enough
    for efficient matmuls, and probing costs about as much as scanning.

    >>> default_nlist(100_000), default_nlist(1_000_000), default_nlist(3)
    (316, 1000, 2)
    """
    return max(1, min(n, round(math.sqrt(n))))


@dataclass(frozen=True, eq=False)
class IVFIndex:
    """Coarse quantiser of one set of rows: ``centroids`` (``nlist x d``, in the centred
    coordinates the rows were indexed in) and ``assign``, the cell of each row."""

    centroids: np.ndarray
    assign: np.ndarray

    @property
    def nlist(self) -> int:
        return int(self.centroids.shape[0])


# --------------------------------------------------------------------------- quantiser


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def _nearest_cells(q: torch.Tensor, centroids: torch.Tensor, nprobe: int, rows: int = 8192) -> torch.Tensor:
    """``(n_queries, nprobe)`` nearest cells of each query, nearest first (chunked)."""
    import torch

    cn = _sq_norms(centroids)
    p = min(nprobe, centroids.shape[0])
    out = torch.empty((q.shape[0], p), dtype=torch.int64, device=q.device)
    for a in range(0, q.shape[0], rows):
        scores = torch.addmm(cn.unsqueeze(0), q[a : a + rows], centroids.T, beta=1.0, alpha=-2.0)
        out[a : a + rows] = torch.topk(scores, p, dim=1, largest=False, sorted=True).indices
    return out


def _kmeans(x: torch.Tensor, nlist: int, seed: int) -> torch.Tensor:
    """Lloyd's k-means (``_KMEANS_ITERS`` iterations) on at most ``64 * nlist`` fixed-seed
    rows, initialised with distinct random rows; an empty cell keeps its centroid."""
    import torch

    n = x.shape[0]
    rng = np.random.default_rng(seed)
    train_idx = np.sort(rng.choice(n, min(n, _TRAIN_PER_LIST * nlist), replace=False))
    train = x[torch.from_numpy(train_idx).to(x.device)]
    init = rng.choice(train.shape[0], nlist, replace=False)
    centroids = train[torch.from_numpy(init).to(x.device)].clone()
    for _ in range(_KMEANS_ITERS):
        cell = _nearest_cells(train, centroids, 1)[:, 0]
        sums = torch.zeros_like(centroids).index_add_(0, cell, train)
        counts = torch.bincount(cell, minlength=nlist).to(x.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
    return centroids


def build_ivf(x: torch.Tensor, nlist: int | None = None, seed: int = 0) -> IVFIndex:
    """Index the rows of ``x`` (a centred torch tensor): k-means centroids and each row's
    nearest cell."""
    n = x.shape[0]
    nl = default_nlist(n) if nlist is None else min(int(nlist), n)
    centroids = _kmeans(x, nl, seed)
    assign = _nearest_cells(x, centroids, 1)[:, 0]
    return IVFIndex(centroids.cpu().numpy(), assign.cpu().numpy())


# --------------------------------------------------------------------------- list-major scan


def _group(keys: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, list[int]]:
    """Positions of ``keys`` sorted by key (stable) and the group boundaries."""
    import torch

    order = torch.argsort(keys, stable=True)
    counts = torch.bincount(keys, minlength=n_groups)
    bounds = [0, *torch.cumsum(counts, 0).tolist()]
    return order, bounds


def _scan(
    q: torch.Tensor,
    base: torch.Tensor,
    index: IVFIndex,
    nprobe: int,
    visit: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], None],
) -> None:
    """For every cell: the squared distances (clamped at 0) of the queries that probe it to
    the rows in it, passed to ``visit(query_ids, row_ids, d2, cell)`` in blocks that fit
    ``_BLOCK_BUDGET``. A query meets each of its ``nprobe`` cells exactly once."""
    import torch

    dev = q.device
    centroids = torch.from_numpy(index.centroids).to(device=dev, dtype=q.dtype)
    assign = torch.from_numpy(index.assign).to(dev)
    nlist = index.nlist
    probes = _nearest_cells(q, centroids, nprobe)
    p = probes.shape[1]
    q_order, q_bounds = _group(probes.reshape(-1), nlist)
    q_ids = q_order // p
    b_ids, b_bounds = _group(assign, nlist)
    qn, bn = _sq_norms(q), _sq_norms(base)
    for cell in range(nlist):
        b0, b1 = b_bounds[cell], b_bounds[cell + 1]
        q0, q1 = q_bounds[cell], q_bounds[cell + 1]
        if b0 == b1 or q0 == q1:
            continue
        rows = b_ids[b0:b1]
        b = base.index_select(0, rows)
        step = max(1, _BLOCK_BUDGET // (4 * (b1 - b0)))
        for a in range(q0, q1, step):
            qi = q_ids[a : min(q1, a + step)]
            d2 = torch.addmm(bn[rows].unsqueeze(0), q.index_select(0, qi), b.T, beta=1.0, alpha=-2.0)
            d2.add_(qn[qi].unsqueeze(1)).clamp_min_(0.0)
            visit(qi, rows, d2, cell)


def ivf_kth_d2(x: torch.Tensor, k: int, index: IVFIndex, nprobe: int = DEFAULT_NPROBE) -> torch.Tensor:
    """Approximate squared distance of each row of ``x`` to its ``min(k, n-1)``-th nearest
    other row (never below the exact value): the rows of its ``nprobe`` nearest cells."""
    import torch

    n = x.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=x.dtype, device=x.device)
    kk = min(k, n - 1) + 1  # the row itself, at distance 0, is among the kk smallest
    best = torch.full((n, kk), math.inf, dtype=x.dtype, device=x.device)
    assign = torch.from_numpy(index.assign).to(x.device)
    # position of each row inside its cell's block (the order _scan uses), to zero self-distances
    b_ids, b_bounds = _group(assign, index.nlist)
    pos = torch.empty(n, dtype=torch.int64, device=x.device)
    starts = torch.tensor(b_bounds[:-1], dtype=torch.int64, device=x.device)
    pos[b_ids] = torch.arange(n, device=x.device) - starts[assign[b_ids]]

    def visit(qi: torch.Tensor, rows: torch.Tensor, d2: torch.Tensor, cell: int) -> None:
        own = torch.nonzero(assign[qi] == cell).squeeze(1)
        d2[own, pos[qi[own]]] = 0.0
        t = torch.topk(d2, min(kk, d2.shape[1]), dim=1, largest=False, sorted=False).values
        both = torch.cat([best[qi], t], dim=1)
        best[qi] = torch.topk(both, kk, dim=1, largest=False, sorted=False).values

    _scan(x, x, index, nprobe, visit)
    return best.amax(dim=1)


def ivf_cross_pass(
    r: torch.Tensor,
    s: torch.Tensor,
    r2_ref: torch.Tensor,
    r2_s: torch.Tensor,
    ref_index: IVFIndex,
    gen_index: IVFIndex,
    nprobe: int = DEFAULT_NPROBE,
    hits: tuple[torch.Tensor, GroupHits] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three outputs of the exact cross pass (per sample: reference balls containing it;
    per reference point: squared distance to its nearest sample and whether a sample ball
    contains it), each over the rows of the ``nprobe`` nearest cells of the query: samples
    against the reference index, reference points against the samples' index.

    ``hits = (labels, GroupHits)``: per sample its group; the :class:`~._knn_blocks.GroupHits`
    are or-ed with each group's own ball tests (over the scanned samples only)."""
    import torch

    n, m = r.shape[0], s.shape[0]
    counts = torch.zeros(m, dtype=torch.int64, device=r.device)
    min_d2 = torch.full((n,), math.inf, dtype=r.dtype, device=r.device)
    in_ball = torch.zeros(n, dtype=torch.bool, device=r.device)

    def count(qi: torch.Tensor, rows: torch.Tensor, d2: torch.Tensor, cell: int) -> None:
        counts.index_add_(0, qi, (d2 < r2_ref[rows].unsqueeze(0)).sum(dim=1))

    def nearest(qi: torch.Tensor, rows: torch.Tensor, d2: torch.Tensor, cell: int) -> None:
        min_d2[qi] = torch.minimum(min_d2[qi], d2.amin(dim=1))
        in_ball[qi] |= (d2 < r2_s[rows].unsqueeze(0)).any(dim=1)
        if hits is not None:
            labels, out = hits
            onehot = torch.nn.functional.one_hot(labels[rows], out.covered.shape[1]).to(d2.dtype)
            out.covered[qi] |= ((d2 < r2_ref[qi].unsqueeze(1)).to(d2.dtype) @ onehot) > 0
            out.in_ball[qi] |= ((d2 < r2_s[rows].unsqueeze(0)).to(d2.dtype) @ onehot) > 0

    _scan(s, r, ref_index, nprobe, count)
    _scan(r, s, gen_index, nprobe, nearest)
    return counts, min_d2, in_ball


def centred_tensor(
    x: Any,
    field: str,
    center: np.ndarray | None,
    dtype: Any,
    device: Any,
    *,
    width: int | None = None,
    rows: int = 65536,
) -> tuple[torch.Tensor, np.ndarray]:
    """Rows of ``x`` minus ``center`` as a ``dtype`` tensor, converted and checked for finite
    values in blocks of ``rows`` (no float64 copy of the whole set: at a million 512-d rows
    that copy alone is 4 GB). ``center`` defaults to the exact pass's: the mean rounded to the
    data's grid (:func:`~.knn.knn_center` of the mean and the ``ddof=1`` standard deviations,
    both accumulated in float64 block by block), so that data on a coarse grid (integers,
    one-hot) stay on it and their distances, ties at a ball's boundary included, come out as
    ``prdc`` computes them (on the raw mean, ``prdc(knn="ivf")`` with every cell probed gave
    precision 0.652 against the exact 0.616 on integer data)."""
    import torch

    from .knn import knn_center

    x = tensor_to_numpy(x)
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        raise InputError(field, "could not be read as a 2-D numeric array") from None
    if np.iscomplexobj(arr):  # the float64 cast would drop the imaginary part (a ComplexWarning only)
        raise InputError(field, "expected real numbers, got complex values")
    if arr.dtype.kind not in "fiu":
        try:
            arr = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(field, "could not be read as a 2-D numeric array") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(field, f"expected a non-empty 2-D array of shape (n, d), got shape {arr.shape}")
    if width is not None and arr.shape[1] != width:
        raise InputError(field, f"expected width d={width} (the reference's), got d={arr.shape[1]}")
    n = arr.shape[0]
    if center is None:
        total = np.zeros(arr.shape[1])
        for a in range(0, n, rows):
            total += arr[a : a + rows].sum(axis=0, dtype=np.float64)
        mean = total / n
        if not np.isfinite(mean).all():
            raise InputError(field, "contains NaN or infinite values")
        squares = np.zeros(arr.shape[1])
        for a in range(0, n, rows):
            dz = arr[a : a + rows].astype(np.float64) - mean
            squares += np.einsum("ij,ij->j", dz, dz)
        center = knn_center(mean, np.sqrt(squares / max(n - 1, 1)))
    out = torch.empty(arr.shape, dtype=dtype, device="cpu")
    view = out.numpy()
    for a in range(0, n, rows):
        block = arr[a : a + rows].astype(np.float64)
        if not np.isfinite(block).all():
            raise InputError(field, "contains NaN or infinite values")
        view[a : a + rows] = block - center
    return out.to(device), center
