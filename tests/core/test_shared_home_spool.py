"""Monitors sharing a home share its spool (keyed by sink target). Two of them replaying at
once (a check in one job, flush() in another) used to send every spooled report twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import collapse_monitor as cm


class Recorder:
    """A sink that is down until told otherwise, and slow once up (so replays overlap)."""

    name = "rec"

    def __init__(self, log: list[tuple[str, int]], lock: threading.Lock) -> None:
        self.log, self.lock, self.up = log, lock, False

    def emit(self, report: cm.Report, context=None) -> None:
        if not self.up:
            raise ConnectionError("receiver down")
        time.sleep(0.05)
        with self.lock:
            self.log.append((report.monitor, report.generation))


def test_two_monitors_replaying_one_spool_deliver_each_report_once(tmp_path: Path) -> None:
    log: list[tuple[str, int]] = []
    guard = threading.Lock()
    ref = cm.Reference(labels=[0, 1] * 30)
    monitors = []
    for name in ("a", "b"):
        sink = Recorder(log, guard)
        mon = cm.CollapseMonitor(name, reference=ref, sinks=[sink], home=tmp_path)
        for _ in range(3):
            assert mon.check(cm.Observation(predictions=[0, 1] * 30)).errors  # spooled
        monitors.append((mon, sink))
    for _, sink in monitors:
        sink.up = True
    threads = [threading.Thread(target=mon.flush) for mon, _ in monitors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(log) == [(m, g) for m in ("a", "b") for g in range(3)], sorted(log)  # each once


def test_an_unreadable_spool_file_is_reported_on_the_check(tmp_path: Path) -> None:
    """It was moved aside as .bad with only a log line: the report silently never arrived."""
    log: list[tuple[str, int]] = []
    sink = Recorder(log, threading.Lock())
    mon = cm.CollapseMonitor("c", reference=cm.Reference(labels=[0, 1] * 30), sinks=[sink], home=tmp_path)
    for _ in range(2):
        mon.check(cm.Observation(predictions=[0, 1] * 30))
    oldest = sorted((tmp_path / "spool").rglob("*.json"))[0]
    oldest.write_text(oldest.read_text()[:40])  # truncated by a crash
    sink.up = True
    report = mon.check(cm.Observation(predictions=[0, 1] * 30))
    assert any("is unreadable" in e and ".bad" in e for e in report.errors), report.errors
    assert sorted(log) == [("c", 1), ("c", 2)]
