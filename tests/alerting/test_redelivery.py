"""What a check delivers besides its own events, and how one budget is shared, against real
HTTP receivers: older pending rows go out after the call's own events (also when there are
none), every channel gets a first attempt before any second one, a hanging receiver gets its
share of the budget and not all of it, and failures come back as one redacted line per channel.
"""

from __future__ import annotations

import sqlite3

from servers import Response

import collapse_monitor as cm
from collapse_monitor.alerting import AlertDispatcher

LABELS = [0] * 380 + [1] * 12 + [2] * 8


def _ids(requests) -> list[str | None]:
    return [r.header("webhook-id") for r in requests]


def test_own_events_go_before_older_pending_rows(http_receiver, tmp_path, make_alert, fake_clock):
    http_receiver.respond((503, {"Retry-After": "1"}, "maintenance"))
    hook = cm.Webhook(http_receiver.url, name="hook")
    with AlertDispatcher([hook], outbox_path=tmp_path / "o.db", budget_seconds=1, clock=fake_clock) as d:
        (old,) = d.dispatch([make_alert()])
        assert old.status == "pending"
        fake_clock.advance(5)  # the old row is due again
        (new,) = d.dispatch([make_alert(rule="distribution_drift", severity="info")])
        assert new.status == "delivered"
        assert d.pending() == []
    assert _ids(http_receiver.requests) == [old.event_id, new.event_id, old.event_id]


def test_deliver_check_without_events_redelivers_due_rows(http_receiver, tmp_path, make_alert, fake_clock):
    """A check that raises no event still delivers what earlier checks left pending."""
    http_receiver.respond((503, {"Retry-After": "1"}, "maintenance"))
    hook = cm.Webhook(http_receiver.url, name="hook")
    with AlertDispatcher([hook], outbox_path=tmp_path / "o.db", budget_seconds=1, clock=fake_clock) as d:
        (old,) = d.dispatch([make_alert()])
        fake_clock.advance(5)
        out = d.deliver_check(())
        assert out.results == () and out.errors == ()
        assert [(r.event_id, r.status) for r in out.attempted] == [(old.event_id, "delivered")]
    assert _ids(http_receiver.requests) == [old.event_id, old.event_id]


def test_every_channel_gets_a_first_attempt_before_any_second(http_receiver, tmp_path, make_alert, fake_clock):
    """Two rows of channel ``a`` are older than the row of channel ``b``; ``b`` still goes second."""
    a = cm.Webhook(http_receiver.url_for("/a"), name="a", severities=["warning"])
    b = cm.Webhook(http_receiver.url_for("/b"), name="b", severities=["critical"])
    with AlertDispatcher([a, b], outbox_path=tmp_path / "o.db", budget_seconds=0, clock=fake_clock) as d:
        d.dispatch([make_alert(), make_alert(rule="distribution_drift")])
        d.dispatch([make_alert(rule="late_collapse", severity="critical", stage=cm.Stage.LATE_COLLAPSE)])
        assert http_receiver.requests == []  # budget 0: persisted only
        assert sorted(r.status for r in d.redeliver(budget_seconds=5)) == ["delivered"] * 3
    assert [r.path for r in http_receiver.requests] == ["/a", "/b", "/a"]


def test_a_hanging_channel_gets_its_share_of_the_budget_not_all_of_it(http_receiver_factory, tmp_path, make_alert):
    """Two receivers that never answer, listed first, with timeouts far above the 3 s budget:
    each attempt gets at most its share, so the healthy third channel is still served."""
    slow1 = http_receiver_factory(default=Response(200, delay=30.0))
    slow2 = http_receiver_factory(default=Response(200, delay=30.0))
    pager = http_receiver_factory()
    channels = [
        cm.Webhook(slow1.url, name="slow1", timeout=15),
        cm.Webhook(slow2.url, name="slow2", timeout=15),
        cm.Webhook(pager.url, name="pager"),
    ]
    with AlertDispatcher(channels, outbox_path=tmp_path / "o.db", budget_seconds=3) as d:
        by_channel = {r.channel: r.status for r in d.dispatch([make_alert()])}
    assert by_channel == {"slow1": "pending", "slow2": "pending", "pager": "delivered"}
    assert len(pager.requests) == 1
    first_of = {name: rx.requests[0].received_at for name, rx in (("slow1", slow1), ("slow2", slow2))}
    assert first_of["slow1"] < first_of["slow2"] < pager.requests[0].received_at


