"""A page must not be lost when the outbox cannot take it. The alert state was committed as
notified while the outbox write failed, and the report was marked handed off: no later check
retried it, and on-call heard nothing until the repeat interval (6 h)."""

from __future__ import annotations

import pytest

import collapse_monitor as cm

HEALTHY = [0] * 970 + [1] * 30
COLLAPSED = [0] * 1000


@pytest.fixture
def outbox_fails_twice(monkeypatch):
    """The next two outbox writes of alerts fail, transiently (a locked database)."""
    from collapse_monitor.alerting import AlertDispatcher

    real = AlertDispatcher.persist
    failures = [2]

    def flaky(self, alerts, report):
        if failures[0]:
            failures[0] -= 1
            raise OSError("transient: database is locked")
        return real(self, alerts, report)

    monkeypatch.setattr(AlertDispatcher, "persist", flaky)


def test_alerts_the_outbox_could_not_take_are_queued_by_the_next_check(http_receiver, tmp_path) -> None:
    hook = cm.Webhook(http_receiver.url_for("/hook"), name="oncall")
    ref = cm.Reference(labels=HEALTHY)

    def monitor() -> cm.CollapseMonitor:  # one process per check, as batch retrain jobs run
        return cm.CollapseMonitor("pager", reference=ref, sinks=[], home=tmp_path, alerts=[hook])

    monitor().check(cm.Observation(predictions=HEALTHY))
    outbox = tmp_path / "outbox.db"
    for f in tmp_path.glob("outbox.db*"):
        f.unlink()
    # the outbox cannot be opened (a folder in its place; a corrupt file is moved aside and
    # replaced instead, see test_outbox_quarantine.py)
    outbox.mkdir()
    first = monitor().check(cm.Observation(predictions=COLLAPSED))
    assert [(a.rule, a.status) for a in first.alerts] == [("early_collapse", "firing")]
    assert any(e.startswith("alerting:") for e in first.errors), first.errors
    assert http_receiver.requests == []

    # still broken at the next check: it says the earlier page is not queued
    second = monitor().check(cm.Observation(predictions=COLLAPSED))
    assert any("generation 1's alerts are not queued yet" in e for e in second.errors), second.errors
    assert http_receiver.requests == []

    outbox.rmdir()  # repaired: the next check queues generation 1's page and delivers it
    third = monitor().check(cm.Observation(predictions=COLLAPSED))
    assert not any("not queued" in e for e in third.errors), third.errors
    (page,) = http_receiver.requests
    body = page.json()
    alert = body["data"]["alert"]
    assert body["type"] == "collapse_monitor.alert.firing"
    assert (alert["rule"], alert["generation"]) == ("early_collapse", 1)
    # and only once: later checks have nothing left to recover
    monitor().check(cm.Observation(predictions=COLLAPSED))
    assert len(http_receiver.requests) == 1


def test_a_long_lived_dispatcher_prunes_its_outbox_daily(http_receiver, tmp_path) -> None:
    """``serve`` builds its dispatcher once; pruning ran only then, so its outbox grew for good."""
    from collapse_monitor.alerting import AlertDispatcher, Outbox

    now = [1_700_000_000.0]
    d = AlertDispatcher(
        [cm.Webhook(http_receiver.url_for("/hook"), name="oncall")],
        outbox_path=tmp_path / "outbox.db",
        clock=lambda: now[0],
    )
    alert = cm.Alert(
        monitor="m", rule="early_collapse", status="firing", severity="warning",
        stage=cm.Stage.EARLY_COLLAPSE, generation=1, summary="early collapse at generation 1",
    )  # fmt: skip
    d.dispatch([alert])
    assert len(http_receiver.requests) == 1
    with Outbox(tmp_path / "outbox.db") as ob:
        assert len(ob.rows()) == 1  # delivered, kept for 30 days
    now[0] += 31 * 86400.0
    d.redeliver()
    with Outbox(tmp_path / "outbox.db") as ob:
        assert ob.rows() == []
    d.close()


