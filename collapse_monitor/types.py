"""Public data types: inputs (Reference, Observation, Provenance) and frozen results
(MetricValue, Finding, Alert, Report). Computing never renders or sends: sinks and alert
channels consume a finished Report."""

from __future__ import annotations

import dataclasses
import decimal
import hashlib
import math
import numbers
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from . import _validate as V
from ._redact import mask_credentials
from ._tokenize import tokenize
from .errors import InputError

__all__ = [
    "Alert",
    "Finding",
    "MetricValue",
    "Observation",
    "Provenance",
    "Reference",
    "Report",
    "Stage",
]

#: the largest generation number (history and MLflow store it as a signed 64-bit int)
MAX_GENERATION = 2**62


def as_generation(value: Any, field: str) -> int:
    """``value`` as a generation number (an int in ``0..MAX_GENERATION``; no bool, float or str)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_GENERATION:
        raise InputError(field, f"expected an int in 0..{MAX_GENERATION}, got {value!r}")
    return int(value)


def as_provenance(value: Any, field: str) -> Provenance | None:
    """``value`` as a Provenance: one, a mapping of its fields (unknown keys named), or None."""
    if value is None or isinstance(value, Provenance):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(Provenance)}
        for k in value:
            if k not in known and k != "origin":
                raise InputError(f"{field}.{k}", f"unknown key; known: {', '.join(sorted(known))}")
        # "origin" is derived (to_dict writes it): a report's own provenance dict passes back in
        return Provenance(**{k: v for k, v in value.items() if k != "origin"})
    raise InputError(field, f"expected cm.Provenance, got {type(value).__name__}")


class Stage(StrEnum):
    """Collapse stage of a generation. ``level`` is the Prometheus value (0/1/2)."""

    HEALTHY = "healthy"
    EARLY_COLLAPSE = "early_collapse"
    LATE_COLLAPSE = "late_collapse"

    @property
    def level(self) -> int:
        return {"healthy": 0, "early_collapse": 1, "late_collapse": 2}[self.value]

    @property
    def severity(self) -> str:
        return {"healthy": "info", "early_collapse": "warning", "late_collapse": "critical"}[self.value]

    def __str__(self) -> str:
        return self.value


def _f(x: float | None) -> float | None:
    return None if x is None else float(x)


@dataclass(frozen=True)
class MetricValue:
    """One metric: point estimate with an interval (default 95 %).

    ``baseline`` is the baseline generation's value, ``p_value`` the (unadjusted) one-sided
    p-value of the decline test against the baseline when one was run, ``n`` the sample size
    the value rests on.
    """

    value: float
    ci_low: float
    ci_high: float
    baseline: float | None = None
    p_value: float | None = None
    n: int | None = None

    def __post_init__(self) -> None:
        for name in ("value", "ci_low", "ci_high"):
            v = getattr(self, name)
            if v is None or not math.isfinite(float(v)):
                raise ValueError(f"MetricValue.{name} must be finite, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.ci_low > self.value + 1e-9 or self.ci_high < self.value - 1e-9:
            raise ValueError(f"MetricValue interval [{self.ci_low}, {self.ci_high}] does not contain {self.value}")
        object.__setattr__(self, "baseline", _f(self.baseline))
        object.__setattr__(self, "p_value", _f(self.p_value))

    def with_baseline(self, baseline: float | None, p_value: float | None = None) -> MetricValue:
        return MetricValue(self.value, self.ci_low, self.ci_high, baseline, p_value, self.n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "baseline": self.baseline,
            "p_value": self.p_value,
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricValue:
        return cls(d["value"], d["ci_low"], d["ci_high"], d.get("baseline"), d.get("p_value"), d.get("n"))

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.ci_low:{spec}}, {self.ci_high:{spec}}]"


MAX_SOURCE_CHARS = 8192  # a provenance source (a URI or a name); MLflow refuses a dataset source past 65,535


def _encodable(text: str) -> str:
    """``text`` with lone surrogates written as escapes, so every store and payload can encode
    it: a byte smuggled in by surrogateescape (a non-UTF-8 file name, U+DC80-U+DCFF) as
    ``\\xNN``, any other lone surrogate (half of a broken UTF-16 pair) as ``\\uDNNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class Provenance:
    """Where the training data of a generation came from.

    ``synthetic_fraction`` is the share of training examples generated by a model (0 = all
    human data, 1 = fully synthetic). ``sources`` are URIs or names of the data sets that went
    into the mix; ``digest`` an optional content hash of the training set.
    """

    synthetic_fraction: float | None = None
    parent_run_id: str | None = None
    sources: Sequence[str] = ()
    digest: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.synthetic_fraction, (bool, np.bool_, np.complexfloating, complex)) or (
            self.synthetic_fraction is not None
            and not isinstance(self.synthetic_fraction, (numbers.Real, np.number, decimal.Decimal))
        ):
            # bytearray(b"0.5") passed float() where str and bytes were refused: a share is a number
            # float("0.5") and np.True_ (1.0) passed where True was refused: a share is a number
            raise InputError(
                "provenance.synthetic_fraction", f"expected a number in [0, 1], got {self.synthetic_fraction!r}"
            )
        if self.synthetic_fraction is not None:
            sf = self.synthetic_fraction
            if isinstance(sf, np.floating) and sf.dtype.itemsize < 8:
                # np.float32(0.4) is 0.4000000059604645 as a float: logged, tagged and shown as
                # such; its shortest repr is the number the user wrote
                sf = float(str(sf))
            # + 0.0: -0.0 became the tag "-0.0" and the gauge -0
            object.__setattr__(self, "synthetic_fraction", V.as_probability(sf, "provenance.synthetic_fraction") + 0.0)
        if self.parent_run_id is not None and not isinstance(self.parent_run_id, str):
            raise InputError("provenance.parent_run_id", f"expected a str, got {type(self.parent_run_id).__name__}")
        if self.parent_run_id is not None:
            # a run's URI with credentials in it goes into tags, reports and alerts: masked as sources are
            object.__setattr__(self, "parent_run_id", mask_credentials(_encodable(self.parent_run_id)))
        if isinstance(self.sources, str):
            object.__setattr__(self, "sources", (self.sources,))
        if self.sources is not None and not isinstance(self.sources, (list, tuple)):
            raise InputError("provenance.sources", f"expected a list of str, got {type(self.sources).__name__}")
        if self.digest is not None and (not isinstance(self.digest, str) or not 0 < len(self.digest) <= 1024):
            raise InputError(
                "provenance.digest",
                f"expected a str of 1-1024 characters (e.g. hashlib.sha256(...).hexdigest()), got "
                f"{type(self.digest).__name__}"
                + (f" of {len(self.digest)} characters" if isinstance(self.digest, str) else ""),
            )
        if self.digest is not None:
            object.__setattr__(self, "digest", _encodable(self.digest))
        srcs = tuple(self.sources or ())
        for i, s in enumerate(srcs):
            if not isinstance(s, str):
                raise InputError("provenance.sources", f"item {i} is {type(s).__name__}, expected str")
            if not s.strip() or len(s) > MAX_SOURCE_CHARS:
                raise InputError(
                    "provenance.sources",
                    f"item {i} is {'empty' if not s.strip() else f'{len(s)} characters long'}: expected the URI or "
                    f"name of a data set, 1-{MAX_SOURCE_CHARS} characters",
                )
        # a file name read from a non-UTF-8 file system holds lone surrogates (os.listdir's
        # surrogateescape): no store can encode them, and MLflow retried the check for good
        srcs = tuple(_encodable(s) for s in srcs)
        # a presigned URL's signature or a password in a source URI must not travel into
        # reports, MLflow, the spool or alert payloads: credentials are masked on arrival
        object.__setattr__(self, "sources", tuple(mask_credentials(s) for s in srcs))

    @property
    def origin(self) -> str:
        """``human`` (fraction 0), ``synthetic`` (1), ``mixed`` or ``unknown``."""
        f = self.synthetic_fraction
        if f is None:
            return "unknown"
        return "human" if f == 0.0 else "synthetic" if f == 1.0 else "mixed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "synthetic_fraction": self.synthetic_fraction,
            "parent_run_id": self.parent_run_id,
            "sources": list(self.sources),
            "digest": self.digest,
            "origin": self.origin,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Provenance | None:
        """A stored provenance (a report, history.db, the spool). Sources that a check made
        before the length and emptiness checks could store are read, not refused, so one old
        run cannot make a whole history unreadable: a blank one is dropped, an over-long one
        cut to :data:`MAX_SOURCE_CHARS` with a trailing ``...``."""
        if not d:
            return None
        sources = []
        for s in d.get("sources") or ():
            if isinstance(s, str) and not s.strip():
                continue
            if isinstance(s, str) and len(s) > MAX_SOURCE_CHARS:
                s = s[: MAX_SOURCE_CHARS - 3] + "..."
            sources.append(s)
        return cls(d.get("synthetic_fraction"), d.get("parent_run_id"), tuple(sources), d.get("digest"))


