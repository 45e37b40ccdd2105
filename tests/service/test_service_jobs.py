"""The service's jobs in process, with an injected clock and a real HTTP receiver: the dead-man's
switch pages once per staleness episode and resolves, redelivery replays the spool and the
outbox, /metrics carries the monitors' and the service's own series."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests

import collapse_monitor as cm
from collapse_monitor._service_config import MonitorSpec, ServeConfig, ServeSettings
from collapse_monitor.service import STALE_RULE, Service

LABELS = np.array([0] * 30 + [1] * 20 + [2] * 10)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Flaky:
    """A sink that is down until told otherwise."""

    name = "flaky"

    def __init__(self) -> None:
        self.up = False
        self.got: list[int] = []

    def emit(self, report, context=None):
        if not self.up:
            raise ConnectionError("sink down")
        self.got.append(report.generation)


def _events(receiver) -> list[tuple[str, str, str]]:
    out = []
    for r in receiver.requests:
        a = json.loads(r.body)["data"]["alert"]
        out.append((a["monitor"], a["rule"], a["status"]))
    return out


def test_dead_mans_switch_once_per_episode_and_resolve(tmp_path: Path, http_receiver) -> None:
    clock = Clock()
    hook = cm.Webhook(http_receiver.url_for("/hook"))
    mon = cm.CollapseMonitor(
        "nightly", reference=cm.Reference(labels=LABELS), sinks=[], alerts=[hook], home=tmp_path, clock=clock
    )
    quiet = cm.CollapseMonitor("quiet", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path)
    cfg = ServeConfig(
        ServeSettings(),
        (MonitorSpec("nightly", mon, expected_interval_seconds=3600), MonitorSpec("quiet", quiet)),
        tmp_path,
    )
    svc = Service(cfg, clock=clock)

    def stale() -> float | None:
        return svc.registry.get_sample_value("collapse_monitor_serve_stale", {"monitor": "nightly"})

    assert svc.check_staleness() == [] and stale() == 0  # never reported: the clock starts now
    clock.t += 3601
    (alert,) = svc.check_staleness()
    assert alert.rule == STALE_RULE and alert.severity == "warning" and alert.status == "firing"
    assert "no retrain checked for 1.0 h" in alert.summary and "last check: never" in alert.summary
    assert stale() == 1
    http_receiver.wait_for_requests(1)
    clock.t += 7200
    assert svc.check_staleness() == []  # same episode: no second page
    assert _events(http_receiver) == [("nightly", STALE_RULE, "firing")]

    mon.check(cm.Observation(predictions=LABELS))  # a retrain arrives: resolved
    (res,) = svc.check_staleness()
    assert res.status == "resolved" and stale() == 0
    http_receiver.wait_for_requests(2)
    assert svc.registry.get_sample_value("collapse_monitor_generation", {"monitor": "nightly"}) == 0

    clock.t += 3599
    assert svc.check_staleness() == []
    clock.t += 2  # a new episode: a new page
    assert [a.status for a in svc.check_staleness()] == ["firing"]
    http_receiver.wait_for_requests(3)
    assert _events(http_receiver) == [("nightly", STALE_RULE, s) for s in ("firing", "resolved", "firing")]

    # a restarted service remembers the episode: no duplicate page
    svc2 = Service(cfg, clock=clock)
    assert svc2.check_staleness() == []
    assert svc2.registry.get_sample_value("collapse_monitor_serve_stale", {"monitor": "nightly"}) == 1


def test_dead_mans_switch_page_survives_a_failed_enqueue_and_a_crash_before_its_record(
    tmp_path: Path, http_receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The episode is recorded only after its alert is in the outbox, under an id fixed by the
    episode. A failed enqueue ("database is locked") is retried at the next run; a crash after
    the enqueue and before the record re-queues the same id, which adds nothing: one page.
    (The episode used to be recorded first: one failed enqueue lost the page for good.)"""
    import sqlite3

    from collapse_monitor.service import _StateFile

    clock = Clock()
    hook = cm.Webhook(http_receiver.url_for("/hook"))
    mon = cm.CollapseMonitor(
        "nightly", reference=cm.Reference(labels=LABELS), sinks=[], alerts=[hook], home=tmp_path, clock=clock
    )
    cfg = ServeConfig(ServeSettings(), (MonitorSpec("nightly", mon, expected_interval_seconds=3600),), tmp_path)
    svc = Service(cfg, clock=clock)
    assert svc.check_staleness() == []
    clock.t += 3601

    outbox = mon.dispatcher.outbox
    real_enqueue = outbox.enqueue
    calls = {"n": 0}

    def locked_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database is locked")
        return real_enqueue(*args, **kwargs)

    monkeypatch.setattr(outbox, "enqueue", locked_once)
    assert svc.check_staleness() == []  # logged, not recorded
    assert outbox.rows() == [] and http_receiver.requests == []

    # the next run queues it; then the record fails as if the process died right there
    real_set = _StateFile.set

    def die_on_record(self, monitor, **values):
        if "stale_episode" in values:
            raise OSError("killed")
        return real_set(self, monitor, **values)

    monkeypatch.setattr(_StateFile, "set", die_on_record)
    assert svc.check_staleness() == []
    http_receiver.wait_for_requests(1)
    monkeypatch.setattr(_StateFile, "set", real_set)

    # a restarted service re-queues the same event id: no second page, and now it is recorded
    svc2 = Service(cfg, clock=clock)
    (alert,) = svc2.check_staleness()
    assert alert.status == "firing"
    assert svc2.check_staleness() == []
    time.sleep(0.3)
    assert _events(http_receiver) == [("nightly", STALE_RULE, "firing")]
    assert len(outbox.rows()) == 1


