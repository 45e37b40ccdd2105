"""Diversity of generated embeddings: Vendi score, effective rank, variance ratio, Frechet
distance and tail mass; the grouped bootstrap of their intervals is :mod:`._bootstrap`
(re-exported here).

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

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._bootstrap import (
    _BLOCK_ROWS,
    GroupMoments,
    Scatters,
    _map,
    bootstrap_spectra,
    default_workers,
    gram,
    group_moments,
    normalize_rows,
    scatters,
    scatters_pay,
    spectral_bootstrap,
    spectral_bootstrap_scatters,
    sym_eigh,
    sym_eigvalsh,
)
from .knn import as_matrix

__all__ = [
    "GroupMoments",
    "MahalanobisTail",
    "Scatters",
    "bootstrap_spectra",
    "default_workers",
    "effective_rank",
    "frechet_distance",
    "frechet_from_moments",
    "group_moments",
    "hill_number",
    "ledoit_wolf_shrinkage",
    "mean_cov",
    "normalize_rows",
    "scatters",
    "scatters_pay",
    "spectral_bootstrap",
    "spectral_bootstrap_scatters",
    "spectral_effective_rank",
    "sqrtm_psd",
    "tail_mass_ratio",
    "variance_ratio",
    "vendi_score",
]

TAIL_LEVEL = 0.01  # the reference's own exceedance rate at its 99th-percentile radius


# --------------------------------------------------------------------------- spectra


def hill_number(eigenvalues: Any, q: float | str = 1.0) -> float:
    """``exp`` of the order-``q`` Renyi entropy of the positive ``eigenvalues`` (not
    renormalised, as in ``vendi_score.vendi.entropy_q``); ``q = 1`` Shannon, ``q = "inf"``
    min-entropy. No positive eigenvalue gives 1.0.

    >>> hill_number([0.5, 0.5]), hill_number([0.25] * 4, q=2)
    (2.0, 4.0)
    """
    q = _check_q(q)
    w = np.asarray(eigenvalues, dtype=np.float64)
    # eigenvalues at round-off level are zero (numpy.linalg.matrix_rank's tolerance): at q < 1
    # they would each count (5 distinct rows, duplicated, gave Vendi(q=0) = 12, not 5)
    tol = float(w.max(initial=0.0)) * w.size * np.finfo(np.float64).eps
    p = w[w > tol]
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
    for ``q >= 1`` and, for ``q = 1``, ``vendi_score.vendi.score_X(X)``. For ``q < 1`` the
    eigenvalues at round-off level are dropped (``score_dual`` counts them: ``q = 0`` on
    ``d > n`` rows of rank ``n`` gave ``d`` instead of ``n``), so the two differ there.

    >>> round(vendi_score(np.eye(3)), 9)
    3.0
    >>> vendi_score([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0], [0.0, 1.0]])
    2.0
    """
    x = as_matrix(X, "X")
    qq = _check_q(q)
    n, d = x.shape
    if d < n:  # the rows normalised block by block inside the d x d product
        g = gram(x, unit=normalize)[0]
    else:
        x = normalize_rows(x) if normalize else x
        g = x @ x.T
    return hill_number(sym_eigvalsh(g / n), qq)


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
    return mu, gram(x, center=mu)[0] / (x.shape[0] - 1)


