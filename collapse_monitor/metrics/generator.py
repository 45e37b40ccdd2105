"""The generator (embedding) panel: PRDC, tail / head / rare-mode coverage and the diversity
metrics of one generation against a frozen reference, each a
:class:`~collapse_monitor.types.MetricValue` with a 95 % interval.

The reference side (:class:`GeneratorRefState`: k-NN radii, tail mask, k-means clusters,
mean / covariance and its eigen-decomposition, Mahalanobis fit, Vendi score) is built once per
reference and cached (:class:`~.cache.ReferenceCache`, ``.npz``, no pickle), so a check pays
for the samples only: one symmetric self pass for their k-NN radii, one pass over the
reference x samples products, and ``O(m d^2)`` moments.

Intervals:

* Wilson (1927) score intervals for proportions: precision (n = samples), recall, coverage,
  tail / head coverage (n = reference points in the group), rare-mode coverage (n = rare
  clusters), and the tail-mass count (scaled by 1 / 0.01). The reference points are not
  independent items (one sample covers overlapping balls together): recall and the three
  coverage shares take theirs on the effective size ``n / deff``, with the design effect of
  the delete-a-group jackknife over the bootstrap's sample groups
  (:func:`~.stats.grouped_design_effect`); the same jackknife's variance scales their paired
  McNemar tests (``design.<key>`` items; ``benchmarks/shares.py``);
* bootstrap percentile intervals (Efron & Tibshirani 1993) for density and the diversity
  metrics. The samples are split once into ``G`` (default 20) random groups; per-group sums
  and ``d x d`` scatter matrices are computed once and a replicate resamples whole groups, so
  it costs ``G d^2`` plus one symmetric eigen-decomposition per spectral metric (Vendi,
  effective rank, Frechet). Above ``max_boot_dim`` (default 256) dimensions of rank, exact
  replicate spectra would cost a full eigen-decomposition each: the Frechet distance's
  replicates are then exact in the top ``fd_head_dim`` (default 128) eigenvectors of the
  full-sample matrix and first-order (the diagonal ``v^T M_b v``) in the others
  (:func:`~.diversity.spectral_bootstrap`). At d = 512, m = 10,000 (``benchmarks/intervals.py
  --frechet``) the replicate spread over the true sampling spread was 1.9 / 1.7 / 6.9 with a
  128-dimensional head, 2.2 / 1.9 / 13 with 256 and 2.9 / 2.5 / 26 all-exact on a healthy /
  collapsed / power-law sample (resampled groups change the estimator's d / m bias from
  replicate to replicate: the interval is conservative, less so with the smaller head), and the
  diversity block took 1.50 s against 1.94 s with 256. Vendi and effective rank take log-scale Wald
  intervals from their influence functions instead (delta method,
  :func:`~._bootstrap.entropy_influence`). At d = 512 (``benchmarks/intervals.py``, 60
  independent samples per case) the delta method's standard error was 0.88-1.08 of the
  Monte Carlo sampling spread, the approximate replicates' 0.84-1.33 (single samples
  0.59-1.43) and even the all-exact bootstrap's 0.92-1.69 (resampling rows overstates the
  spread of spectral statistics at m = 2,000; El Karoui & Purdom 2018, "Can we trust the
  bootstrap in high-dimensions?"), at a third to a sixth of the approximate bootstrap's cost
  and a tenth or less of the exact one's. Point estimates are always exact.
  The replicates are re-centred on the point estimate (their median moved to it) before the
  percentiles are read: a resample repeats rows, which by itself pulls spectral statistics
  one way (Vendi and effective rank down, Frechet up) and would otherwise leave the point at
  one end of its interval; the spread is kept. An interval that still misses its point is
  widened to include it; intervals are clipped to the metric's bounds (``_spec``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import check_spread
from ..errors import ConfigError, InputError
from ..types import MetricValue, Reference
from ._bootstrap import _map, entropy_influence, gram, group_design, transformed_scatter
from ._spec import spec_for
from .cache import ReferenceCache, default_cache
from .coverage import assign_to_centroids, cluster_mass, rare_modes_kept
from .diversity import (
    TAIL_LEVEL,
    MahalanobisTail,
    hill_number,
    mean_cov,
    normalize_rows,
    spectral_bootstrap,
    spectral_effective_rank,
    sym_eigh,
    vendi_score,
)
from .knn import _resolve_dtype, _to_tensor, as_matrix, centred_radii2, knn_center, prdc_pass, resolve_device
from .stats import (
    design_effect,
    grouped_design_effect,
    grouped_jackknife_variance,
    normal_quantile,
    percentile_interval,
    wilson_interval,
    wilson_interval_real,
)

if TYPE_CHECKING:  # pragma: no cover
    from .approx import IVFIndex


def _spread(cov: np.ndarray) -> np.ndarray:
    """Per-coordinate standard deviations from a covariance matrix (the k-NN centre's grid)."""
    return np.sqrt(np.clip(np.diag(cov), 0.0, None))


__all__ = [
    "GeneratorRefState",
    "GeneratorResult",
    "build_generator_state",
    "default_n_clusters",
    "generator_panel",
    "get_generator_state",
    "grouped_design_effect",
]

_STATE_VERSION = 3  # 2: k-NN radii on the grid-rounded centre (knn.knn_center); 3: per-row float64 radii
_CONF = 0.95


# --------------------------------------------------------------------------- reference state


@dataclass(frozen=True, eq=False)
class GeneratorRefState:
    """Everything the generator panel needs from the reference, computed once.

    ``radii2`` are the squared k-NN radii as compared (computed on rows centred by ``mean`` in
    ``dtype``); ``tail_mask`` marks the ``tail_quantile`` share of points with the largest
    radii; ``centroids`` / ``cluster_mass`` / ``rare_clusters`` come from k-means;
    ``cov`` (``ddof=1``) with ``cov_eigvals`` / ``cov_eigvecs``; ``tail`` is the Mahalanobis
    fit of the tail-mass ratio; ``vendi`` the full reference's Vendi score and ``perm`` a fixed
    permutation whose prefixes are the same-size reference subsamples of ``vendi_ratio``.
    """

    k: int
    tail_quantile: float
    rare_threshold: float
    seed: int
    dtype: str
    mean: np.ndarray
    radii2: np.ndarray
    tail_mask: np.ndarray
    centroids: np.ndarray
    cluster_mass: np.ndarray
    rare_clusters: np.ndarray
    cov: np.ndarray
    cov_eigvals: np.ndarray
    cov_eigvecs: np.ndarray
    tail: MahalanobisTail
    vendi: float
    perm: np.ndarray
    knn: str = "exact"
    nprobe: int = 0
    ivf_centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    ivf_assign: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Vendi scores of the same-size subsamples, per size (memoised in memory, not stored)
    _vendi_at: dict[int, float] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ivf_index(self) -> IVFIndex | None:
        """The reference's inverted-file index (``knn="ivf"`` states only)."""
        if self.knn != "ivf":
            return None
        from .approx import IVFIndex

        return IVFIndex(self.ivf_centroids, self.ivf_assign)

    @property
    def n(self) -> int:
        return int(self.radii2.shape[0])

    def vendi_at(self, ref: np.ndarray, m: int) -> float:
        """Vendi score of the reference subsample of size ``m`` (the prefix of ``perm``; the
        whole reference's when ``m >= n``), memoised per size: a check at the baseline's sample
        count computes it once (4 s a check at d = 4,096 and m = 5,000). ``ref`` must be the
        rows the state was built from."""
        if m >= self.n:
            return self.vendi
        if m not in self._vendi_at:
            self._vendi_at[m] = vendi_score(ref[self.perm[:m]])
        return self._vendi_at[m]

    @property
    def d(self) -> int:
        return int(self.mean.shape[0])

    @property
    def radii(self) -> np.ndarray:
        """k-NN radii (distances)."""
        return np.sqrt(self.radii2)

    @property
    def trace(self) -> float:
        """Total variance ``trace(cov)``."""
        return float(np.trace(self.cov))

    @property
    def sqrt_cov(self) -> np.ndarray:
        """Symmetric ``cov^1/2`` from the cached eigen-decomposition."""
        v, w = self.cov_eigvecs, np.sqrt(np.clip(self.cov_eigvals, 0.0, None))
        return (v * w) @ v.T

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "version": np.asarray(_STATE_VERSION),
            "k": np.asarray(self.k),
            "tail_quantile": np.asarray(self.tail_quantile),
            "rare_threshold": np.asarray(self.rare_threshold),
            "seed": np.asarray(self.seed),
            "dtype": np.asarray(self.dtype),
            "mean": self.mean,
            "radii2": self.radii2,
            "tail_mask": self.tail_mask,
            "centroids": self.centroids,
            "cluster_mass": self.cluster_mass,
            "rare_clusters": self.rare_clusters,
            "cov": self.cov,
            "cov_eigvals": self.cov_eigvals,
            "cov_eigvecs": self.cov_eigvecs,
            "tail_mean": self.tail.mean,
            "tail_whiten": self.tail.whiten,
            "tail_radius": np.asarray(self.tail.radius),
            "tail_shrinkage": np.asarray(self.tail.shrinkage),
            "tail_level": np.asarray(self.tail.quantile),
            "vendi": np.asarray(self.vendi),
            "perm": self.perm,
            "knn": np.asarray(self.knn),
            "nprobe": np.asarray(self.nprobe),
            "ivf_centroids": self.ivf_centroids,
            "ivf_assign": self.ivf_assign,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> GeneratorRefState:
        if int(arrays["version"]) != _STATE_VERSION:
            raise ValueError(f"generator state version {int(arrays['version'])}, expected {_STATE_VERSION}")
        tail = MahalanobisTail(
            np.asarray(arrays["tail_mean"], dtype=np.float64),
            np.asarray(arrays["tail_whiten"], dtype=np.float64),
            float(arrays["tail_radius"]),
            float(arrays["tail_shrinkage"]),
            float(arrays["tail_level"]),
        )
        return cls(
            k=int(arrays["k"]),
            tail_quantile=float(arrays["tail_quantile"]),
            rare_threshold=float(arrays["rare_threshold"]),
            seed=int(arrays["seed"]),
            dtype=str(arrays["dtype"]),
            mean=np.asarray(arrays["mean"], dtype=np.float64),
            radii2=np.asarray(arrays["radii2"], dtype=np.float64),
            tail_mask=np.asarray(arrays["tail_mask"], dtype=bool),
            centroids=np.asarray(arrays["centroids"], dtype=np.float64),
            cluster_mass=np.asarray(arrays["cluster_mass"], dtype=np.float64),
            rare_clusters=np.asarray(arrays["rare_clusters"], dtype=bool),
            cov=np.asarray(arrays["cov"], dtype=np.float64),
            cov_eigvals=np.asarray(arrays["cov_eigvals"], dtype=np.float64),
            cov_eigvecs=np.asarray(arrays["cov_eigvecs"], dtype=np.float64),
            tail=tail,
            vendi=float(arrays["vendi"]),
            perm=np.asarray(arrays["perm"], dtype=np.int64),
            knn=str(arrays["knn"]) if "knn" in arrays else "exact",  # files written before knn= existed
            nprobe=int(arrays["nprobe"]) if "nprobe" in arrays else 0,
            ivf_centroids=np.asarray(arrays.get("ivf_centroids", np.zeros((0, 0)))),
            ivf_assign=np.asarray(arrays.get("ivf_assign", np.zeros(0)), dtype=np.int64),
        )


def default_n_clusters(n: int, rare_threshold: float = 0.05) -> int:
    """``round(0.5 / rare_threshold)`` k-means clusters (10 for the default 0.05): the average
    cluster then holds twice the threshold, so a *rare* cluster is one with under half the
    average mass (a genuinely small mode, not just a below-average k-means cell). Capped so a
    cluster averages at least 25 reference points; at least 2.

    >>> default_n_clusters(10_000), default_n_clusters(100), default_n_clusters(10)
    (10, 4, 2)
    """
    return max(2, min(round(0.5 / rare_threshold), n // 25))


def _fraction(x: Any, key: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected a number in (0, 1), got {x!r}") from None
    if not 0.0 < v < 1.0:
        raise ConfigError(key, f"expected a number in (0, 1), got {x!r}")
    return v


_KMEANS_MAX_ROWS = 10_000


def _kmeans_subset(n: int, seed: int) -> np.ndarray | None:
    """The rows (sorted indices) k-means is fitted on: ``_KMEANS_MAX_ROWS`` fixed-seed rows of
    ``n``, or None (all of them) when there are no more than that."""
    if n <= _KMEANS_MAX_ROWS:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, _KMEANS_MAX_ROWS, replace=False))


def _kmeans(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means centroids (sklearn, k-means++ init, ``n_init=3``, ``random_state=seed``), fit
    on at most 10,000 fixed-seed rows (:func:`_kmeans_subset`; plenty for <= 20 centroids).
    sklearn's OpenMP pool is limited to one thread inside this call only: its spin-waiting
    barriers slow k-means down several-fold when the CPUs are shared with a training job."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    subset = _kmeans_subset(x.shape[0], seed)
    if subset is not None:
        x = x[subset]
    with warnings.catch_warnings(), threadpool_limits(1, user_api="openmp"):
        warnings.simplefilter("ignore")  # fewer distinct points than clusters: empty clusters get mass 0
        km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(x)
    return np.asarray(km.cluster_centers_, dtype=np.float64)


def build_generator_state(
    ref_embeddings: Any,
    *,
    k: int = 5,
    tail_quantile: float = 0.1,
    rare_threshold: float = 0.05,
    n_clusters: int | None = None,
    seed: int = 0,
    device: Any = None,
    chunk_size: int | None = None,
    dtype: str = "float32",
    knn: str = "exact",
    nlist: int | None = None,
    nprobe: int | None = None,
) -> GeneratorRefState:
    """Build the reference side of the generator panel (see :class:`GeneratorRefState`).

    Cost at ``n`` rows: one symmetric chunked k-NN pass (``n^2 d / 2``, bounded memory),
    k-means (sklearn, ``n_init=3``, ``random_state=seed``, at most 10,000 fitted rows),
    ``O(n d^2)`` moments and two ``d x d`` eigen-decompositions.

    * tail: the ``round(tail_quantile * n)`` points (at least 1, at most ``n - 1``) with the
      largest k-NN radii (ties broken by row order);
    * clusters: ``n_clusters`` (default :func:`default_n_clusters`); rare clusters have mass
      > 0 and < ``rare_threshold``;
    * ``dtype`` is the compute dtype of the k-NN radii; the panel uses the same.
    * ``knn="ivf"``: the radii come from the inverted-file approximation of
      :mod:`.approx` (``nlist`` cells, default ``round(sqrt(n))``; ``nprobe`` cells per
      query, default 8), for references of a million rows and more; the index is kept in
      the state and the panel then uses the approximate passes too.

    >>> state = build_generator_state(np.random.default_rng(0).normal(size=(200, 3)))
    >>> state.n, state.d, int(state.tail_mask.sum()), state.centroids.shape
    (200, 3, 20, (8, 3))
    """
    import torch

    from .approx import DEFAULT_NPROBE, build_ivf, check_knn, ivf_kth_d2
    from .knn import _check_chunk, _check_k, _patch_pays, _patch_radii, unresolved_rows

    method, nlist, nprobe = check_knn(knn, nlist, nprobe)
    ref = as_matrix(ref_embeddings, "reference.embeddings")
    n = ref.shape[0]
    if n < 2:
        raise InputError("reference.embeddings", "needs at least 2 rows to define neighbourhoods")
    check_spread(ref, "reference.embeddings")
    k = _check_k(k)
    tq = _fraction(tail_quantile, "tail_quantile")
    rt = _fraction(rare_threshold, "rare_threshold")
    if n_clusters is None:
        n_clusters = default_n_clusters(n, rt)
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or not 1 <= n_clusters <= n:
        raise ConfigError("n_clusters", f"expected an integer in [1, {n}], got {n_clusters!r}")
    ndt = _resolve_dtype(dtype)[1]
    dev = resolve_device(device)
    chunk = _check_chunk(chunk_size)

    mean = ref.mean(axis=0)
    _, cov = mean_cov(ref)
    ivf: dict[str, Any] = {}
    center = knn_center(mean, _spread(cov))
    with torch.inference_mode():
        if method == "ivf":
            x = _to_tensor(ref, center, ndt, dev)
            index = build_ivf(x, nlist, seed)
            probe = DEFAULT_NPROBE if nprobe is None else nprobe
            radii2 = ivf_kth_d2(x, k, index, probe)
            # the exact path's float64 fallback (knn.centred_radii2): the rows float32 cannot
            # resolve exactly in float64, or, when that costs more than the pass, all of it
            bad = unresolved_rows(x, radii2)
            if bad.any():
                x64 = _to_tensor(ref, center, np.dtype(np.float64), dev)
                if _patch_pays(int(bad.sum()), n, min(1.0, probe / index.nlist)):
                    radii2 = _patch_radii(x64, radii2, bad, k, chunk)
                else:
                    ndt, x = np.dtype(np.float64), x64
                    index = build_ivf(x, nlist, seed)
                    radii2 = ivf_kth_d2(x, k, index, probe)
            ivf = dict(knn="ivf", nprobe=probe, ivf_centroids=index.centroids, ivf_assign=index.assign)
        else:  # rows float32 cannot resolve (a tight cluster off-centre, far-apart modes) in float64
            x, radii2, ndt = centred_radii2(ref, center, ndt, dev, k, chunk)
        radii2_np = radii2.cpu().numpy().astype(np.float64)
        del x, radii2
    n_tail = int(np.clip(round(tq * n), 1, n - 1))
    tail_mask = np.zeros(n, dtype=bool)
    tail_mask[np.argsort(-radii2_np, kind="stable")[:n_tail]] = True

    # the rows k-means fits, selected before they are centred and cast (no full-size copies)
    subset = _kmeans_subset(n, seed)
    fit_rows = ref if subset is None else ref[subset]
    centroids = _kmeans((fit_rows - mean).astype(np.float32), int(n_clusters), seed) + mean
    mass = cluster_mass(assign_to_centroids(ref, centroids), int(n_clusters))
    rare = (mass > 0) & (mass < rt)

    evals, evecs = sym_eigh(cov)
    return GeneratorRefState(
        k=k,
        tail_quantile=tq,
        rare_threshold=rt,
        seed=int(seed),
        dtype=str(ndt),
        mean=mean,
        radii2=radii2_np,
        tail_mask=tail_mask,
        centroids=centroids,
        cluster_mass=mass,
        rare_clusters=rare,
        cov=cov,
        cov_eigvals=evals,
        cov_eigvecs=evecs,
        tail=MahalanobisTail.fit(ref, seed=seed),
        vendi=vendi_score(ref),
        perm=np.random.default_rng(seed).permutation(n).astype(np.int64),
        **ivf,
    )


def get_generator_state(reference: Reference, cache: ReferenceCache | None = None, **params: Any) -> GeneratorRefState:
    """The cached reference state for ``reference`` (built on first use). ``params`` are
    :func:`build_generator_state`'s keywords; ``device`` and ``chunk_size`` do not enter the
    cache key (they change where and in which blocks it is computed, not what); ``knn``,
    ``nlist`` and ``nprobe`` do, except at their defaults (so exact states keep their key)."""
    if reference.embeddings is None:
        raise InputError("reference.embeddings", "the generator metrics need reference embeddings")
    cache = cache or default_cache()
    defaults = {"knn": "exact", "nlist": None, "nprobe": None}
    key = {
        name: v
        for name, v in params.items()
        if name not in ("device", "chunk_size") and not (name in defaults and v == defaults[name])
    }
    key.setdefault("dtype", "float32")
    emb = reference.embeddings

    def build() -> GeneratorRefState:
        return build_generator_state(emb, **params)

    return cache.get(reference.fingerprint, "generator", key, GeneratorRefState, build)


# --------------------------------------------------------------------------- panel


@dataclass(frozen=True)
class GeneratorResult:
    """Metrics with intervals, per-item vectors and paired-test specs (metric key ->
    (item key, mask over that item vector)) for exact McNemar tests against a baseline."""

    metrics: dict[str, MetricValue]
    items: dict[str, np.ndarray] = field(default_factory=dict)
    paired: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)


def _design(hits: Any, mask: np.ndarray, gains: Any = None) -> np.ndarray:
    """A ``design.<key>`` item: ``[design effect (floored at 1), jackknife variance of the
    share]`` (:func:`~.stats.design_effect`, :func:`~.stats.grouped_jackknife_variance`;
    the paired tests use the variance, the intervals and the Fisher fallback the effect).
    Without two groups or any point there is no jackknife: ``[1]`` alone, which the paired
    tests read as the binomial variance (a stored 0 would have read as no variance at all)."""
    variances = grouped_jackknife_variance(hits, mask, gains)  # one pass for both entries
    if variances is None:
        return np.array([1.0])
    return np.array([design_effect(variances), variances[0]])


def _wilson_mv(x: int, n: int, scale: float = 1.0, design_effect: float = 1.0) -> MetricValue:
    """The Wilson interval of ``x / n``; with a ``design_effect`` above 1 (correlated items),
    on the effective sample size ``n / design_effect`` (Kish 1965; Rao & Scott 1992; the
    Wilson form of Korn & Graubard 1998), the point estimate unchanged."""
    if design_effect > 1.0 and n > 0:
        n_eff = n / design_effect
        lo, hi = wilson_interval_real(x / n * n_eff, n_eff, _CONF)
    else:
        lo, hi = wilson_interval(int(x), int(n), _CONF)
    return MetricValue(x / n * scale, lo * scale, hi * scale, n=int(n))


def few_groups_factor(g: int, confidence: float = _CONF) -> float:
    """How much wider a grouped bootstrap interval from ``g`` groups is drawn than its replicates'
    spread: ``sqrt(g / (g - 1)) * t_{g-1} / z`` (1 below two groups).

    Resampling ``g`` groups estimates the statistic's variance with a ``(g - 1) / g`` bias and
    only ``g - 1`` degrees of freedom (Davison & Hinkley, "Bootstrap Methods and their
    Application", 1997, sec. 3.8; the small-number-of-clusters correction of Cameron, Gelbach &
    Miller, "Bootstrap-based improvements for inference with clustered errors", REStat 2008: t
    critical values with ``g - 1`` degrees of freedom). Measured coverage of the 95 % interval
    of Vendi and the effective rank, d = 32, m = 1,000, 20 groups, 1,000 samples: 0.92 without,
    0.94 with it; with 5 groups 0.78-0.89 without (tests/metrics/test_interval_coverage.py).

    >>> round(few_groups_factor(20), 4)
    1.0956
    >>> few_groups_factor(1)
    1.0
    """
    if g < 2:
        return 1.0
    from scipy.stats import t

    tail = 0.5 + confidence / 2.0
    return math.sqrt(g / (g - 1.0)) * float(t.ppf(tail, g - 1)) / normal_quantile(tail)


def _boot_mv(point: float, reps: np.ndarray, n: int, g: int) -> MetricValue:
    """Percentile interval of the replicates' deviations from their median, widened by
    :func:`few_groups_factor` for the ``g`` groups they resampled and re-centred on the point
    estimate; widened to include ``point`` if it still misses it."""
    reps = np.asarray(reps, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return MetricValue(point, point, point, n=int(n))
    dev = (reps - np.median(reps)) * few_groups_factor(g)
    lo, hi = percentile_interval(dev + point, _CONF)
    return MetricValue(point, min(lo, point), max(hi, point), n=int(n))


def _log_wald_mv(point: float, se_log: float, n: int) -> MetricValue:
    """``point * exp(+- z se)``: the 95 % Wald interval of a positive metric whose log has
    standard error ``se_log`` (delta method)."""
    z = normal_quantile(0.5 + _CONF / 2.0)
    return MetricValue(point, point * float(np.exp(-z * se_log)), point * float(np.exp(z * se_log)), n=int(n))


def _check_int(x: Any, key: str, lo: int) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < lo:
        raise ConfigError(key, f"expected an integer >= {lo}, got {x!r}")
    return int(x)


def generator_panel(
    state: GeneratorRefState,
    ref_embeddings: Any,
    samples: Any,
    *,
    k: int | None = None,
    n_boot: int = 200,
    seed: int = 0,
    device: Any = None,
    chunk_size: int | None = None,
    n_groups: int = 20,
    max_boot_dim: int = 256,
    knn: str | None = None,
    nprobe: int | None = None,
    fd_head_dim: int = 128,
) -> GeneratorResult:
    """All generator metrics of ``samples`` (m, d) against the reference of ``state``.

    ``ref_embeddings`` must be the rows ``state`` was built from. ``k`` (default: the
    state's) must equal the state's k. Keys: precision, recall, density, coverage,
    tail_coverage, head_coverage, rare_mode_coverage (only when the reference has rare
    clusters), rare_mode_mass (idem), vendi_score, vendi_ratio, effective_rank, variance_ratio,
    frechet_distance, tail_mass_ratio. Items: ``coverage.covered`` (per reference point),
    ``rare_modes.kept`` (per rare cluster), ``rate.<key>`` = ``[events, samples]`` for the
    count metrics rare_mode_mass and tail_mass_ratio (exact rate tests against the baseline),
    and ``design.<key>`` = ``[deff, jackknife variance]`` for recall (whose jackknife regrows the
    remaining samples' k-NN balls, :mod:`._regrow`) and the three coverage shares (the design
    effect their intervals are scaled by,
    :func:`~.stats.grouped_design_effect`, and the variance their paired tests are scaled by,
    :func:`~.stats.grouped_jackknife_variance`).

    The k-NN passes follow the state: exact, or with ``knn="ivf"`` states the inverted-file
    approximation (:mod:`.approx`) with the state's ``nprobe`` unless ``nprobe`` is given;
    ``knn``, when given, must match the state's.

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(400, 4))
    >>> state = build_generator_state(ref, n_clusters=4)
    >>> res = generator_panel(state, ref, rng.normal(size=(300, 4)), n_boot=50)
    >>> 0.85 < res.metrics["coverage"].value <= 1.0, res.items["coverage.covered"].shape
    (True, (400,))
    >>> 0.8 < res.metrics["variance_ratio"].value < 1.2
    True
    """
    ref = as_matrix(ref_embeddings, "reference.embeddings", keep_float32=True)  # cast once, in the k-NN pass
    if ref.shape != (state.n, state.d):
        raise InputError(
            "reference.embeddings", f"has shape {ref.shape} but the reference state was built on {(state.n, state.d)}"
        )
    gen = as_matrix(samples, "samples", width=state.d)
    if k is not None and k != state.k:
        raise ConfigError("k", f"the reference state was built with k={state.k}, got k={k}")
    if knn is not None and knn != state.knn:
        raise ConfigError("knn", f"the reference state was built with knn={state.knn!r}, got knn={knn!r}")
    n_boot = _check_int(n_boot, "n_boot", 1)
    n_groups = _check_int(n_groups, "n_groups", 1)
    max_boot_dim = _check_int(max_boot_dim, "max_boot_dim", 1)
    fd_head_dim = _check_int(fd_head_dim, "fd_head_dim", 1)
    n, m = state.n, gen.shape[0]

    # --- bootstrap / jackknife design: G random groups of samples, multinomial group weights
    g, groups, weights = group_design(m, n_groups, n_boot, seed)

    # --- PRDC, tail / head coverage: one pass over reference x samples
    p = prdc_pass(
        ref,
        gen,
        state.k,
        ref_radii2=state.radii2,
        center=knn_center(state.mean, _spread(state.cov)),
        chunk_size=chunk_size,
        device=device,
        dtype=state.dtype,
        knn=state.knn,
        nprobe=(nprobe or state.nprobe) if state.knn == "ivf" else None,
        ref_index=state.ivf_index,
        seed=seed,
        groups=groups,
    )
    covered = p.covered
    everyone = np.ones(n, dtype=bool)
    recall_deff = _design(p.ref_ball_groups, everyone, p.ref_ball_gains)  # with the regrown balls
    metrics: dict[str, MetricValue] = {
        "precision": _wilson_mv(int(np.sum(p.ball_counts > 0)), m),
        "recall": _wilson_mv(int(np.sum(p.ref_in_sample_ball)), n, design_effect=float(recall_deff[0])),
    }
    items: dict[str, np.ndarray] = {"coverage.covered": covered, "design.recall": recall_deff}
    paired: dict[str, tuple[str, np.ndarray]] = {}
    for key, mask in (("coverage", everyone), ("tail_coverage", state.tail_mask), ("head_coverage", ~state.tail_mask)):
        deff = _design(p.ref_cover_groups, mask)
        metrics[key] = _wilson_mv(int(np.sum(covered[mask])), int(mask.sum()), design_effect=float(deff[0]))
        items[f"design.{key}"] = deff
        paired[key] = ("coverage.covered", mask.copy())

    onehot = np.zeros((g, m))
    onehot[groups, np.arange(m)] = 1.0
    counts_g = onehot.sum(axis=1)
    n_b = weights @ counts_g

    density = float(np.sum(p.ball_counts) / (state.k * m))
    dens_b = (weights @ (onehot @ p.ball_counts.astype(np.float64))) / (state.k * n_b)
    metrics["density"] = _boot_mv(density, dens_b, m, g)

    # --- rare modes
    if state.rare_clusters.any():
        assigned = assign_to_centroids(gen, state.centroids)
        sample_mass = cluster_mass(assigned, state.centroids.shape[0])
        kept = rare_modes_kept(state.cluster_mass, sample_mass, state.rare_clusters)
        metrics["rare_mode_coverage"] = _wilson_mv(int(kept.sum()), kept.size)
        items["rare_modes.kept"] = kept
        paired["rare_mode_coverage"] = ("rare_modes.kept", np.ones(kept.size, dtype=bool))
        # mass the samples put on the rare clusters, relative to the reference's: a count, so
        # its decline is tested exactly against the baseline's count (see detection._rate_p)
        in_rare = int(np.sum(state.rare_clusters[assigned]))
        ref_rare = float(state.cluster_mass[state.rare_clusters].sum())
        metrics["rare_mode_mass"] = _wilson_mv(in_rare, m, scale=1.0 / ref_rare)
        items["rate.rare_mode_mass"] = np.array([in_rare, m], dtype=np.int64)

    # --- diversity (bootstrap eigen-decompositions on as many threads as torch may use, <= 4)
    import torch

    workers = max(1, min(4, torch.get_num_threads()))
    dims = (max_boot_dim, min(max_boot_dim, fd_head_dim))
    metrics.update(_diversity(state, ref, gen, groups, g, weights, onehot, n_b, dims, workers))

    # --- tail mass
    x = state.tail.exceed_count(gen)
    metrics["tail_mass_ratio"] = _wilson_mv(x, m, scale=1.0 / TAIL_LEVEL)
    items["rate.tail_mass_ratio"] = np.array([x, m], dtype=np.int64)
    return GeneratorResult({key: _clip(key, mv) for key, mv in metrics.items()}, items, paired)


def _clip(key: str, mv: MetricValue) -> MetricValue:
    spec = spec_for(key)
    lo = mv.ci_low if spec.lower is None else max(mv.ci_low, min(spec.lower, mv.value))
    hi = mv.ci_high if spec.upper is None else min(mv.ci_high, max(spec.upper, mv.value))
    return MetricValue(mv.value, lo, hi, n=mv.n)


def _diversity(
    state: GeneratorRefState,
    ref: np.ndarray,
    gen: np.ndarray,
    groups: np.ndarray,
    g: int,
    weights: np.ndarray,
    onehot: np.ndarray,
    n_b: np.ndarray,
    dims: tuple[int, int],
    workers: int,
) -> dict[str, MetricValue]:
    """The diversity metrics; ``dims``: (``max_boot_dim``, the Frechet replicates' head)."""
    from .diversity import scatters, scatters_pay, spectral_bootstrap_scatters

    m, d = gen.shape
    max_dim, fd_dim = dims
    out: dict[str, MetricValue] = {}
    # with many rows, every statistic's replicates come from the group scatter matrices of the
    # rows (one m d^2 pass per feature set); otherwise from the rows themselves
    by_scatter = scatters_pay(m, d, g)

    def boot(
        feats: np.ndarray,
        centred: bool,
        stat: Any,
        sc: Any = None,
        transform: np.ndarray | None = None,
        head: int = max_dim,
        eig: Any = None,
    ) -> tuple[float, np.ndarray]:
        if sc is not None:
            return spectral_bootstrap_scatters(
                sc,
                weights,
                centred=centred,
                stat=stat,
                max_dim=head,
                workers=workers,
                transform=transform,
                eig=eig,
                rows=(feats, groups),
            )
        rows = feats if transform is None else feats @ transform
        return spectral_bootstrap(rows, groups, g, weights, centred=centred, stat=stat, max_dim=head, workers=workers)

    # above max_dim the replicates' spectra would be approximate (exact only in the top
    # max_dim directions); the two spectral entropies then take delta-method intervals from
    # their influence functions instead (measured closer to the sampling spread than the
    # approximate replicates: benchmarks/intervals.py), the Frechet term keeps the bootstrap
    influence = min(m, d) > max_dim

    # Vendi (cosine kernel, q = 1) and its ratio to a same-size reference subsample
    ref_vendi = state.vendi_at(ref, m)
    sqrt_cov = state.sqrt_cov
    gmean = gen.mean(axis=0)
    zc = gen - gmean
    sc_z = scatters(zc, groups, g, workers=workers) if by_scatter else None
    eig_u = eig_z = eig_fd = None
    if influence:
        # the d x d eigen-decompositions (one LAPACK thread each) side by side on the workers:
        # Vendi's, the effective rank's and, with a Frechet head below d, the Frechet one
        g_u = gram(gen, unit=True, workers=workers)[0]  # unit rows, normalised block by block
        scatter_z = sc_z.total if sc_z is not None else gram(zc, workers=workers)[0]
        mats = [g_u / float(m), scatter_z / float(max(m - 1, 1))]
        if sc_z is not None and d > fd_dim:
            mats.append(transformed_scatter(sc_z, centred=True, transform=sqrt_cov))
        eig_u, eig_z, *rest = _map(sym_eigh, mats, workers)
        eig_fd = rest[0] if rest else None
        ent = entropy_influence(gen, g_u, float(m), workers=workers, eig=eig_u, unit=True)
        vendi = hill_number(ent.eigenvalues)
        out["vendi_score"] = _log_wald_mv(vendi, ent.se, m)
        out["vendi_ratio"] = _log_wald_mv(vendi / ref_vendi, ent.se, m)
    else:
        unit = normalize_rows(gen)
        sc_u = scatters(unit, groups, g, workers=workers) if by_scatter else None
        vendi, vendi_b = boot(unit, False, hill_number, sc_u)
        del unit
        out["vendi_score"] = _boot_mv(vendi, vendi_b, m, g)
        out["vendi_ratio"] = _boot_mv(vendi / ref_vendi, vendi_b / ref_vendi, m, g)

    # effective rank of the samples' covariance
    if influence:
        ent = entropy_influence(zc, scatter_z, float(max(m - 1, 1)), workers=workers, eig=eig_z)
        out["effective_rank"] = _log_wald_mv(spectral_effective_rank(ent.eigenvalues), ent.se, m)
    else:
        erank, erank_b = boot(zc, True, spectral_effective_rank, sc_z)
        out["effective_rank"] = _boot_mv(erank, erank_b, m, g)

    # total variance per replicate from group sums and squared norms (exact in any d)
    if sc_z is not None:
        sums_g, sq_g = sc_z.groups.sums, np.einsum("gii->g", sc_z.groups.scatters)
    else:
        sums_g, sq_g = onehot @ zc, onehot @ np.einsum("ij,ij->i", zc, zc)
    sums_b, sq_b = weights @ sums_g, weights @ sq_g
    safe = np.where(n_b > 1, n_b - 1.0, np.inf)
    trace_b = np.maximum(sq_b - np.einsum("ij,ij->i", sums_b, sums_b) / np.maximum(n_b, 1.0), 0.0) / safe
    trace_gen = float(np.einsum("ij,ij->", zc, zc)) / (m - 1) if m > 1 else 0.0
    # the reference's own trace whenever it is positive: an absolute floor of 1e-12 read a
    # healthy sample of a small-scale reference (trace 5e-13) as half its variance (an audit)
    ref_trace = state.trace if state.trace > 0 else 1e-12
    out["variance_ratio"] = _boot_mv(trace_gen / ref_trace, trace_b / ref_trace, m, g)

    # Frechet distance: tr (C1^1/2 C2 C1^1/2)^1/2 from the spectrum of cov(zc C1^1/2)
    def trace_sqrt(w: np.ndarray) -> float:
        return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))

    ts, ts_b = boot(zc, True, trace_sqrt, sc_z, transform=sqrt_cov, head=fd_dim, eig=eig_fd)
    delta0 = gmean - state.mean
    mean_b = sums_b / np.maximum(n_b, 1.0)[:, None] + delta0
    fd = max(float(delta0 @ delta0) + state.trace + trace_gen - 2.0 * ts, 0.0)
    fd_b = np.maximum(np.einsum("ij,ij->i", mean_b, mean_b) + state.trace + trace_b - 2.0 * ts_b, 0.0)
    out["frechet_distance"] = _boot_mv(fd, fd_b, m, g)
    return out
