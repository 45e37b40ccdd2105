"""Small numeric helpers shared by the scenarios (aggregate numbers, ground truth)."""

from __future__ import annotations

import numpy as np

__all__ = ["frechet_distance", "gaussian_frechet", "gaussian_nll", "spd_sqrt"]


def spd_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigen-decomposition)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Squared 2-Wasserstein (Frechet) distance between N(mu1, s1) and N(mu2, s2): the FID formula
    ``|mu1-mu2|^2 + tr(s1 + s2 - 2 (s1^1/2 s2 s1^1/2)^1/2)`` (Dowson & Landau 1982).

    >>> round(gaussian_frechet(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1)), 6)
    2.0
    """
    r1 = spd_sqrt(np.atleast_2d(s1))
    cross = spd_sqrt(r1 @ np.atleast_2d(s2) @ r1)
    d = np.asarray(mu1, float) - np.asarray(mu2, float)
    return float(max(d @ d + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(cross), 0.0))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two samples (rows are items)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    return gaussian_frechet(
        x.mean(0), np.atleast_2d(np.cov(x, rowvar=False)), y.mean(0), np.atleast_2d(np.cov(y, rowvar=False))
    )


def gaussian_nll(x: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> float:
    """Mean negative log-likelihood of rows of ``x`` under N(mu, cov)."""
    x = np.asarray(x, float)
    d = x.shape[1]
    chol = np.linalg.cholesky(np.atleast_2d(cov) + 1e-12 * np.eye(d))
    z = np.linalg.solve(chol, (x - mu).T)
    logdet = 2.0 * np.log(np.diag(chol)).sum()
    return float(0.5 * (np.mean((z * z).sum(0)) + logdet + d * np.log(2 * np.pi)))
