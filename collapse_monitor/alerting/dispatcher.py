"""AlertDispatcher: route, mute, persist, deliver. It never decides WHEN to alert - the
monitor's detection produces firing / repeat / resolved ``Alert`` objects - it decides WHERE
each one goes and makes sure it gets there.

Routing
    A firing (or repeat) event goes to every channel that accepts its severity: the
    channel's own ``severities`` (None = all) AND, when ``routing`` is given, the channels
    it names for that severity (``{"warning": ["slack"], "critical": ["pagerduty", "slack"],
    "*": [...]}``; ``"*"`` is the fallback; a severity with neither goes to all channels).
    A resolve goes to every channel that got the firing event of the same dedup key (the
    outbox remembers them across processes) with the firing's severity, so Alertmanager
    label sets and PagerDuty dedup keys match; with no record of the firing (e.g. a fresh
    outbox) it goes to every channel - resolving an unknown alert is harmless, leaving one
    open is not.
Mutes
    ``{"monitor": until}`` or a list of ``(monitor, start, end)`` / ``{"monitor", "start",
    "end", "reason"}``; times are unix seconds, ``datetime`` or ISO 8601 strings (naive =
    UTC); ``monitor`` may be a glob (``"digits-*"``, ``"*"``); ``start`` None = now, ``end``
    None = until removed. A muted firing event is recorded in the outbox as ``muted`` and not
    sent. Resolves are never muted: a channel that got the firing gets its resolve.
Delivery
    ``dispatch`` commits one outbox row per (event, channel) before any attempt, then
    delivers within ``budget_seconds`` (default 10 s): the call's own events first, then
    every older row that is due, in the same budget, shared fairly between channels. What is
    left is retried by the next ``dispatch`` (a monitor's next check: ``deliver_check``),
    ``redeliver()`` or ``collapse-monitor serve``. See ``outbox.py`` for the retry policy,
    the budget sharing and the multi-process guarantees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from .._redact import redact_text
from ..errors import ConfigError, InputError
from ..types import Alert, Report, Stage
from ._http import _SEVERITIES
from .base import AlertEvent, Channel, DeliveryResult, report_summary
from .outbox import Outbox, OutboxRow, RetryPolicy

__all__ = [
    "DEFAULT_OUTBOX",
    "AlertDispatcher",
    "Mute",
    "check_dispatch_options",
    "event_id",
    "parse_mutes",
    "send_test_event",
]

log = logging.getLogger("collapse_monitor.alerting")

DEFAULT_OUTBOX = os.path.join(".collapse_monitor", "outbox.db")


@dataclass(frozen=True)
class Mute:
    """No firing events of ``monitor`` (a name or glob) between ``start`` and ``end`` (unix s)."""

    monitor: str
    start: float = -math.inf
    end: float = math.inf
    reason: str = ""

    def covers(self, monitor: str, at: float) -> bool:
        return self.start <= at < self.end and (self.monitor == monitor or fnmatch.fnmatchcase(monitor, self.monitor))


def _ts(v: Any, key: str, default: float) -> float:
    if v is None:
        return default
    if isinstance(v, bool):
        raise ConfigError(key, f"expected a time (unix seconds, datetime or ISO 8601), got {v!r}")
    if isinstance(v, (int, float)):
        if math.isnan(float(v)):
            raise ConfigError(key, "is NaN")
        return float(v)
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(key, f"expected an ISO 8601 time such as 2026-12-01T00:00:00Z, got {v!r}") from None
    if isinstance(v, date) and not isinstance(v, datetime):
        v = datetime(v.year, v.month, v.day, tzinfo=UTC)
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    raise ConfigError(key, f"expected a time (unix seconds, datetime or ISO 8601), got {type(v).__name__}")


def parse_mutes(mutes: Any, key: str = "mutes") -> list[Mute]:
    """Mute windows from ``{monitor: until}``, ``[(monitor, start, end)]`` or ``[{monitor, start, end, reason}]``."""
    if mutes is None:
        return []
    out: list[Mute] = []
    if isinstance(mutes, Mapping):
        for mon, until in mutes.items():
            if not isinstance(mon, str) or not mon:
                raise ConfigError(key, f"monitor names must be non-empty strings, got {mon!r}")
            out.append(Mute(mon, -math.inf, _ts(until, f"{key}.{mon}", math.inf)))
        return out
    if isinstance(mutes, (str, bytes)) or not isinstance(mutes, Iterable):
        raise ConfigError(
            key, f"expected a mapping {{monitor: until}} or a list of windows, got {type(mutes).__name__}"
        )
    for i, m in enumerate(mutes):
        k = f"{key}[{i}]"
        if isinstance(m, Mute):
            out.append(m)
            continue
        if isinstance(m, Mapping):
            unknown = set(m) - {"monitor", "start", "end", "until", "reason"}
            if unknown:
                raise ConfigError(f"{k}.{sorted(unknown)[0]}", "unknown key; expected monitor, start, end, reason")
            mon, start, end, reason = (
                m.get("monitor"),
                m.get("start"),
                m.get("end", m.get("until")),
                m.get("reason", ""),
            )
        elif isinstance(m, (list, tuple)) and len(m) in (2, 3):
            mon, start, end, reason = (m[0], None, m[1], "") if len(m) == 2 else (m[0], m[1], m[2], "")
        else:
            raise ConfigError(k, "expected (monitor, start, end), (monitor, end) or {monitor, start, end}")
        if not isinstance(mon, str) or not mon:
            raise ConfigError(f"{k}.monitor", f"expected a monitor name or glob, got {mon!r}")
        s, e = _ts(start, f"{k}.start", -math.inf), _ts(end, f"{k}.end", math.inf)
        if e <= s:
            raise ConfigError(f"{k}.end", "must be after start")
        out.append(Mute(mon, s, e, str(reason or "")))
    return out


def _check_channels(channels: Any) -> dict[str, Channel]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Iterable):
        raise ConfigError("alerts", f"expected a list of alert channels, got {type(channels).__name__}")
    out: dict[str, Channel] = {}
    for i, ch in enumerate(channels):
        name = getattr(ch, "name", None)
        if not callable(getattr(ch, "send", None)) or not isinstance(name, str) or not name:
            raise ConfigError(
                f"alerts[{i}]", f"expected a channel with .name and .send(event), got {type(ch).__name__}"
            )
        if name in out:
            raise ConfigError(f"alerts[{i}].name", f"duplicate channel name {name!r}: give each channel its own name=")
        out[name] = ch
    return out


def _check_routing(routing: Any, channels: Mapping[str, Channel]) -> dict[str, list[str]] | None:
    if routing is None:
        return None
    if not isinstance(routing, Mapping):
        raise ConfigError("routing", f"expected a mapping severity -> [channel names], got {type(routing).__name__}")
    out: dict[str, list[str]] = {}
    for sev, names in routing.items():
        if not isinstance(sev, str) or (sev != "*" and sev.lower() not in _SEVERITIES):
            # a typo ("critcal") routed every critical alert to "*" alone: PagerDuty never paged
            raise ConfigError(f"routing.{sev}", f"unknown severity; expected one of {sorted(_SEVERITIES)} or '*'")
        sev = sev.lower()
        if sev in out:
            raise ConfigError(f"routing.{sev}", "given twice (severities are not case-sensitive)")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, Iterable):
            raise ConfigError(f"routing.{sev}", "expected a list of channel names")
        names = list(names)
        for n in names:
            if n not in channels:
                raise ConfigError(f"routing.{sev}", f"unknown channel {n!r}; known: {sorted(channels)}")
        out[str(sev)] = names
    return out


def check_dispatch_options(
    channels: Any, *, routing: Any = None, mutes: Any = None, budget_seconds: Any = 10.0
) -> tuple[dict[str, Channel], dict[str, list[str]] | None, list[Mute], float]:
    """Validate an ``AlertDispatcher``'s options without opening its outbox: channels by name,
    routing, mute windows and the delivery budget. ``CollapseMonitor`` calls it when it is built,
    so a bad ``routing`` / ``mutes`` value is a ``ConfigError`` then, not at the first alert."""
    named = _check_channels(channels)
    checked_routing = _check_routing(routing, named)
    windows = parse_mutes(mutes)
    try:
        budget = float(budget_seconds)
    except (TypeError, ValueError):
        raise ConfigError("budget_seconds", f"expected seconds >= 0, got {budget_seconds!r}") from None
    if not (budget >= 0 and math.isfinite(budget)):
        raise ConfigError("budget_seconds", f"expected seconds >= 0, got {budget_seconds!r}")
    return named, checked_routing, windows, budget


class AlertDispatcher:
    """Routes, mutes, persists (outbox) and delivers alert events to channels.

    ``scope`` (a monitor's name; a ``CollapseMonitor`` passes its own) limits delivery, and the
    410-disabled channel state, to that monitor's rows: monitors sharing a home share one
    ``outbox.db`` and may name their channels alike.

    >>> import tempfile, os, collapse_monitor as cm
    >>> d = AlertDispatcher([], outbox_path=os.path.join(tempfile.mkdtemp(), "outbox.db"))
    >>> d.dispatch([])
    []
    >>> d.close()
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        outbox_path: str | os.PathLike[str] | None = None,
        routing: Mapping[str, Sequence[str]] | None = None,
        mutes: Any = None,
        budget_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
        lease_seconds: float = 60.0,
        scope: str | None = None,
    ) -> None:
        #: event ids of keep-alives persisted by this dispatcher (their failures are never final)
        self._keepalives: set[str] = set()
        self._channels, self.routing, self.mutes, self.budget_seconds = check_dispatch_options(
            channels, routing=routing, mutes=mutes, budget_seconds=budget_seconds
        )
        self.clock = clock
        self.outbox = Outbox(
            Path(outbox_path) if outbox_path is not None else Path(DEFAULT_OUTBOX),
            clock=clock,
            retry=retry,
            lease_seconds=lease_seconds,
            scope=scope,
            # a lock another process holds on outbox.db (a backup, a stuck process) is waited
            # for within the alert budget, not 30 s: the training step's bound holds, and an
            # alert that missed the outbox is persisted again by the next check
            busy_seconds=min(30.0, max(1.0, self.budget_seconds)),
        )
        self._sync()
        self.outbox.prune()  # finished rows older than 30 days
        self._pruned_at = clock()
        self._after_persist: Callable[[], None] | None = None  # test hook: runs between commit and delivery

    # -- public ------------------------------------------------------------------------------
    @property
    def channels(self) -> dict[str, Channel]:
        return dict(self._channels)

    def route(self, alert: Alert) -> list[str]:
        """Channel names a firing event of ``alert`` goes to."""
        sev = alert.severity
        names: list[str] = list(self._channels)
        if self.routing is not None:
            picked = self.routing.get(sev, self.routing.get("*"))
            if picked is not None:
                names = picked
        out = []
        for n in names:
            if alert.refresh and not getattr(self._channels[n], "keeps_alive", False):
                continue  # a keep-alive goes only where alerts expire by themselves (Alertmanager)
            sevs = getattr(self._channels[n], "severities", None)
            if sevs is None or sev in sevs:
                out.append(n)
        return out

    def muted(self, monitor: str, at: float | None = None) -> Mute | None:
        at = self.clock() if at is None else at
        return next((m for m in self.mutes if m.covers(monitor, at)), None)

    def _sync(self) -> None:
        """Enable a channel switched off by a 410 from a target this dispatcher does not have
        (a process still on the old URL): at every call, not only when built - a long-lived
        ``serve`` stayed switched off by another process's 410 for good."""
        self.outbox.sync_channels({n: str(getattr(c, "fingerprint", "")) for n, c in self._channels.items()})

    def dispatch(
        self,
        alerts: Sequence[Alert] | Alert,
        report: Report | None = None,
        *,
        event_ids: Sequence[str] | None = None,
    ) -> list[DeliveryResult]:
        """Persist one outbox row per (event, channel), then deliver within the budget.

        Returns one result per row of this call with the row's state afterwards
        (``delivered``, ``pending``, ``dead``, ``disabled`` or ``muted``). Never raises for a
        delivery problem. With ``report``, event ids derive from the report and the rule
        (:func:`event_id`), so dispatching the same report's alerts again is a no-op;
        ``event_ids`` (one per alert) gives the ids outright, for alerts no report raised."""
        keys = self.persist(alerts, report, event_ids=event_ids)
        if self._after_persist is not None:
            self._after_persist()
        return self.deliver(keys)

    def persist(
        self,
        alerts: Sequence[Alert] | Alert,
        report: Report | None = None,
        *,
        event_ids: Sequence[str] | None = None,
    ) -> list[tuple[str, str]]:
        """Commit one outbox row per (event, channel) without delivering; returns the rows'
        (event id, channel) keys. With ``report`` the event ids are :func:`event_id`, or they
        are ``event_ids``: persisting the same alerts twice (a crash recovery) adds nothing."""
        if isinstance(alerts, Alert):
            alerts = [alerts]
        if event_ids is not None and len(event_ids) != len(alerts):
            raise InputError("event_ids", f"expected one id per alert ({len(alerts)}), got {len(event_ids)}")
        summary = report_summary(report)
        keys: list[tuple[str, str]] = []
        self._sync()
        now = self.clock()
        for i, alert in enumerate(alerts):
            if not isinstance(alert, Alert):
                raise InputError(f"alerts[{i}]", f"expected cm.Alert, got {type(alert).__name__}")
            alert, targets, open_alert, close = self._plan(alert, now)
            if not targets:
                log.info("alert %s (%s): no channel takes severity %s", alert.dedup_key, alert.status, alert.severity)
                if close is not None:  # the incident ends all the same: forget where it was open
                    self.outbox.enqueue(AlertEvent(alert=alert, report=summary, created_at=now), {}, close_alert=close)
                continue
            event = AlertEvent(alert=alert, report=summary, created_at=now)
            if event_ids is not None:
                event = dataclasses.replace(event, id=str(event_ids[i]))
            elif report is not None:
                event = dataclasses.replace(event, id=event_id(report, alert))
            if alert.refresh:
                if len(self._keepalives) > 10_000:
                    self._keepalives.clear()
                self._keepalives.add(event.id)
            self.outbox.enqueue(event, targets, open_alert=open_alert, close_alert=close)
            keys.extend((event.id, ch) for ch in targets)
            log.info(
                "alert %s %s (%s) -> %s",
                alert.dedup_key,
                alert.status,
                alert.severity,
                ", ".join(f"{c}:{s}" for c, s in targets.items()),
            )
        return keys

    def deliver(self, keys: Sequence[tuple[str, str]] = ()) -> list[DeliveryResult]:
        """Deliver due rows within the budget, the rows ``keys`` names first (when ``keys`` is
        non-empty); return the state of the rows ``keys`` names afterwards."""
        if keys:
            self.outbox.deliver(self._channels, budget_seconds=self.budget_seconds, first=keys)
        return self._states(keys)

    def deliver_check(self, keys: Sequence[tuple[str, str]] = ()) -> CheckDelivery:
        """A monitor check's delivery: the rows ``keys`` names (the check's own events) first,
        then every other due row - what earlier checks or processes left pending - in the same
        budget, even when ``keys`` is empty. Never raises for a delivery problem; the result
        says, one redacted line per channel, which channels failed in this call."""
        self._sync()
        attempted = self.outbox.deliver(self._channels, budget_seconds=self.budget_seconds, first=keys)
        errors, final = self._errors(keys, attempted)
        return CheckDelivery(tuple(self._states(keys)), tuple(attempted), errors, final)

    def _states(self, keys: Sequence[tuple[str, str]]) -> list[DeliveryResult]:
        out = []
        for eid, ch in keys:
            row = self.outbox.get(eid, ch)
            if row is not None:
                out.append(row.result())
        return out

    def _errors(
        self, keys: Sequence[tuple[str, str]], attempted: Sequence[DeliveryResult]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(all lines, lines of final failures): one line per channel whose delivery failed in
        this call - an attempt that did not deliver (row pending for a retry, dead or
        disabled), or one of ``keys``' rows that is still unsent (budget spent, queued behind
        an undelivered earlier alert, or its channel disabled). The worst outcome per channel
        counts; the text goes through the channel's redaction and :func:`redact_text`."""
        outcomes: dict[str, tuple[int, str, str]] = {}  # channel -> (rank, error, what now); higher rank wins

        def note(channel: str, rank: int, error: str, then: str = "") -> None:
            if rank > outcomes.get(channel, (-1, "", ""))[0]:
                outcomes[channel] = (rank, error, then)

        seen: set[tuple[str, str]] = set()
        for r in attempted:
            seen.add((r.event_id, r.channel))
            err = r.error or (f"HTTP {r.http_status}" if r.http_status else "no answer")
            if r.event_id in self._keepalives:
                # a keep-alive that failed is said, never a final failure: the incident's firing
                # was delivered, and strict mode raised over a refresh (a review)
                if r.status != "delivered":
                    note(r.channel, 1, err, " (keep-alive)")
                continue
            if r.status == "pending":
                note(r.channel, 1, err, ", queued for retry")
            elif r.status == "dead":
                note(r.channel, 3, err, "" if err.startswith("gave up") else ", not delivered")
            elif r.status == "disabled":
                note(r.channel, 3, err, ", channel disabled")
        for r in self._states(
            [k for k in keys if k not in seen and k[1] in self._channels and k[0] not in self._keepalives]
        ):
            if r.status == "pending":
                note(
                    r.channel,
                    0,
                    "not sent within this check's alert budget (or queued behind an earlier alert)",
                    ", queued",
                )
            elif r.status == "disabled":
                note(
                    r.channel,
                    2,
                    r.error or "channel disabled after a 410 Gone, not sent (a new URL / key enables it again)",
                )
            elif r.status == "dead":
                note(r.channel, 3, r.error or "not delivered")
        # rows an earlier check left waiting, not due in this call (backoff): still undelivered,
        # so the check says so (until delivered, every check's errors name the channel)
        waiting: dict[str, list[OutboxRow]] = {}
        for row in self.outbox.pending():
            if row.channel in self._channels and (row.id, row.channel) not in seen and row.channel not in outcomes:
                waiting.setdefault(row.channel, []).append(row)
        now = self.clock()
        for channel, rows in waiting.items():
            last = rows[-1]
            why = last.last_error or (f"HTTP {last.last_http_status}" if last.last_http_status else "not sent yet")
            due = max(0.0, min(r.next_attempt_at for r in rows) - now)
            note(
                channel, 0, f"{len(rows)} earlier alert(s) still undelivered ({why})", f", next attempt in {due:.0f} s"
            )
        lines: list[str] = []
        final: list[str] = []
        for channel in [*self._channels, *sorted(set(outcomes) - set(self._channels))]:
            if channel not in outcomes:
                continue
            rank, err, then = outcomes[channel]
            scrub = getattr(self._channels.get(channel), "redact", None)
            err = " ".join((scrub(err) if callable(scrub) else err).split())  # one line
            if len(err) > 200:
                err = err[:197] + "..."
            line = redact_text(f"alert {channel}: {err}{then}")
            lines.append(line)
            if rank >= 2:
                final.append(line)
        return tuple(lines), tuple(final)

    def redeliver(self, budget_seconds: float | None = None) -> list[DeliveryResult]:
        """Deliver what earlier calls or processes left pending (due rows only). A long-lived
        dispatcher (``serve``'s) prunes finished rows older than 30 days once a day here: it
        used to prune only when built, so the outbox of a running ``serve`` grew for good."""
        if self.clock() - self._pruned_at >= 86400.0:
            self._pruned_at = self.clock()
            with contextlib.suppress(Exception):  # housekeeping never stops a delivery
                self.outbox.prune()
        self._sync()
        return self.outbox.deliver(
            self._channels, budget_seconds=self.budget_seconds if budget_seconds is None else budget_seconds
        )

    def pending(self) -> list[OutboxRow]:
        """Rows still waiting for delivery (any channel)."""
        return self.outbox.pending()

    def close(self) -> None:
        self.outbox.close()

    def __enter__(self) -> AlertDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AlertDispatcher(channels={list(self._channels)}, outbox={str(self.outbox.path)!r})"

    # -- internals ---------------------------------------------------------------------------
    def _plan(
        self, alert: Alert, now: float
    ) -> tuple[Alert, dict[str, str], list[tuple[str, str, bool, str | None]], str | None]:
        disabled = self.outbox.disabled_channels()

        def initial(name: str, muted: bool) -> str:
            return "muted" if muted else ("disabled" if name in disabled else "pending")

        if alert.status == "resolved":
            # the resolve goes where the firing went; when none of those channels is configured
            # any more (renamed, replaced), or no record exists, to the channels the firing would
            # be routed to now (routing and severity filters): never to a channel whose filter
            # the firing did not pass (a "[RESOLVED]" for an alert it never showed)
            opened = self.outbox.open_alert(alert.dedup_key)
            if opened:
                sev = opened[0][1]
                if sev and sev != alert.severity:
                    alert = dataclasses.replace(alert, severity=sev)
                # a channel whose firing never got through (rejected, expired) gets no resolve
                # either: Slack and the webhooks showed a "[RESOLVED]" for an alert never shown
                unseen = self.outbox.undelivered_firings(alert.dedup_key)
                live = [(ch, was_muted) for ch, _, was_muted in opened if ch in self._channels]
                targets = {ch: initial(ch, was_muted) for ch, was_muted in live if ch not in unseen}
                # a channel not configured here: the same target under a new name gets the resolve
                # under that name; another target (a job with Slack and PagerDuty fired, a serve
                # with Slack alone resolves) gets it queued for a process that has it - dropped,
                # the PagerDuty incident stayed open for good
                by_target = {getattr(c, "fingerprint", None): n for n, c in self._channels.items()}
                by_target.pop(None, None)
                fingerprints = self.outbox.open_alert_targets(alert.dedup_key)
                renamed = False
                for ch, _, was_muted in opened:
                    if ch in self._channels or ch in unseen:
                        continue
                    here = by_target.get(fingerprints.get(ch))
                    if here is not None:
                        targets.setdefault(here, initial(here, was_muted))
                        renamed = True
                    elif fingerprints.get(ch) is not None:
                        targets[ch] = initial(ch, was_muted)
                if not live and not renamed:
                    # nothing here got it (renamed before fingerprints were kept, or no record of
                    # which): where the firing would be routed now
                    targets.update({n: initial(n, False) for n in self.route(alert)})
            else:
                targets = {n: initial(n, False) for n in self.route(alert)}
            return alert, targets, [], alert.dedup_key
        mute = self.muted(alert.monitor, now)
        if mute is not None:
            log.info("alert %s muted until %s%s", alert.dedup_key, mute.end, f" ({mute.reason})" if mute.reason else "")
        routed = self.route(alert)
        targets = {n: initial(n, mute is not None) for n in routed}
        records: list[tuple[str, str, bool, str | None]] = [
            (n, alert.severity, mute is not None, getattr(self._channels[n], "fingerprint", None)) for n in routed
        ]
        return alert, targets, records, None


