"""Where a resolve goes: the channels the firing reached, else the channels the firing would
reach now (routing, severity filters). Real receivers, real outbox."""

from __future__ import annotations

import json
from pathlib import Path

import collapse_monitor as cm
from collapse_monitor.alerting import AlertDispatcher


def _alert(status: str, severity: str) -> cm.Alert:
    return cm.Alert("m1", "drift", status, severity, cm.Stage.HEALTHY, 3, "distribution drift")


def _kinds(receiver, path: str) -> list[str]:
    return [json.loads(r.body)["type"] for r in receiver.requests_to(path)]


def test_a_resolve_reaches_a_renamed_channel_and_closes_the_incident(tmp_path: Path, http_receiver) -> None:
    """The firing went to the channel under its default name; the next process names the same
    target `oncall`. The resolve used to find no target, was dropped, and the incident stayed
    open in the outbox (and at the receiver) for good."""
    url = http_receiver.url_for("/hook")
    first = AlertDispatcher([cm.Webhook(url)], outbox_path=tmp_path / "outbox.db")
    [fired] = first.dispatch(_alert("firing", "warning"))
    assert fired.status == "delivered"
    first.close()
    renamed = AlertDispatcher([cm.Webhook(url, name="oncall")], outbox_path=tmp_path / "outbox.db")
    [resolved] = renamed.dispatch(_alert("resolved", "warning"))
    assert (resolved.channel, resolved.status) == ("oncall", "delivered")
    assert _kinds(http_receiver, "/hook") == ["collapse_monitor.alert.firing", "collapse_monitor.alert.resolved"]
    assert renamed.outbox.open_alert("m1/drift") == []


def test_a_resolve_respects_the_severity_filters_the_firing_did_not_pass(tmp_path: Path, http_receiver) -> None:
    """An info firing (drift) that no channel takes leaves no record; its resolve used to go to
    every channel: a "[RESOLVED]" in Slack for an alert Slack never showed."""
    disp = AlertDispatcher(
        [
            cm.Webhook(http_receiver.url_for("/pd"), name="pd", severities=["critical"]),
            cm.Webhook(http_receiver.url_for("/chat"), name="chat", severities=["warning", "critical"]),
        ],
        outbox_path=tmp_path / "outbox.db",
    )
    assert disp.dispatch(_alert("firing", "info")) == []
    assert disp.dispatch(_alert("resolved", "info")) == []
    assert http_receiver.requests == []
    # a warning firing reaches chat only, and so does its resolve
    disp.dispatch(_alert("firing", "warning"))
    disp.dispatch(_alert("resolved", "warning"))
    assert _kinds(http_receiver, "/chat") == ["collapse_monitor.alert.firing", "collapse_monitor.alert.resolved"]
    assert http_receiver.requests_to("/pd") == []


def test_a_resolve_waits_for_a_process_that_has_the_channel(tmp_path: Path, http_receiver) -> None:
    """Alerting audit (2026-12-06, second): a job with Slack and PagerDuty fired; a process with
    Slack alone (serve, an older config) planned the resolve, queued it for Slack only and
    dropped the record of PagerDuty: the PagerDuty incident stayed open for good. Its resolve
    now waits in the outbox for a process that has the channel."""
    outbox = tmp_path / "outbox.db"

    def chat() -> cm.Webhook:
        return cm.Webhook(http_receiver.url_for("/chat"), name="chat")

    def pager() -> cm.Webhook:
        return cm.Webhook(http_receiver.url_for("/pd"), name="pd")

    job = AlertDispatcher([chat(), pager()], outbox_path=outbox)
    assert {r.status for r in job.dispatch(_alert("firing", "warning"))} == {"delivered"}
    job.close()
    serve = AlertDispatcher([chat()], outbox_path=outbox)
    resolved = {r.channel: r.status for r in serve.dispatch(_alert("resolved", "warning"))}
    assert resolved == {"chat": "delivered", "pd": "pending"}
    serve.close()
    later = AlertDispatcher([chat(), pager()], outbox_path=outbox)
    later.redeliver()
    assert _kinds(http_receiver, "/pd") == ["collapse_monitor.alert.firing", "collapse_monitor.alert.resolved"]
    assert _kinds(http_receiver, "/chat") == ["collapse_monitor.alert.firing", "collapse_monitor.alert.resolved"]
    assert later.outbox.open_alert("m1/drift") == [] and later.pending() == []