class Reference:
    """The frozen, human-origin reference a monitor compares every generation against.

    Any subset of ``embeddings`` (n, d), ``labels`` (m,) of the frozen probe set and ``texts``
    may be given; each enables its metric family. ``class_priors`` ({label: prior}) defines
    which classes are rare (prior < ``rare_threshold``); by default the label frequencies.
    The reference side of every metric is computed once per fingerprint and cached.
    """

    def __init__(
        self,
        embeddings: Any = None,
        labels: Any = None,
        texts: Sequence[str] | None = None,
        class_priors: Mapping[Any, float] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        if embeddings is None and labels is None and texts is None:
            raise InputError("reference", "give at least one of embeddings, labels or texts")
        self.embeddings = None if embeddings is None else V.as_embeddings(embeddings, "reference.embeddings")
        self.labels = None if labels is None else V.as_labels(labels, "reference.labels")
        self.texts = None if texts is None else V.as_texts(texts, "reference.texts")
        if self.texts is not None and not any(tokenize(t) for t in self.texts):
            raise InputError("reference.texts", "contains no tokens (all texts are empty or whitespace)")
        if self.embeddings is not None and self.embeddings.shape[0] < 2:
            raise InputError("reference.embeddings", "needs at least 2 rows to define neighbourhoods")
        if self.embeddings is not None:
            V.check_spread(self.embeddings, "reference.embeddings")
        self.name = name
        self.class_priors = self._priors(class_priors)
        self._fingerprint: str | None = None
        self._frozen = True

    #: the data a fingerprint covers: fixed once built (the fingerprint is memoised, and new
    #: embeddings of the same shape were judged with the old cached state, an audit)
    _DATA = frozenset({"embeddings", "labels", "texts", "class_priors"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._DATA and self.__dict__.get("_frozen"):
            raise AttributeError(
                f"Reference.{name} is frozen (its fingerprint keys the cache and the baseline): build a new "
                "cm.Reference(...) for other data"
            )
        super().__setattr__(name, value)

    def _priors(self, class_priors: Mapping[Any, float] | None) -> dict[Any, float] | None:
        if self.labels is None:
            if class_priors is not None:
                raise InputError("reference.class_priors", "given without reference.labels")
            return None
        if class_priors is None:
            counts = Counter(self.labels.tolist())
            m = len(self.labels)
            return {k: c / m for k, c in counts.items()}
        if not isinstance(class_priors, Mapping) or not class_priors:
            raise InputError("reference.class_priors", "expected a non-empty mapping {label: prior}")
        keys = V.as_labels(list(class_priors.keys()), "reference.class_priors")
        priors: dict[Any, float] = {}
        for k, v in zip(keys.tolist(), class_priors.values(), strict=True):
            if isinstance(v, bool):  # YAML's `yes` / `true`: float(True) made it a prior of 1
                raise InputError("reference.class_priors", f"prior of {k!r} is not a number (got {v!r})")
            try:
                p = float(v)
            except (TypeError, ValueError):
                raise InputError("reference.class_priors", f"prior of {k!r} is not a number") from None
            if not math.isfinite(p) or p < 0:
                raise InputError("reference.class_priors", f"prior of {k!r} must be finite and >= 0, got {v!r}")
            priors[k] = p
        total = sum(priors.values())
        if total <= 0:
            raise InputError("reference.class_priors", "priors sum to 0")
        if not math.isfinite(total):
            raise InputError("reference.class_priors", "priors sum to infinity: give shares or counts")
        labels = set(self.labels.tolist())
        missing = labels - set(priors)
        if missing:
            # YAML keys are strings ("0") while .npy labels are ints (0): match by string form,
            # as observations' predictions are matched, when that pairs them one to one
            by_str = {str(lab): lab for lab in labels}
            if len(by_str) == len(labels) and len({str(k) for k in priors}) == len(priors):
                renamed = {by_str.get(str(k), k): v for k, v in priors.items()}
                if not labels - set(renamed):
                    priors = renamed
                    missing = set()
        if missing:
            raise InputError(
                "reference.class_priors", f"has no prior for label(s) {sorted(map(str, missing))[:5]} found in labels"
            )
        return {k: p / total for k, p in priors.items()}

    @property
    def classes(self) -> list[Any]:
        """All known classes, sorted by their string form."""
        if self.class_priors is None:
            return []
        return sorted(self.class_priors, key=str)

    @property
    def fingerprint(self) -> str:
        """Content hash of the reference data (sha256, 16 hex chars); keys every cache."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            if self.embeddings is not None:
                h.update(b"E" + str(self.embeddings.shape).encode())
                h.update(np.ascontiguousarray(self.embeddings).data)  # the buffer itself: no copy
            if self.labels is not None:
                h.update(b"L" + "\x1f".join(map(repr, self.labels.tolist())).encode())
            if self.texts is not None:
                encoded = [t.encode("utf-8", "surrogatepass") for t in self.texts]
                if not any(b"\x1e" in t for t in encoded):
                    # the original encoding, kept so that stored fingerprints stay valid: each
                    # text ends with U+001E, which no text holds, so the split is unique
                    h.update(b"T")
                    for t in encoded:
                        h.update(t + b"\x1e")
                else:
                    # a text holding U+001E made the terminator ambiguous (["a\x1eb"] hashed
                    # as ["a", "b"], so a cache could serve another reference's state): such
                    # texts are length-prefixed under their own tag
                    h.update(b"U" + len(encoded).to_bytes(8, "little"))
                    for t in encoded:
                        h.update(len(t).to_bytes(8, "little") + t)
            if self.class_priors is not None:
                h.update(b"P" + repr(sorted((str(k), round(v, 12)) for k, v in self.class_priors.items())).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        parts = []
        if self.embeddings is not None:
            parts.append(f"embeddings={self.embeddings.shape}")
        if self.labels is not None:
            parts.append(f"labels={len(self.labels)} ({len(self.class_priors or {})} classes)")
        if self.texts is not None:
            parts.append(f"texts={len(self.texts)}")
        return f"Reference({', '.join(parts)}, fingerprint={self.fingerprint})"


class Observation:
    """What the current generation produced: samples, probe predictions and/or texts."""

    def __init__(
        self,
        embeddings: Any = None,
        predictions: Any = None,
        texts: Sequence[str] | None = None,
        generation: int | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        if embeddings is None and predictions is None and texts is None:
            raise InputError("observation", "give at least one of embeddings, predictions or texts")
        self.embeddings = None if embeddings is None else V.as_embeddings(embeddings, "observation.embeddings")
        self.predictions = None if predictions is None else V.as_labels(predictions, "observation.predictions")
        self.texts = None if texts is None else V.as_texts(texts, "observation.texts")
        if self.texts is not None and not any(tokenize(t) for t in self.texts):
            raise InputError("observation.texts", "contains no tokens (all texts are empty or whitespace)")
        if generation is not None:
            generation = as_generation(generation, "observation.generation")
        self.generation = generation
        self.provenance = as_provenance(provenance, "observation.provenance")

    def validate_against(self, ref: Reference) -> None:
        """Check this observation fits ``ref``; raises InputError naming the field."""
        if self.embeddings is not None:
            if ref.embeddings is None:
                raise InputError("observation.embeddings", "given but the reference has no embeddings")
            if self.embeddings.shape[1] != ref.embeddings.shape[1]:
                raise InputError(
                    "observation.embeddings",
                    f"expected width d={ref.embeddings.shape[1]} (the reference's), got d={self.embeddings.shape[1]}",
                )
        if self.predictions is not None:
            if ref.labels is None:
                raise InputError("observation.predictions", "given but the reference has no labels")
            if len(self.predictions) != len(ref.labels):
                raise InputError(
                    "observation.predictions",
                    f"has {len(self.predictions)} entries but reference.labels has {len(ref.labels)}: "
                    "predictions must align with the probe set",
                )
            known = set(ref.class_priors or {})
            known_str = {str(k) for k in known}
            unknown = [p for p in set(self.predictions.tolist()) if p not in known and str(p) not in known_str]
            if unknown:
                raise InputError(
                    "observation.predictions",
                    f"contains label(s) the reference never had: {sorted(map(str, unknown))[:5]}; to count "
                    "them as wrong predictions, list them in Reference(class_priors=...) with a prior of 0",
                )
        if self.texts is not None and ref.texts is None:
            raise InputError("observation.texts", "given but the reference has no texts")

    def __repr__(self) -> str:
        parts = []
        if self.embeddings is not None:
            parts.append(f"embeddings={self.embeddings.shape}")
        if self.predictions is not None:
            parts.append(f"predictions={len(self.predictions)}")
        if self.texts is not None:
            parts.append(f"texts={len(self.texts)}")
        if self.generation is not None:
            parts.append(f"generation={self.generation}")
        return f"Observation({', '.join(parts)})"


@dataclass(frozen=True)
class Finding:
    """A test the detector ran: a metric's decline against the baseline, or its trend."""

    key: str
    family: str  # tail | head | diversity | other
    kind: str  # "baseline" (paired/bootstrap test vs generation 0) or "trend" (Mann-Kendall)
    value: float
    baseline: float
    relative_change: float  # (value - baseline) / |baseline|; negative = worse for higher-is-better
    p_value: float
    q_value: float  # Benjamini-Hochberg adjusted
    significant: bool  # q <= alpha and |effect| >= min_effect in the bad direction (a head decline
    # from Rules.late_head_min_effect when diversity fell with it, and a diversity decline of any
    # size when head and tail fell alike with it: late collapse)
    test: str  # e.g. "mcnemar-exact", "bootstrap-z", "mann-kendall"
    ci_low: float | None = None
    ci_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Alert:
    """An alert event for one rule of one monitor: ``status`` is ``firing`` or ``resolved``.

    ``dedup_key`` (monitor + rule) is stable across repeats and the resolve, so PagerDuty,
    Alertmanager and webhook receivers can group them.
    """

    monitor: str
    rule: str
    status: str  # firing | resolved
    severity: str  # info | warning | critical
    stage: Stage
    generation: int
    summary: str
    details: tuple[Mapping[str, Any], ...] = ()  # what fell: key, value, baseline, ci, relative_change, q_value
    synthetic_fraction: float | None = None
    links: Mapping[str, str] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)
    repeat: bool = False
    #: a keep-alive of an open incident between repeats, for channels whose alerts expire by
    #: themselves (Alertmanager: ``endsAt``); never routed to a channel that would notify
    refresh: bool = False

    @property
    def dedup_key(self) -> str:
        return f"{self.monitor}/{self.rule}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "rule": self.rule,
            "status": self.status,
            "severity": self.severity,
            "stage": self.stage.value,
            "generation": self.generation,
            "summary": self.summary,
            "details": [dict(d) for d in self.details],
            "synthetic_fraction": self.synthetic_fraction,
            "links": dict(self.links),
            "timestamp": self.timestamp,
            "repeat": self.repeat,
            "dedup_key": self.dedup_key,
            **({"refresh": True} if self.refresh else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alert:
        return cls(
            monitor=d["monitor"],
            rule=d["rule"],
            status=d["status"],
            severity=d["severity"],
            stage=Stage(d["stage"]),
            generation=int(d["generation"]),
            summary=d["summary"],
            details=tuple(d.get("details") or ()),
            synthetic_fraction=d.get("synthetic_fraction"),
            links=dict(d.get("links") or {}),
            timestamp=float(d.get("timestamp", time.time())),
            repeat=bool(d.get("repeat", False)),
            refresh=bool(d.get("refresh", False)),
        )


@dataclass(frozen=True)
class Report:
    """The frozen result of one check. Sinks and alert channels consume it."""

    monitor: str
    generation: int
    stage: Stage
    metrics: Mapping[str, MetricValue]
    alerts: tuple[Alert, ...] = ()
    findings: tuple[Finding, ...] = ()
    drift: bool = False
    baseline_generation: int = 0
    provenance: Provenance | None = None
    reference_fingerprint: str = ""
    created_at: float = field(default_factory=time.time)
    duration_seconds: float = 0.0
    errors: tuple[str, ...] = ()
    run_id: str | None = None
    notes: tuple[str, ...] = ()
    rare_classes: tuple[str, ...] = ()
    #: the alert rules whose incident is open after this check (rule -> severity), including
    #: one waiting out ``Rules.resolve_after``; None where unknown (a report from an older version)
    open_alerts: Mapping[str, str] | None = None
    #: the rules settings that define the metrics' values (``Rules.measure``: k, tail_quantile,
    #: rare_threshold, text_budget, ...); None where unknown (an older version, an MLflow read-back)
    measure: Mapping[str, Any] | None = None

    @property
    def is_baseline(self) -> bool:
        return self.generation == self.baseline_generation

    def __repr__(self) -> str:
        """One line however many classes: the dataclass repr printed every metric and finding
        (874,375 characters for 2,000 classes in a notebook cell). ``to_dict()`` has it all."""
        top = ", ".join(f"{f.key} {f.relative_change:+.0%}" for f in self.declines[:3])
        more = f" (+{len(self.declines) - 3})" if len(self.declines) > 3 else ""
        alerts = ", ".join(f"{a.rule} {a.status}" for a in self.alerts)
        return (
            f"Report(monitor={self.monitor!r}, generation={self.generation}, stage={self.stage.value}"
            f"{', drift' if self.drift else ''}, baseline_generation={self.baseline_generation}, "
            f"metrics={len(self.metrics)}, declines=[{top}]{more}, alerts=[{alerts}], errors={len(self.errors)}, "
            f"run_id={self.run_id!r})"
        )

    @property
    def declines(self) -> list[Finding]:
        """Significant declines, strongest evidence (smallest q) first; among equal q (q values of
        strong declines underflow to 0 together), the largest relative decline first."""
        return sorted((f for f in self.findings if f.significant), key=lambda f: (f.q_value, f.relative_change, f.key))

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "generation": self.generation,
            "stage": self.stage.value,
            "stage_level": self.stage.level,
            "drift": self.drift,
            "baseline_generation": self.baseline_generation,
            "metrics": {k: v.to_dict() for k, v in sorted(self.metrics.items())},
            "alerts": [a.to_dict() for a in self.alerts],
            "findings": [f.to_dict() for f in self.findings],
            "provenance": None if self.provenance is None else self.provenance.to_dict(),
            "reference_fingerprint": self.reference_fingerprint,
            "created_at": self.created_at,
            "duration_seconds": self.duration_seconds,
            "errors": list(self.errors),
            "run_id": self.run_id,
            "notes": list(self.notes),
            "rare_classes": list(self.rare_classes),
            "open_alerts": None if self.open_alerts is None else dict(sorted(self.open_alerts.items())),
            "measure": None if self.measure is None else dict(sorted(self.measure.items())),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Report:
        return cls(
            monitor=d["monitor"],
            generation=int(d["generation"]),
            stage=Stage(d["stage"]),
            metrics={k: MetricValue.from_dict(v) for k, v in d.get("metrics", {}).items()},
            alerts=tuple(Alert.from_dict(a) for a in d.get("alerts", ())),
            findings=tuple(Finding.from_dict(f) for f in d.get("findings", ())),
            drift=bool(d.get("drift", False)),
            baseline_generation=int(d.get("baseline_generation", 0)),
            provenance=Provenance.from_dict(d.get("provenance")),
            reference_fingerprint=d.get("reference_fingerprint", ""),
            created_at=float(d.get("created_at", 0.0)),
            duration_seconds=float(d.get("duration_seconds", 0.0)),
            errors=tuple(d.get("errors", ())),
            run_id=d.get("run_id"),
            notes=tuple(d.get("notes", ())),
            rare_classes=tuple(str(c) for c in d.get("rare_classes", ())),
            open_alerts=None if d.get("open_alerts") is None else {str(k): str(v) for k, v in d["open_alerts"].items()},
            measure=dict(d["measure"]) if isinstance(d.get("measure"), Mapping) else None,
        )

    def value(self, key: str, default: float | None = None) -> float | None:
        mv = self.metrics.get(key)
        return default if mv is None else mv.value