def effective_rank(X: Any) -> float:
    """Effective rank (Roy & Vetterli 2007) of the covariance of ``X``'s rows: ``exp`` of the
    Shannon entropy of its normalised eigenvalues; 1.0 for zero variance. Uses the ``n x n``
    Gram of the centred rows when ``n < d`` (same non-zero eigenvalues).

    >>> effective_rank([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    2.0
    """
    x = as_matrix(X, "X")
    xc = x - x.mean(axis=0)
    g = xc @ xc.T if x.shape[0] < x.shape[1] else gram(xc)[0]
    return spectral_effective_rank(sym_eigvalsh(g))


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
    return float(num / (den if den > 0 else 1e-12))  # a positive denominator as it is, however small


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
        ref = as_matrix(reference, "reference")
        n, d = ref.shape
        if n >= 40:
            perm = np.random.default_rng(seed).permutation(n)
            fit_rows, held_out = ref[perm[: n // 2]], ref[perm[n // 2 :]]
        else:
            fit_rows = held_out = ref
        mean = fit_rows.mean(axis=0)
        # fit_rows is a fresh copy (fancy indexing) unless it is the reference itself: centre it in place
        xc = fit_rows - mean if fit_rows is ref else np.subtract(fit_rows, mean, out=fit_rows)
        scatter = gram(xc)[0]
        emp = scatter / xc.shape[0]
        mu = float(np.trace(emp)) / d
        a = ledoit_wolf_shrinkage(xc, scatter) if mu > 0 and xc.shape[0] > 1 else 1.0
        shrunk = (1.0 - a) * emp + a * mu * np.eye(d)
        w, v = sym_eigh(shrunk)
        floor = 1e-6 * mu if mu > 0 else 1.0
        whiten = v / np.sqrt(np.clip(w, 0.0, None) + floor)
        tail = cls(mean, whiten, 0.0, a, quantile)
        radius = float(np.quantile(tail.distances(held_out), quantile))
        return cls(mean, whiten, radius, a, quantile)

    def distances(self, X: np.ndarray, *, workers: int | None = None) -> np.ndarray:
        """Mahalanobis distance of each row, in fixed row blocks on ``workers`` threads (default
        :func:`default_workers`) with one BLAS thread each: the same numbers at any count. The
        whitening product runs in float32 (2.3 x the float64 rate; relative error about 1e-6,
        the radius it is compared with comes from the same computation)."""
        x = np.asarray(X, dtype=np.float64)
        whiten = self.whiten.astype(np.float32)

        def block(a: int) -> np.ndarray:
            z = (x[a : a + _TAIL_ROWS] - self.mean).astype(np.float32) @ whiten
            return np.sqrt(np.einsum("ij,ij->i", z, z, dtype=np.float64))

        parts = _map(block, range(0, x.shape[0], _TAIL_ROWS), default_workers() if workers is None else workers)
        return np.concatenate(parts) if parts else np.zeros(0)

    def exceed_count(self, X: np.ndarray) -> int:
        """Rows strictly beyond ``radius``."""
        return int(np.sum(self.distances(X) > self.radius))


def ledoit_wolf_shrinkage(xc: np.ndarray, scatter: np.ndarray | None = None) -> float:
    """Ledoit & Wolf (2004, "A well-conditioned estimator for large-dimensional covariance
    matrices", J. Multivariate Anal. 88:365) shrinkage weight of the centred rows ``xc`` towards
    ``(tr S / d) I``: ``sklearn.covariance.ledoit_wolf_shrinkage(xc, assume_centered=True)``,
    from the scatter ``xc^T xc`` (passed in when known) and the row norms: its sum of
    ``(X^2)^T X^2`` is ``sum_i |x_i|^4``, ``O(n d)`` instead of sklearn's second ``n d^2`` product.

    >>> x = np.random.default_rng(0).normal(size=(50, 4))
    >>> from sklearn.covariance import ledoit_wolf_shrinkage as lw
    >>> bool(np.isclose(ledoit_wolf_shrinkage(x), lw(x, assume_centered=True), rtol=1e-12))
    True
    """
    x = np.asarray(xc, dtype=np.float64)
    n, d = x.shape
    if d == 1:
        return 0.0
    sc = gram(x)[0] if scatter is None else scatter
    sq = np.einsum("ij,ij->i", x, x)
    trace = float(sq.sum()) / n  # tr of the empirical covariance
    mu = trace / d
    delta_ = float(np.sum(sc * sc)) / n**2
    beta = (float(sq @ sq) / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)


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


_TAIL_ROWS = _BLOCK_ROWS  # row blocks of the distance pass (see there)
