"""serve's own state and clock: a wrong-shaped serve_state.json, a check dated in the future,
an outbox that is corrupt or cannot be opened (audit 2026-12, B2/B3/B4)."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import collapse_monitor as cm
from collapse_monitor._service_config import MonitorSpec, ServeConfig, ServeSettings, load_serve_config
from collapse_monitor.cli import main
from collapse_monitor.service import STALE_RULE, Service

LABELS = np.array([0] * 30 + [1] * 20 + [2] * 10)
T = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _service(home: Path, clock: Clock, *, mon_clock: Clock | None = None) -> tuple[Service, cm.CollapseMonitor]:
    mon = cm.CollapseMonitor(
        "svc", reference=cm.Reference(labels=LABELS), sinks=[], home=home, clock=mon_clock or clock
    )
    cfg = ServeConfig(ServeSettings(), (MonitorSpec("svc", mon, expected_interval_seconds=60),), home)
    return Service(cfg, clock=clock, registry=CollectorRegistry()), mon


def _stale(svc: Service) -> float | None:
    return svc.registry.get_sample_value("collapse_monitor_serve_stale", {"monitor": "svc"})


# --- B4: serve_state.json of the wrong shape ------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        "null",
        '"svc"',
        '{"svc": 5}',
        '{"svc": []}',
        '{"svc": {"watching_since": "oops"}}',
        '{"svc": {"watching_since": NaN}}',
        '{"svc": {"watching_since": 1e400}}',
        '{"svc": {"watching_since": 1' + "0" * 400 + "}}",  # an int math.isfinite cannot take (stop 41)
        '{"svc": {"watching_since": 1800000000000.0}}',  # milliseconds: the year 59009 (stop 41)
        '{"svc": {"watching_since": true}}',
        '{"svc": {"stale_episode": 7, "last_checked_at": "x", "last_version": 3}}',
        "{not json",
        b"\xff\xfe\x00garbage",
    ],
)
def test_a_wrong_shaped_state_file_does_not_disable_the_dead_mans_switch(
    tmp_path: Path, content: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Audit B4: ``[]``, ``null``, ``{"svc": 5}`` or ``{"svc": {"watching_since": "oops"}}``
    failed every tick (AttributeError / TypeError) for good - set() hit the same error, so the
    file never healed - and the switch never fired."""
    state = tmp_path / "serve_state.json"
    if isinstance(content, bytes):
        state.write_bytes(content)
    else:
        state.write_text(content)
    clock = Clock()
    with caplog.at_level(logging.WARNING, logger="collapse_monitor.service"):
        svc, _ = _service(tmp_path, clock)
        assert svc.check_staleness() == [] and _stale(svc) == 0  # the switch starts watching now
    assert "serve_state.json" in caplog.text  # said, not silently dropped
    assert "staleness check failed" not in caplog.text
    clock.t += 61
    (alert,) = svc.check_staleness()
    assert (alert.rule, alert.status) == (STALE_RULE, "firing") and _stale(svc) == 1
    saved = json.loads(state.read_text())  # healed: a sane file was written over it
    assert isinstance(saved["svc"], dict) and saved["svc"]["watching_since"] == T
    assert saved["svc"]["stale_episode"] == "never"
    clock.t += 3600
    assert svc.check_staleness() == []  # one page per episode, as with a good file


def test_an_unusable_state_file_is_moved_aside_and_good_entries_are_kept(tmp_path: Path) -> None:
    (tmp_path / "serve_state.json").write_text("[1, 2]")
    svc, _ = _service(tmp_path, Clock())
    svc.check_staleness()
    (aside,) = tmp_path.glob("serve_state.json.corrupt-*")
    assert aside.read_text() == "[1, 2]"  # kept for a look, not rewritten
    # a bad entry is dropped, the others (and the good keys of a bad entry) stay
    (tmp_path / "serve_state.json").write_text(
        json.dumps({"svc": {"watching_since": "oops", "last_version": "models:/m/3"}, "other": {"x": 1}, "bad": 5})
    )
    svc, _ = _service(tmp_path, Clock())
    st = svc._state(svc.specs["svc"])
    assert st.get("svc", "watching_since") is None and st.get("svc", "last_version") == "models:/m/3"
    assert st.get("other", "x") == 1 and st.get("bad", "x") is None


# --- B2: a check dated in the future ----------------------------------------------------------------


