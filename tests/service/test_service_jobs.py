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
        done = 'collapse_monitor_serve_last_success_timestamp_seconds{monitor="m",task="staleness"}'
        for _ in range(100):  # the staleness job runs at start, exports the latest report, then records success
            text = s.get(svc.metrics_url, timeout=5).text
            if 'collapse_monitor_stage{monitor="m"}' in text and done in text:
                break
            time.sleep(0.1)
        assert "collapse_monitor_serve_up 1.0" in text
        assert 'collapse_monitor_stage{monitor="m"} 0.0' in text
        assert 'collapse_monitor_serve_expected_interval_seconds{monitor="m"} 60.0' in text
        # every outcome counted from 0, so increase() sees the first error (the rule needs 3)
        for outcome in ("ok", "skipped", "error"):
            assert f'collapse_monitor_serve_checks_total{{monitor="m",outcome="{outcome}"}} 0.0' in text, text
        assert 'collapse_monitor_serve_skipped_ticks_total{task="flush"} 0.0' in text
        assert done in text
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


def test_a_hung_read_does_not_make_the_switch_skip_the_local_monitors_next_ticks(tmp_path: Path) -> None:
    """A serve audit (2026-12-08): each run of the switch waited for every monitor's read, so
    with a hung tracking server (11 s a read) on a 1 s interval the runs lasted 11 s, the ticks
    between were skipped, and a local monitor's page came 8 s late. A run now waits for remote
    reads until 0.8 of its interval, and a read still going is judged by a later run."""
    import threading

    release = threading.Event()
    reads: list[float] = []

    class Hung:
        name = "hung"

        def emit(self, report, context=None):
            return None

        def latest(self, monitor, by="generation"):
            reads.append(time.monotonic())
            release.wait(30)
            return None

    clock = Clock()
    remote = cm.CollapseMonitor("remote", reference=cm.Reference(labels=LABELS), sinks=[Hung()], home=tmp_path / "r")
    local = cm.CollapseMonitor("local", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path / "l")
    local.check(cm.Observation(predictions=LABELS))
    cfg = ServeConfig(
        ServeSettings(staleness_check_interval_seconds=1.0),
        (
            MonitorSpec("remote", remote, expected_interval_seconds=3600),
            MonitorSpec("local", local, expected_interval_seconds=3600),
        ),
        tmp_path,
    )
    svc = Service(cfg, clock=clock)
    try:
        for tick in (1.0, 2.0):
            clock.t += 1
            t0 = time.monotonic()
            svc.check_staleness()
            assert time.monotonic() - t0 < 5, "the run waited for the hung read"
            assert (
                svc.registry.get_sample_value(
                    "collapse_monitor_serve_last_success_timestamp_seconds", {"monitor": "local", "task": "staleness"}
                )
                == clock.t
            )
            last_remote = svc.registry.get_sample_value(
                "collapse_monitor_serve_last_success_timestamp_seconds", {"monitor": "remote", "task": "staleness"}
            )
            assert last_remote is None, tick
        assert len(reads) == 1  # one read at a time: the second run did not start another
        release.set()
        for _ in range(50):  # the read ends; the next run judges it
            if svc._reads["remote"].done():
                break
            time.sleep(0.1)
        clock.t += 1
        svc.check_staleness()
        assert (
            svc.registry.get_sample_value(
                "collapse_monitor_serve_last_success_timestamp_seconds", {"monitor": "remote", "task": "staleness"}
            )
            == clock.t
        )
    finally:
        release.set()
        svc.stop(timeout=1)


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


def test_one_failed_read_of_the_tracking_server_does_not_page_the_dead_mans_switch(
    tmp_path: Path, http_receiver
) -> None:
    """Serve audit (2026-12-06): training jobs check elsewhere and serve reads their newest
    check back from MLflow; one failed read made it "never reported", the switch paged, and the
    next tick resolved it. The last check read stands in; with none, the switch waits, but not
    for longer than the expected interval."""

    class Remote:
        name = "mlflow"

        def __init__(self) -> None:
            self.report = None
            self.down = False

        def emit(self, report, context=None):
            return None

        def latest(self, monitor, by="time"):
            if self.down:
                raise ConnectionError("tracking server restarting")
            return self.report

    clock = Clock()
    remote = Remote()
    hook = cm.Webhook(http_receiver.url_for("/hook"))
    mon = cm.CollapseMonitor(
        "nightly", reference=cm.Reference(labels=LABELS), sinks=[remote], alerts=[hook], home=tmp_path, clock=clock
    )
    other = cm.CollapseMonitor(
        "elsewhere", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path / "o", clock=clock
    )
    cfg = ServeConfig(ServeSettings(), (MonitorSpec("nightly", mon, expected_interval_seconds=4 * 86400),), tmp_path)
    svc = Service(cfg, clock=clock)
    assert svc.check_staleness() == []  # watching from day 0
    clock.t += 3 * 86400
    other.check(cm.Observation(predictions=LABELS))  # a training job elsewhere checks on day 3
    remote.report = other.reports()[-1]
    assert svc.check_staleness() == []
    remote.down = True  # a tick while the tracking server restarts: the check read before stands
    clock.t += 86400 + 60  # day 4: 4 days since watching, 1 day since the check
    assert svc.check_staleness() == []

    fresh = Service(cfg, clock=clock)  # a restarted serve that never read it: the switch waits
    assert fresh.check_staleness() == []
    clock.t += 4 * 86400  # ... but not for good: unreadable for longer than the expected interval
    (page,) = fresh.check_staleness()
    assert page.status == "firing" and page.rule == STALE_RULE


