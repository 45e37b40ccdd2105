"""Durability across processes: a process SIGKILLed between persisting and delivering leaves
the event to the next process; two processes draining one outbox never send an event twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from collapse_monitor.alerting import AlertDispatcher, AlertEvent, Outbox, Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import collapse_monitor as cm
    from collapse_monitor.alerting import AlertDispatcher

    url, db = sys.argv[1], sys.argv[2]
    d = AlertDispatcher([cm.Webhook(url, secret=os.environ["HOOK_SECRET"], name="hook")], outbox_path=db)
    # die the hard way right after the outbox commit, before any delivery attempt
    d._after_persist = lambda: os.kill(os.getpid(), signal.SIGKILL)
    alert = cm.Alert(monitor="digits-generator", rule="late_collapse", status="firing", severity="critical",
                     stage=cm.Stage.LATE_COLLAPSE, generation=7, summary="late collapse at generation 7")
    d.dispatch([alert])
    print("survived")  # never reached
    """
)

_DRAIN = textwrap.dedent(
    """
    import sys
    import collapse_monitor as cm
    from collapse_monitor.alerting import AlertDispatcher

    url, db = sys.argv[1], sys.argv[2]
    with AlertDispatcher([cm.Webhook(url, name="hook")], outbox_path=db) as d:
        print(len(d.redeliver(budget_seconds=60)))
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "HOOK_SECRET": SECRET}


def test_sigkill_between_persist_and_deliver_next_process_delivers(http_receiver, tmp_path, webhook_verifier):
    db = tmp_path / "outbox.db"
    url = http_receiver.url_for("/hook")
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, url, str(db)], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "survived" not in child.stdout
    assert http_receiver.requests == []  # killed before any attempt
    with Outbox(db) as ob:
        (row,) = ob.pending()
        assert (row.channel, row.attempts, row.kind) == ("hook", 0, "firing")
        event_id = row.id
    # the next process (here: this one) delivers it, signed, with the persisted idempotency key
    with AlertDispatcher([Webhook(url, secret=SECRET, name="hook")], outbox_path=db) as d:
        (res,) = d.redeliver(budget_seconds=10)
        assert (res.status, res.event_id) == ("delivered", event_id)
        assert d.pending() == []
    (req,) = http_receiver.wait_for_requests(1)
    assert req.header("webhook-id") == event_id
    assert webhook_verifier(SECRET, req.headers, req.body)
    assert req.json()["data"]["alert"]["generation"] == 7


def test_two_processes_drain_one_outbox_without_duplicates(http_receiver, tmp_path, make_alert):
    from servers import Response

    db = tmp_path / "outbox.db"
    url = http_receiver.url_for("/hook")
    n = 24
    with Outbox(db) as ob:
        ids = []
        for i in range(n):
            ev = AlertEvent(make_alert(rule=f"rule_{i}"))
            ob.enqueue(ev, {"hook": "pending"})
            ids.append(ev.id)
    http_receiver.default = Response(200, delay=0.02)  # keep both drainers busy at the same time
    procs = [
        subprocess.Popen([sys.executable, "-c", _DRAIN, url, str(db)], env=_env(), stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    counts = [int(p.communicate(timeout=120)[0].strip() or 0) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    got = [r.header("webhook-id") for r in http_receiver.wait_for_requests(n)]
    assert sorted(got) == sorted(ids)  # every event exactly once
    assert sum(counts) == n, counts
    with Outbox(db) as ob:
        assert {r.status for r in ob.rows()} == {"delivered"}
