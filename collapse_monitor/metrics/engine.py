"""The metric engine: runs every family the Observation enables, reusing the cached reference
side, and returns metrics plus the per-item vectors the paired tests need."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import MetricValue, Observation, Reference
from .cache import ReferenceCache, default_cache

if TYPE_CHECKING:
    from ..detection import Rules

__all__ = ["PanelResult", "compute_panel"]


@dataclass(frozen=True)
class PanelResult:
    metrics: dict[str, MetricValue]
    items: dict[str, np.ndarray] = field(default_factory=dict)
    paired: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    rare_classes: tuple[str, ...] = ()
    predictions: list[Any] | None = None


def compute_panel(
    reference: Reference,
    observation: Observation,
    *,
    rules: Rules,
    cache: ReferenceCache | None = None,
    baseline_predictions: Sequence[Any] | None = None,
    device: str | None = None,
    chunk_size: int | None = None,
    max_samples: int | None = None,
    text_budget: int | None = None,
) -> PanelResult:
    """Compute all metric families enabled by ``observation`` against ``reference``.

    ``max_samples``: compare at most this many sample embeddings (a random subset, fixed by
    ``rules.seed``): the baseline's count, since coverage, PRDC, the spectral statistics and
    the Frechet distance move with the sample count alone. ``text_budget``: the token budget
    of the text metrics (default ``rules.text_budget``), the baseline's for the same reason."""
    cache = cache or default_cache()
    metrics: dict[str, MetricValue] = {}
    items: dict[str, np.ndarray] = {}
    paired: dict[str, tuple[str, np.ndarray]] = {}
    rare: tuple[str, ...] = ()
    preds: list[Any] | None = None

    if observation.predictions is not None:
        from .classes import classifier_panel

        assert reference.labels is not None and reference.class_priors is not None
        base = None if baseline_predictions is None else np.asarray(list(baseline_predictions), dtype=object)
        if base is not None and base.shape != observation.predictions.shape:
            base = None
        res = classifier_panel(
            reference.labels,
            observation.predictions,
            reference.class_priors,
            rare_threshold=rules.rare_threshold,
            min_support=rules.min_support,
            baseline_preds=base,
        )
        metrics.update(res.metrics)
        items["probe.correct"] = np.asarray(res.correct, dtype=bool)
        for key, mask in res.paired.items():
            paired[key] = ("probe.correct", np.asarray(mask, dtype=bool))
        rare = tuple(str(c) for c in res.rare_classes)
        preds = observation.predictions.tolist()

    if observation.embeddings is not None:
        from .generator import generator_panel, get_generator_state

        gen = observation.embeddings
        if max_samples is not None and gen.shape[0] > max_samples:
            pick = np.random.default_rng([rules.seed, 7, gen.shape[0]]).choice(gen.shape[0], max_samples, replace=False)
            gen = gen[np.sort(pick)]

        assert reference.embeddings is not None
        state = get_generator_state(
            reference,
            cache,
            k=rules.k,
            tail_quantile=rules.tail_quantile,
            rare_threshold=rules.rare_threshold,
            seed=rules.seed,
            device=device,
            chunk_size=chunk_size,
            knn=rules.knn,
            nlist=rules.nlist,
            nprobe=rules.nprobe,
        )
        gres = generator_panel(
            state,
            reference.embeddings,
            gen,
            k=rules.k,
            n_boot=rules.n_boot,
            seed=rules.seed,
            device=device,
            chunk_size=chunk_size,
            nprobe=rules.nprobe,
        )
        metrics.update(gres.metrics)
        items.update(gres.items)
        paired.update(gres.paired)

    if observation.texts is not None:
        from .text import get_text_state, text_panel

        tstate = get_text_state(reference, cache, seed=rules.seed)
        budget = rules.text_budget if text_budget is None else min(text_budget, rules.text_budget)
        tres = text_panel(tstate, observation.texts, budget=budget, n_boot=rules.n_boot, seed=rules.seed)
        metrics.update(tres.metrics)
        items.update(tres.items)
        paired.update(tres.paired)
        items["texts.count"] = np.array([len(observation.texts)], dtype=np.int64)

    prov = observation.provenance
    if prov is not None and prov.synthetic_fraction is not None:
        f = prov.synthetic_fraction
        metrics["synthetic_fraction"] = MetricValue(f, f, f)

    return PanelResult(metrics, items, paired, rare, preds)