@dataclass(frozen=True)
class CheckDelivery:
    """What :meth:`AlertDispatcher.deliver_check` did. ``results``: the state of the check's own
    rows afterwards (one per key, like ``deliver``); ``attempted``: each row attempted in the
    call (own or older) after its last attempt; ``errors``: one redacted line per channel whose
    delivery failed, ready for ``report.errors``; ``final_errors``: those of them that will not
    be retried (dead, disabled)."""

    results: tuple[DeliveryResult, ...]
    attempted: tuple[DeliveryResult, ...]
    errors: tuple[str, ...] = ()
    final_errors: tuple[str, ...] = ()


def event_id(report: Report, alert: Alert) -> str:
    """Deterministic idempotency key of ``alert`` raised by ``report``: the same check's alert
    gets the same ``webhook-id`` however often (and by whichever process) it is persisted.

    >>> import collapse_monitor as cm
    >>> r = cm.Report(monitor="m", generation=3, stage=cm.Stage.HEALTHY, metrics={}, created_at=1.5)
    >>> a = make_test_alert("m")
    >>> event_id(r, a) == event_id(r, a) and len(event_id(r, a)) == 36
    True
    """
    key = f"collapse-monitor/{report.monitor}/{report.generation}/{report.created_at!r}/{alert.rule}/{alert.status}"
    if alert.refresh:
        key += "/refresh"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def make_test_alert(monitor: str = "collapse-monitor-test") -> Alert:
    """The alert a test event carries (rule ``test``, severity ``info``)."""
    return Alert(
        monitor=monitor,
        rule="test",
        status="firing",
        severity="info",
        stage=Stage.HEALTHY,
        generation=0,
        summary="collapse-monitor test event: if you can read this, this channel receives alerts. No action needed.",
    )


def send_test_event(
    channels: Sequence[Channel], *, timeout: float | None = None, monitor: str = "collapse-monitor-test"
) -> list[DeliveryResult]:
    """Send one test event to each channel now (one attempt each, no outbox, no routing, no
    mutes) and return the results. PagerDuty resolves its test incident right away;
    Alertmanager's test alert (``CollapseMonitorTest``, severity info) ends after 5 minutes."""
    event = AlertEvent(alert=make_test_alert(monitor), test=True)
    out = []
    for ch in channels:
        try:
            out.append(ch.send(event, timeout=timeout))
        except Exception as exc:
            scrub = getattr(ch, "redact", redact_text)
            out.append(
                DeliveryResult(
                    str(getattr(ch, "name", "?")), event.id, "failed", error=scrub(f"{type(exc).__name__}: {exc}")
                )
            )
    return out
