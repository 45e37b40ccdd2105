"""Diversity of generated embeddings: Vendi score, effective rank, variance ratio, Frechet
distance and tail mass, plus a cheap grouped bootstrap for their intervals.

* Vendi score (Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine
  Learning", TMLR 2023): ``exp`` of the (order-q Renyi) entropy of the eigenvalues of
  ``K / n`` for the cosine kernel ``K = X_hat X_hat^T`` (rows scaled to unit norm, zero rows
  left at zero as ``sklearn.preprocessing.normalize`` does). Its non-zero eigenvalues are
  those of the ``d x d`` dual ``X_hat^T X_hat / n``, used when ``d < n``: the same numbers
  as ``vendi_score.vendi.score_dual`` / ``score_X``.
* Effective rank (Roy & Vetterli, "The effective rank: a measure of effective
  dimensionality", EUSIPCO 2007): ``exp`` of the Shannon entropy of the normalised
  eigenvalues of the covariance matrix (its singular values).
* Variance ratio: ``trace(cov samples) / trace(cov reference)``; below 1 when the samples
  contract (late collapse: variance goes to 0, Shumailov et al., Nature 631:755, 2024).
* Frechet distance of Gaussian fits (the FID formula, Heusel et al., NeurIPS 2017):
  ``|mu1 - mu2|^2 + tr C1 + tr C2 - 2 tr (C1^1/2 C2 C1^1/2)^1/2``, where the matrix square
  roots come from eigen-decompositions of symmetric PSD matrices (no ``scipy.linalg.sqrtm``
  of a non-symmetric product, no complex round-off).
* Tail mass ratio: share of samples whose Mahalanobis distance to the reference Gaussian fit
  exceeds the reference's own 99th-percentile radius, divided by 0.01 (1 = reference-like,
  0 = no tail left). See :class:`MahalanobisTail` for the regularisation and cross-fitting.

Covariances use ``ddof=1`` (zero for a single row). Everything is float64 numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .knn import as_matrix

__all__ = [
    "GroupMoments",
    "MahalanobisTail",
    "bootstrap_spectra",
    "effective_rank",
    "frechet_distance",
    "frechet_from_moments",
    "group_moments",
    "hill_number",
    "mean_cov",
    "normalize_rows",
    "spectral_bootstrap",
    "spectral_effective_rank",
    "sqrtm_psd",
    "tail_mass_ratio",
    "variance_ratio",
    "vendi_score",
]

TAIL_LEVEL = 0.01  # the reference's own exceedance rate at its 99th-percentile radius


# --------------------------------------------------------------------------- spectra


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (``sklearn.preprocessing.normalize``)."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    norms[norms == 0.0] = 1.0
    return X / norms[:, None]


def hill_number(eigenvalues: Any, q: float | str = 1.0) -> float:
    """``exp`` of the order-``q`` Renyi entropy of the positive ``eigenvalues`` (not
    renormalised, as in ``vendi_score.vendi.entropy_q``); ``q = 1`` Shannon, ``q = "inf"``
    min-entropy. No positive eigenvalue gives 1.0.

    >>> hill_number([0.5, 0.5]), hill_number([0.25] * 4, q=2)
    (2.0, 4.0)
    """
    w = np.asarray(eigenvalues, dtype=np.float64)
    p = w[w > 0]
    if p.size == 0:
        return 1.0
    if q == "inf" or (isinstance(q, float) and np.isinf(q)):
        h = -np.log(np.max(p))
    elif float(q) == 1.0:
        h = -float(np.sum(p * np.log(p)))
    else:
        qf = float(q)
        h = np.log(np.sum(p**qf)) / (1.0 - qf)
    return float(np.exp(h))


def _check_q(q: Any) -> float | str:
    if q == "inf":
        return q
    try:
        qf = float(q)
    except (TypeError, ValueError):
        raise ConfigError("q", f"expected a number >= 0 or 'inf', got {q!r}") from None
    if not qf >= 0.0:
        raise ConfigError("q", f"expected a number >= 0 or 'inf', got {q!r}")
    return qf


def vendi_score(X: Any, q: float | str = 1.0, normalize: bool = True) -> float:
    """Vendi score (Friedman & Dieng 2023) with the cosine kernel: the effective number of
    distinct rows of ``X`` (between 1 and ``min(n, d)``).

    Exact: eigenvalues of the ``d x d`` dual ``X^T X / n`` when ``d < n``, else of the
    ``n x n`` kernel ``X X^T / n``. Equals ``vendi_score.vendi.score_dual(X, q, normalize)``
    and, for ``q = 1``, ``vendi_score.vendi.score_X(X)``.

    >>> round(vendi_score(np.eye(3)), 9)
    3.0
    >>> vendi_score([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0], [0.0, 1.0]])
    2.0
    """
    x = as_matrix(X, "X")
    qq = _check_q(q)
    if normalize:
        x = normalize_rows(x)
    n, d = x.shape
    gram = x.T @ x if d < n else x @ x.T
    return hill_number(sym_eigvalsh(gram / n), qq)


def spectral_effective_rank(eigenvalues: Any) -> float:
    """Roy & Vetterli (2007) effective rank of a PSD spectrum: ``exp(H(p))`` with
    ``p = lambda / sum(lambda)`` over the positive eigenvalues; 1.0 for a zero spectrum.
    Eigenvalues below ``len * eps * max`` are rounding noise and treated as zero.

    >>> spectral_effective_rank([2.0, 2.0, 0.0])
    2.0
    """
    w = np.asarray(eigenvalues, dtype=np.float64)
    top = float(w.max(initial=0.0))
    if top <= 0.0:
        return 1.0
    w = w[w > top * w.size * np.finfo(np.float64).eps]
    return hill_number(w / w.sum(), 1.0)


def mean_cov(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``ddof=1``; zeros for a single row), float64."""
    x = np.asarray(X, dtype=np.float64)
    mu = x.mean(axis=0)
    if x.shape[0] < 2:
        return mu, np.zeros((x.shape[1], x.shape[1]))
    xc = x - mu
    return mu, (xc.T @ xc) / (x.shape[0] - 1)


