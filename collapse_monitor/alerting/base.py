"""The channel Protocol and the data that flows through it.

An :class:`AlertEvent` is one alert (firing, repeat, resolved or test) wrapped with a stable
id - the idempotency key every attempt of every channel carries (``webhook-id`` for generic
webhooks) - and a JSON-safe summary of the report it came from. A channel renders the event
for its receiver and makes ONE attempt (``send``); retries, backoff, leases and persistence
belong to the outbox, so a channel stays a small pure-ish adapter (like
``prometheus_client``'s ``Collector`` Protocol).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..types import Alert, Report

__all__ = [
    "LINK_LABELS",
    "OUTBOX_STATES",
    "SEND_STATES",
    "AlertEvent",
    "Channel",
    "DeliveryResult",
    "report_summary",
]

#: What ``Channel.send`` returns in ``DeliveryResult.status`` (one attempt).
SEND_STATES = ("delivered", "retry", "failed", "gone")
#: What the dispatcher returns (the outbox row's state after the in-call delivery).
OUTBOX_STATES = ("delivered", "pending", "dead", "disabled", "muted")

#: Known keys of ``Alert.links`` and how messages label them; other keys are title-cased.
LINK_LABELS = {
    "mlflow_run": "MLflow run",
    "dashboard": "Dashboard",
    "runbook": "Runbook",
    "evidently_report": "Drift report",
}


@dataclass(frozen=True)
class AlertEvent:
    """One alert on its way to the channels. ``id`` is the idempotency key: the same on every
    attempt and every channel, so receivers can drop duplicates of an at-least-once delivery."""

    alert: Alert
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    report: Mapping[str, Any] | None = None
    test: bool = False
    created_at: float = field(default_factory=time.time)

    @property
    def kind(self) -> str:
        """``test``, ``firing`` (first or repeat) or ``resolved``."""
        return "test" if self.test else self.alert.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alert": self.alert.to_dict(),
            "report": None if self.report is None else dict(self.report),
            "test": self.test,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlertEvent:
        return cls(
            alert=Alert.from_dict(d["alert"]),
            id=str(d["id"]),
            report=d.get("report"),
            test=bool(d.get("test", False)),
            created_at=float(d.get("created_at", 0.0)),
        )


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of delivering one event to one channel.

    ``status`` is one of :data:`SEND_STATES` when it comes from ``Channel.send`` (one
    attempt: ``delivered``; ``retry`` = transient - network error, timeout, 408, 429, 5xx;
    ``failed`` = permanent - other 4xx, redirects; ``gone`` = 410, stop using the channel)
    and one of :data:`OUTBOX_STATES` when it comes from the dispatcher (``delivered``;
    ``pending`` = will be retried by a later call, ``next_attempt_at`` says when; ``dead`` =
    given up; ``disabled`` = the channel answered 410 and is switched off; ``muted``).
    ``error`` is redacted: it never contains a secret.
    """

    channel: str
    event_id: str
    status: str
    http_status: int | None = None
    attempts: int = 1
    error: str | None = None
    retry_after: float | None = None
    next_attempt_at: float | None = None
    dedup_key: str | None = None

    @property
    def ok(self) -> bool:
        """Delivered, or deliberately not sent (muted)."""
        return self.status in ("delivered", "muted")

    @property
    def final(self) -> bool:
        """Nothing more will happen to this event on this channel (not ``pending``/``retry``)."""
        return self.status not in ("pending", "retry")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@runtime_checkable
class Channel(Protocol):
    """Where alert events go. ``name`` identifies the channel in the outbox (keep it stable
    across processes); ``severities`` (``None`` = all) filters what it receives.

    ``send`` makes exactly one attempt and never raises for delivery problems: it classifies
    them in the returned :class:`DeliveryResult`. ``timeout`` caps this attempt (the
    dispatcher passes what is left of its budget); a channel uses the smaller of it and its
    own timeout.
    """

    name: str
    severities: frozenset[str] | None

    def send(self, event: AlertEvent, *, timeout: float | None = None) -> DeliveryResult: ...


MAX_SOURCES_IN_ALERTS = 20  # provenance sources an alert's report summary lists (all are counted)


def _provenance_summary(prov: Any) -> dict[str, Any]:
    """The provenance as alerts carry it: at most :data:`MAX_SOURCES_IN_ALERTS` sources and
    their total (5,000 sources were about 210 KB of every webhook body)."""
    d = prov.to_dict()
    d["sources_total"] = len(d["sources"])
    d["sources"] = d["sources"][:MAX_SOURCES_IN_ALERTS]
    return d


def report_summary(report: Report | None, *, max_declines: int = 10) -> dict[str, Any] | None:
    """The JSON-safe part of a report that travels with an alert (no raw data, no errors text)."""
    if report is None:
        return None
    prov = report.provenance
    return {
        "monitor": report.monitor,
        "generation": report.generation,
        "baseline_generation": report.baseline_generation,
        "stage": report.stage.value,
        "stage_level": report.stage.level,
        "drift": report.drift,
        "run_id": report.run_id,
        "created_at": report.created_at,
        "synthetic_fraction": None if prov is None else prov.synthetic_fraction,
        "provenance": None if prov is None else _provenance_summary(prov),
        "declines": [f.to_dict() for f in report.declines[:max_declines]],
        "metric_count": len(report.metrics),
        "error_count": len(report.errors),
    }
