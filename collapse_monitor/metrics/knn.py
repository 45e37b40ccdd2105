"""Exact k-nearest-neighbour distances in bounded memory (torch matmul, chunked).

Everything here is *exact* (no approximate index): squared Euclidean distances come from
``||x||^2 + ||y||^2 - 2 x.y``, computed block by block as one ``torch.mm`` of ``d + 2``-wide
operands per block (the norms ride along in the product, :mod:`._knn_blocks`), clamped at 0.
No function ever holds an ``n x n`` array: the self pass (k-NN radii of one set) works on
``c x w`` blocks of the upper triangle and the cross pass (reference x samples) on ``c x m``
row blocks, where ``c`` is ``chunk_size`` or is chosen from a memory budget
(:data:`DEFAULT_MEMORY_BUDGET`, 256 MiB, for the block and its temporaries).

Semantics follow the reference ``prdc`` package (Naeem et al., "Reliable Fidelity and
Diversity Metrics for Generative Models", ICML 2020): the radius of a point is the distance
to its k-th nearest *other* point (``prdc`` includes the point itself at distance 0 and takes
the (k+1)-th smallest: the same number), and "inside a ball" is the strict ``d < r``. With
fewer than ``k + 1`` rows the radius is taken to the farthest other row (``k_eff = n - 1``);
a single row has radius 0 (an empty ball: nothing is strictly inside it).

Numerics: both sets are centred by the same vector (the reference mean rounded to the data's
grid, :func:`knn_center`, in float64) before the cast to the compute dtype, which keeps
``||x||^2`` small and the cancellation error of the expansion low, and keeps data on a coarse
grid (integers, counts, one-hot features) on it, so their distances are exact and a sample
exactly on a ball's boundary is outside, as in ``prdc``. ``dtype="float32"`` (default) is the
fast path. Its rounding is judged row by row (:func:`unresolved_rows`: about ``eps * |x|^2``
against the row's squared k-NN radius): the radii of the few rows float32 cannot resolve (a
tight cluster far from the centre, duplicates away from it) and every ball test that depends
on them are recomputed in float64 from dense products (:func:`_patched_cross`); where most rows
are unresolved (far-apart modes) the whole pass runs in float64. The inverted-file path
(``knn="ivf"``) centres and falls back the same way.
``dtype="float64"`` reproduces ``prdc``'s float64 results up to ties at the last ulp (in
float32 a distance within a few 1e-7 of a radius can fall on the other side: about one ball
count in 10^8 pairs on the benchmark's data, where ``prdc``'s own float32 distances round too).
torch's thread count is left as the caller set it (``torch.set_num_threads``) and is also the
number of threads for the numpy passes over each block; nothing here changes global state.
Results do not depend on the thread count. The block sizes (``chunk_size``) can change the
last-ulp rounding of a product, and with it the side of a boundary that an *exact* tie on
continuous values falls on (a duplicated row at exactly another's k-th neighbour distance);
on grid data they cannot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import tensor_to_numpy
from ..errors import ConfigError, InputError
from ._knn_blocks import (  # noqa: F401  (re-exported: tests and the generator panel use them)
    GroupHits,
    Shells,
    _cross_pass,
    _merge_filtered,
    _merge_topk,
    _operands,
    _self_knn_ids,
    _self_kth_d2,
)
from ._regrow import NEIGHBOURS_PER_K, Regrow, rows_knn_ids, without_self

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .approx import IVFIndex

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "NeighbourPass",
    "as_matrix",
    "knn_center",
    "kth_nn_radii",
    "prdc_pass",
    "resolve_device",
]

DEFAULT_MEMORY_BUDGET = 256 * 2**20
"""Bytes one distance block and its temporaries may take when ``chunk_size`` is None."""

# --------------------------------------------------------------------------- inputs / options


def as_matrix(x: Any, field: str, *, width: int | None = None, keep_float32: bool = False) -> np.ndarray:
    """A finite 2-D float64 array with at least one row (torch tensors accepted); raises
    :class:`~collapse_monitor.errors.InputError` naming ``field`` otherwise. ``keep_float32``:
    a float32 array is validated and returned as it is (no float64 copy), for callers that only
    cast it down again (float32 -> float64 is exact, so what they compute is the same)."""
    x = tensor_to_numpy(x)
    try:
        raw = x if isinstance(x, np.ndarray) else np.asarray(x)
    except (TypeError, ValueError):
        raise InputError(field, "could not be read as a 2-D numeric array") from None
    if np.iscomplexobj(raw):  # the float64 cast would drop the imaginary part (a ComplexWarning only)
        raise InputError(field, "expected real numbers, got complex values")
    try:
        keep = keep_float32 and raw.dtype == np.float32
        arr = raw if keep else np.asarray(raw, dtype=np.float64)
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
    if np.abs(arr).max(initial=0.0) > 1e15:  # squares overflow float32 and cancel in float64
        raise InputError(field, "contains values above 1e15 in magnitude; normalise the embeddings")
    return arr


_DEVICE = re.compile(r"(cpu|auto|cuda(:\d+)?)")


def check_device(device: Any) -> None:
    """A :class:`~collapse_monitor.errors.ConfigError` unless ``device`` is None, ``"cpu"``,
    ``"auto"``, ``"cuda"``, ``"cuda:<i>"`` or a ``torch.device`` of those types. Needs no
    torch, so a monitor checks its device when it is built, not at its first check (by then a
    hook's retrain has run); whether CUDA is there is checked at use (:func:`resolve_device`)."""
    if device is None or (isinstance(device, str) and _DEVICE.fullmatch(device)):
        return
    if type(device).__name__ == "device" and getattr(device, "type", None) in ("cpu", "cuda"):
        return
    raise ConfigError("device", f"expected None, 'cpu', 'cuda', 'cuda:<i>' or 'auto', got {device!r}")


def resolve_device(device: Any = None) -> torch.device:
    """``None`` / ``"cpu"`` -> CPU; ``"auto"`` -> CUDA when available, else CPU; ``"cuda[:i]"``
    -> that GPU (a :class:`~collapse_monitor.errors.ConfigError` when CUDA is unavailable)."""
    import torch

    check_device(device)
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
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


def _strip_width(side: int, n: int, itemsize: int, chunk_size: int | None, budget: int) -> int:
    """Columns of one ``side x width`` block of the symmetric self pass: ``chunk_size`` when
    given (square blocks), else as wide as the budget allows for the block and its mask
    (fewer, larger products: each block costs a fixed number of passes and thread wake-ups)."""
    if chunk_size is not None:
        return chunk_size
    return max(side, min(n, budget // (side * (itemsize + 2))))


def _std(arr: np.ndarray) -> np.ndarray:
    """Per-coordinate sample standard deviations (``ddof=1``, as the generator state's covariance)."""
    return arr.std(axis=0, dtype=np.float64, ddof=1 if arr.shape[0] > 1 else 0)


def knn_center(mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The vector both sets are centred on before the distance products: the reference mean,
    each coordinate rounded to a multiple of the largest power of two at or below that
    coordinate's spread (``scale``, e.g. its standard deviation; kept as is where the spread is
    0). Centring keeps ``|x|^2`` small, so the cancellation error of the expansion stays low;
    rounding it keeps data that lie on a coarse grid (integers, counts, one-hot or k/4 features)
    on that grid, so their distances stay exact and ties are decided as ``prdc`` decides them
    on the raw values (it does not centre): a sample exactly on a ball's boundary is outside.
    The rounding moves the centre by at most half a spread per coordinate.

    >>> knn_center(np.array([2.6, 0.3, 5.0]), np.array([1.2, 0.3, 0.0])).tolist()
    [3.0, 0.25, 5.0]
    """
    mean = np.asarray(mean, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    ok = np.isfinite(scale) & (scale > 0)
    grid = np.ones_like(mean)
    grid[ok] = np.exp2(np.floor(np.log2(scale[ok])))
    return np.where(ok, np.round(mean / grid) * grid, mean)


def _to_tensor(arr: np.ndarray, center: np.ndarray, np_dtype: np.dtype[Any], dev: torch.device) -> torch.Tensor:
    """``arr - center`` (float64 arithmetic) cast to ``np_dtype``, in row blocks (no full-size
    float64 temporary)."""
    import torch

    out = np.empty(arr.shape, dtype=np_dtype)
    for a in range(0, arr.shape[0], _CAST_ROWS):
        np.subtract(arr[a : a + _CAST_ROWS], center, out=out[a : a + _CAST_ROWS], casting="same_kind")
    return torch.from_numpy(out).to(dev)


_CAST_ROWS = 4096


def _self_radii2(
    x: torch.Tensor,
    k: int,
    chunk_size: int | None,
    budget: int | None = None,
    *,
    operands: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """:func:`_self_kth_d2` with blocks sized from ``chunk_size`` or the memory budget."""
    import torch

    n = x.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=x.dtype, device=x.device)
    budget = DEFAULT_MEMORY_BUDGET if budget is None else budget
    itemsize = x.element_size()
    side = _square_block(n, itemsize, chunk_size, budget)
    return _self_kth_d2(x, k, side, _strip_width(side, n, itemsize, chunk_size, budget), operands)


#: float32 distances are trusted for a row while the expansion's rounding near it (about
#: ``eps * (|x| + r)^2`` for a centred row ``x`` of k-NN radius ``r``) stays below this share
#: of its squared radius; else that row's ball is computed in float64
_FLOAT32_TOLERANCE = 1e-4

#: share of unresolved rows (both sets together, over the share of a set a query scans) above
#: which the whole pass runs in float64: recomputing ``u`` rows densely costs about
#: ``u * (n + m)`` products, the full float64 pass about ``(n + m)^2 / 2`` at twice float32's cost
_PATCH_SHARE = 0.25


def unresolved_rows(x: torch.Tensor, radii2: Any) -> np.ndarray:
    """Per centred row of ``x`` (bool, numpy): float32 products cannot resolve its k-NN ball.

    A distance near row ``x`` (``|y - x|`` up to its radius ``r``) comes out of the float32
    expansion ``|x|^2 + |y|^2 - 2 x.y`` with a rounding error of about ``eps * (|x| + r)^2``
    (float32's epsilon; ``|y| <= |x| + r``), so the row is trusted while that stays below
    :data:`_FLOAT32_TOLERANCE` of ``r^2``. The test is per row: the few rows of a tight
    cluster far from the centre are caught even when every other radius is large (a test on a
    typical radius let 40 rows of spread 1e-3 at distance 20 through, with a float32 radius of
    pure round-off: their coverage was 0 against ``prdc``'s 0.975), and far-apart modes make
    every row unresolved. A radius of 0 away from the centre is unresolved too (round-off can
    hide a tiny positive one). Rows far from everything are not: their distances are large,
    and so is their error's allowance. Never true for float64 tensors."""
    import torch

    n = x.shape[0]
    if x.dtype != torch.float32 or n < 2:
        return np.zeros(n, dtype=bool)
    r2 = torch.as_tensor(radii2).to(device=x.device, dtype=torch.float64).clamp_min(0.0)
    reach = torch.linalg.vector_norm(x, dim=1).to(torch.float64) + r2.sqrt()
    eps = float(torch.finfo(torch.float32).eps)
    return np.asarray((reach * reach * eps > _FLOAT32_TOLERANCE * r2).cpu().numpy())


def float32_is_enough(x: torch.Tensor, radii2: Any) -> bool:
    """True when float32 resolves the k-NN ball of every row of ``x`` (:func:`unresolved_rows`)."""
    return not unresolved_rows(x, radii2).any()


def _patch_pays(n_unresolved: int, n_rows: int, scanned: float = 1.0) -> bool:
    """Recompute only the unresolved rows in float64 (True), or the whole pass (False)?
    ``scanned``: the share of a set one query scans (1 for the exact pass, about
    ``nprobe / nlist`` for the inverted file, whose full pass is that much cheaper)."""
    return n_unresolved <= _PATCH_SHARE * scanned * n_rows


def _rows_kth_d2(x64: torch.Tensor, rows: np.ndarray, k: int, chunk: int | None) -> torch.Tensor:
    """Squared distance of the rows ``rows`` of ``x64`` to their ``min(k, n-1)``-th nearest
    other row, in dense ``block x n`` products of the expansion (:func:`_operands`) in the dtype
    of ``x64``: the float64 radii of the rows float32 could not resolve. Rows equal to the query
    are at distance exactly 0 (the expansion leaves a round-off of ``eps |x|^2`` there): ``k + 1``
    duplicates have radius 0, an empty ball, as in ``prdc``. The last of the neighbour lists of
    :func:`~._regrow.rows_knn_ids`, which finds the copies among the entries at round-off
    distance (this pass hashed every row of ``x64`` to find them: 1.1 s at 50k x 512 for a
    few unresolved rows)."""
    import torch

    n = x64.shape[0]
    if n < 2 or rows.size == 0:
        return torch.zeros(rows.size, dtype=x64.dtype, device=x64.device)
    kk = min(k, n - 1) + 1  # the row itself is among the kk smallest, at distance 0
    step = _row_block(n, x64.element_size(), chunk, DEFAULT_MEMORY_BUDGET)
    vals = rows_knn_ids(x64, rows, kk, step)[0]
    return torch.from_numpy(np.ascontiguousarray(vals[:, -1])).to(device=x64.device, dtype=x64.dtype)


def _patch_radii(
    x64: torch.Tensor, radii2: torch.Tensor, unresolved: np.ndarray, k: int, chunk: int | None
) -> torch.Tensor:
    """``radii2`` in float64 with its ``unresolved`` rows recomputed from ``x64``."""
    import torch

    out = radii2.to(torch.float64, copy=True)
    rows = np.flatnonzero(unresolved)
    if rows.size:
        out[torch.from_numpy(rows).to(out.device)] = _rows_kth_d2(x64, rows, k, chunk)
    return out


def _patched_cross(
    float32_pass: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    r64: torch.Tensor,
    s64: torch.Tensor,
    r2_ref: torch.Tensor,
    r2_s: torch.Tensor,
    bad_r: np.ndarray,
    bad_s: np.ndarray,
    chunk: int | None,
    hits: GroupHits | None = None,
    labels: np.ndarray | None = None,
    shells: Shells | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cross pass's ``(counts, covered, in_sample_ball)`` where some rows are unresolved in
    float32 (:func:`unresolved_rows`; ``r2_ref`` / ``r2_s`` float64, exact for those rows).

    ``float32_pass(r2_ref, r2_s)`` runs the float32 pass with the unresolved rows' balls left
    out (radius 0: nothing is inside). What it then gets right: a resolved reference ball's
    membership tests (ball counts, its coverage) against *every* sample, since a distance near
    that ball has a rounding error far below its radius; and a resolved sample ball's (recall).
    The rest is recomputed in float64 from dense products: the unresolved reference rows
    against every sample (their ball counts and coverage), every reference row against the
    unresolved samples (recall). About ``(u_ref * m + n * u_samples) d`` multiply-adds.
    ``hits`` (with ``labels``, the samples' groups in their order here, sorted or not) gets
    the per-group tests of the recomputed balls; ``shells`` (float64, every sample's), the
    unresolved samples' shell entries (:class:`Shells`; the float32 pass collects the others)."""
    import torch

    dev = r64.device
    n, m = r64.shape[0], s64.shape[0]
    br = torch.from_numpy(np.flatnonzero(bad_r)).to(dev)
    bs = torch.from_numpy(np.flatnonzero(bad_s)).to(dev)
    keep_r, keep_s = r2_ref.clone(), r2_s.clone()
    keep_r[br] = 0.0
    keep_s[bs] = 0.0
    counts, covered, in_ball = float32_pass(keep_r.to(torch.float32), keep_s.to(torch.float32))
    if br.numel():
        rows = _row_block(m, s64.element_size(), chunk, DEFAULT_MEMORY_BUDGET)
        none_s = torch.zeros(m, dtype=s64.dtype, device=dev)
        sub = None if hits is None else GroupHits.empty(hits.starts, br.numel(), dev)
        perm = None  # the samples by group for the per-group tests (the inverted file's are not)
        if sub is not None and labels is not None and labels.size > 1 and bool(np.any(labels[1:] < labels[:-1])):
            perm = torch.from_numpy(np.argsort(labels, kind="stable")).to(dev)
        s_by_group = s64 if perm is None else s64.index_select(0, perm)
        c_b, cov_b, _ = _cross_pass(r64.index_select(0, br), s_by_group, r2_ref[br], none_s, rows, hits=sub)
        if perm is None:
            counts += c_b
        else:
            counts.index_add_(0, perm, c_b)
        covered[br] = cov_b
        if hits is not None and sub is not None:  # (the float32 pass left these rows' groups all false)
            hits.covered[br] = sub.covered
    if bs.numel():
        rows = _row_block(bs.numel(), s64.element_size(), chunk, DEFAULT_MEMORY_BUDGET)
        none_r = torch.zeros(n, dtype=r64.dtype, device=dev)
        sub = None
        if hits is not None and labels is not None:  # the unresolved samples, sorted by group
            bs = bs[torch.from_numpy(np.argsort(labels[bs.cpu().numpy()], kind="stable")).to(dev)]
            sub_labels = labels[bs.cpu().numpy()]
            sub = GroupHits.empty(np.searchsorted(sub_labels, np.arange(len(hits.starts))), n, dev)
        sub_shells = None
        if shells is not None:
            sub_shells = Shells(shells.reach[bs], shells.lower[bs])
        in_ball |= _cross_pass(r64, s64.index_select(0, bs), none_r, r2_s[bs], rows, hits=sub, shells=sub_shells)[2]
        if shells is not None and sub_shells is not None:
            shells.take(sub_shells, bs.cpu().numpy())
        if hits is not None and sub is not None:
            hits.in_ball.logical_or_(sub.in_ball)
    return counts, covered, in_ball


def centred_radii2(
    arr: np.ndarray, center: np.ndarray, np_dtype: np.dtype[Any], dev: torch.device, k: int, chunk: int | None
) -> tuple[torch.Tensor, torch.Tensor, np.dtype[Any]]:
    """``(x, radii2, dtype)``: the rows of ``arr`` centred on ``center`` in ``np_dtype`` and their
    squared k-NN radii. In float32, the radii of the rows float32 cannot resolve
    (:func:`unresolved_rows`) are recomputed in float64 (``radii2`` is then float64, ``x`` and
    ``dtype`` stay float32); where they are many (:func:`_patch_pays`), everything is (``x``,
    ``radii2`` and ``dtype`` float64)."""
    x = _to_tensor(arr, center, np_dtype, dev)
    radii2 = _self_radii2(x, k, chunk)
    bad = unresolved_rows(x, radii2)
    if not bad.any():
        return x, radii2, np_dtype
    f64 = np.dtype(np.float64)
    x64 = _to_tensor(arr, center, f64, dev)
    if _patch_pays(int(bad.sum()), arr.shape[0]):
        return x, _patch_radii(x64, radii2, bad, k, chunk), np_dtype
    return x64, _self_radii2(x64, k, chunk), f64


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
        _, d2, _ = centred_radii2(arr, knn_center(arr.mean(axis=0), _std(arr)), ndt, dev, k, chunk)
        out = d2.cpu().numpy().astype(np.float64)
    return out if squared else np.sqrt(out)


@dataclass(frozen=True)
class NeighbourPass:
    """Everything PRDC needs, from one reference x samples pass plus the two radius passes.

    ``ref_radii2`` / ``sample_radii2``: squared k-NN radii (as compared);
    ``ball_counts``: per sample, the number of reference balls strictly containing it
    (density; precision is ``ball_counts > 0``); ``ref_covered``: per reference point, whether
    its ball strictly contains a sample, i.e. its nearest sample is closer than its radius
    (coverage); ``ref_in_sample_ball``: per reference point, whether some sample ball strictly
    contains it (recall).
    """

    k: int
    ref_radii2: np.ndarray
    sample_radii2: np.ndarray
    ball_counts: np.ndarray
    ref_covered: np.ndarray
    ref_in_sample_ball: np.ndarray
    #: with ``groups``: per reference point and sample group, whether a sample of that group is
    #: inside its ball (``n x G``; a row is all false exactly when the point is not covered),
    #: and whether the point is inside a ball of one of the group's samples (recall's)
    ref_cover_groups: np.ndarray | None = None
    ref_ball_groups: np.ndarray | None = None
    #: with ``groups`` (exact pass): per reference point and group ``g``, whether removing
    #: ``g``'s samples brings the point inside the grown k-NN ball of a remaining sample
    #: (:mod:`._regrow`, recall's jackknife); None where not computed (radii held fixed)
    ref_ball_gains: np.ndarray | None = None

    @property
    def sample_in_reference(self) -> np.ndarray:
        """Per sample: inside at least one reference ball (the precision indicator)."""
        return np.asarray(self.ball_counts > 0)

    @property
    def covered(self) -> np.ndarray:
        """Per reference point: its ball strictly contains a sample (the coverage indicator)."""
        return np.asarray(self.ref_covered)


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
    groups: np.ndarray | None = None,
) -> NeighbourPass:
    """Chunked exact distances for PRDC: the samples' k-NN radii (one symmetric self pass),
    the reference's radii unless given (``ref_radii2``, squared, e.g. from the reference
    cache) and one pass over the reference x samples products.

    ``center`` (default: the reference mean rounded to its grid, :func:`knn_center`) is
    subtracted from both sets before the cast to ``dtype``; cached ``ref_radii2`` must have been
    computed with the same ``center`` and ``dtype`` to be bit-consistent (as
    :func:`centred_radii2` computes them: the rows float32 cannot resolve in float64; they are
    kept as given, never recomputed, and the rows they leave unresolved get the float64 ball
    tests).

    ``knn="ivf"`` swaps every pass for its inverted-file approximation
    (:mod:`.approx`: ``nlist`` cells per set, default ``round(sqrt(rows))``, ``nprobe``
    cells scanned per query, default 8, k-means with ``seed``; ``ref_index`` may pass the
    reference's cached index, built on the centred reference rows); ``chunk_size`` does not
    apply there.

    ``groups`` (per sample, ids ``0..G-1``) adds ``ref_cover_groups`` / ``ref_ball_groups``:
    which groups' samples are inside each reference ball, and which groups' sample balls hold
    each reference point (the grouped jackknife of coverage and recall), and on the exact pass
    ``ref_ball_gains``: which reference points each group's removal brings inside the
    remaining samples' regrown balls (:mod:`._regrow`; recall's jackknife).

    >>> ref = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> p = prdc_pass(ref, np.array([[0.4], [10.0]]), k=1)
    >>> p.ball_counts.tolist(), p.covered.tolist()
    ([2, 0], [True, True, False, False])
    """

    from .approx import check_knn

    method, nlist, nprobe = check_knn(knn, nlist, nprobe)
    k = _check_k(k)
    chunk = _check_chunk(chunk_size)
    tdt, ndt = _resolve_dtype(dtype)
    dev = resolve_device(device)
    grouping = None
    if groups is not None:
        # the exact pass reads a group as a column range; the inverted file takes the labels
        # as they come (sorting there changed its k-means cells, and so the approximation)
        samples, grouping = _sorted_by_group(samples, groups, sort=method != "ivf")
    passed = _prdc_pass(
        reference,
        samples,
        k,
        ref_radii2,
        center,
        chunk,
        dev,
        tdt,
        ndt,
        method,
        nlist,
        nprobe,
        ref_index,
        seed,
        grouping,
    )
    if grouping is None:
        return passed
    order = grouping.order
    counts, radii = np.empty_like(passed.ball_counts), np.empty_like(passed.sample_radii2)
    counts[order], radii[order] = passed.ball_counts, passed.sample_radii2
    return replace(passed, ball_counts=counts, sample_radii2=radii)


@dataclass(frozen=True)
class _Grouping:
    """Samples' groups for :func:`_cross_pass`: ``order`` (pass position -> input row),
    ``labels`` (the pass rows' groups, ``0..G-1``), ``starts`` (``G + 1`` offsets: when the
    rows are sorted by group, group ``g`` is rows ``starts[g]:starts[g + 1]``; the inverted-file
    pass keeps the input order and reads ``labels`` alone)."""

    order: np.ndarray
    starts: np.ndarray
    labels: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.starts) - 1

    def out(self, n: int, dev: torch.device) -> GroupHits:
        return GroupHits.empty(self.starts, n, dev)


def _sorted_by_group(samples: Any, groups: Any, *, sort: bool = True) -> tuple[np.ndarray, _Grouping]:
    """The samples (sorted by group unless ``sort=False``) and their :class:`_Grouping`. Group
    ids are renumbered ``0..G-1`` in their order: ids with gaps (``{0, 2}``) made empty groups,
    which the jackknife counted as groups (an audit: a design effect of 18.4 for 1.6)."""
    gen = as_matrix(samples, "samples", keep_float32=True)
    g = np.asarray(groups)
    if g.shape != (gen.shape[0],) or g.dtype.kind not in "iu" or (g.size and g.min() < 0):
        raise InputError(
            "groups",
            f"expected one non-negative integer group per sample ({gen.shape[0]}), got shape {g.shape} of {g.dtype}",
        )
    ids, compact = np.unique(g, return_inverse=True)
    compact = np.asarray(compact, dtype=np.int64).reshape(-1)
    counts = np.bincount(compact, minlength=ids.size)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if not sort:
        return gen, _Grouping(np.arange(gen.shape[0]), starts, compact)
    order = np.argsort(compact, kind="stable")
    return gen[order], _Grouping(order, starts, compact[order])


def _prdc_pass(
    reference: Any,
    samples: Any,
    k: int,
    ref_radii2: Any,
    center: np.ndarray | None,
    chunk: int | None,
    dev: torch.device,
    tdt: torch.dtype,
    ndt: np.dtype[Any],
    method: str,
    nlist: int | None,
    nprobe: int | None,
    ref_index: IVFIndex | None,
    seed: int,
    grouping: _Grouping | None,
) -> NeighbourPass:
    """:func:`prdc_pass` on checked settings (samples sorted by group when ``grouping``)."""
    import torch

    if method == "ivf":
        return _prdc_pass_ivf(
            reference, samples, k, ref_radii2, center, dev, tdt, nlist, nprobe, ref_index, seed, grouping
        )
    # float32 inputs stay float32 (only cast, centred, to the compute dtype below)
    ref = as_matrix(reference, "reference", keep_float32=True)
    gen = as_matrix(samples, "samples", width=ref.shape[1], keep_float32=True)
    n, m = ref.shape[0], gen.shape[0]
    if center is None:
        center = knn_center(ref.mean(axis=0, dtype=np.float64), _std(ref))
    given = _check_radii(ref_radii2, n)
    f64 = np.dtype(np.float64)
    cg = None if grouping is None else grouping.out(n, dev)
    with torch.inference_mode():
        r = _to_tensor(ref, center, ndt, dev)
        s = _to_tensor(gen, center, ndt, dev)
        ops_r, ops_s = _operands(r, rhs=given is None), _operands(s)  # built once, shared
        if given is None:
            r2_ref = _self_radii2(r, k, chunk, operands=ops_r)
        else:
            r2_ref = torch.from_numpy(given).to(device=dev, dtype=tdt)
        # recall's regrown balls (:mod:`._regrow`): with sample groups, each leaving more than k
        # samples (with fewer, the prdc radius reaches the farthest remaining one and can shrink)
        regrow = (
            grouping is not None
            and grouping.n_groups >= 2
            and m > NEIGHBOURS_PER_K * k
            and m - int(np.diff(grouping.starts).max()) > k
        )
        r2_s, nb = _sample_radii2(s, k, chunk, ops_s, regrow)
        rows = _row_block(m, ndt.itemsize, chunk, DEFAULT_MEMORY_BUDGET)
        # per row: can float32 resolve its ball? (given radii: judged on their float64 values)
        bad_r = unresolved_rows(r, r2_ref if given is None else given)
        bad_s = unresolved_rows(s, r2_s)
        if not (bad_r.any() or bad_s.any()):  # the common case: float32 throughout
            grow = _regrow(grouping, r2_s, nb, k, s, chunk)
            shells = None if grow is None else grow.shells(tdt, dev)
            passes = _cross_pass(r, s, r2_ref, r2_s, rows, lhs=ops_r[0], rhs=ops_s[1], hits=cg, shells=shells)
            return _neighbour_pass(k, r2_ref, r2_s, *passes, cg, _gains(grow, shells, cg))
        r64, s64 = _to_tensor(ref, center, f64, dev), _to_tensor(gen, center, f64, dev)
        if not _patch_pays(int(bad_r.sum() + bad_s.sum()), n + m):
            # most rows unresolved (far-apart modes, samples in a tight cluster far from the
            # reference's centre): the whole pass in float64; given radii are kept (a state
            # computes the unresolved ones in float64 itself)
            del r, s, ops_r, ops_s
            ops_r, ops_s = _operands(r64, rhs=given is None), _operands(s64)
            kept = None if given is None else torch.from_numpy(given).to(dev)
            r2_ref = _self_radii2(r64, k, chunk, operands=ops_r) if kept is None else kept
            r2_s, nb = _sample_radii2(s64, k, chunk, ops_s, regrow)
            grow = _regrow(grouping, r2_s, nb, k, s64, chunk)
            shells = None if grow is None else grow.shells(torch.float64, dev)
            rows = _row_block(m, f64.itemsize, chunk, DEFAULT_MEMORY_BUDGET)
            passes = _cross_pass(r64, s64, r2_ref, r2_s, rows, lhs=ops_r[0], rhs=ops_s[1], hits=cg, shells=shells)
            return _neighbour_pass(k, r2_ref, r2_s, *passes, cg, _gains(grow, shells, cg))
        # a few unresolved rows (a tight cluster away from the centre, duplicates): only their
        # radii and the ball tests that depend on them in float64
        r2_ref = _patch_radii(r64, r2_ref, bad_r, k, chunk) if given is None else torch.from_numpy(given).to(dev)
        r2_s = _patch_radii(s64, r2_s, bad_s, k, chunk)
        if nb is not None and bad_s.any():  # the unresolved samples' neighbours, in float64 too
            rows_bad = np.flatnonzero(bad_s)
            step = _row_block(m, f64.itemsize, chunk, DEFAULT_MEMORY_BUDGET)
            nb[0][rows_bad], nb[1][rows_bad] = rows_knn_ids(s64, rows_bad, nb[0].shape[1], step)
        grow = _regrow(grouping, r2_s, nb, k, s64, chunk)
        shells = None if grow is None else grow.shells(tdt, dev, unresolved=bad_s)

        def float32_pass(rr2: torch.Tensor, ss2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return _cross_pass(r, s, rr2, ss2, rows, lhs=ops_r[0], rhs=ops_s[1], hits=cg, shells=shells)

        labels = None if grouping is None else grouping.labels
        bad_shells = None if grow is None else grow.shells(torch.float64, dev)
        passes = _patched_cross(float32_pass, r64, s64, r2_ref, r2_s, bad_r, bad_s, chunk, cg, labels, bad_shells)
        if shells is not None and bad_shells is not None:
            shells.merge(bad_shells)
        return _neighbour_pass(k, r2_ref, r2_s, *passes, cg, _gains(grow, shells, cg))


def _sample_radii2(
    s: torch.Tensor, k: int, chunk: int | None, operands: tuple[torch.Tensor, torch.Tensor], regrow: bool
) -> tuple[torch.Tensor, tuple[np.ndarray, np.ndarray] | None]:
    """The samples' squared k-NN radii and, with ``regrow``, their ``2k + 1`` nearest rows
    (themselves included) as ``(values, indices)`` from the same products (the radii bit for bit
    :func:`_self_radii2`'s)."""
    if not regrow:
        return _self_radii2(s, k, chunk, operands=operands), None
    m = s.shape[0]
    itemsize = s.element_size()
    side = _square_block(m, itemsize, chunk, DEFAULT_MEMORY_BUDGET)
    width = _strip_width(side, m, itemsize, chunk, DEFAULT_MEMORY_BUDGET)
    vals, ids = _self_knn_ids(s, NEIGHBOURS_PER_K * k + 1, side, width, operands)
    return vals[:, min(k, m - 1)].contiguous(), (vals.cpu().numpy().astype(np.float64), ids.cpu().numpy())


def _regrow(
    grouping: _Grouping | None, r2_s: torch.Tensor, nb: Any, k: int, s: torch.Tensor, chunk: int | None
) -> Regrow | None:
    """The samples' regrown radii (:class:`Regrow`); lists too short for them (few groups: more
    than ``k`` of a sample's ``2k`` nearest in one group) are recomputed densely, twice as long
    each round, up to every sample."""
    if grouping is None or nb is None:
        return None
    radii2 = r2_s.cpu().numpy().astype(np.float64)
    grow = Regrow(grouping.labels, radii2, *without_self(*nb), k)
    m, kk = s.shape[0], nb[1].shape[1]
    while grow.short.any() and kk < m:
        kk = min(m, 2 * kk)
        rows = np.flatnonzero(grow.short)
        vals, ids = rows_knn_ids(s, rows, kk, _row_block(m, s.element_size(), chunk, DEFAULT_MEMORY_BUDGET))
        grow.refine(rows, *without_self(vals, ids, rows))
    return grow


def _gains(grow: Regrow | None, shells: Shells | None, hits: GroupHits | None) -> np.ndarray | None:
    if grow is None or shells is None or hits is None:
        return None
    return grow.gains(shells.entries(), hits.in_ball.cpu().numpy())


def _check_radii(ref_radii2: Any, n: int) -> np.ndarray | None:
    if ref_radii2 is None:
        return None
    out = np.asarray(ref_radii2, dtype=np.float64)
    if out.shape != (n,):
        raise InputError("ref_radii2", f"expected shape ({n},), got {out.shape}")
    return out


def _neighbour_pass(
    k: int,
    r2_ref: torch.Tensor,
    r2_s: torch.Tensor,
    counts: torch.Tensor,
    covered: torch.Tensor,
    in_ball: torch.Tensor,
    hits: GroupHits | None = None,
    gains: np.ndarray | None = None,
) -> NeighbourPass:
    return NeighbourPass(
        k=k,
        ref_radii2=r2_ref.cpu().numpy().astype(np.float64),
        sample_radii2=r2_s.cpu().numpy().astype(np.float64),
        ball_counts=counts.cpu().numpy(),
        ref_covered=covered.cpu().numpy(),
        ref_in_sample_ball=in_ball.cpu().numpy(),
        ref_cover_groups=None if hits is None else hits.covered.cpu().numpy(),
        ref_ball_groups=None if hits is None else hits.in_ball.cpu().numpy(),
        ref_ball_gains=gains,
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
    grouping: _Grouping | None = None,
) -> NeighbourPass:
    """:func:`prdc_pass` with ``knn="ivf"``: the same centre (the reference mean rounded to its
    grid, :func:`knn_center`) and the same float64 fallback as the exact pass, so that probing
    every cell reproduces its values: the rows float32 cannot resolve (:func:`unresolved_rows`)
    are recomputed exactly in float64 (dense products, :func:`_patched_cross`), or, when they
    are more than a pass over them would cost, every pass runs in float64 (indexes built here
    are rebuilt on the float64 rows)."""
    import torch

    from .approx import DEFAULT_NPROBE, build_ivf, centred_tensor, ivf_cross_pass, ivf_kth_d2

    probe = DEFAULT_NPROBE if nprobe is None else nprobe
    with torch.inference_mode():
        r, center = centred_tensor(reference, "reference", center, tdt, dev)
        s, _ = centred_tensor(samples, "samples", center, tdt, dev, width=r.shape[1])
        n, m = r.shape[0], s.shape[0]
        given = _check_radii(ref_radii2, n)
        own_index = ref_index is None
        if ref_index is None:
            ref_index = build_ivf(r, nlist, seed)
        elif ref_index.assign.shape != (n,):
            raise InputError("ref_index", f"indexes {ref_index.assign.shape[0]} rows, the reference has {n}")
        r2_ref = ivf_kth_d2(r, k, ref_index, probe) if given is None else torch.from_numpy(given).to(dev, tdt)
        gen_index = build_ivf(s, nlist, seed)
        r2_s = ivf_kth_d2(s, k, gen_index, probe)

        cg = None if grouping is None else grouping.out(n, dev)
        labels = None if grouping is None else torch.from_numpy(grouping.labels).to(dev)

        def cross(
            r_: torch.Tensor, s_: torch.Tensor, rr2: torch.Tensor, ss2: torch.Tensor, ri: IVFIndex, gi: IVFIndex
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            groups = None if cg is None or labels is None else (labels, cg)
            counts, min_d2, in_ball = ivf_cross_pass(r_, s_, rr2, ss2, ri, gi, probe, hits=groups)
            if cg is not None:
                cg.covered[rr2 <= 0] = False
            return counts, (min_d2 < rr2) & (rr2 > 0), in_ball  # a radius-0 ball contains nothing

        bad_r = unresolved_rows(r, r2_ref if given is None else given)
        bad_s = unresolved_rows(s, r2_s)
        if not (bad_r.any() or bad_s.any()):
            return _neighbour_pass(k, r2_ref, r2_s, *cross(r, s, r2_ref, r2_s, ref_index, gen_index), cg)
        r64, _ = centred_tensor(reference, "reference", center, torch.float64, dev)
        s64, _ = centred_tensor(samples, "samples", center, torch.float64, dev)
        scanned = min(1.0, probe / max(1, min(ref_index.nlist, gen_index.nlist)))
        if not _patch_pays(int(bad_r.sum() + bad_s.sum()), n + m, scanned):
            del r, s
            if own_index:
                ref_index = build_ivf(r64, nlist, seed)
            r2_ref = ivf_kth_d2(r64, k, ref_index, probe) if given is None else torch.from_numpy(given).to(dev)
            gen_index = build_ivf(s64, nlist, seed)
            r2_s = ivf_kth_d2(s64, k, gen_index, probe)
            return _neighbour_pass(k, r2_ref, r2_s, *cross(r64, s64, r2_ref, r2_s, ref_index, gen_index), cg)
        r2_ref = _patch_radii(r64, r2_ref, bad_r, k, None) if given is None else torch.from_numpy(given).to(dev)
        r2_s = _patch_radii(s64, r2_s, bad_s, k, None)
        index32 = ref_index

        def float32_pass(rr2: torch.Tensor, ss2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return cross(r, s, rr2, ss2, index32, gen_index)

        passes = _patched_cross(
            float32_pass, r64, s64, r2_ref, r2_s, bad_r, bad_s, None, cg, None if grouping is None else grouping.labels
        )
        return _neighbour_pass(k, r2_ref, r2_s, *passes, cg)
