"""Monitors sharing a home share one outbox.db (``serve`` with a top-level home and per-monitor
``alerts:``). Two of them may name a channel alike (``oncall``) with different targets: each
monitor delivers only its own rows, so one team's page never goes out through another team's
channel (signed with the other team's secret and marked delivered there)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import collapse_monitor as cm

HEALTHY = [0] * 90 + [1] * 10
COLLAPSED = [0] * 100


def _monitor(name: str, home: Path, url: str) -> cm.CollapseMonitor:
    ref = cm.Reference(labels=HEALTHY)
    return cm.CollapseMonitor(
        name, reference=ref, sinks=[], home=home, alerts=[cm.Webhook(url, name="oncall")], alert_budget_seconds=1
    )


def _monitors_paged(receiver, path: str) -> list[str]:
    return [json.loads(r.body)["data"]["alert"]["monitor"] for r in receiver.requests_to(path)]


def test_a_monitor_never_delivers_another_monitors_alert_through_its_like_named_channel(
    tmp_path: Path, http_receiver
) -> None:
    a = _monitor("team-a-model", tmp_path, http_receiver.url_for("/team-a"))
    b = _monitor("team-b-model", tmp_path, http_receiver.url_for("/team-b"))
    for m in (a, b):
        m.check(cm.Observation(predictions=HEALTHY))
    http_receiver.respond(*[503] * 50, path="/team-b")  # team B's on-call endpoint is down
    rb = b.check(cm.Observation(predictions=COLLAPSED))
    assert rb.alerts and rb.errors  # queued for retry
    time.sleep(2.5)  # B's retry is due
    a.check(cm.Observation(predictions=HEALTHY))  # team A's healthy check delivers what is due: its own
    assert _monitors_paged(http_receiver, "/team-a") == []
    [row] = [r for r in b.dispatcher.outbox.rows() if r.monitor == "team-b-model"]
    assert row.status == "pending"
    assert a.flush()  # A's flush (as serve runs it) leaves B's row alone too
    assert _monitors_paged(http_receiver, "/team-a") == []
    http_receiver.clear()  # B's endpoint is back
    due = b.dispatcher.outbox.next_due(["oncall"])
    time.sleep(max(0.0, due - time.time()) + 0.1)
    b.flush()  # B delivers its own page
    assert _monitors_paged(http_receiver, "/team-b") == ["team-b-model"]
    assert _monitors_paged(http_receiver, "/team-a") == []
    assert b.dispatcher.outbox.get(row.id, "oncall").status == "delivered"


def test_a_channel_disabled_by_a_410_is_disabled_for_its_monitor_only(tmp_path: Path, http_receiver) -> None:
    """The 410-disabled state was keyed by the channel name alone: one team's dead endpoint
    switched off the other team's like-named channel."""
    a = _monitor("team-a-model", tmp_path, http_receiver.url_for("/team-a"))
    b = _monitor("team-b-model", tmp_path, http_receiver.url_for("/team-b"))
    for m in (a, b):
        m.check(cm.Observation(predictions=HEALTHY))
    http_receiver.respond(410, path="/team-b")
    b.check(cm.Observation(predictions=COLLAPSED))
    assert b.dispatcher.outbox.disabled_channels() == {"oncall": b.channels[0].fingerprint}
    assert a.dispatcher.outbox.disabled_channels() == {}
    ra = a.check(cm.Observation(predictions=COLLAPSED))
    assert ra.alerts and not ra.errors
    assert _monitors_paged(http_receiver, "/team-a") == ["team-a-model"]
    # A's check did not switch B's channel back on (A's channel has another target)
    assert b.dispatcher.outbox.disabled_channels() == {"oncall": b.channels[0].fingerprint}


def test_every_check_names_a_channel_with_an_undelivered_alert_until_it_is_delivered(
    tmp_path: Path, http_receiver
) -> None:
    """A row in backoff (here 429 with Retry-After: 3600) is not attempted by the next check,
    which used to report no error at all while the page was still undelivered."""
    mon = _monitor("team-a-model", tmp_path, http_receiver.url_for("/team-a"))
    mon.check(cm.Observation(predictions=HEALTHY))
    http_receiver.respond((429, {"Retry-After": "3600"}, "slow down"), path="/team-a")
    first = mon.check(cm.Observation(predictions=COLLAPSED))
    assert first.alerts and first.errors
    later = mon.check(cm.Observation(predictions=COLLAPSED))  # no new alert: the incident stays open
    assert later.alerts == ()
    assert len(later.errors) == 1 and later.errors[0].startswith("alert oncall: 1 earlier alert(s) still undelivered")
    assert "HTTP 429" in later.errors[0] and "next attempt in" in later.errors[0]
    assert len(http_receiver.requests_to("/team-a")) == 1  # nothing sent early
