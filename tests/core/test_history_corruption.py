"""A corrupt history must not stop monitoring for good: garbage bytes or a truncated file used
to fail every later check ("file is not a database" / "malformed"), and a bad row raised a
bare JSONDecodeError from every check."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import collapse_monitor as cm

HEALTHY = [0] * 970 + [1] * 30
COLLAPSED = [0] * 1000


def _monitor(home: Path) -> cm.CollapseMonitor:
    return cm.CollapseMonitor("h", reference=cm.Reference(labels=HEALTHY), sinks=[], home=home)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_history_is_moved_aside_and_checks_go_on(tmp_path: Path, damage: str) -> None:
    mon = _monitor(tmp_path)
    for _ in range(3):
        mon.check(cm.Observation(predictions=HEALTHY))
    db = tmp_path / "history.db"
    with sqlite3.connect(db) as con:  # fold the WAL in, so the file alone is the database
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if damage == "garbage":
        db.write_bytes(b"\x00garbage" * 500)
    else:
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])

    fresh = _monitor(tmp_path)  # a new process
    report = fresh.check(cm.Observation(predictions=HEALTHY))
    assert any("history.db was corrupt: moved aside to history.db.corrupt-" in n for n in report.notes), report.notes
    assert report.generation == 0 and report.baseline_generation == 0  # a new baseline
    assert list(tmp_path.glob("history.db.corrupt-*"))
    after = fresh.check(cm.Observation(predictions=COLLAPSED))
    assert after.generation == 1 and after.stage is not cm.Stage.HEALTHY
    assert not any("corrupt" in n for n in after.notes)  # said once


def test_an_unreadable_row_is_skipped_not_raised(tmp_path: Path) -> None:
    mon = _monitor(tmp_path)
    for _ in range(3):
        mon.check(cm.Observation(predictions=HEALTHY))
    with sqlite3.connect(tmp_path / "history.db") as con:
        con.execute("UPDATE checks SET report_json='{not json' WHERE generation=1")
        con.execute("UPDATE baselines SET metrics_json='{not json'")
    assert [r.generation for r in mon.history.reports("h")] == [0, 2]
    with pytest.raises(cm.CollapseMonitorError, match="the baseline of h cannot be read"):
        mon.history.baseline("h")


def test_a_home_removed_under_a_running_process_starts_a_new_store(tmp_path) -> None:
    """MLflow audit (2026-12-06, second): once the home was removed (a cleanup job, a remount),
    the schema was never created again and every later check of the process raised
    "no such table: checks" until it restarted (a `serve`, a notebook)."""
    import shutil

    import collapse_monitor as cm

    home = tmp_path / "home"
    mon = cm.CollapseMonitor("wiped", reference=cm.Reference(labels=[0, 1] * 20), sinks=[], home=home)
    assert mon.check(cm.Observation(predictions=[0, 1] * 20)).generation == 0
    shutil.rmtree(home)
    assert mon.check(cm.Observation(predictions=[0, 1] * 20)).generation == 0  # a new chain: a new baseline
    assert mon.check(cm.Observation(predictions=[0, 1] * 20)).generation == 1


def test_two_processes_that_found_it_corrupt_move_it_aside_once(tmp_path: Path, monkeypatch) -> None:
    """Stop 36 (the race the outbox had, found in review): a second process that had found
    history.db corrupt moved aside the fresh store the first had just started and written to.
    The move is decided under a lock, after a second look."""
    from collapse_monitor.history import HistoryStore

    (tmp_path / "history.db").write_bytes(b"\x00garbage" * 500)
    first = _monitor(tmp_path)
    first.check(cm.Observation(predictions=HEALTHY))  # moves it aside, starts a new store
    real_open = HistoryStore._open
    calls = {"n": 0}

    def stale_view(self):  # the second process's first look: from before the first one's move
        calls["n"] += 1
        if calls["n"] == 1:
            raise self._fail("opening", sqlite3.DatabaseError("file is not a database")) from sqlite3.DatabaseError(
                "file is not a database"
            )
        return real_open(self)

    monkeypatch.setattr(HistoryStore, "_open", stale_view)
    second = _monitor(tmp_path)
    assert [r.generation for r in second.reports()] == [0]  # the first one's check is there
    assert len(list(tmp_path.glob("history.db.corrupt-*"))) == 1
