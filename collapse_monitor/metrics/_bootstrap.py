"""The grouped bootstrap of the spectral diversity metrics (:mod:`.diversity`), and the
symmetric eigen-decompositions and BLAS threading they share.

Grouped bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 6 for
resampling with multinomial weights; here whole random groups of rows are resampled): the rows
are split once into ``G`` groups with per-group counts, sums and ``d x d`` scatter matrices
(:class:`GroupMoments`, mergeable by addition); a replicate is a weighted sum of them. With many
rows (:func:`scatters_pay`) the scatters are built once per feature set and every statistic's
replicates come from them (:func:`spectral_bootstrap_scatters`: ``G d^3`` per statistic however
many rows); otherwise from the rows (:func:`spectral_bootstrap`). Above ``max_dim`` dimensions a
replicate's spectrum is exact in the top ``max_dim`` eigenvectors of the full-sample matrix and
first-order (the diagonal ``v^T M_b v``, Rayleigh-Schrodinger perturbation) in the others.

BLAS: the work is many independent products and small eigen-decompositions, run on
``workers`` threads with one BLAS thread each (:func:`_map`), never on OpenBLAS's own threads,
which spin and slow down several-fold when another process holds a core.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

__all__ = [
    "GroupMoments",
    "Scatters",
    "bootstrap_spectra",
    "default_workers",
    "entropy_influence",
    "gram",
    "group_design",
    "group_moments",
    "scatters",
    "scatters_pay",
    "spectral_bootstrap",
    "spectral_bootstrap_scatters",
    "sym_eigh",
    "sym_eigvalsh",
]


# --------------------------------------------------------------------------- grouped bootstrap


def group_design(m: int, n_groups: int, n_boot: int, seed: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The grouped bootstrap's design for ``m`` rows: ``g = min(m, n_groups)`` random groups of
    near-equal size (``groups``, one label per row) and ``n_boot`` multinomial group weights
    ``(n_boot, g)`` summing to ``g``, all from one ``seed``."""
    rng = np.random.default_rng(seed)
    g = min(m, n_groups)
    groups = np.empty(m, dtype=np.int64)
    groups[rng.permutation(m)] = np.arange(m) % g
    weights = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot).astype(np.float64)
    return g, groups, weights


