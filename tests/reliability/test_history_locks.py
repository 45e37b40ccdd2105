"""The history store's journal-mode switch waits out a lock sqlite's busy handler does not."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from collapse_monitor.history import _locked_retry


def test_locked_retry_waits_for_a_real_exclusive_lock(tmp_path) -> None:
    db = tmp_path / "h.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # no busy wait at timeout=0
        other.execute("PRAGMA journal_mode=WAL")
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    t0 = time.monotonic()
    mode = _locked_retry(lambda: other.execute("PRAGMA journal_mode=WAL").fetchone()[0], deadline=t0 + 30)
    assert mode == "wal" and time.monotonic() - t0 >= 0.25
    holder.close()
    other.close()


def test_locked_retry_gives_up_at_the_deadline_and_passes_other_errors(tmp_path) -> None:
    db = tmp_path / "h.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(db, timeout=0, isolation_level=None)
    t0 = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _locked_retry(lambda: other.execute("PRAGMA journal_mode=WAL"), deadline=t0 + 0.5)
    assert time.monotonic() - t0 < 5
    holder.execute("COMMIT")
    with pytest.raises(sqlite3.OperationalError, match="syntax"):  # not a lock: raised at once
        _locked_retry(lambda: other.execute("SELEC 1"), deadline=time.monotonic() + 30)
    holder.close()
    other.close()
