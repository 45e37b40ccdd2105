"""Durable delivery through the outbox against real HTTP receivers: retries with one
idempotency key, Retry-After, 410, 400, the in-call budget, ordering, leases."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3

import pytest

import collapse_monitor as cm
from collapse_monitor.alerting import AlertDispatcher, AlertEvent, DeliveryResult, Outbox, RetryPolicy

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_fails_three_times_then_one_logical_alert_with_one_webhook_id(
    http_receiver, tmp_path, make_alert, fast_retry, webhook_verifier
):
    http_receiver.respond(500, 502, 503, 200)
    hook = cm.Webhook(http_receiver.url_for("/hook"), secret=SECRET, name="hook")
    with AlertDispatcher([hook], outbox_path=tmp_path / "o.db", retry=fast_retry, budget_seconds=30) as d:
        (result,) = d.dispatch([make_alert()])
        assert result.status == "delivered" and result.attempts == 4 and result.ok and result.final
        reqs = http_receiver.wait_for_requests(4)
        assert len(reqs) == 4
        ids = {r.header("webhook-id") for r in reqs}
        assert ids == {result.event_id}
        assert len({r.body for r in reqs}) == 1  # the same bytes on every attempt
        assert all(webhook_verifier(SECRET, r.headers, r.body) for r in reqs)
        (row,) = d.outbox.rows()
        assert (row.status, row.attempts, row.last_http_status, row.last_error) == ("delivered", 4, 200, None)
        assert d.pending() == []
        # nothing left to redeliver: still exactly four requests, one delivered event
        assert d.redeliver(budget_seconds=0.5) == []
    assert len(http_receiver.requests) == 4


def test_retry_after_is_honoured(http_receiver, tmp_path, make_alert, fast_retry):
    http_receiver.respond((429, {"Retry-After": "1"}, "slow down"))
    with AlertDispatcher(
        [cm.Slack(http_receiver.url, name="slack")], outbox_path=tmp_path / "o.db", retry=fast_retry, budget_seconds=10
    ) as d:
        (result,) = d.dispatch([make_alert()])
    first, second = http_receiver.wait_for_requests(2)
    assert result.status == "delivered" and result.attempts == 2
    # the backoff alone would have retried after <= 0.01 s; Retry-After said 1 s
    assert second.received_at - first.received_at >= 1.0


def test_retry_after_beyond_the_budget_leaves_the_event_pending(http_receiver, tmp_path, make_alert, fake_clock):
    http_receiver.respond((503, {"Retry-After": "120"}, ""))
    d = AlertDispatcher(
        [cm.Webhook(http_receiver.url, name="hook")], outbox_path=tmp_path / "o.db", budget_seconds=1, clock=fake_clock
    )
    (r,) = d.dispatch([make_alert()])
    assert r.status == "pending" and not r.final and r.http_status == 503
    assert r.next_attempt_at == pytest.approx(fake_clock.now + 120)
    assert d.redeliver(budget_seconds=0.5) == []  # not due yet
    fake_clock.advance(121)
    (r2,) = d.redeliver(budget_seconds=2)
    assert r2.status == "delivered" and r2.attempts == 2
    assert len(http_receiver.requests) == 2
    d.close()


def test_a_huge_retry_after_is_capped_at_an_hour(http_receiver, tmp_path, make_alert, fake_clock):
    """``Retry-After: 604800`` (a week) from a misbehaving receiver must not silence the page for
    a week: the wait is capped at ``RetryPolicy.max_retry_after_seconds`` (1 h by default)."""
    http_receiver.respond((429, {"Retry-After": "604800"}, "go away"))
    with AlertDispatcher(
        [cm.Webhook(http_receiver.url, name="h")], outbox_path=tmp_path / "o.db", budget_seconds=1, clock=fake_clock
    ) as d:
        (r,) = d.dispatch([make_alert()])
        assert r.status == "pending" and r.http_status == 429
        assert r.next_attempt_at == pytest.approx(fake_clock.now + 3600)
        fake_clock.advance(3601)
        (r2,) = d.redeliver(budget_seconds=2)
    assert r2.status == "delivered" and len(http_receiver.requests) == 2


def test_retry_after_zero_does_not_make_a_tight_loop(http_receiver, tmp_path, make_alert):
    """``Retry-After: 0`` (or a date in the past) from a receiver under load only ever lengthens
    the wait: the attempts stay at least ``base_seconds`` apart and the alert stays pending.
    It used to send about 1,000 requests in 2 s and give the alert up as dead."""
    http_receiver.respond(*[(429, {"Retry-After": "0"}, "slow down")] * 50)
    policy = RetryPolicy(base_seconds=0.2, cap_seconds=0.4)
    with AlertDispatcher(
        [cm.Webhook(http_receiver.url, name="h")], outbox_path=tmp_path / "o.db", retry=policy, budget_seconds=1.5
    ) as d:
        (r,) = d.dispatch([make_alert()])
        (row,) = d.outbox.rows()
    assert r.status == "pending" and row.status == "pending"
    reqs = http_receiver.requests
    assert 2 <= len(reqs) <= 9
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(reqs)]
    assert min(gaps) >= 0.19


def test_http_date_retry_after(http_receiver, tmp_path, make_alert, fake_clock):
    from email.utils import formatdate

    http_receiver.respond((429, {"Retry-After": formatdate(fake_clock.now + 300, usegmt=True)}, ""))
    with AlertDispatcher(
        [cm.Webhook(http_receiver.url, name="h")], outbox_path=tmp_path / "o.db", budget_seconds=1, clock=fake_clock
    ) as d:
        (r,) = d.dispatch([make_alert()])
    assert r.status == "pending"
    # parsed against the real clock (HTTP-date is absolute): about 300 s ahead
    assert 250 <= r.next_attempt_at - fake_clock.now <= 301


def test_410_disables_the_channel_for_later_processes(http_receiver, tmp_path, make_alert, fast_retry):
    http_receiver.respond((410, {}, "channel_is_archived"))
    db = tmp_path / "o.db"
    slack = cm.Slack(http_receiver.url_for("/services/T/B/tok"), name="team")
    with AlertDispatcher([slack], outbox_path=db, retry=fast_retry) as d:
        (r,) = d.dispatch([make_alert()])
        assert r.status == "disabled" and r.http_status == 410 and r.final and not r.ok
    assert len(http_receiver.requests) == 1
    # a later process with the same channel skips it, without a request
    with AlertDispatcher([cm.Slack(http_receiver.url_for("/services/T/B/tok"), name="team")], outbox_path=db) as d2:
        (r2,) = d2.dispatch([make_alert(rule="late_collapse", severity="critical")])
        assert r2.status == "disabled"
        assert list(d2.outbox.disabled_channels()) == ["team"]
    assert len(http_receiver.requests) == 1
    # a new URL under the same name is a new channel: enabled again
    with AlertDispatcher([cm.Slack(http_receiver.url_for("/services/T/B/new"), name="team")], outbox_path=db) as d3:
        (r3,) = d3.dispatch([make_alert(rule="distribution_drift", severity="info")])
        assert r3.status == "delivered"


def test_400_is_not_retried(http_receiver, tmp_path, make_alert, fast_retry):
    key = "R0UTINGKEY0123456789abcdefABCDEF"
    http_receiver.respond((400, {}, {"status": "invalid event", "message": "Event object is invalid"}))
    with AlertDispatcher(
        [cm.PagerDuty(key, url=http_receiver.url, name="pd")], outbox_path=tmp_path / "o.db", retry=fast_retry
    ) as d:
        (r,) = d.dispatch([make_alert(severity="critical")])
        assert (r.status, r.http_status, r.attempts) == ("dead", 400, 1)
        assert "Event object is invalid" in r.error
        assert d.redeliver(budget_seconds=0.5) == []
    assert len(http_receiver.requests) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(http_receiver, tmp_path, make_alert, fast_retry, status):
    http_receiver.respond(status)
    with AlertDispatcher(
        [cm.Webhook(http_receiver.url, name="h")], outbox_path=tmp_path / "o.db", retry=fast_retry
    ) as d:
        (r,) = d.dispatch([make_alert()])
    assert (r.status, r.attempts) == ("delivered", 2)


def test_gives_up_after_max_attempts(http_receiver, tmp_path, make_alert):
    http_receiver.default = cm_response(500)
    pol = RetryPolicy(base_seconds=0.001, cap_seconds=0.002, max_attempts=3)
    with AlertDispatcher([cm.Webhook(http_receiver.url, name="h")], outbox_path=tmp_path / "o.db", retry=pol) as d:
        (r,) = d.dispatch([make_alert()])
    assert (r.status, r.attempts) == ("dead", 3) and "gave up after 3 attempt(s)" in r.error
    assert len(http_receiver.requests) == 3


def cm_response(status: int):  # a Response for HttpReceiver.default
    from servers import Response

    return Response(status)


def test_zero_budget_persists_without_any_attempt(http_receiver, tmp_path, make_alert):
    with AlertDispatcher(
        [cm.Webhook(http_receiver.url, name="h")], outbox_path=tmp_path / "o.db", budget_seconds=0
    ) as d:
        (r,) = d.dispatch([make_alert()])
        assert (r.status, r.attempts) == ("pending", 0)
        assert [p.id for p in d.pending()] == [r.event_id]
        assert http_receiver.requests == []
        (r2,) = d.redeliver(budget_seconds=5)
        assert r2.status == "delivered"
    assert http_receiver.wait_for_requests(1)[0].header("webhook-id") == r.event_id


def test_budget_bounds_in_call_retries(http_receiver, tmp_path, make_alert):
    """A receiver that never recovers: the call stops starting attempts once the budget is
    spent and leaves the event pending (no wall-clock assert: the attempt count is bounded)."""
    http_receiver.default = cm_response(500)
    pol = RetryPolicy(base_seconds=0.05, cap_seconds=0.05, max_attempts=1000)
    with AlertDispatcher(
        [cm.Webhook(http_receiver.url, name="h")], outbox_path=tmp_path / "o.db", retry=pol, budget_seconds=0.5
    ) as d:
        (r,) = d.dispatch([make_alert()])
    assert r.status == "pending" and r.attempts >= 2
    # each retry waits at least ~0 and at most 0.05 s; 0.5 s of budget cannot hold 1000 attempts
    assert r.attempts < 1000 and len(http_receiver.requests) == r.attempts


def test_resolve_never_overtakes_its_firing_event(http_receiver, tmp_path, make_alert, fake_clock):
    http_receiver.respond((429, {"Retry-After": "3600"}, ""))
    with AlertDispatcher(
        [cm.Webhook(http_receiver.url, name="h")], outbox_path=tmp_path / "o.db", budget_seconds=1, clock=fake_clock
    ) as d:
        (fire,) = d.dispatch([make_alert()])
        assert fire.status == "pending"
        (res,) = d.dispatch([make_alert(status="resolved", stage=cm.Stage.HEALTHY, generation=4)])
        assert res.status == "pending" and res.attempts == 0  # waits behind the firing event
        assert len(http_receiver.requests) == 1
        fake_clock.advance(3601)
        got = d.redeliver(budget_seconds=5)
        assert [g.status for g in got] == ["delivered", "delivered"]
    kinds = [r.json()["type"] for r in http_receiver.wait_for_requests(3)]
    assert kinds == [
        "collapse_monitor.alert.firing",
        "collapse_monitor.alert.firing",
        "collapse_monitor.alert.resolved",
    ]


def test_outbox_is_sqlite_wal_and_rows_hold_the_event(tmp_path, make_alert):
    ob = Outbox(tmp_path / "o.db")
    event = AlertEvent(make_alert())
    ob.enqueue(event, {"a": "pending", "b": "muted"})
    ob.enqueue(event, {"a": "pending"})  # idempotent
    rows = ob.rows()
    assert [(r.id, r.channel, r.status, r.attempts) for r in rows] == [
        (event.id, "a", "pending", 0),
        (event.id, "b", "muted", 0),
    ]
    assert rows[0].event() == event
    ob.close()
    con = sqlite3.connect(tmp_path / "o.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    payload = json.loads(con.execute("SELECT payload FROM outbox LIMIT 1").fetchone()[0])
    assert payload["id"] == event.id and payload["alert"]["monitor"] == "digits-generator"
    con.close()


def test_lease_keeps_a_second_process_off_a_claimed_row(tmp_path, make_alert, fake_clock):
    a = Outbox(tmp_path / "o.db", clock=fake_clock, lease_seconds=60)
    b = Outbox(tmp_path / "o.db", clock=fake_clock, lease_seconds=60)
    event = AlertEvent(make_alert())
    a.enqueue(event, {"hook": "pending"})
    row = a.claim(["hook"])
    assert row is not None and row.attempts == 1
    assert b.claim(["hook"]) is None  # leased by a
    assert b.next_due(["hook"]) == pytest.approx(fake_clock.now + 60)
    fake_clock.advance(61)  # a died mid-send: its lease runs out
    row_b = b.claim(["hook"])
    assert row_b is not None and row_b.id == event.id and row_b.attempts == 2
    done = b.complete(row_b, DeliveryResult("hook", event.id, "delivered", 200))
    assert done.status == "delivered"
    assert a.claim(["hook"]) is None
    a.close()
    b.close()


def test_full_jitter_backoff_bounds():
    pol = RetryPolicy(base_seconds=1.0, cap_seconds=600.0)
    rng = random.Random(0)
    for attempt in range(1, 15):
        hi = min(600.0, 2.0 ** (attempt - 1))
        xs = [pol.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= x <= hi for x in xs)
        assert max(xs) > 0.8 * hi and min(xs) < 0.2 * hi  # spread over the whole range (full jitter)


def test_expired_rows_go_dead(tmp_path, make_alert, fake_clock):
    ob = Outbox(tmp_path / "o.db", clock=fake_clock, retry=RetryPolicy(max_age_seconds=100))
    ob.enqueue(AlertEvent(make_alert()), {"gone-channel": "pending"})
    fake_clock.advance(101)
    assert ob.expire() == 1
    (row,) = ob.rows()
    assert row.status == "dead" and "expired" in row.last_error
    ob.close()


@pytest.mark.parametrize(("age", "want"), [(50, "pending"), (101, "dead")])
def test_a_retryable_answer_past_max_age_gives_up(tmp_path, make_alert, fake_clock, age, want):
    """The attempt itself ends the retries once the event is older than ``max_age_seconds`` (not
    only the ``expire()`` sweep): a 503 at 101 s of a 100 s budget is final."""
    ob = Outbox(tmp_path / "o.db", clock=fake_clock, retry=RetryPolicy(max_age_seconds=100), lease_seconds=3600)
    event = AlertEvent(make_alert())
    ob.enqueue(event, {"hook": "pending"})
    row = ob.claim(["hook"])
    assert row is not None
    fake_clock.advance(age)
    done = ob.complete(row, DeliveryResult("hook", event.id, "retry", 503, error="HTTP 503"))
    assert done.status == want
    (stored,) = ob.rows()
    assert stored.status == want
    if want == "dead":
        assert "gave up" in stored.last_error
    ob.close()


def test_prune_deletes_old_finished_rows_and_keeps_pending_ones(tmp_path, make_alert, fake_clock):
    ob = Outbox(tmp_path / "o.db", clock=fake_clock, retry=RetryPolicy(max_age_seconds=90 * 86400))
    done_event, waiting_event = AlertEvent(make_alert()), AlertEvent(make_alert(rule="late_collapse"))
    ob.enqueue(done_event, {"hook": "pending"})
    row = ob.claim(["hook"])
    assert row is not None and row.id == done_event.id
    ob.complete(row, DeliveryResult("hook", done_event.id, "delivered", 200))
    ob.enqueue(waiting_event, {"hook": "pending"})
    fake_clock.advance(31 * 86400)
    assert ob.prune(keep_seconds=30 * 86400) == 1
    (left,) = ob.rows()
    assert (left.id, left.status) == (waiting_event.id, "pending")  # still owed to on-call
    ob.close()


def test_custom_channel_that_raises_is_contained(tmp_path, make_alert):
    class Boom:
        name = "boom"
        severities = None

        def send(self, event, *, timeout=None):
            raise RuntimeError("kaput")

    pol = RetryPolicy(base_seconds=0.01, cap_seconds=0.01, max_attempts=100_000)
    with AlertDispatcher([Boom()], outbox_path=tmp_path / "o.db", retry=pol, budget_seconds=0.3) as d:
        (r,) = d.dispatch([make_alert()])
    assert r.status == "pending" and "RuntimeError: kaput" in r.error


def test_an_outage_of_hours_is_retried_until_max_age_not_given_up_after_an_hour(http_receiver, tmp_path, make_alert):
    """PagerDuty (or the network to it) down for 6 hours while ``serve`` redelivers every few
    minutes: with the default policy the page is still pending and goes out when the receiver
    is back (a 20-attempt limit gave up after about an hour: the page was lost)."""
    from servers import Response

    clock = FakeClockForOutage()
    http_receiver.default = Response(503, body="upstream unavailable")
    ob = Outbox(tmp_path / "o.db", clock=clock, rng=random.Random(7))
    pd = cm.PagerDuty("R0UTINGKEY0123456789abcdefABCDEF", url=http_receiver.url, name="pd")
    event = AlertEvent(make_alert(severity="critical"))
    ob.enqueue(event, {"pd": "pending"})
    try:
        while clock.elapsed < 6 * 3600:
            ob.deliver({"pd": pd}, budget_seconds=0.2)
            clock.advance(300)
        (row,) = ob.rows()
        assert row.status == "pending", (row.status, row.attempts, row.last_error)
        assert row.attempts > 20
        http_receiver.default = Response(202, body={"status": "success"})
        clock.advance(600)
        (done,) = ob.deliver({"pd": pd}, budget_seconds=2)
        assert done.status == "delivered"
        # ...and the age limit still ends it: a day later a row that never got through is dead
        late = AlertEvent(make_alert(rule="late_collapse", severity="critical"))
        http_receiver.default = Response(503)
        ob.enqueue(late, {"pd": "pending"})
        t0 = clock.now
        while ob.get(late.id, "pd").status == "pending":  # type: ignore[union-attr]
            assert clock.elapsed < 40 * 3600
            ob.deliver({"pd": pd}, budget_seconds=0.2)
            clock.advance(600)
        dead = ob.get(late.id, "pd")
        assert dead is not None and dead.status == "dead"
        assert 24 * 3600 <= clock.now - t0 <= 24 * 3600 + 1200
    finally:
        ob.close()


class FakeClockForOutage:
    def __init__(self) -> None:
        self.start = self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def elapsed(self) -> float:
        return self.now - self.start


def test_an_attempt_that_outlives_its_lease_does_not_undo_the_takeover(http_receiver, tmp_path, make_alert, fake_clock):
    """Process A's attempt hangs past its lease; process B takes the row over and delivers it.
    A's late 'timed out, retry' must not turn B's 'delivered' back into 'pending' (which would
    send the alert a second time)."""
    from servers import Response

    a = Outbox(tmp_path / "o.db", clock=fake_clock, lease_seconds=60)
    b = Outbox(tmp_path / "o.db", clock=fake_clock, lease_seconds=60)
    hook = cm.Webhook(http_receiver.url, name="hook", timeout=0.3)
    event = AlertEvent(make_alert())
    a.enqueue(event, {"hook": "pending"})
    row_a = a.claim(["hook"])
    assert row_a is not None
    http_receiver.respond(Response(200, delay=1.0))  # A's answer never comes in time
    late = hook.send(row_a.event())
    assert late.status == "retry"
    fake_clock.advance(61)  # ... and by the time A gives up, its lease has run out
    row_b = b.claim(["hook"])
    assert row_b is not None and row_b.attempts == 2
    assert b.complete(row_b, hook.send(row_b.event())).status == "delivered"
    after_a = a.complete(row_a, late)
    assert after_a.status == "delivered"  # the row's real state, not A's stale view
    (row,) = a.rows()
    assert (row.status, row.attempts) == ("delivered", 2)
    fake_clock.advance(3600)
    assert a.claim(["hook"]) is None and b.claim(["hook"]) is None  # nothing to send again
    assert len(http_receiver.requests) == 2  # A's abandoned attempt and B's delivery, one webhook-id
    assert {r.header("webhook-id") for r in http_receiver.requests} == {event.id}
    a.close()
    b.close()


def test_retry_after_holds_the_whole_channel_and_spreads_its_backlog(http_receiver, tmp_path, make_alert, fake_clock):
    """A rate-limited endpoint (Slack webhooks and PagerDuty keys are limited per endpoint)
    answering 429 with Retry-After: only that row waited, so the same call sent the rest of the
    backlog into the 429, and every row came back in the same second."""
    from servers import Response

    http_receiver.default = Response(429, headers={"Retry-After": "30"}, body="rate limited")
    d = AlertDispatcher(
        [cm.Slack(http_receiver.url, name="slack")], outbox_path=tmp_path / "o.db", budget_seconds=5, clock=fake_clock
    )
    alerts = [make_alert(monitor=f"m{i}") for i in range(20)]
    results = d.dispatch(alerts)
    assert len(http_receiver.requests) == 1  # one 429, then the channel waits
    assert all(r.status == "pending" for r in results)
    due = sorted(row.next_attempt_at for row in d.pending())
    assert due[0] == pytest.approx(fake_clock.now + 30)
    assert all(fake_clock.now + 30 <= t <= fake_clock.now + 33 for t in due)  # at most a tenth more
    assert len({round(t, 3) for t in due}) > 10  # spread, not one burst
    http_receiver.default = Response(200)
    fake_clock.advance(34)
    assert all(r.status == "delivered" for r in d.redeliver(budget_seconds=5))
    assert len(http_receiver.requests) == 21
    d.close()


def test_a_410_from_an_old_url_does_not_silence_the_new_one(http_receiver_factory, tmp_path, make_alert):
    """Alerting audit (2026-12-06, second): during a webhook rotation a job still on the old URL
    got a 410 and switched off channel `oncall` by name: the rows a `serve` had queued for the
    new URL were never sent, and the serve, built before the 410, stayed switched off for good.
    The serve's next call enables the channel again (its target differs from the 410's) and
    sends what was queued."""
    from servers import as_response

    old, new = http_receiver_factory(), http_receiver_factory()
    old.default = as_response((410, {}, "gone"))
    new.default = as_response((503, {}, "blip"))  # every attempt, retries within the budget too
    db = tmp_path / "o.db"
    serve = AlertDispatcher([cm.Webhook(new.url_for("/h"), name="oncall")], outbox_path=db, budget_seconds=0.5)
    (queued,) = serve.dispatch([make_alert()])
    assert queued.status == "pending"  # the new URL had a blip: queued for a retry
    job = AlertDispatcher([cm.Webhook(old.url_for("/h"), name="oncall")], outbox_path=db, budget_seconds=0.5)
    (gone,) = job.dispatch([make_alert(rule="late_collapse", severity="critical")])
    assert gone.status == "disabled"
    job.close()
    new.default = as_response(200)
    (later,) = serve.dispatch([make_alert(rule="distribution_drift", severity="info")])
    assert later.status == "delivered"
    serve.redeliver(budget_seconds=2.0)
    assert serve.pending() == [] and serve.outbox.disabled_channels() == {}
    delivered = {r.dedup_key.rsplit("/", 1)[-1] for r in serve.outbox.rows(status="delivered")}
    assert delivered == {"early_collapse", "late_collapse", "distribution_drift"}
    assert len(old.requests) == 1  # the old URL's one 410 (not retried), nothing since
    serve.close()