def test_failures_are_one_redacted_line_per_channel(http_receiver, tmp_path, make_alert):
    token = "Xy7PathToken0123456"
    bad = cm.Webhook(http_receiver.url_for(f"/bad/{token}?token=q5ecret"), name="bad")
    good = cm.Webhook(http_receiver.url_for("/good"), name="good")
    http_receiver.default = Response(500, body=f"no: {bad._url}\nsecond line " + "x" * 400)  # echoes the secret URL
    http_receiver.respond(*[200] * 10, path="/good")
    with AlertDispatcher([bad, good], outbox_path=tmp_path / "o.db", budget_seconds=0.5) as d:
        keys = d.persist([make_alert(), make_alert(rule="distribution_drift")])
        out = d.deliver_check(keys)
    assert {(r.channel, r.status) for r in out.results} == {("bad", "pending"), ("good", "delivered")}
    (line,) = out.errors
    assert line.startswith("alert bad: HTTP 500") and line.endswith("queued for retry"), line
    assert "\n" not in line and len(line) < 300 and token not in line and "q5ecret" not in line
    assert out.final_errors == ()


def test_disabled_channel_is_a_final_failure(http_receiver, tmp_path, make_alert):
    http_receiver.default = Response(410, body="this hook was deleted")
    hook = cm.Webhook(http_receiver.url, name="hook")
    with AlertDispatcher([hook], outbox_path=tmp_path / "o.db", budget_seconds=1) as d:
        first = d.deliver_check(d.persist([make_alert()]))
        assert first.errors == first.final_errors == ("alert hook: HTTP 410: this hook was deleted, channel disabled",)
        later = d.deliver_check(d.persist([make_alert(rule="distribution_drift")]))
        (line,) = later.final_errors
        assert line.startswith("alert hook: channel disabled") and "None" not in line
    assert len(http_receiver.requests) == 1


def _hooked_monitor(name: str, url: str, home) -> cm.CollapseMonitor:
    return cm.CollapseMonitor(
        name,
        reference=cm.Reference(labels=LABELS),
        sinks=[],
        alerts=[cm.Webhook(url, name="hook")],
        home=home,
        alert_budget_seconds=1,
    )


def test_a_failing_outbox_never_breaks_a_check(http_receiver, tmp_path):
    """The redelivery every check now does is contained like the rest: an outbox that fails
    (here: its table is gone) is an error in the report, not an exception in the training job."""
    mon = _hooked_monitor("broken-outbox", http_receiver.url, tmp_path)
    assert mon.check(cm.Observation(predictions=LABELS)).errors == ()
    assert mon.dispatcher is not None  # opens the outbox (a check opens it at its first alert)
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        db.execute("DROP TABLE outbox")
    report = mon.check(cm.Observation(predictions=LABELS))
    assert report.generation == 1
    assert [e for e in report.errors if e.startswith("alerting: ")] == [
        "alerting: OperationalError: no such table: outbox"
    ], report.errors


def test_an_outbox_that_cannot_be_opened_never_breaks_a_check(http_receiver, tmp_path):
    """The outbox opens at the first alert; a path that cannot hold it (a directory there) is an
    error in the report and the check still returns its report (the stage is not lost)."""
    (tmp_path / "outbox.db").mkdir()
    (tmp_path / "outbox.db" / "blocker").write_text("x")
    mon = _hooked_monitor("unopenable-outbox", http_receiver.url, tmp_path)
    mon.check(cm.Observation(predictions=LABELS))
    report = mon.check(cm.Observation(predictions=[0] * len(LABELS)))  # collapse: an alert fires
    assert report.stage is not cm.Stage.HEALTHY and report.alerts
    assert any(e.startswith("alerting: ") for e in report.errors), report.errors


def test_no_resolve_where_the_firing_never_got_through(http_receiver, tmp_path, make_alert):
    """Alerting audit (2026-12-06): a firing a channel rejected for good (400: dead) was still
    followed by its resolve there, a "[RESOLVED]" for an alert nobody was shown. The channels
    that got the firing get the resolve; the incident is closed on all of them."""
    seen = cm.Webhook(http_receiver.url_for("/seen"), name="seen")
    rejected = cm.Webhook(http_receiver.url_for("/rejected"), name="rejected")
    http_receiver.respond(*[200] * 5, path="/seen")
    http_receiver.respond(*[(400, {}, "bad payload")] * 5, path="/rejected")
    with AlertDispatcher([seen, rejected], outbox_path=tmp_path / "o.db", budget_seconds=1) as d:
        fired = d.deliver_check(d.persist([make_alert()]))
        assert {(r.channel, r.status) for r in fired.results} == {("seen", "delivered"), ("rejected", "dead")}
        resolved = d.deliver_check(d.persist([make_alert(status="resolved", generation=4)]))
        assert {(r.channel, r.status) for r in resolved.results} == {("seen", "delivered")}
        assert d.outbox.open_alert(make_alert().dedup_key) == []  # closed everywhere
    kinds = [(r.path, r.json()["type"]) for r in http_receiver.requests]
    assert kinds.count(("/rejected", "collapse_monitor.alert.resolved")) == 0
    assert ("/seen", "collapse_monitor.alert.resolved") in kinds