@dataclass(frozen=True)
class GroupMoments:
    """Per-group row counts, feature sums ``(G, r)`` and scatter matrices ``(G, r, r)``
    (``sum x x^T``): mergeable by addition, and a bootstrap replicate that resamples whole
    groups is a weighted sum of them (``G r^2`` work instead of ``m r^2``)."""

    counts: np.ndarray
    sums: np.ndarray
    scatters: np.ndarray

    def combine(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(n_b, sums_b, scatters_b)`` for each row of ``weights`` ``(B, G)``."""
        g, r = self.sums.shape
        n_b = weights @ self.counts
        s_b = weights @ self.sums
        sc_b = (weights @ self.scatters.reshape(g, r * r)).reshape(-1, r, r)
        return n_b, s_b, sc_b

    def rotated(self, basis: np.ndarray, *, workers: int = 1) -> GroupMoments:
        """The moments of the rows projected on ``basis`` (``r x q``): ``B^T S_g B``."""
        return GroupMoments(
            self.counts, self.sums @ basis, np.stack(_map(lambda s: basis.T @ s @ basis, self.scatters, workers))
        )


@dataclass(frozen=True)
class Scatters:
    """:class:`GroupMoments` of a sample's rows plus the scatter ``X^T X`` and sums of all rows
    (accumulated in fixed row blocks: they do not depend on the grouping, so point estimates
    computed from them do not depend on the bootstrap seed)."""

    groups: GroupMoments
    total: np.ndarray
    total_sum: np.ndarray

    @property
    def m(self) -> int:
        return int(self.groups.counts.sum())

    def matrix(self, *, centred: bool) -> np.ndarray:
        """The all-rows scatter, centred (``sum (x - mean)(x - mean)^T``) or not."""
        if not centred:
            return self.total
        return self.total - np.outer(self.total_sum, self.total_sum) / max(self.m, 1)


def group_moments(Z: np.ndarray, groups: np.ndarray, n_groups: int) -> GroupMoments:
    """Moments of the rows of ``Z`` by group label ``0 .. n_groups - 1``."""
    z = np.asarray(Z, dtype=np.float64)
    r = z.shape[1]
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    sums = np.zeros((n_groups, r))
    scatters = np.zeros((n_groups, r, r))
    for g in range(n_groups):
        zg = z[groups == g]
        sums[g] = zg.sum(axis=0)
        scatters[g] = zg.T @ zg
    return GroupMoments(counts, sums, scatters)


_BLOCK_ROWS = 1024
"""Rows per block of the ``m d^2`` row passes (:func:`gram`, :func:`entropy_influence`, the
Mahalanobis tail): fixed, so the bits do not depend on the thread count, and small enough that
the blocks share out evenly (10,000 rows: 10 blocks; 8,192-row blocks left one of two threads
with 82 % of the rows: 0.35 s against 0.24 s for an influence pass at d = 512, same values)."""


def _group_members(groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, Callable[[int], np.ndarray]]:
    """Per-group row counts and ``members(g)``: the row indices of group ``g`` in row order
    (as ``np.flatnonzero(groups == g)``, from one stable sort instead of ``G`` scans)."""
    counts = np.bincount(groups, minlength=n_groups)
    order = np.argsort(groups, kind="stable")
    ends = np.cumsum(counts)
    return counts, lambda g: order[ends[g] - counts[g] : ends[g]]


def scatters(Z: np.ndarray, groups: np.ndarray, n_groups: int, *, workers: int = 1) -> Scatters:
    """:class:`Scatters` of the rows of ``Z``: one ``m r^2`` pass for the groups, one for the
    total, on ``workers`` threads with one BLAS thread each (the per-group products are
    independent; the total sums fixed row blocks in order, so the thread count does not
    change a bit of it)."""
    z = np.asarray(Z, dtype=np.float64)
    counts, members = _group_members(groups, n_groups)

    def group(g: int) -> tuple[np.ndarray, np.ndarray]:
        zg = z[members(g)]
        return zg.sum(axis=0), zg.T @ zg

    per_group = _map(group, range(n_groups), workers)
    total, total_sum = gram(z, workers=workers)
    moments = GroupMoments(
        counts.astype(np.float64), np.stack([p[0] for p in per_group]), np.stack([p[1] for p in per_group])
    )
    return Scatters(moments, total, total_sum)


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (``sklearn.preprocessing.normalize``)."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    norms[norms == 0.0] = 1.0
    return X / norms[:, None]


def gram(
    Z: np.ndarray, *, center: np.ndarray | None = None, unit: bool = False, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(Z^T Z, column sums of Z)``, accumulated over fixed blocks of rows in order, on
    ``workers`` threads (default :func:`default_workers`) with one BLAS thread each: the same
    bits at any thread count, and no spinning BLAS threads next to a training job.

    ``center`` (subtracted from every row) and ``unit`` (rows scaled to unit norm,
    :func:`normalize_rows`) are applied block by block: the same bits as passing
    ``Z - center`` or ``normalize_rows(Z)``, without a full-size copy."""
    z = np.asarray(Z, dtype=np.float64)

    def block(a: int) -> tuple[np.ndarray, np.ndarray]:
        zb = z[a : a + _BLOCK_ROWS]
        if center is not None:
            zb = zb - center
        if unit:
            zb = normalize_rows(zb)
        return zb.sum(axis=0), zb.T @ zb

    total, total_sum = np.zeros((z.shape[1], z.shape[1])), np.zeros(z.shape[1])
    for s, sc in _map(block, range(0, z.shape[0], _BLOCK_ROWS), default_workers() if workers is None else workers):
        total += sc
        total_sum += s
    return total, total_sum


def scatters_pay(m: int, d: int, n_groups: int) -> bool:
    """Whether :func:`spectral_bootstrap_scatters` beats the per-row path of
    :func:`spectral_bootstrap`: its ``G d^3`` projections per statistic cost less than the
    per-row ``m d^2`` products once ``m >= G d / 2``, and the ``G d^2`` scatters fit in 256 MB."""
    return 2 * m >= n_groups * d and n_groups * d * d <= 2**25


def _centred(n_b: np.ndarray, s_b: np.ndarray, sc_b: np.ndarray) -> np.ndarray:
    """Covariances (``ddof=1``, zero where ``n_b < 2``) from weighted moments."""
    safe_n = np.maximum(n_b, 1.0)
    cov = sc_b - s_b[:, :, None] * s_b[:, None, :] / safe_n[:, None, None]
    denom = np.where(n_b > 1, n_b - 1.0, np.inf)
    return cov / denom[:, None, None]


def _map(fn: Callable[[Any], Any], items: Any, workers: int) -> list[Any]:
    """``[fn(x) for x in items]`` on ``workers`` threads, each with one BLAS thread (LAPACK and
    BLAS release the GIL; many independent small products and eigen-decompositions scale
    better across threads than inside one, and do not spin when the cores are shared)."""
    items = list(items)
    with _serial_blas():
        if workers > 1 and len(items) > 1 and not getattr(_IN_POOL, "on", False):
            return list(_pool(min(workers, len(items))).map(partial(_in_pool, fn), items))
        return [fn(x) for x in items]


_POOLS: dict[int, Any] = {}
_IN_POOL = threading.local()


def _in_pool(fn: Callable[[Any], Any], x: Any) -> Any:
    """``fn(x)`` on a pool thread, marked so that a nested :func:`_map` runs inline instead of
    waiting on the pool it is running on."""
    _IN_POOL.on = True
    return fn(x)


def _pool(workers: int) -> Any:
    """A kept ``workers``-thread pool: starting threads for every map cost ~2 ms each, ~50 ms
    per check. Idle pool threads block on a queue (no spinning); a forked child starts afresh."""
    pool = _POOLS.get(workers)
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor

        pool = _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collapse-monitor")
    return pool


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOLS.clear)


