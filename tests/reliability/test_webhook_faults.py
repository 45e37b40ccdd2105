"""A webhook answering 500, 429 + Retry-After, timing out or 410, behind a real monitor.

Bound: ``check()`` spends at most ``alert_budget_seconds`` delivering (no attempt starts after
the budget, each attempt's timeout is capped by what is left of it), so it returns within
``BUDGET + SLACK``. What the budget leaves undelivered stays in the sqlite outbox and goes out
on the next check, ``flush()`` or ``collapse-monitor serve`` - once per idempotency key
(``webhook-id``): every attempt of an event carries the same id, so the receiver can drop the
duplicates at-least-once delivery may cause.
"""

from __future__ import annotations

import socket
import time
from collections import Counter

import pytest
from reliability.relkit import collapsed, healthy, reference, unique, verify_standard_webhook, watched_check
from servers import Response

import collapse_monitor as cm
from collapse_monitor.alerting import AlertDispatcher, Outbox

SECRET = "whsec_dGVzdC1yZWxpYWJpbGl0eS1zZWNyZXQtMTIzNDU2"
BUDGET = 2.0
SLACK = 2.0  # the check's own work and scheduling noise on a loaded machine


def _monitor(tmp_path, url: str, *, timeout: float = 1.0, budget: float = BUDGET, name: str | None = None):
    hook = cm.Webhook(url, secret=SECRET, name="hook", timeout=timeout)
    return cm.CollapseMonitor(
        name or unique("hook"),
        reference=reference(),
        sinks=[],
        alerts=[hook],
        home=tmp_path,
        alert_budget_seconds=budget,
    )


def _fire(mon) -> tuple[cm.Report, float]:
    """Baseline (healthy, no alert), then a collapsed generation: one ``early_collapse`` firing."""
    base, _ = watched_check(mon, healthy())
    assert base is not None and base.alerts == ()
    report, seconds = watched_check(mon, collapsed())
    assert report is not None and [(a.rule, a.status) for a in report.alerts] == [("early_collapse", "firing")]
    return report, seconds


def _outbox(tmp_path) -> list:
    with Outbox(tmp_path / "outbox.db") as ob:
        return ob.rows()


def _ids(requests) -> list[str]:
    return [r.header("webhook-id") for r in requests]


def test_webhook_500_then_recovers(http_receiver, tmp_path) -> None:
    http_receiver.default = Response(500, body="upstream exploded")
    mon = _monitor(tmp_path, http_receiver.url_for("/hook"))
    report, seconds = _fire(mon)
    assert seconds < BUDGET + SLACK, f"check took {seconds:.1f} s with a webhook answering 500"
    (row,) = _outbox(tmp_path)
    assert row.status == "pending" and row.last_http_status == 500 and row.attempts >= 1
    failed = len(http_receiver.requests)

    http_receiver.default = Response(200)
    mon.flush(budget_seconds=30)  # waits out the backoff, as serve's timer would
    (row,) = _outbox(tmp_path)
    assert row.status == "delivered"
    reqs = http_receiver.requests
    assert set(_ids(reqs)) == {row.id}, "every attempt carries the same idempotency key"
    assert len(reqs) == failed + 1, "exactly one attempt was answered 2xx"
    assert all(verify_standard_webhook(SECRET, r.headers, r.body) for r in reqs)
    assert reqs[-1].json()["data"]["alert"]["generation"] == report.generation


def test_webhook_429_retry_after_inside_the_budget(http_receiver, tmp_path) -> None:
    http_receiver.respond((429, {"Retry-After": "1"}, "slow down"))
    mon = _monitor(tmp_path, http_receiver.url_for("/hook"), budget=3.0)
    _, seconds = _fire(mon)
    assert seconds < 3.0 + SLACK
    (row,) = _outbox(tmp_path)
    assert row.status == "delivered" and row.attempts == 2  # delivered within the same check
    first, second = http_receiver.requests
    assert second.received_at - first.received_at >= 0.95, "Retry-After: 1 was not honoured"
    assert _ids([first, second]) == [row.id, row.id]