def test_a_stale_page_resolves_when_the_expected_interval_is_raised(tmp_path: Path, http_receiver) -> None:
    """Serve audit (2026-12-06): a page fired under a 1 h interval never resolved after the
    interval was raised to a day (or removed): the resolve needed a new check."""
    clock = Clock()
    hook = cm.Webhook(http_receiver.url_for("/hook"))
    mon = cm.CollapseMonitor(
        "nightly", reference=cm.Reference(labels=LABELS), sinks=[], alerts=[hook], home=tmp_path, clock=clock
    )
    mon.check(cm.Observation(predictions=LABELS))

    def service(expected: float | None) -> Service:
        return Service(
            ServeConfig(ServeSettings(), (MonitorSpec("nightly", mon, expected_interval_seconds=expected),), tmp_path),
            clock=clock,
        )

    clock.t += 7200
    assert [a.status for a in service(3600).check_staleness()] == ["firing"]
    (res,) = service(86400).check_staleness()
    assert res.status == "resolved" and "expected interval changed" in res.summary
    assert service(86400).check_staleness() == []
    assert [a.status for a in service(3600).check_staleness()] == ["firing"]  # back to 1 h: overdue again
    (res,) = service(None).check_staleness()  # the switch removed: its open page resolves
    assert res.status == "resolved"
    assert service(None).check_staleness() == []


def test_slow_checks_do_not_starve_redelivery_and_the_dead_mans_switch(tmp_path: Path) -> None:
    """Serve audit (2026-12-06): checks, redelivery and the dead-man's switch shared one worker
    pool; while slow checks held every worker, the other two queued, ran late or were dropped as
    misfired. They have workers of their own now."""
    import threading

    from collapse_monitor._service_config import ScheduleSpec

    mons = [
        MonitorSpec(
            f"slow{i}",
            cm.CollapseMonitor(f"slow{i}", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path / f"h{i}"),
            schedule=ScheduleSpec(interval_seconds=1, run_at_start=True),
            expected_interval_seconds=3600,
        )
        for i in range(2)
    ]
    settings = ServeSettings(
        port=0, flush_interval_seconds=1, staleness_check_interval_seconds=1, max_workers=2, shutdown_timeout_seconds=1
    )
    svc = Service(ServeConfig(settings, tuple(mons), tmp_path))
    release = threading.Event()
    svc.run_check = lambda name: release.wait(30)  # a model download that takes its time
    svc.start(http=False)
    try:
        deadline = time.monotonic() + 10
        done = lambda: all(  # noqa: E731
            svc.registry.get_sample_value(
                "collapse_monitor_serve_last_success_timestamp_seconds", {"monitor": m.name, "task": task}
            )
            for m in mons
            for task in ("flush", "staleness")
        )
        while not done() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done(), "redelivery and the dead-man's switch did not run while the checks held the workers"
    finally:
        release.set()
        svc.stop(timeout=5)


