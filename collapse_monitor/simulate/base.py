"""Common interface of the recursive-training scenarios.

A :class:`Scenario` is a small, download-free world (a true data distribution, a model
family and a retraining loop). :meth:`Scenario.generations` steps through a chain of
retrains and yields one :class:`GenerationResult` per generation: generation 0 is the model
trained on human data only; generation ``t >= 1`` is trained on the mix the loop prescribes.

Loops (the names follow the model-collapse literature):

``replace``
    fully synthetic: generation ``t`` trains only on samples of generation ``t-1``
    (Shumailov et al. 2024, Nature 631:755). Collapses.
``accumulate``
    the original human data plus every synthetic set produced so far (Gerstgrasser et al.
    2024, arXiv 2404.01413). Does not collapse.
``fresh``
    a share ``fresh_share`` (default 0.5) of new human data each generation plus synthetic
    data of the previous model ("fresh data loop", Alemohammad et al. 2023, arXiv 2307.01850).
``stable``
    every generation trains on fresh human data only (synthetic fraction 0): the null
    control every detector must stay quiet on. ``real`` is an alias.

Randomness: a scenario is a pure function of ``seed`` (sampling) and ``world_seed`` (the true
distribution). The reference and the generation-0 training set depend only on the two seeds,
never on the loop, so chains that differ only in their loop share their baseline exactly.
"""

from __future__ import annotations

import copy
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ..types import Observation, Provenance, Reference

__all__ = ["LOOPS", "GenerationResult", "Mix", "Scenario", "training_mix"]

#: loops every scenario accepts (scenario classes may add their own, see ``Scenario.loops``)
LOOPS: tuple[str, ...] = ("replace", "accumulate", "fresh", "stable")

_COMMON_ALIASES = {"real": "stable"}


@dataclass(frozen=True)
class GenerationResult:
    """One step of a chain.

    ``observation`` is what a monitor sees (its ``generation`` and ``provenance`` are set);
    ``aggregate`` holds the aggregate numbers teams usually watch (accuracy, Frechet
    distance, perplexity...), the baseline the detection benchmark compares against;
    ``truth`` holds ground-truth diagnostics a real pipeline could not see (true rare-mode
    weight, fitted variance...), for tests and for labelling benchmark chains.
    """

    generation: int
    observation: Observation
    aggregate: Mapping[str, float]
    truth: Mapping[str, float] = field(default_factory=dict)
    train_size: int = 0

    @property
    def synthetic_fraction(self) -> float:
        p = self.observation.provenance
        return 0.0 if p is None or p.synthetic_fraction is None else float(p.synthetic_fraction)


@dataclass(frozen=True)
class Mix:
    """How generation ``t``'s training set is made: new human items, synthetic items from
    the previous model, and whether the previous training set is kept (accumulate)."""

    n_real: int
    n_synthetic: int
    keep_previous: bool


def training_mix(loop: str, generation: int, n: int, fresh_share: float) -> Mix:
    """The training-set recipe of ``loop`` at ``generation`` for a per-generation budget ``n``.

    >>> training_mix("fresh", 3, 100, 0.3)
    Mix(n_real=30, n_synthetic=70, keep_previous=False)
    >>> training_mix("replace", 0, 100, 0.5)  # generation 0 is always human data
    Mix(n_real=100, n_synthetic=0, keep_previous=False)
    """
    if generation == 0 or loop == "stable":
        return Mix(n, 0, False)
    if loop == "replace":
        return Mix(0, n, False)
    if loop == "accumulate":
        return Mix(0, n, True)
    if loop == "fresh":
        n_real = round(fresh_share * n)
        return Mix(n_real, n - n_real, False)
    raise ConfigError("loop", f"unknown loop {loop!r}")


class TrainingSet:
    """Chunks of training data with their origin; the scenario knows how to join ``data``."""

    def __init__(self) -> None:
        self.chunks: list[tuple[Any, int, bool, str]] = []  # (data, n, synthetic, source)

    def add(self, data: Any, n: int, synthetic: bool, source: str) -> None:
        if n > 0:
            self.chunks.append((data, n, synthetic, source))

    def extend(self, other: TrainingSet) -> None:
        self.chunks.extend(other.chunks)

    @property
    def size(self) -> int:
        return sum(c[1] for c in self.chunks)

    @property
    def synthetic_fraction(self) -> float:
        n = self.size
        return 0.0 if n == 0 else sum(c[1] for c in self.chunks if c[2]) / n

    @property
    def sources(self) -> tuple[str, ...]:
        out: list[str] = []
        for c in self.chunks:
            if c[3] not in out:
                out.append(c[3])
        return tuple(out)

    def parts(self) -> list[Any]:
        return [c[0] for c in self.chunks]