def test_webhook_429_retry_after_beyond_the_budget(http_receiver, tmp_path) -> None:
    """``Retry-After: 3600``: the check does not wait an hour; a later process (an hour on)
    delivers it."""
    http_receiver.respond((429, {"Retry-After": "3600"}, "come back in an hour"))
    mon = _monitor(tmp_path, http_receiver.url_for("/hook"))
    _, seconds = _fire(mon)
    assert seconds < BUDGET + SLACK
    (row,) = _outbox(tmp_path)
    assert row.status == "pending" and row.next_attempt_at - time.time() > 3500
    assert mon.flush(budget_seconds=1)["alerts"] == 0  # not due yet: nothing sent early
    assert len(http_receiver.requests) == 1

    later = time.time() + 3601
    hook = cm.Webhook(http_receiver.url_for("/hook"), secret=SECRET, name="hook")
    with AlertDispatcher([hook], outbox_path=tmp_path / "outbox.db", clock=lambda: later) as d:
        (res,) = d.redeliver(budget_seconds=5)
    assert res.status == "delivered"
    assert _ids(http_receiver.requests) == [row.id, row.id]


def test_webhook_timing_out(http_receiver, tmp_path) -> None:
    """The first answer comes after 3 s, the channel's timeout is 0.5 s: the attempt is given
    up, retried, and the receiver sees the event twice under ONE idempotency key."""
    http_receiver.respond(Response(200, delay=3.0))
    mon = _monitor(tmp_path, http_receiver.url_for("/hook"), timeout=0.5, budget=3.0)
    _, seconds = _fire(mon)
    assert seconds < 3.0 + SLACK
    (row,) = _outbox(tmp_path)
    assert row.status == "delivered" and row.attempts >= 2
    reqs = http_receiver.wait_for_requests(2)
    by_id = Counter(_ids(reqs))
    assert list(by_id) == [row.id], "one logical alert (one webhook-id), however many attempts"


def test_webhook_410_disables_the_channel(http_receiver, tmp_path) -> None:
    http_receiver.default = Response(410, body="this hook was deleted")
    name = unique("gone")
    mon = _monitor(tmp_path, http_receiver.url_for("/hook"), name=name)
    report, seconds = _fire(mon)
    assert seconds < BUDGET + SLACK
    assert any(e.startswith("alert hook") and "410" in e for e in report.errors), report.errors
    (row,) = _outbox(tmp_path)
    assert row.status == "disabled"

    # the next retrain process: the resolve is recorded, never sent to the dead hook again
    mon2 = _monitor(tmp_path, http_receiver.url_for("/hook"), name=name)
    report2, _ = watched_check(mon2, healthy())
    assert report2 is not None and [(a.rule, a.status) for a in report2.alerts] == [("early_collapse", "resolved")]
    assert len(http_receiver.requests) == 1
    assert {r.status for r in _outbox(tmp_path)} == {"disabled"}


def test_webhook_connection_dropped(http_receiver, tmp_path) -> None:
    """The receiver closes the connection without answering, then recovers."""
    http_receiver.respond(Response(drop=True))
    mon = _monitor(tmp_path, http_receiver.url_for("/hook"), budget=3.0)
    _, seconds = _fire(mon)
    assert seconds < 3.0 + SLACK
    (row,) = _outbox(tmp_path)
    assert row.status == "delivered"
    assert set(_ids(http_receiver.requests)) == {row.id}


@pytest.mark.parametrize("process", ["same", "next"])
def test_next_check_delivers_what_an_earlier_check_left_pending(http_receiver, tmp_path, process) -> None:
    """README: what could not be delivered "is delivered by the next check" - also by a check
    that raises no event of its own (same stage), in this process or in the next one."""
    http_receiver.default = Response(503, {"Retry-After": "1"}, "maintenance")
    name = unique("redeliver")
    mon = _monitor(tmp_path, http_receiver.url_for("/hook"), budget=0.5, name=name)
    _fire(mon)
    (row,) = _outbox(tmp_path)
    assert row.status == "pending" and len(http_receiver.requests) == 1

    http_receiver.default = Response(200)
    time.sleep(max(0.0, row.next_attempt_at - time.time()) + 0.05)  # the receiver's Retry-After
    if process == "next":
        mon = _monitor(tmp_path, http_receiver.url_for("/hook"), budget=0.5, name=name)
    again, _ = watched_check(mon, collapsed())
    assert again is not None and again.alerts == (), "same stage: this check raises no event of its own"
    (row,) = _outbox(tmp_path)
    assert row.status == "delivered"
    assert _ids(http_receiver.requests) == [row.id, row.id]
    assert again.errors == ()