def test_a_check_dated_in_the_future_is_counted_from_when_it_was_seen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Audit B2: a check dated a day ahead (the clock stepped back, or the training host's clock
    is ahead) had a negative age: the dead-man's switch could not fire for a day plus the
    expected interval. It now counts such a check from when serve first saw it."""
    clock = Clock()
    svc, mon = _service(tmp_path, clock, mon_clock=Clock(T + 86400))
    mon.check(cm.Observation(predictions=LABELS))
    with caplog.at_level(logging.WARNING, logger="collapse_monitor.service"):
        assert svc.check_staleness() == [] and _stale(svc) == 0
    assert "in the future" in caplog.text
    clock.t += 30
    assert svc.check_staleness() == []
    clock.t += 31  # 61 s after serve first saw it
    (alert,) = svc.check_staleness()
    assert (alert.rule, alert.status) == (STALE_RULE, "firing") and _stale(svc) == 1
    assert "no retrain checked for 1.0 min" in alert.summary
    # once the clock has caught up with the check's date, it does not un-stale and page again
    clock.t = T + 86400 + 10
    assert svc.check_staleness() == [] and _stale(svc) == 1


def test_a_watching_since_in_the_future_counts_from_now(tmp_path: Path) -> None:
    (tmp_path / "serve_state.json").write_text(json.dumps({"svc": {"watching_since": T + 86400}}))
    clock = Clock()
    svc, _ = _service(tmp_path, clock)
    assert svc.check_staleness() == []
    clock.t += 61
    (alert,) = svc.check_staleness()
    assert alert.status == "firing" and "last check: never" in alert.summary


def test_metrics_keep_the_newest_generation_after_the_clock_stepped_back(tmp_path: Path) -> None:
    """/metrics: serve exports the latest check by time each tick; after the clock stepped back
    that is an older generation, which must not replace the newer one the check exported."""
    mon_clock = Clock(T + 60)
    svc, mon = _service(tmp_path, Clock(T + 120), mon_clock=mon_clock)
    mon.check(cm.Observation(predictions=LABELS))  # generation 0 at T+60
    mon_clock.t = T - 3600  # the clock stepped back
    r1 = mon.check(cm.Observation(predictions=[0] * 60))
    svc._export(r1)  # what run_check does with its report
    gen = {"monitor": "svc"}
    assert svc.registry.get_sample_value("collapse_monitor_generation", gen) == 1
    svc.check_staleness()  # exports the latest by time: generation 0 (the baseline, dated later)
    assert svc.registry.get_sample_value("collapse_monitor_generation", gen) == 1
    assert svc.registry.get_sample_value("collapse_monitor_stage", gen) == r1.stage.level
    # a baseline checked now (the history started again) is shown, and stays shown
    mon_clock.t = T - 3000
    again = mon.check(cm.Observation(predictions=LABELS, generation=0))
    assert again.is_baseline
    svc._export(again, live=True)
    assert svc.registry.get_sample_value("collapse_monitor_generation", gen) == 0
    assert svc.registry.get_sample_value("collapse_monitor_last_check_timestamp_seconds", gen) == T - 3000
    svc.check_staleness()
    assert svc.registry.get_sample_value("collapse_monitor_last_check_timestamp_seconds", gen) == T - 3000


# --- B3: the alert outbox ----------------------------------------------------------------------------


def _config(d: Path, home: Path) -> Path:
    np.save(d / "labels.npy", LABELS)
    p = d / "serve.yaml"
    p.write_text(
        textwrap.dedent(
            f"""
            name: svc
            home: {home}
            reference: {{labels: labels.npy}}
            sinks: []
            alerts: [{{type: webhook, url: "http://127.0.0.1:9/hook"}}]
            expected_interval_seconds: 60
            serve: {{port: 19999}}
            """
        )
    )
    p.chmod(0o600)
    return p


def test_serve_moves_a_corrupt_outbox_aside_and_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Audit B3: garbage in <home>/outbox.db crashed `serve` with a traceback (DatabaseError:
    file is not a database), and no page went out until someone deleted the file."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "outbox.db").write_bytes(b"\x00garbage, not sqlite" * 300)
    with caplog.at_level(logging.ERROR, logger="collapse_monitor"):
        svc = Service(load_serve_config(_config(tmp_path, home)), clock=Clock())
    (aside,) = home.glob("outbox.db.corrupt-*")
    assert aside.read_bytes().startswith(b"\x00garbage") and aside.name in caplog.text
    outbox = svc.specs["svc"].monitor.dispatcher.outbox
    assert outbox.quarantined == aside and outbox.rows() == []


def test_serve_with_an_outbox_that_cannot_be_opened_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outbox that cannot be opened at all (a read-only home, a folder in its place) stops
    serve at start, with one line naming the path: it would otherwise run on without being
    able to page anyone, the dead-man's switch included."""
    home = tmp_path / "home"
    (home / "outbox.db").mkdir(parents=True)
    assert main(["serve", "--config", str(_config(tmp_path, home))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"alert outbox {home / 'outbox.db'} cannot be opened" in err and "home:" in err
    assert "serve does not start" in err


def test_serve_stops_cleanly_on_sighup(tmp_path: Path) -> None:
    """Service audit (stop 41): SIGHUP (a closed terminal, a supervisor's reload signal) killed
    serve at once, without the shutdown that releases the outbox leases and removes abandoned
    checks' model copies. It now stops as on SIGTERM: exit 0, a log line, the home lock freed."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    home = tmp_path / "home"
    cfg = _config(tmp_path, home)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "collapse_monitor.cli", "-v", "serve", "--config", str(cfg), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # up: /metrics answers
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "shutting down" in out and "Traceback" not in out