def effective_rank(X: Any) -> float:
    """Effective rank (Roy & Vetterli 2007) of the covariance of ``X``'s rows: ``exp`` of the
    Shannon entropy of its normalised eigenvalues; 1.0 for zero variance. Uses the ``n x n``
    Gram of the centred rows when ``n < d`` (same non-zero eigenvalues).

    >>> effective_rank([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    2.0
    """
    x = as_matrix(X, "X")
    xc = x - x.mean(axis=0)
    gram = xc @ xc.T if x.shape[0] < x.shape[1] else xc.T @ xc
    return spectral_effective_rank(sym_eigvalsh(gram))


def variance_ratio(reference: Any, samples: Any) -> float:
    """``trace(cov samples) / trace(cov reference)`` (total variance, ``ddof=1``). A
    zero-variance reference is floored at 1e-12 so the ratio stays finite.

    >>> variance_ratio([[0.0], [2.0]], [[0.0], [1.0]])
    0.25
    """
    ref = as_matrix(reference, "reference")
    gen = as_matrix(samples, "samples", width=ref.shape[1])
    return _ratio(_total_var(gen), _total_var(ref))


def _total_var(x: np.ndarray) -> float:
    if x.shape[0] < 2:
        return 0.0
    return float(np.sum(np.var(x, axis=0, ddof=1)))


def _ratio(num: float, den: float) -> float:
    return float(num / max(den, 1e-12))