def test_flush_replays_spool_and_outbox(tmp_path: Path, http_receiver) -> None:
    sink = Flaky()
    http_receiver.respond(503, 503, 503)
    hook = cm.Webhook(http_receiver.url_for("/hook"))
    mon = cm.CollapseMonitor(
        "chain",
        reference=cm.Reference(labels=LABELS),
        sinks=[sink],
        alerts=[hook],
        home=tmp_path,
        alert_budget_seconds=0.5,
    )
    svc = Service(ServeConfig(ServeSettings(alert_budget_seconds=2), (MonitorSpec("chain", mon),), tmp_path))
    mon.check(cm.Observation(predictions=LABELS))
    forgetful = LABELS.copy()
    forgetful[LABELS == 2] = 0
    rep = mon.check(cm.Observation(predictions=forgetful))
    assert rep.stage is not cm.Stage.HEALTHY and rep.alerts  # an alert that could not be delivered yet
    assert mon.spool.count("flaky") == 2

    svc.flush()
    assert svc.registry.get_sample_value("collapse_monitor_serve_spool_pending", {"monitor": "chain"}) == 2
    sink.up = True
    http_receiver.respond(200)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the outbox backs off between attempts: flush rounds until due
        svc.flush()
        if not mon.dispatcher.pending():
            break
        time.sleep(0.2)
    assert sink.got == [0, 1] and mon.spool.count("flaky") == 0
    assert svc.registry.get_sample_value("collapse_monitor_serve_spool_pending", {"monitor": "chain"}) == 0
    assert svc.registry.get_sample_value("collapse_monitor_serve_outbox_pending", {"monitor": "chain"}) == 0
    assert ("chain", "firing") in {(m, s) for m, _, s in _events(http_receiver)}