def bootstrap_spectra(
    moments: GroupMoments, weights: np.ndarray, *, centred: bool, batch: int = 16, workers: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues ``(B, r)`` of each replicate's covariance (``centred=True``) or second
    moment ``scatter / n`` (``centred=False``), with the replicate sizes and sums.

    Batches of ``batch`` replicates run on ``workers`` threads, each with one BLAS thread."""

    def one(wts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_b, s_b, sc_b = moments.combine(wts)
        mats = _centred(n_b, s_b, sc_b) if centred else sc_b / np.maximum(n_b, 1.0)[:, None, None]
        return np.linalg.eigvalsh((mats + np.swapaxes(mats, 1, 2)) / 2.0), n_b, s_b

    results = _map(one, [weights[b0 : b0 + batch] for b0 in range(0, weights.shape[0], batch)], workers)
    eig = np.concatenate([r[0] for r in results])
    return eig, np.concatenate([r[1] for r in results]), np.concatenate([r[2] for r in results])


def _diagonal_moments(
    feats: np.ndarray, basis: np.ndarray, groups: np.ndarray, n_groups: int, rows: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sums and sums of squares of the projections of ``feats`` on ``basis``."""
    q = basis.shape[1]
    sums, squares = np.zeros((n_groups, q)), np.zeros((n_groups, q))
    for a in range(0, feats.shape[0], rows):
        proj = feats[a : a + rows] @ basis
        onehot = np.zeros((n_groups, proj.shape[0]))
        onehot[groups[a : a + rows], np.arange(proj.shape[0])] = 1.0
        sums += onehot @ proj
        squares += onehot @ (proj * proj)
    return sums, squares


def _split_moments(
    moments: GroupMoments, basis: np.ndarray, r: int, workers: int
) -> tuple[GroupMoments, np.ndarray, np.ndarray]:
    """For the full-rank ``basis`` (``d x q``, eigenvectors in ascending order): the moments in
    its last ``r`` columns and the per-group sums and diagonal ``v^T S_g v`` in the others."""
    top, rest = basis[:, basis.shape[1] - r :], basis[:, : basis.shape[1] - r]

    def one(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = sc @ basis
        return top.T @ p[:, basis.shape[1] - r :], np.einsum("ij,ij->j", rest, p[:, : basis.shape[1] - r])

    parts = _map(one, moments.scatters, workers)
    head = GroupMoments(moments.counts, moments.sums @ top, np.stack([p[0] for p in parts]))
    return head, moments.sums @ rest, np.stack([p[1] for p in parts])


def _split_rows(
    rows: np.ndarray, groups: np.ndarray, n_groups: int, basis: np.ndarray, r: int, workers: int
) -> tuple[GroupMoments, np.ndarray, np.ndarray]:
    """:func:`_split_moments` from the rows instead of the group scatters: per group one float32
    projection ``rows_g @ basis`` (``m d q`` in all), then float64 sums, head scatters and
    squares of the projections; groups run on ``workers`` threads with one BLAS thread each,
    so the thread count does not change a bit. At ``m = 10,000``, ``d = q = 512`` this costs
    about a third of rotating ``G = 20`` float64 scatters (``G d^3``); the replicates move by
    the float32 round-off of the projections (about 1e-7 relative), the point value (from the
    all-rows eigen-decomposition) not at all."""
    q = basis.shape[1]
    b32 = np.ascontiguousarray(basis, dtype=np.float32)
    counts, members = _group_members(groups, n_groups)

    def group(g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        zg = np.asarray(rows[members(g)], dtype=np.float32)
        proj = (zg @ b32).astype(np.float64)
        top = proj[:, q - r :]
        return proj.sum(axis=0), np.einsum("ij,ij->j", proj[:, : q - r], proj[:, : q - r]), top.T @ top

    parts = _map(group, range(n_groups), workers)
    sums = np.stack([p[0] for p in parts])
    head = GroupMoments(counts.astype(np.float64), sums[:, q - r :], np.stack([p[2] for p in parts]))
    return head, sums[:, : q - r], np.stack([p[1] for p in parts])


def _replicates(
    head: GroupMoments,
    sums: np.ndarray,
    squares: np.ndarray,
    weights: np.ndarray,
    *,
    centred: bool,
    stat: Callable[[np.ndarray], float],
    point: float,
    workers: int,
) -> np.ndarray:
    """Replicates of ``stat`` from the exact spectrum of the ``head`` block plus the first-order
    diagonal of the remaining directions (per-group ``sums`` / ``squares``), shifted so that the
    all-ones replicate equals ``point``."""

    def spectra(wts: np.ndarray) -> np.ndarray:
        eig_top, n_b, _ = bootstrap_spectra(head, wts, centred=centred, workers=workers)
        s, q = wts @ sums, wts @ squares
        if centred:
            diag = (q - s * s / np.maximum(n_b, 1.0)[:, None]) / np.where(n_b > 1, n_b - 1.0, np.inf)[:, None]
        else:
            diag = q / np.maximum(n_b, 1.0)[:, None]
        return np.concatenate([eig_top, diag], axis=1)

    shift = point - stat(spectra(np.ones((1, weights.shape[1])))[0])
    return np.array([stat(e) for e in spectra(weights)]) + shift


def spectral_bootstrap(
    feats: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    weights: np.ndarray,
    *,
    centred: bool,
    stat: Callable[[np.ndarray], float],
    max_dim: int = 256,
    workers: int = 1,
) -> tuple[float, np.ndarray]:
    """Exact point value of ``stat(spectrum)`` and its group-bootstrap replicates, for the
    covariance (``centred``, ``ddof=1``) or the second moment ``X^T X / m`` of ``feats``.

    Up to ``max_dim`` dimensions every replicate's spectrum is exact (one ``r x r``
    eigen-decomposition each). Above, in the eigenbasis ``V`` of the full-sample matrix, a
    replicate's spectrum is the exact spectrum of its top ``max_dim x max_dim`` block plus, for
    the remaining directions, the diagonal ``v_j^T M_b v_j`` (first-order eigenvalue
    perturbation: the linear term of every spectral statistic is kept exactly, only the
    second-order coupling of the small eigenvalues is dropped); replicates are shifted by the
    (round-off sized) difference between this approximation at the full sample and the point.
    ``workers`` threads share the replicates (see :func:`bootstrap_spectra`). With many rows
    (:func:`scatters_pay`) this goes through the group scatter matrices
    (:func:`spectral_bootstrap_scatters`, the same numbers up to round-off).
    """
    m, d = feats.shape
    if scatters_pay(m, d, n_groups):
        sc = scatters(feats, groups, n_groups, workers=workers)
        return spectral_bootstrap_scatters(sc, weights, centred=centred, stat=stat, max_dim=max_dim, workers=workers)
    ones = np.ones((1, n_groups))
    if d <= max_dim:  # exact: the point is the all-ones replicate of the same moments
        moments = group_moments(feats, groups, n_groups)
        point = stat(bootstrap_spectra(moments, ones, centred=centred)[0][0])
        eig_b = bootstrap_spectra(moments, weights, centred=centred, workers=workers)[0]
        return point, np.array([stat(e) for e in eig_b])
    base = feats - feats.mean(axis=0) if centred else feats
    denom = float(max(m - 1, 1)) if centred else float(m)
    dual = d <= m
    gram = base.T @ base if dual else base @ base.T  # same non-zero spectrum
    w, vecs = sym_eigh(gram)
    point = stat(w / denom)
    if dual:
        basis = vecs
    else:  # eigenvectors of base^T base from those of the Gram matrix; the null space stays 0
        ok = w > max(float(w.max(initial=0.0)), 0.0) * 1e-12
        if not ok.any():  # every row the same (total collapse): every replicate is that spectrum
            return point, np.full(weights.shape[0], point)
        basis = (base.T @ vecs[:, ok]) / np.sqrt(w[ok])
    r = min(max_dim, basis.shape[1])
    top, rest = basis[:, basis.shape[1] - r :], basis[:, : basis.shape[1] - r]
    head = group_moments(feats @ top, groups, n_groups)
    sums, squares = _diagonal_moments(feats, rest, groups, n_groups)
    return point, _replicates(head, sums, squares, weights, centred=centred, stat=stat, point=point, workers=workers)


def transformed_scatter(sc: Scatters, *, centred: bool, transform: np.ndarray | None = None) -> np.ndarray:
    """The all-rows scatter of the rows ``X T`` (``T^T S T``; ``S`` itself without ``transform``),
    as :func:`spectral_bootstrap_scatters` decomposes it."""
    gram = sc.matrix(centred=centred)
    return gram if transform is None else transform.T @ gram @ transform


def spectral_bootstrap_scatters(
    sc: Scatters,
    weights: np.ndarray,
    *,
    centred: bool,
    stat: Callable[[np.ndarray], float],
    max_dim: int = 256,
    workers: int = 1,
    transform: np.ndarray | None = None,
    eig: tuple[np.ndarray, np.ndarray] | None = None,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, np.ndarray]:
    """:func:`spectral_bootstrap` from group scatter matrices (:func:`scatters`) instead of the
    rows: after the one ``m d^2`` pass that built them, a statistic costs ``G d^3`` (rotating
    the ``G`` scatters into the eigenbasis) plus the replicates' eigen-decompositions, however
    many rows there are. ``transform`` (``d x q``) gives the statistic of the rows ``X T``
    (moments ``T^T S_g T``) without forming them. The point comes from the all-rows scatter, so
    it does not depend on the grouping (nor on the bootstrap seed). ``eig`` may pass
    :func:`sym_eigh` of that (transformed) scatter, computed beforehand. ``rows``, the rows and
    their groups that built ``sc``, lets the split above ``max_dim`` come from float32 row
    projections (:func:`_split_rows`) instead of rotating the scatters."""
    m = sc.m
    gram = transformed_scatter(sc, centred=centred, transform=transform)
    denom = float(max(m - 1, 1)) if centred else float(max(m, 1))
    q = gram.shape[0]
    if q <= max_dim:
        point = stat(sym_eigvalsh(gram / denom))
        moments = sc.groups if transform is None else sc.groups.rotated(transform, workers=workers)
        eig_b = bootstrap_spectra(moments, weights, centred=centred, workers=workers)[0]
        return point, np.array([stat(e) for e in eig_b])
    w, vecs = sym_eigh(gram) if eig is None else eig
    point = stat(w / denom)
    basis = vecs if transform is None else transform @ vecs
    r = min(max_dim, q)
    if rows is None:
        head, sums, squares = _split_moments(sc.groups, basis, r, workers)
    else:
        head, sums, squares = _split_rows(rows[0], rows[1], sc.groups.counts.size, basis, r, workers)
    return point, _replicates(head, sums, squares, weights, centred=centred, stat=stat, point=point, workers=workers)


# --------------------------------------------------------------------------- influence functions


@dataclass(frozen=True)
class EntropySE:
    """The spectral entropy ``H`` of a sample's second-moment matrix, its delta-method
    standard error, and the eigenvalues it came from."""

    entropy: float
    se: float
    eigenvalues: np.ndarray


def entropy_influence(
    rows: np.ndarray,
    matrix: np.ndarray,
    denom: float,
    *,
    workers: int = 1,
    block_rows: int = _BLOCK_ROWS,
    eig: tuple[np.ndarray, np.ndarray] | None = None,
    unit: bool = False,
) -> EntropySE:
    """Spectral entropy ``H = -sum p_i log p_i`` (``p = lambda / sum lambda``) of ``matrix``
    (``rows^T rows / denom``: the covariance of centred rows, or the second moment of unit
    rows) with its delta-method standard error ``sd(IF) / sqrt(m)``.

    Influence function (Hampel 1974; for eigenvalues of a covariance, Critchley 1985,
    "Influence in principal components analysis", Biometrika 72:627): a row ``z`` moves the
    matrix by ``z z^T - M``, so eigenvalue ``i`` by ``a_i(z) = (v_i^T z)^2 - lambda_i`` and
    ``H`` by ``sum_i c_i a_i(z)`` with ``c_i = (S / T - log lambda_i) / T``, ``T = sum lambda``,
    ``S = sum lambda log lambda`` (the gradient of a spectral function, defined whatever the
    multiplicities). Eigenvalues below ``len * eps * max`` are rounding noise: ``c_i = 0``.
    ``exp(H)`` is the Vendi score of unit rows (Friedman & Dieng 2023) and the effective rank
    of a covariance (Roy & Vetterli 2007); the interval ``exp(H +- z se)`` is the log-scale
    Wald interval. Cost: one ``d x d`` eigen-decomposition and one ``m d^2`` projection (in
    fixed row blocks on ``workers`` threads with one BLAS thread each; in float32, 2.3 x the
    float64 rate, which moves the standard error by about 1e-6 of itself), against the bootstrap's
    ``B`` eigen-decompositions; used where the bootstrap replicates would be approximate
    (rank above ``max_boot_dim``: :func:`~.generator.generator_panel`). ``eig`` may pass
    :func:`sym_eigh` of ``matrix / denom``, computed beforehand (e.g. next to other ones);
    ``unit=True`` normalises ``rows`` block by block (as :func:`gram` does)."""
    z = np.asarray(rows, dtype=np.float64)
    m = z.shape[0]
    lam, vecs = sym_eigh(np.asarray(matrix, dtype=np.float64) / denom) if eig is None else eig
    top = float(lam.max(initial=0.0))
    ok = lam > top * lam.size * np.finfo(np.float64).eps
    if top <= 0.0 or not ok.any():
        return EntropySE(0.0, 0.0, lam)
    total = float(lam[ok].sum())
    p = lam[ok] / total
    entropy = float(-np.sum(p * np.log(p)))
    s = float(np.sum(lam[ok] * np.log(lam[ok])))
    c = np.zeros_like(lam)
    c[ok] = (s / total - np.log(lam[ok])) / total
    offset = float(c @ lam)

    vecs32, c32 = vecs.astype(np.float32), c.astype(np.float32)

    def block(a: int) -> np.ndarray:  # float32 products: a standard error, not the point
        zb = z[a : a + block_rows]
        proj = (normalize_rows(zb) if unit else zb).astype(np.float32) @ vecs32
        return ((proj * proj) @ c32).astype(np.float64) - offset

    influence = np.concatenate(_map(block, range(0, m, block_rows), workers))
    se = float(np.sqrt(np.var(influence, ddof=1) / m)) if m > 1 else 0.0
    return EntropySE(entropy, se, lam)


_SERIAL_MAX = 1024


def sym_eigvalsh(a: np.ndarray) -> np.ndarray:
    """Eigenvalues of (a stack of) symmetric matrices, symmetrised first; one BLAS thread up
    to 1024 x 1024 (see :func:`_serial_blas`)."""
    a = (a + np.swapaxes(a, -1, -2)) / 2.0
    if a.shape[-1] > _SERIAL_MAX:
        return np.linalg.eigvalsh(a)
    with _serial_blas():
        return np.linalg.eigvalsh(a)


def sym_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``eigh`` of a symmetric matrix, symmetrised first; one BLAS thread up to 1024 x 1024."""
    a = (a + a.T) / 2.0
    if a.shape[-1] > _SERIAL_MAX:
        w, v = np.linalg.eigh(a)
    else:
        with _serial_blas():
            w, v = np.linalg.eigh(a)
    return w, v


def _serial_blas() -> Any:
    """One BLAS / LAPACK thread inside the block (restored on exit). The bootstrap runs many
    small eigen-decompositions, which threading barely speeds up and which slow down
    many-fold under CPU contention (spinning OpenBLAS threads next to a training job; measured
    here: a 20,000 x 512 float64 ``X^T X`` ran at 35 GFLOP/s on one OpenBLAS thread and at 10
    on two when another process held one core). Parallelism comes from :func:`_map`'s threads
    instead. The controller (which scans the loaded libraries, ~10 ms in a full process) is
    built once, on first use."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


_CONTROLLER: Any = None


def default_workers() -> int:
    """Threads for the numpy work here: the CPUs this process may run on, at most 4."""

    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