def digest(*arrays: Any) -> str:
    """sha256 (16 hex chars) of the training data, for ``Provenance.digest``."""
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, np.ndarray):
            h.update(str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
        else:
            h.update(repr(a).encode())
    return h.hexdigest()[:16]


MAX_SEED = 2**32 - 1  # seeds derived from it (seed * 100,003 + t) stay within torch's 64-bit seed


def check_positive_int(key: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(key, f"expected an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(key, f"expected an int in [{minimum}, {maximum}], got {value!r}")
    return int(value)


def check_float(key: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected a number, got {type(value).__name__}") from None
    if not np.isfinite(v) or v > high or v < low or (low_open and v == low):
        bound = "(" if low_open else "["
        raise ConfigError(key, f"expected a number in {bound}{low}, {high}], got {value!r}")
    return v


class Scenario(ABC):
    """Base class: subclasses set ``name``, ``loops``, build the world and step the chain.

    Subclasses implement :meth:`_build_reference` and :meth:`_chain` (a generator of
    :class:`GenerationResult`); everything random draws from the streams of :meth:`_rng`.
    """

    name: ClassVar[str] = ""
    loops: ClassVar[tuple[str, ...]] = LOOPS
    aliases: ClassVar[Mapping[str, str]] = {}

    def __init__(self, loop: str = "replace", seed: int = 0, *, world_seed: int = 0, fresh_share: float = 0.5) -> None:
        canonical = {**_COMMON_ALIASES, **self.aliases}.get(loop, loop) if isinstance(loop, str) else loop
        if canonical not in self.loops:
            known = sorted(set(self.loops) | set(_COMMON_ALIASES) | set(self.aliases))
            raise ConfigError("loop", f"scenario {self.name!r} has no loop {loop!r}; expected one of {known}")
        self.loop: str = canonical
        self.seed = check_positive_int("seed", seed, 0, MAX_SEED)
        self.world_seed = check_positive_int("world_seed", world_seed, 0, MAX_SEED)
        self.fresh_share = check_float("fresh_share", fresh_share, 0.0, 1.0)
        self._reference: Reference | None = None
        self._opts: dict[str, Any] = {}

    # -- randomness ---------------------------------------------------------------
    _STREAMS: ClassVar[dict[str, int]] = {"reference": 1, "human0": 2, "chain": 3, "probe": 4, "observation": 5}

    #: which retrain of generation 0 this is (``baseline_replicates``); 0: the chain's own
    _replicate: int = 0
    #: streams a replicate draws anew: its human data, its training and its monitored sample
    #: (the world, the reference and the probe set stay those of the chain)
    _REPLICATED: ClassVar[frozenset[str]] = frozenset({"human0", "chain", "observation"})

    def _key(self, *parts: int) -> list[int]:
        """The seed-sequence key of a random stream of this chain (``parts`` name the stream);
        a replicate's keys carry its number, the chain's are unchanged."""
        key = [self.world_seed, self.seed + 1, *parts]
        return key if not self._replicate else [*key, 1_000_003, self._replicate]

    def _rng(self, stream: str) -> np.random.Generator:
        """Independent stream: ``world`` depends on ``world_seed`` only, the rest on both seeds."""
        if stream == "world":
            return np.random.default_rng(np.random.SeedSequence([self.world_seed, 0]))
        if stream in self._REPLICATED:
            return np.random.default_rng(np.random.SeedSequence(self._key(self._STREAMS[stream])))
        return np.random.default_rng(np.random.SeedSequence([self.world_seed, self.seed + 1, self._STREAMS[stream]]))

    def _observation_rng(self, generation: int) -> np.random.Generator:
        """The stream generation ``generation``'s monitored sample is drawn from.

        Separate from the training stream, and one per generation, so the chain itself (every
        training set, fit and aggregate but the sample-based ones) is the same whatever the
        observation's size: chains run with different ``n_obs`` are paired.
        """
        return np.random.default_rng(np.random.SeedSequence(self._key(self._STREAMS["observation"], generation)))

    # -- public API ---------------------------------------------------------------
    @property
    def reference(self) -> Reference:
        """The frozen human-origin reference (same for every loop given the seeds)."""
        if self._reference is None:
            self._reference = self._build_reference()
        return self._reference

    def generations(self, n: int) -> Iterator[GenerationResult]:
        """Yield generations ``0 .. n-1``; each call restarts the chain from the seed."""
        n = check_positive_int("n", n, 0)
        it = self._chain()
        for _ in range(n):
            yield next(it)

    def baseline_replicates(self, n: int) -> list[GenerationResult]:
        """``n`` more retrains of generation 0, for ``CollapseMonitor.check_replicate``: each on
        its own draw of human data, with its own training randomness and monitored sample,
        against the chain's reference and probe set. Replicate ``r`` is the same whatever the
        loop, and the chain's own generations do not change."""
        n = check_positive_int("n", n, 0)
        _ = self.reference  # built once, shared with the replicates
        out = []
        for r in range(1, n + 1):
            twin = copy.copy(self)
            twin._replicate = r
            out.append(next(twin._chain()))
        return out

    def run(self, n: int) -> list[GenerationResult]:
        """All of :meth:`generations` as a list."""
        return list(self.generations(n))

    @property
    def options(self) -> dict[str, Any]:
        """The options this scenario runs with (log them next to benchmark results)."""
        base = {"scenario": self.name, "loop": self.loop, "seed": self.seed, "world_seed": self.world_seed}
        return base | {"fresh_share": self.fresh_share} | dict(self._opts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(loop={self.loop!r}, seed={self.seed})"

    # -- helpers for subclasses -----------------------------------------------------
    def _observation(
        self,
        generation: int,
        train: TrainingSet,
        train_digest: str,
        *,
        embeddings: Any = None,
        predictions: Any = None,
        texts: Sequence[str] | None = None,
    ) -> Observation:
        prov = Provenance(
            synthetic_fraction=round(train.synthetic_fraction, 12),
            sources=train.sources,
            digest=train_digest,
        )
        return Observation(
            embeddings=embeddings, predictions=predictions, texts=texts, generation=generation, provenance=prov
        )

    def _source(self, generation: int) -> str:
        return f"simulate:{self.name}/gen-{generation}"

    def _human_source(self, generation: int) -> str:
        return f"simulate:{self.name}/human-{generation}"

    @abstractmethod
    def _build_reference(self) -> Reference: ...

    @abstractmethod
    def _chain(self) -> Iterator[GenerationResult]: ...
