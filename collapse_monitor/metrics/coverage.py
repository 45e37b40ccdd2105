"""Fidelity and coverage of generated samples against a reference: PRDC, tail / head coverage
and rare-mode coverage.

* PRDC: precision, recall, density and coverage of Naeem et al., "Reliable Fidelity and
  Diversity Metrics for Generative Models" (ICML 2020), on k-NN balls (k = 5) with strict
  ``<``: the same values as ``prdc.compute_prdc(real_features=reference,
  fake_features=samples, nearest_k=k)``, computed with the chunked exact k-NN of
  :mod:`.knn` (bounded memory, torch matmul) instead of three dense ``n x n`` matrices.
* Tail / head coverage: coverage restricted to the reference points whose k-NN radius is in
  the top ``tail_quantile`` (sparse regions, where early collapse shows first: Shumailov et
  al., Nature 631:755, 2024) or to the rest.
* Rare-mode coverage: the reference is clustered once; a rare cluster (mass below
  ``rare_threshold``) is *kept* when the samples put at least half its reference mass in it.

All functions here are pure (arrays in, floats / arrays out); intervals are added by the
panel in :mod:`.generator`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .knn import NeighbourPass, as_matrix, prdc_pass

__all__ = [
    "assign_to_centroids",
    "cluster_mass",
    "group_coverage",
    "prdc",
    "prdc_from_pass",
    "rare_modes_kept",
]


def prdc_from_pass(p: NeighbourPass, k: int | None = None) -> dict[str, float]:
    """PRDC values from a :class:`~.knn.NeighbourPass` (``k`` defaults to the pass's k and is
    the density divisor)."""
    k = p.k if k is None else k
    return {
        "precision": float(np.mean(p.ball_counts > 0)),
        "recall": float(np.mean(p.ref_in_sample_ball)),
        "density": float(np.sum(p.ball_counts) / (k * p.ball_counts.size)),
        "coverage": float(np.mean(p.covered)),
    }


def prdc(
    reference: Any,
    samples: Any,
    k: int = 5,
    *,
    chunk_size: int | None = None,
    device: Any = None,
    dtype: Any = "float32",
    knn: str = "exact",
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) of ``samples`` against
    ``reference``, both ``(n, d)`` embeddings.

    Equal to ``prdc.compute_prdc(real_features=reference, fake_features=samples,
    nearest_k=k)`` (exactly with ``dtype="float64"``; in float32 up to distance ties at the
    last ulp), in memory bounded by ``chunk_size x n`` instead of three dense ``n x n``
    matrices, with about 70 % of their products (both radius passes use symmetric blocks;
    one pass over the reference x samples products gives all four metrics) done as float32
    torch matmuls. ``device="cuda"`` runs the products on a GPU. A monitor caches the
    reference radii (:mod:`.generator`), which leaves about half of the products per check.

    ``knn="ivf"`` (for a million rows and more) uses the inverted-file approximation of
    :mod:`.approx` instead (``nlist`` cells per set, ``nprobe`` scanned per query, k-means
    with ``seed``); its error against the exact values is measured in
    ``benchmarks/speed.py``.

    >>> rng = np.random.default_rng(0)
    >>> ref, gen = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    >>> r = prdc(ref, gen, k=5)
    >>> sorted(r)
    ['coverage', 'density', 'precision', 'recall']
    >>> r["coverage"] > 0.9, prdc(ref, ref)["coverage"]
    (True, 1.0)
    """
    p = prdc_pass(
        reference,
        samples,
        k,
        chunk_size=chunk_size,
        device=device,
        dtype=dtype,
        knn=knn,
        nlist=nlist,
        nprobe=nprobe,
        seed=seed,
    )
    return prdc_from_pass(p, k)


def group_coverage(covered: Any, mask: Any) -> float:
    """Share of the reference points selected by ``mask`` whose ball holds a sample.

    >>> group_coverage([True, False, True, True], [True, True, False, False])
    0.5
    """
    cov = np.asarray(covered, dtype=bool)
    sel = np.asarray(mask, dtype=bool)
    if cov.shape != sel.shape:
        raise InputError("mask", f"expected shape {cov.shape} (one entry per reference point), got {sel.shape}")
    if not sel.any():
        raise InputError("mask", "selects no reference point")
    return float(cov[sel].mean())


def assign_to_centroids(X: Any, centroids: Any, *, chunk_size: int = 65536) -> np.ndarray:
    """Index of the nearest centroid (Euclidean, first on ties) of each row of ``X``.

    >>> assign_to_centroids([[0.1], [0.9], [5.0]], [[0.0], [1.0]]).tolist()
    [0, 1, 1]
    """
    x = as_matrix(X, "X")
    c = as_matrix(centroids, "centroids", width=x.shape[1])
    cn = np.einsum("ij,ij->i", c, c)
    out = np.empty(x.shape[0], dtype=np.int64)
    for i0 in range(0, x.shape[0], chunk_size):
        block = x[i0 : i0 + chunk_size]
        out[i0 : i0 + chunk_size] = np.argmin(cn[None, :] - 2.0 * block @ c.T, axis=1)
    return out


def cluster_mass(labels: Any, n_clusters: int) -> np.ndarray:
    """Share of the rows in each cluster ``0 .. n_clusters - 1``.

    >>> cluster_mass([0, 0, 2, 0], 3).tolist()
    [0.75, 0.0, 0.25]
    """
    lab = np.asarray(labels, dtype=np.int64)
    if lab.size == 0:
        raise InputError("labels", "is empty")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise InputError("n_clusters", f"expected an int >= 1, got {n_clusters!r}")
    if lab.min() < 0 or lab.max() >= n_clusters:
        raise InputError("labels", f"expected cluster indices in 0..{n_clusters - 1}, got {lab.min()}..{lab.max()}")
    return np.bincount(lab, minlength=n_clusters)[:n_clusters] / lab.size


def rare_modes_kept(ref_mass: Any, sample_mass: Any, rare: Any, *, min_fraction: float = 0.5) -> np.ndarray:
    """For each rare cluster (in cluster order): do the samples give it at least
    ``min_fraction`` of its reference mass? Rare-mode coverage is the mean of this vector.

    >>> rare_modes_kept([0.5, 0.02, 0.03], [0.6, 0.0, 0.02], [False, True, True]).tolist()
    [False, True]
    """
    rm = np.asarray(ref_mass, dtype=np.float64)
    sm = np.asarray(sample_mass, dtype=np.float64)
    rr = np.asarray(rare, dtype=bool)
    if not (rm.shape == sm.shape == rr.shape):
        raise InputError("sample_mass", f"shapes differ: ref {rm.shape}, samples {sm.shape}, rare {rr.shape}")
    return np.asarray(sm[rr] >= min_fraction * rm[rr])