def sqrtm_psd(C: Any) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via ``eigh`` (negative round-off
    eigenvalues clipped to 0).

    >>> sqrtm_psd(np.diag([4.0, 9.0])).diagonal().tolist()
    [2.0, 3.0]
    """
    c = np.asarray(C, dtype=np.float64)
    w, v = sym_eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sqrt_c1: np.ndarray, c2: np.ndarray) -> float:
    """``tr (C1 C2)^1/2 = tr (S1 C2 S1)^1/2`` for ``S1 = C1^1/2`` (eigenvalues of a symmetric
    PSD matrix)."""
    m = sqrt_c1 @ c2 @ sqrt_c1
    w = sym_eigvalsh(m)
    return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def frechet_from_moments(mu1: Any, cov1: Any, mu2: Any, cov2: Any, *, sqrt_cov1: np.ndarray | None = None) -> float:
    """Frechet distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)`` (Heusel et al. 2017),
    clipped at 0. ``sqrt_cov1`` may pass a cached ``cov1^1/2``.

    >>> frechet_from_moments([0.0], [[4.0]], [1.0], [[1.0]])
    2.0
    """
    m1, m2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    c1, c2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    s1 = sqrtm_psd(c1) if sqrt_cov1 is None else sqrt_cov1
    diff = m1 - m2
    fd = float(diff @ diff) + float(np.trace(c1)) + float(np.trace(c2)) - 2.0 * trace_sqrt_product(s1, c2)
    return max(fd, 0.0)


def frechet_distance(reference: Any, samples: Any) -> float:
    """Frechet distance between Gaussian fits of ``reference`` and ``samples`` rows (the FID
    formula of Heusel et al. 2017 applied to the given embeddings; ``ddof=1`` covariances).

    >>> frechet_distance([[0.0], [2.0]], [[1.0], [3.0]])
    1.0
    """
    ref = as_matrix(reference, "reference")
    gen = as_matrix(samples, "samples", width=ref.shape[1])
    mu1, c1 = mean_cov(ref)
    mu2, c2 = mean_cov(gen)
    return frechet_from_moments(mu1, c1, mu2, c2)


# --------------------------------------------------------------------------- tail mass


@dataclass(frozen=True)
class MahalanobisTail:
    """Gaussian fit of the reference for the tail-mass ratio.

    ``||(x - mean) @ whiten||`` is the Mahalanobis distance under a *ridge-regularised*
    covariance: the Ledoit & Wolf (2004) shrinkage ``(1 - a) S + a (tr S / d) I`` with the
    data-chosen weight ``a``, plus a floor of ``1e-6 tr S / d`` on every eigenvalue, so the
    inverse exists even with fewer rows than dimensions. ``radius`` is the ``quantile`` of the
    distances of reference rows *not used in the fit* (cross-fitting on a fixed-seed half /
    half split when there are at least 40 rows): in-sample distances are biased low when ``d``
    is not small against ``n``, which would make healthy samples look heavy-tailed.
    """

    mean: np.ndarray
    whiten: np.ndarray
    radius: float
    shrinkage: float
    quantile: float = 0.99

    @classmethod
    def fit(cls, reference: Any, *, quantile: float = 1.0 - TAIL_LEVEL, seed: int = 0) -> MahalanobisTail:
        from sklearn.covariance import ledoit_wolf_shrinkage

        ref = as_matrix(reference, "reference")
        n, d = ref.shape
        if n >= 40:
            perm = np.random.default_rng(seed).permutation(n)
            fit_rows, held_out = ref[perm[: n // 2]], ref[perm[n // 2 :]]
        else:
            fit_rows = held_out = ref
        mean = fit_rows.mean(axis=0)
        xc = fit_rows - mean
        emp = (xc.T @ xc) / xc.shape[0]
        mu = float(np.trace(emp)) / d
        a = float(ledoit_wolf_shrinkage(xc, assume_centered=True)) if mu > 0 and xc.shape[0] > 1 else 1.0
        shrunk = (1.0 - a) * emp + a * mu * np.eye(d)
        w, v = sym_eigh(shrunk)
        floor = 1e-6 * mu if mu > 0 else 1.0
        whiten = v / np.sqrt(np.clip(w, 0.0, None) + floor)
        tail = cls(mean, whiten, 0.0, a, quantile)
        radius = float(np.quantile(tail.distances(held_out), quantile))
        return cls(mean, whiten, radius, a, quantile)

    def distances(self, X: np.ndarray) -> np.ndarray:
        z = (np.asarray(X, dtype=np.float64) - self.mean) @ self.whiten
        return np.sqrt(np.einsum("ij,ij->i", z, z))

    def exceed_count(self, X: np.ndarray) -> int:
        """Rows strictly beyond ``radius``."""
        return int(np.sum(self.distances(X) > self.radius))


def tail_mass_ratio(reference: Any, samples: Any, *, seed: int = 0) -> float:
    """Share of ``samples`` beyond the reference's 99th-percentile Mahalanobis radius,
    divided by 0.01 (about 1 for samples drawn like the reference, 0 when the tails are gone).
    See :class:`MahalanobisTail` for the regularised covariance and the cross-fitted radius.

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(4000, 3))
    >>> tail_mass_ratio(ref, 0.3 * rng.normal(size=(1000, 3)))
    0.0
    """
    ref = as_matrix(reference, "reference")
    gen = as_matrix(samples, "samples", width=ref.shape[1])
    tail = MahalanobisTail.fit(ref, seed=seed)
    return tail.exceed_count(gen) / gen.shape[0] / TAIL_LEVEL


# --------------------------------------------------------------------------- grouped bootstrap


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


def _centred(n_b: np.ndarray, s_b: np.ndarray, sc_b: np.ndarray) -> np.ndarray:
    """Covariances (``ddof=1``, zero where ``n_b < 2``) from weighted moments."""
    safe_n = np.maximum(n_b, 1.0)
    cov = sc_b - s_b[:, :, None] * s_b[:, None, :] / safe_n[:, None, None]
    denom = np.where(n_b > 1, n_b - 1.0, np.inf)
    return cov / denom[:, None, None]


def bootstrap_spectra(
    moments: GroupMoments, weights: np.ndarray, *, centred: bool, batch: int = 16, workers: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues ``(B, r)`` of each replicate's covariance (``centred=True``) or second
    moment ``scatter / n`` (``centred=False``), with the replicate sizes and sums.

    Batches of ``batch`` replicates run on ``workers`` threads, each with one BLAS thread
    (LAPACK releases the GIL; many small eigen-decompositions scale better across threads
    than inside one)."""

    def one(wts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_b, s_b, sc_b = moments.combine(wts)
        mats = _centred(n_b, s_b, sc_b) if centred else sc_b / np.maximum(n_b, 1.0)[:, None, None]
        return np.linalg.eigvalsh((mats + np.swapaxes(mats, 1, 2)) / 2.0), n_b, s_b

    chunks = [weights[b0 : b0 + batch] for b0 in range(0, weights.shape[0], batch)]
    with _serial_blas():
        if workers > 1 and len(chunks) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
                results = list(pool.map(one, chunks))
        else:
            results = [one(c) for c in chunks]
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
    ``workers`` threads share the replicates (see :func:`bootstrap_spectra`).
    """
    m, d = feats.shape
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
        basis = (base.T @ vecs[:, ok]) / np.sqrt(w[ok])
    r = min(max_dim, basis.shape[1])
    top, rest = basis[:, basis.shape[1] - r :], basis[:, : basis.shape[1] - r]
    moments = group_moments(feats @ top, groups, n_groups)
    sums, squares = _diagonal_moments(feats, rest, groups, n_groups)

    def spectra(wts: np.ndarray) -> np.ndarray:
        eig_top, n_b, _ = bootstrap_spectra(moments, wts, centred=centred, workers=workers)
        s, q = wts @ sums, wts @ squares
        if centred:
            diag = (q - s * s / np.maximum(n_b, 1.0)[:, None]) / np.where(n_b > 1, n_b - 1.0, np.inf)[:, None]
        else:
            diag = q / np.maximum(n_b, 1.0)[:, None]
        return np.concatenate([eig_top, diag], axis=1)

    shift = point - stat(spectra(ones)[0])
    return point, np.array([stat(e) for e in spectra(weights)]) + shift


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
    many-fold under CPU contention (spinning OpenBLAS threads next to a training job)."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    return threadpool_limits(1, user_api="blas")
