"""The metric engine: runs every family the Observation enables, reusing the cached reference
side, and returns metrics plus the per-item vectors the paired tests need."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import MetricValue, Observation, Reference
from .cache import ReferenceCache, default_cache

if TYPE_CHECKING:
    from ..detection import Rules

__all__ = ["PanelResult", "compute_panel"]


class PairedSpecs(Mapping[str, tuple[str, np.ndarray]]):
    """Metric key -> (item key, boolean mask of those items) for the paired tests. Masks from
    a lazy source (the classifier's :class:`~collapse_monitor.metrics.classes.ItemMasks`) are
    made when read, so a check with many classes never holds one mask per class."""

    def __init__(self) -> None:
        self._specs: dict[str, tuple[str, np.ndarray] | tuple[str, Mapping[str, np.ndarray], str]] = {}

    def add_masks(self, item_key: str, masks: Mapping[str, np.ndarray]) -> None:
        for key in masks:
            self._specs[key] = (item_key, masks, key)

    def update(self, specs: Mapping[str, tuple[str, np.ndarray]]) -> None:
        self._specs.update(specs)

    def item_key(self, key: str) -> str:
        """The item vector ``key``'s test rests on, without building its mask."""
        return self._specs[key][0]

    def discordant(self, key: str, cur: np.ndarray, base: np.ndarray) -> tuple[int, int] | None:
        """McNemar's ``(b, c)`` for ``key`` without building its mask, where its source counts
        them per class (:class:`~collapse_monitor.metrics.classes.ItemMasks`); None otherwise."""
        spec = self._specs[key]
        if len(spec) != 3:
            return None
        _, masks, name = spec
        count = getattr(masks, "discordant", None)
        return None if count is None else count(name, cur, base)

    def __getitem__(self, key: str) -> tuple[str, np.ndarray]:
        spec = self._specs[key]
        if len(spec) == 3:
            item_key, masks, name = spec
            return item_key, np.asarray(masks[name], dtype=bool)
        return spec

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __contains__(self, key: object) -> bool:  # without building the mask (Mapping's reads it)
        return key in self._specs

    def __len__(self) -> int:
        return len(self._specs)


@dataclass(frozen=True)
class PanelResult:
    metrics: dict[str, MetricValue]
    items: dict[str, np.ndarray] = field(default_factory=dict)
    paired: Mapping[str, tuple[str, np.ndarray]] = field(default_factory=dict)
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
    paired = PairedSpecs()
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
        paired.add_masks("probe.correct", res.paired)
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