def test_hanging_channel_does_not_starve_the_others(http_receiver_factory, tmp_path) -> None:
    """A receiver that never answers, listed first with a timeout longer than the whole budget,
    gets its share of the budget; the healthy channel after it still gets the alert in the
    same check."""
    slow = http_receiver_factory(default=Response(200, delay=30.0))
    pager = http_receiver_factory()
    mon = cm.CollapseMonitor(
        unique("starve"),
        reference=reference(),
        sinks=[],
        alerts=[cm.Webhook(slow.url_for("/hook"), name="slow", timeout=15), cm.Webhook(pager.url, name="pager")],
        home=tmp_path,
        alert_budget_seconds=BUDGET,
    )
    report, seconds = _fire(mon)
    assert seconds < BUDGET + SLACK
    rows = {r.channel: r for r in _outbox(tmp_path)}
    assert rows["pager"].status == "delivered" and len(pager.requests) == 1
    assert rows["slow"].status == "pending"
    assert [e.split(":")[0] for e in report.errors] == ["alert slow"], report.errors


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("fault", ["500", "hang", "closed port"])
def test_failed_delivery_is_recorded_in_report_errors(http_receiver, tmp_path, fault) -> None:
    """An alert still waiting in the outbox after a failed attempt is a failure of this check:
    one redacted line per channel in ``report.errors`` (the outbox keeps the event)."""
    token, key = "Zq8TokenInPath0123", "s3cr3tQueryKey"
    base = _closed_port_url() if fault == "closed port" else http_receiver.url
    url = f"{base}/hooks/{token}?api_key={key}"
    if fault == "500":
        http_receiver.default = Response(500, body=f"upstream exploded at {url}")  # echoes the secret URL
    elif fault == "hang":
        http_receiver.default = Response(200, delay=10.0)
    mon = _monitor(tmp_path, url, timeout=0.5, budget=1.0)
    report, _ = _fire(mon)
    (row,) = _outbox(tmp_path)
    assert row.status == "pending"
    lines = [e for e in report.errors if e.startswith("alert hook:")]
    assert len(lines) == 1 and "queued for retry" in lines[0] and "\n" not in lines[0], report.errors
    expected = {"500": "HTTP 500", "hang": "timed out", "closed port": "refused"}[fault]
    assert expected in lines[0], lines[0]
    for secret in (token, key, SECRET):
        assert all(secret not in e for e in report.errors), report.errors
    assert mon.reports()[-1].errors == report.errors, "the errors are in the history too"


def test_an_outbox_another_process_holds_locked_costs_the_budget_not_30_seconds(http_receiver, tmp_path) -> None:
    """Audit (stop 41): another process holding a write transaction on outbox.db (an sqlite3
    shell, a backup, a stuck process sharing the home) made the check wait sqlite's 30 s busy
    timeout, whatever ``alert_budget_seconds`` said. The wait now stays within the budget, and
    the alert that missed the outbox is persisted and delivered by the next check."""
    import sqlite3
    import threading

    http_receiver.respond(Response(200), path="/hook")
    mon = _monitor(tmp_path, http_receiver.url_for("/hook"))
    Outbox(tmp_path / "outbox.db").close()  # the file and its tables exist, as after any earlier alert
    base, _ = watched_check(mon, healthy())
    assert base is not None
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        con = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(60)
        con.execute("ROLLBACK")
        con.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert locked.wait(10)
    try:
        report, seconds = watched_check(mon, collapsed())
    finally:
        release.set()
        holder.join(10)
    assert report is not None and report.alerts
    assert any("locked" in e for e in report.errors), report.errors
    # persisting and delivering each wait at most the budget: far from sqlite's 30 s
    assert seconds < 2 * BUDGET + 2 * SLACK, seconds
    assert http_receiver.requests == []
    mon.check(collapsed())  # the lock is gone: the held firing is persisted and sent
    sent = [r for r in http_receiver.requests if r.path == "/hook"]
    assert len(sent) == 1 and '"early_collapse"' in sent[0].body.decode()
