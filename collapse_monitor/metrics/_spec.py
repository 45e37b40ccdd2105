"""Metadata on the metric, not in the caller: family, direction, bounds and help text for
every canonical key. Detection, Prometheus HELP lines and the dashboards read it here."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAMILIES", "SPECS", "MetricSpec", "spec_for"]

FAMILIES = ("tail", "head", "diversity", "other")


@dataclass(frozen=True)
class MetricSpec:
    key: str
    family: str  # tail | head | diversity | other
    higher_is_better: bool | None  # None: not a quality direction (e.g. synthetic_fraction)
    help: str
    lower: float | None = 0.0
    upper: float | None = 1.0
    log_scale: bool = False  # compare on log scale (ratios, scores)
    unit: str = "ratio"
    #: higher is better only up to this value (a calibrated ratio reads 1): a decline is judged
    #: on ``min(value, best)``, so a fall from above it towards it is no decline; None: no such cap
    best: float | None = None

    @property
    def prom_name(self) -> str:
        return "collapse_monitor_" + self.key.replace(".", "_")


def _s(key: str, family: str, hib: bool | None, help: str, **kw: object) -> MetricSpec:
    return MetricSpec(key, family, hib, help, **kw)  # type: ignore[arg-type]


_ALL = [
    # classifier
    _s("accuracy", "head", True, "Share of probe items predicted correctly (Wilson 95% CI)."),
    _s("balanced_accuracy", "head", True, "Mean per-class recall on the probe set."),
    _s("rare_class_recall", "tail", True, "Macro recall over rare classes (prior < rare_threshold)."),
    _s("head_class_recall", "head", True, "Macro recall over non-rare classes."),
    _s("worst_class_recall", "tail", True, "Lowest recall over classes with support >= min_support."),
    _s(
        "rare_prediction_ratio",
        "tail",
        True,
        "Share of predictions in rare classes divided by their prior (1 = calibrated, shrinks in collapse).",
        upper=None,
        log_scale=True,
        best=1.0,
    ),
    _s(
        "rare_flips",
        "other",
        False,
        "Rare-class probe items right at baseline and wrong now (count; exact McNemar p).",
        upper=None,
        unit="items",
    ),
    # generator (embeddings)
    _s(
        "precision", "head", True, "PRDC precision (Naeem et al. 2020): share of samples inside the reference manifold."
    ),
    _s("recall", "other", True, "PRDC recall: share of reference points inside the samples' manifold."),
    _s("density", "other", True, "PRDC density: mean k-NN ball count of samples / k.", upper=None),
    _s("coverage", "other", True, "PRDC coverage: share of reference points whose k-NN ball holds a sample."),
    _s("tail_coverage", "tail", True, "Coverage of reference points in the sparse tail (largest k-NN radii)."),
    _s("head_coverage", "head", True, "Coverage of the other (dense) reference points."),
    _s("rare_mode_coverage", "tail", True, "Share of rare reference clusters that keep at least half their mass."),
    _s(
        "rare_mode_mass",
        "tail",
        True,
        "Share of samples in rare reference clusters / the reference's share there (1 = reference-like).",
        upper=None,
        log_scale=True,
    ),
    _s(
        "vendi_score",
        "diversity",
        True,
        "Vendi score (cosine kernel, q=1): effective number of distinct samples.",
        lower=1.0,
        upper=None,
        log_scale=True,
        unit="samples",
    ),
    _s(
        "vendi_ratio",
        "diversity",
        True,
        "Vendi score / Vendi of a same-size reference subsample.",
        upper=None,
        log_scale=True,
    ),
    _s(
        "effective_rank",
        "diversity",
        True,
        "exp-entropy of the samples' covariance spectrum (Roy & Vetterli 2007).",
        lower=1.0,
        upper=None,
        log_scale=True,
        unit="dimensions",
    ),
    _s("variance_ratio", "diversity", True, "trace(cov samples) / trace(cov reference).", upper=None, log_scale=True),
    _s(
        "frechet_distance",
        "other",
        False,
        "Frechet distance between Gaussian fits of reference and samples.",
        upper=None,
        unit="squared_distance",
    ),
    _s(
        "tail_mass_ratio",
        "tail",
        True,
        "Share of samples beyond the reference's 99th-percentile Mahalanobis radius / 0.01 (1 = reference-like).",
        upper=None,
        log_scale=True,
    ),
    # text
    *[
        _s(f"distinct_{n}", "diversity", True, f"Unique / total {n}-grams at a fixed token budget.")
        for n in (1, 2, 3, 4)
    ],
    _s(
        "ngram_entropy",
        "diversity",
        True,
        "Shannon entropy (nats) of the bigram distribution at a fixed budget.",
        upper=None,
        unit="nats",
    ),
    _s(
        "vocab_ratio",
        "diversity",
        True,
        "Token types(generated) / types(reference) at equal token counts.",
        upper=None,
        log_scale=True,
    ),
    _s(
        "rare_ngram_recall",
        "tail",
        True,
        "Share of the reference's rare types seen, relative to a same-size reference sample.",
        upper=None,
    ),
    # run
    _s("synthetic_fraction", "other", None, "Share of the training data that was generated by a model."),
    _s("embedding_drift_share", "other", False, "Evidently: share of embedding principal components that drifted."),
]

SPECS: dict[str, MetricSpec] = {s.key: s for s in _ALL}

_CLASS_RECALL = MetricSpec("class_recall", "other", True, "Recall of one class on the probe set (Wilson 95% CI).")


def spec_for(key: str, *, rare: bool = False) -> MetricSpec:
    """Metadata of a canonical key. ``class_recall.<label>`` is tail when ``rare``."""
    if key in SPECS:
        return SPECS[key]
    if key.startswith("class_recall."):
        fam = "tail" if rare else "other"
        return MetricSpec(key, fam, True, _CLASS_RECALL.help)
    return MetricSpec(key, "other", None, f"collapse-monitor metric {key}", lower=None, upper=None)


#: metrics that live in MLflow only, never exported to Prometheus nor on a dashboard: Evidently's
#: drift share, which the MLflow sink computes and hands to the sinks after it (it was exported
#: only when MLflowSink came first, with a zero-width "interval" and no panel)
MLFLOW_ONLY = frozenset({"embedding_drift_share"})