def test_metrics_endpoint_and_stop(tmp_path: Path) -> None:
    from servers import free_port

    mon = cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path)
    mon.check(cm.Observation(predictions=LABELS))
    port = free_port()
    svc = Service(
        ServeConfig(ServeSettings(port=port), (MonitorSpec("m", mon, expected_interval_seconds=60),), tmp_path)
    )
    svc.start()
    try:
        assert svc.metrics_url == f"http://127.0.0.1:{port}/metrics"
        s = requests.Session()
        s.trust_env = False
        for _ in range(50):  # the staleness job runs at start and exports the latest report
            text = s.get(svc.metrics_url, timeout=5).text
            if 'collapse_monitor_stage{monitor="m"}' in text:
                break
            time.sleep(0.1)
        assert "collapse_monitor_serve_up 1.0" in text
        assert 'collapse_monitor_stage{monitor="m"} 0.0' in text
        assert 'collapse_monitor_serve_expected_interval_seconds{monitor="m"} 60.0' in text
        # every outcome counted from 0, so increase() sees the first error (the rule needs 3)
        for outcome in ("ok", "skipped", "error"):
            assert f'collapse_monitor_serve_checks_total{{monitor="m",outcome="{outcome}"}} 0.0' in text, text
        assert 'collapse_monitor_serve_skipped_ticks_total{task="flush"} 0.0' in text
        assert 'collapse_monitor_serve_last_success_timestamp_seconds{monitor="m",task="staleness"}' in text
    finally:
        assert svc.stop(timeout=3)
    with pytest.raises(requests.ConnectionError):
        s.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_hung_tracking_server_does_not_hold_the_dead_mans_switch(tmp_path: Path, http_receiver) -> None:
    """Monitors are judged from their latest check; one whose sink reads it back from a tracking
    server that hangs must not delay the page of a monitor that only has its local history."""
    import threading

    release = threading.Event()

    class Hung:
        name = "hung"

        def emit(self, report, context=None):
            return None

        def latest(self, monitor):
            release.wait(10)
            return None

    clock = Clock()
    hook = cm.Webhook(http_receiver.url_for("/hook"))
    remote = cm.CollapseMonitor("remote", reference=cm.Reference(labels=LABELS), sinks=[Hung()], home=tmp_path / "r")
    local = cm.CollapseMonitor(
        "local", reference=cm.Reference(labels=LABELS), sinks=[], alerts=[hook], home=tmp_path / "l", clock=clock
    )
    cfg = ServeConfig(
        ServeSettings(),
        (
            MonitorSpec("remote", remote, expected_interval_seconds=3600),
            MonitorSpec("local", local, expected_interval_seconds=3600),
        ),
        tmp_path,
    )
    svc = Service(cfg, clock=clock)
    release.set()
    svc.check_staleness()  # the clock starts for both
    release.clear()
    clock.t += 3601
    done = threading.Thread(target=svc.check_staleness)
    done.start()
    try:
        http_receiver.wait_for_requests(1, timeout=5)  # paged while remote's read still hangs
        assert done.is_alive()
        assert _events(http_receiver) == [("local", STALE_RULE, "firing")]
    finally:
        release.set()
        done.join(15)


def test_stop_releases_the_outbox_leases_of_abandoned_deliveries(tmp_path: Path) -> None:
    """A delivery still in flight when the service stops is abandoned with the process; its
    outbox lease is released so a replacement process retries it at once, not after the lease."""
    hook = cm.Webhook("http://127.0.0.1:9/hook", name="hook")
    mon = cm.CollapseMonitor("nightly", reference=cm.Reference(labels=LABELS), sinks=[], alerts=[hook], home=tmp_path)
    svc = Service(ServeConfig(ServeSettings(), (MonitorSpec("nightly", mon),), tmp_path))
    outbox = mon.dispatcher.outbox
    from collapse_monitor.alerting.dispatcher import make_test_alert

    mon.dispatcher.persist([make_test_alert("nightly")])
    row = outbox.claim(["hook"], lease_seconds=600)  # as a delivery in flight holds it
    assert row is not None and outbox.claim(["hook"]) is None  # leased: nobody else may take it
    svc.stop(timeout=0)
    (after,) = outbox.rows()
    assert after.status == "pending" and after.lease_until is None
    other = cm.alerting.Outbox(outbox.path)  # a replacement process takes it now
    assert other.claim(["hook"]) is not None
    other.close()
