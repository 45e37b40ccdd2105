"""Post alerts straight to Alertmanager (``POST {url}/api/v2/alerts``, a JSON array).

Labels identify the alert and must be the same for firing, repeat and resolve (Alertmanager
matches them by label set): ``alertname`` (``CollapseMonitor`` + the rule in CamelCase:
``CollapseMonitorEarlyCollapse``, ``CollapseMonitorLateCollapse``,
``CollapseMonitorDistributionDrift``), ``monitor``, ``rule``, ``severity``, plus any static
``labels`` given (e.g. ``team``). The stage and generation change from check to check, so they
are annotations, not labels. Annotations: ``summary``, ``description`` (what fell, interval,
generation, synthetic share), ``runbook_url``, ``dashboard_url``, ``mlflow_run_url``.
``generatorURL`` is the MLflow run link when there is one (made a valid URI first: Alertmanager
rejects the whole alert with 422 when that one field does not parse).

Lifetime: a posted alert stays active until ``endsAt``. A firing, repeat or keep-alive event
sets ``endsAt = alert time + resend_window`` (default 72 h). Every check that finds the
incident open posts it again to this channel (a keep-alive, ``Alert.refresh``: Alertmanager
updates the alert it holds and sends no new notification; other channels get only the repeats,
every ``rules.repeat_interval_seconds``), so the alert stays open as long as checks keep
confirming it, and it expires by itself if the monitor stops checking for longer than the
window (by then ``CollapseMonitorStale`` has fired: its default threshold is 48 h). Set the
window above your retrain (check) interval; a monitor also refuses a window up to the repeat
interval. A mute stops the keep-alives with the repeats, so a mute longer than the window lets
the alert expire during it (silence it in Alertmanager instead). A resolve sets ``endsAt`` =
the resolve time, which closes the alert at once. A test event lives 5 minutes.

Do not route the same monitor both through this channel and through the Prometheus rules in
``integrations/prometheus/collapse_rules.yml`` to the same receivers: the label sets differ
(``job``/``instance``), so Alertmanager would notify twice. Pick one path per monitor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from ..errors import ConfigError
from ._http import HttpChannel, Transport, dumps, seconds_setting
from ._render import headline, is_http, plain_text
from .base import AlertEvent

__all__ = ["Alertmanager", "alertname_for", "generator_url"]

DEFAULT_RESEND_WINDOW = 72 * 3600.0
MAX_RESEND_WINDOW = 10 * 365.25 * 86400.0  # a firing alert's endsAt at most 10 years out
TEST_LIFETIME = 300.0
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED = {"alertname", "monitor", "rule", "severity"}
_ALERTS_PATH = "/api/v2/alerts"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def alertname_for(rule: str) -> str:
    """``early_collapse`` -> ``CollapseMonitorEarlyCollapse``.

    >>> alertname_for("late_collapse")
    'CollapseMonitorLateCollapse'
    """
    words = [w for w in re.split(r"[^A-Za-z0-9]+", rule) if w]
    return "CollapseMonitor" + "".join(w[:1].upper() + w[1:] for w in words)


def generator_url(url: Any) -> str | None:
    """``url`` as Alertmanager's ``generatorURL`` (OpenAPI ``format: uri``, parsed with Go's
    ``url.Parse``), or None when it cannot be one. Alertmanager answers 422 to the WHOLE alert
    when this field does not parse, so a stray ``%`` or a bad host in a link must not cost the
    page: invalid percent escapes become ``%25``, spaces, control and non-ASCII characters are
    percent-encoded, and a URL whose host or port does not parse is left out (the link stays
    in the annotations).

    >>> generator_url("http://mlflow.example/runs/50%off here")
    'http://mlflow.example/runs/50%25off%20here'
    >>> generator_url("http://[bad/x") is None
    True
    >>> generator_url("http://mlflow.example:5000#/experiments/1/runs/abc")
    'http://mlflow.example:5000/#/experiments/1/runs/abc'
    """
    if not isinstance(url, str) or not is_http(url.strip()):
        return None
    fixed = _BAD_ESCAPE.sub("%25", url.strip())
    fixed = quote(fixed, safe="!#$%&'()*+,/:;=?@[]~")
    try:
        parts = urlsplit(fixed)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return None
    if not parts.hostname or "%" in parts.netloc:  # Go refuses most escapes in a host
        return None
    host = parts.netloc.rpartition("@")[2]
    if host.startswith("[") and not re.fullmatch(r"\[[^\]]*\](:\d*)?", host):
        return None  # anything after "]" but a port ("http://[::1]x/"): 422 from Alertmanager
    if not parts.path:  # "http://host#/runs/1" (422 from Alertmanager 0.25): "http://host/#/runs/1"
        fixed = urlunsplit(parts._replace(path="/"))
    return fixed


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _alerts_url(url: Any) -> Any:
    """The v2 alerts endpoint under ``url``: the path gets ``/api/v2/alerts`` (once), the query
    (``?token=...`` for a proxy in front of Alertmanager) is kept, a fragment is dropped.
    Anything that is not a parseable URL string comes back unchanged for ``check_url`` to reject.

    >>> _alerts_url("http://127.0.0.1:9093/?token=abc")
    'http://127.0.0.1:9093/api/v2/alerts?token=abc'
    >>> _alerts_url("https://am.example.com/prefix/api/v2/alerts/")
    'https://am.example.com/prefix/api/v2/alerts'

    A v1 endpoint (removed in Alertmanager 0.27) is taken for the v2 one of the same server:

    >>> _alerts_url("http://127.0.0.1:9093/api/v1/alerts")
    'http://127.0.0.1:9093/api/v2/alerts'
    """
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url
    path = parts.path.rstrip("/")
    for api in (_ALERTS_PATH, "/api/v1/alerts"):
        if path.endswith(api):
            path = path[: -len(api)]
            break
    return urlunsplit((parts.scheme, parts.netloc, path + _ALERTS_PATH, parts.query, ""))


class Alertmanager(HttpChannel):
    """Send alerts to one Alertmanager over its v2 API. For an HA cluster, add one channel per
    replica (each with its own ``name``), as Prometheus does: the replicas deduplicate."""

    kind = "alertmanager"
    #: a posted firing lives until its ``endsAt``: the monitor posts it again on every check that
    #: finds the incident open (a keep-alive, ``Alert.refresh``), not only with a repeat
    keeps_alive = True

    def __init__(
        self,
        url: str,
        *,
        resend_window: float = DEFAULT_RESEND_WINDOW,
        labels: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        severities: Iterable[str] | None = None,
        verify_tls: bool = True,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            _alerts_url(url),
            name=name,
            timeout=timeout,
            headers=headers,
            severities=severities,
            verify_tls=verify_tls,
            transport=transport,
        )
        # at most 10 years: endsAt = time + window, and past the year 9999 every firing failed to
        # render, for good
        self.resend_window = seconds_setting(resend_window, "resend_window", MAX_RESEND_WINDOW)
        if labels is not None and not isinstance(labels, Mapping):
            raise ConfigError("labels", f"expected a mapping of label name -> string, got {type(labels).__name__}")
        extra = dict(labels or {})
        for k, v in extra.items():
            if not isinstance(k, str) or not _LABEL_NAME.fullmatch(k) or k in _RESERVED or k.startswith("__"):
                raise ConfigError(f"labels.{k}", f"expected a label name not in {sorted(_RESERVED)}")
            if not isinstance(v, str):
                raise ConfigError(f"labels.{k}", f"expected a string value, got {type(v).__name__}")
        self.labels = extra

    def alert_object(self, event: AlertEvent) -> dict[str, Any]:
        a = event.alert
        if event.test:
            labels = {"alertname": "CollapseMonitorTest", "monitor": a.monitor, "rule": "test", "severity": "info"}
            starts, ends = a.timestamp, a.timestamp + TEST_LIFETIME
        else:
            labels = {"alertname": alertname_for(a.rule), "monitor": a.monitor, "rule": a.rule, "severity": a.severity}
            starts = a.timestamp
            ends = a.timestamp if a.status == "resolved" else a.timestamp + self.resend_window
        labels = {**self.labels, **labels}
        link = dict(a.links)
        annotations = {
            "summary": headline(event),
            "description": plain_text(event, with_headline=False),
            "stage": a.stage.value,
            "generation": str(a.generation),
        }
        if a.synthetic_fraction is not None:
            annotations["synthetic_fraction"] = f"{a.synthetic_fraction:.4g}"
        for key, ann in (("runbook", "runbook_url"), ("dashboard", "dashboard_url"), ("mlflow_run", "mlflow_run_url")):
            if link.get(key):
                annotations[ann] = str(link[key])
        obj: dict[str, Any] = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": _rfc3339(starts),
            "endsAt": _rfc3339(ends),
        }
        gen = generator_url(link.get("mlflow_run"))
        if gen is not None:
            obj["generatorURL"] = gen
        return obj

    def _request(self, event: AlertEvent) -> tuple[str, bytes, dict[str, str]]:
        return self._url, dumps([self.alert_object(event)]), {}