def test_a_firing_is_never_queued_after_its_own_resolve(http_receiver, tmp_path, outbox_fails_twice) -> None:
    """Alerting audit (2026-12-06): the outbox failed (transiently) for generation 1's firing
    and again when generation 2 recovered it, but took generation 2's own resolve: the resolve
    went out first, the firing after it, and the incident stayed open for good (PagerDuty's
    trigger after its resolve; Alertmanager firing for its whole resend window). A later
    generation's alerts now wait behind an earlier one's."""
    hook = cm.Webhook(http_receiver.url_for("/hook"), name="oncall")
    mon = cm.CollapseMonitor("order", reference=cm.Reference(labels=HEALTHY), sinks=[], home=tmp_path, alerts=[hook])
    mon.check(cm.Observation(predictions=HEALTHY))
    fired = mon.check(cm.Observation(predictions=COLLAPSED))  # the outbox fails: not queued
    assert [(a.rule, a.status) for a in fired.alerts] == [("early_collapse", "firing")]
    resolved = mon.check(cm.Observation(predictions=HEALTHY))  # recovery fails; its own resolve waits
    assert [(a.rule, a.status) for a in resolved.alerts] == [("early_collapse", "resolved")]
    assert any("held behind generation 1's alerts" in e for e in resolved.errors), resolved.errors
    assert http_receiver.requests == []
    mon.check(cm.Observation(predictions=HEALTHY))  # the outbox works again: both, in order
    kinds = [(r.json()["type"], r.json()["data"]["alert"]["generation"]) for r in http_receiver.requests]
    assert kinds == [("collapse_monitor.alert.firing", 1), ("collapse_monitor.alert.resolved", 2)]


def test_held_alerts_go_out_in_check_order_when_a_chain_is_re_run(http_receiver, tmp_path, outbox_fails_twice) -> None:
    """Review (2026-12-06): held alerts were queued by generation, so a chain re-run from
    generation 0 (a lower generation checked after a higher one) sent its resolve before the
    firing of the generation checked earlier."""
    hook = cm.Webhook(http_receiver.url_for("/hook"), name="oncall")
    mon = cm.CollapseMonitor("rerun", reference=cm.Reference(labels=HEALTHY), sinks=[], home=tmp_path, alerts=[hook])
    mon.check(cm.Observation(predictions=HEALTHY))
    mon.check(cm.Observation(predictions=COLLAPSED))  # generation 1 fires; the outbox fails
    again = mon.check(cm.Observation(predictions=HEALTHY, generation=0))  # re-run: its resolve is held
    assert [(a.rule, a.status) for a in again.alerts] == [("early_collapse", "resolved")]
    mon.check(cm.Observation(predictions=HEALTHY, generation=1))  # the outbox works again
    kinds = [(r.json()["type"], r.json()["data"]["alert"]["generation"]) for r in http_receiver.requests]
    assert kinds[:2] == [("collapse_monitor.alert.firing", 1), ("collapse_monitor.alert.resolved", 0)], kinds


def test_flush_records_a_corrupt_outbox_instead_of_raising(http_receiver, tmp_path, caplog) -> None:
    """check() recorded a corrupt outbox.db and went on; flush(), which the README suggests at
    the end of a training script or from cron, raised DatabaseError."""
    import logging

    def monitor() -> cm.CollapseMonitor:
        return cm.CollapseMonitor(
            "pager",
            reference=cm.Reference(labels=[0] * 970 + [1] * 30),
            sinks=[],
            home=tmp_path,
            alerts=[cm.Webhook(http_receiver.url + "/hook", name="oncall")],
        )

    monitor().check(cm.Observation(predictions=[0] * 970 + [1] * 30))
    fired = monitor()
    fired.check(cm.Observation(predictions=[0] * 1000))
    fired.dispatcher.close()
    outbox = tmp_path / "outbox.db"
    with open(outbox, "r+b") as fh:
        fh.truncate(outbox.stat().st_size // 2)
    # a corrupt outbox is moved aside and replaced (test_outbox_quarantine.py): flush() works
    with caplog.at_level(logging.WARNING, logger="collapse_monitor"):
        out = monitor().flush()
    assert out["alerts"] == 0
    assert "is corrupt" in caplog.text and "alert redelivery failed" not in caplog.text
    assert [p.name for p in tmp_path.glob("outbox.db.corrupt-*")]
    # one that cannot be opened at all is recorded, not raised
    for f in tmp_path.glob("outbox.db*"):
        f.unlink()
    outbox.mkdir()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="collapse_monitor"):
        out = monitor().flush()
    assert out["alerts"] == 0
    assert "alert redelivery failed" in caplog.text and f"alert outbox {outbox} cannot be opened" in caplog.text
