"""PagerDuty Events API v2 (``POST https://events.pagerduty.com/v2/enqueue``).

``trigger`` for firing (and repeat) events, ``resolve`` for resolved ones, both with
``dedup_key`` = ``Alert.dedup_key`` (monitor/rule), so repeats update the open incident and
the resolve closes it. ``payload.summary`` <= 1024 characters, ``source`` (default
``collapse-monitor/<monitor>``), ``severity`` critical|error|warning|info, ``custom_details``
(what fell, generation, synthetic share, report summary) and ``links``. 202 = accepted;
400 = invalid event, not retried; 429/5xx = retried with backoff by the outbox.

A *test* event (``collapse-monitor alerts test``) triggers an ``info`` event and resolves it
right away, so it reaches the service without leaving an incident open.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import ConfigError
from ._http import HttpChannel, Transport, dumps
from ._render import detail_lines, headline, is_http, links
from .base import AlertEvent, DeliveryResult

__all__ = ["PagerDuty"]

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
_PD_SEVERITIES = {"critical", "error", "warning", "info"}


def _dedup(key: str) -> str:
    return key if len(key) <= 255 else key[:230] + "#" + hashlib.sha256(key.encode()).hexdigest()[:24]


#: findings listed in an event's custom details (the rest are counted)
MAX_DETAILS = 50
#: an event's JSON size, under PagerDuty's 512 KB
MAX_EVENT_BYTES = 500_000


class PagerDuty(HttpChannel):
    """Page through a PagerDuty service's Events API v2 integration (its routing key)."""

    kind = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        *,
        url: str = DEFAULT_URL,
        source: str | None = None,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        severities: Iterable[str] | None = None,
        verify_tls: bool = True,
        transport: Transport | None = None,
    ) -> None:
        if not isinstance(routing_key, str) or not routing_key.strip():
            raise ConfigError("routing_key", "expected the non-empty integration (routing) key of a PagerDuty service")
        self._routing_key = routing_key.strip()
        if source is not None and (not isinstance(source, str) or not source.strip()):
            # the Events API wants a string: 5 or [team-a] was sent as is, answered 400 (not
            # retried), and the page was lost
            raise ConfigError(
                "source", f"expected a non-empty string (the affected system), got {type(source).__name__}"
            )
        self.source = source
        super().__init__(
            url,
            name=name,
            timeout=timeout,
            headers=headers,
            severities=severities,
            verify_tls=verify_tls,
            transport=transport,
            secrets=[self._routing_key],
            fingerprint_extra=self._routing_key,
        )

    def payload(self, event: AlertEvent, action: str | None = None) -> dict[str, Any]:
        """The Events API v2 body: at most ``MAX_DETAILS`` findings and ``MAX_EVENT_BYTES`` in
        all (PagerDuty's limit is 512 KB per event)."""
        a = event.alert
        action = action or ("resolve" if a.status == "resolved" else "trigger")
        dedup = _dedup(f"test/{event.id}" if event.test else a.dedup_key)
        body: dict[str, Any] = {"routing_key": self._routing_key, "event_action": action, "dedup_key": dedup}
        if action != "trigger":
            return body
        severity = a.severity if a.severity in _PD_SEVERITIES else "error"
        summary = headline(event)
        if a.summary and not event.test:
            summary += " - " + a.summary
        lk = links(event)
        body["payload"] = {
            "summary": summary[:1024],
            "source": self.source or f"collapse-monitor/{a.monitor}",
            "severity": "info" if event.test else severity,
            "timestamp": datetime.fromtimestamp(a.timestamp, tz=UTC).isoformat(),
            "component": a.monitor,
            "group": "collapse-monitor",
            "class": a.rule,
            "custom_details": {
                "monitor": a.monitor,
                "stage": a.stage.value,
                "severity": a.severity,
                "rule": a.rule,
                "generation": a.generation,
                "synthetic_fraction": a.synthetic_fraction,
                "repeat": a.repeat,
                "what_fell": detail_lines(event),
                "details": [dict(d) for d in a.details[:MAX_DETAILS]],
                "details_not_shown": max(0, len(a.details) - MAX_DETAILS),
                "links": dict(a.links),
                "report": event.report,
                "event_id": event.id,
            },
        }
        body["links"] = [{"href": u, "text": label} for label, u in lk if is_http(u)]
        body["client"] = "collapse-monitor"
        dash = dict(a.links).get("dashboard")
        if dash and is_http(dash):
            body["client_url"] = dash
        # PagerDuty refuses events over 512 KB with a 4xx, and the page of the largest incidents
        # (a thousand classes collapsing, a data set of many shards) was lost: what does not fit
        # is dropped, the report summary first, then the findings (the dashboard and MLflow hold them)
        details = body["payload"]["custom_details"]
        for key in ("report", "details"):
            if len(dumps(body)) <= MAX_EVENT_BYTES:
                break
            details[key] = f"not shown: the event would exceed PagerDuty's size limit ({key} is in the links)"
        return body

    def _request(self, event: AlertEvent) -> tuple[str, bytes, dict[str, str]]:
        return self._url, dumps(self.payload(event)), {}

    def send(self, event: AlertEvent, *, timeout: float | None = None) -> DeliveryResult:
        result = super().send(event, timeout=timeout)
        if event.test and result.status == "delivered":  # close the test incident (best effort)
            self._post(event, self._url, dumps(self.payload(event, "resolve")), {}, timeout)
        return result

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + ", routing_key='***')"