def test_a_token_in_the_tracking_uri_path_stays_out_of_the_check_failure_log(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """Serve audit (2026-12-06): the URL was masked, but urllib3 repeats the request path on
    its own ("Max retries exceeded with url: /<token>/api/2.0/..."), and the token was logged."""
    import logging
    import socket

    from collapse_monitor._service_config import ModelSpec, ProbeSpec

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "S3CRETtokenABCDEFGHIJ0123456789"
    mon = cm.CollapseMonitor("tok", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path)
    spec = MonitorSpec(
        "tok",
        mon,
        model=ModelSpec("digits", tracking_uri=f"http://127.0.0.1:{port}/{token}"),
        probe=ProbeSpec(inputs=np.zeros((LABELS.size, 4), dtype=np.float32)),
    )
    svc = Service(ServeConfig(ServeSettings(), (spec,), tmp_path))
    with caplog.at_level(logging.ERROR, logger="collapse_monitor"):
        assert svc.run_check("tok") is None
    text = caplog.text
    assert "scheduled check failed" in text and token not in text, text[-2000:]


def _bare_service(tmp_path: Path, clock) -> Service:
    mon = cm.CollapseMonitor("svc", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path / "home")
    return Service(ServeConfig(ServeSettings(), (MonitorSpec("svc", mon),), tmp_path), clock=clock)


def test_a_backoff_is_over_when_the_clock_steps_back(tmp_path: Path) -> None:
    """Service audit (stop 41): the retry deadline was wall-clock time; after the clock stepped
    back an hour, a failed version (or registry) was not tried again for that hour, every tick
    counted as skipped (so the failing-checks rule stayed quiet too)."""
    from collapse_monitor.service import _REGISTRY

    clock = Clock()
    svc = _bare_service(tmp_path, clock)
    svc._failures["svc"] = (_REGISTRY, 1, clock.t + 30, 30.0)
    assert svc._backing_off("svc", _REGISTRY)  # within its 30 s
    clock.t += 31
    assert not svc._backing_off("svc", _REGISTRY)  # run out
    clock.t -= 3600  # NTP, a resumed VM: the deadline is now an hour and 30 s ahead
    assert not svc._backing_off("svc", _REGISTRY)


def test_a_pinned_version_not_registered_yet_is_no_version_yet(tmp_path: Path) -> None:
    """Service audit (stop 41): `version: N` not registered yet raised RESOURCE_DOES_NOT_EXIST,
    counted as an error and logged as a registry outage, where the README says such a model is
    skipped (as an alias not assigned yet is)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from collapse_monitor._service_config import ModelSpec
    from collapse_monitor._service_model import resolve_version

    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("digits")
    assert resolve_version(ModelSpec("digits", version=3, tracking_uri=uri)) is None
    assert resolve_version(ModelSpec("ghost", version=1, tracking_uri=uri)) is None
    with pytest.raises(mlflow.exceptions.MlflowException):  # other errors still raise
        resolve_version(ModelSpec("digits", version=3, tracking_uri="http://127.0.0.1:9"))


def test_model_copies_do_not_outlive_the_service(tmp_path: Path) -> None:
    """Service audit (stop 41): a check's model copy was a /tmp folder removed when the probe
    ran; a shutdown that abandons the check (os._exit) or a kill left it there for good. The
    copies are now in <home>/models-tmp: stop() removes those of abandoned checks and start()
    what a killed service left."""
    svc = _bare_service(tmp_path, Clock())
    left = tmp_path / "home" / "models-tmp" / "model-killed"
    left.mkdir(parents=True)
    (left / "MLmodel").write_text("x")
    svc.start(http=False)
    try:
        assert not (tmp_path / "home" / "models-tmp").exists()  # a killed service's copy
        inflight = tmp_path / "home" / "models-tmp" / "model-inflight"
        inflight.mkdir(parents=True)
        svc._model_dirs.add(str(inflight))
        svc._running += 1  # a check that does not end
    finally:
        clean = svc.stop(timeout=0.2)
    assert not clean and not inflight.exists()


@pytest.mark.parametrize("key", ["interval_seconds"])
def test_job_intervals_under_a_second_are_refused(key: str) -> None:
    from collapse_monitor._service_config import parse_schedule, parse_settings

    with pytest.raises(cm.ConfigError, match="at least 1 seconds"):
        parse_schedule({key: 1e-7}, "monitors[0].schedule")
    with pytest.raises(cm.ConfigError, match=r"serve\.staleness_check_interval_seconds"):
        parse_settings({"staleness_check_interval_seconds": 1e-6})
    assert parse_schedule({key: 1}, "schedule").trigger().interval.total_seconds() == 1


def test_the_dead_mans_switch_leaves_a_running_checks_report_to_that_check(tmp_path: Path) -> None:
    """A scheduled check writes its report to the history, then sets the model-version gauge
    and exports the report. The dead-man's switch, reading the history meanwhile, exported it
    first, so /metrics showed the new generation without its version (a flaky serve test).
    While a scheduled check of the monitor runs the switch leaves the export to it."""
    mon = cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path)
    mon.check(cm.Observation(predictions=LABELS))
    svc = Service(ServeConfig(ServeSettings(), (MonitorSpec("m", mon, expected_interval_seconds=3600),), tmp_path))

    def generation() -> float | None:
        return svc.registry.get_sample_value("collapse_monitor_generation", {"monitor": "m"})

    svc._checking.add("m")  # a scheduled check of "m" is running
    svc.check_staleness()
    assert generation() is None
    svc._checking.discard("m")
    with svc._locks["m"]:  # a flush (which holds the lock too) does not hold the export back
        svc.check_staleness()
    assert generation() == 0


def test_metrics_url_of_an_ipv6_host_has_brackets(tmp_path: Path) -> None:
    """A serve audit (2026-12-08): ``--host ::1`` printed ``http://::1:<port>/metrics``, which
    is no URL; the endpoint itself served on ``[::1]``."""
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    from servers import free_port

    mon = cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path)
    port = free_port()
    svc = Service(
        ServeConfig(
            ServeSettings(port=port, host="::1"), (MonitorSpec("m", mon, expected_interval_seconds=60),), tmp_path
        )
    )
    svc.start()
    try:
        assert svc.metrics_url == f"http://[::1]:{port}/metrics"
        s = requests.Session()
        s.trust_env = False
        assert s.get(svc.metrics_url, timeout=5).status_code == 200
    finally:
        svc.stop()
