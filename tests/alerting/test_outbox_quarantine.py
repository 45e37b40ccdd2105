"""A corrupt outbox.db is moved aside and replaced; one that cannot be opened is a clear error
(audit B3). Every check used to record ``alerting: DatabaseError: file is not a database`` and
no page went out until someone deleted the file by hand; ``serve`` died with a traceback."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

import collapse_monitor as cm
from collapse_monitor.alerting import Outbox
from collapse_monitor.errors import AlertDeliveryError

HEALTHY = [0] * 970 + [1] * 30
COLLAPSED = [0] * 1000


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[sqlite3.Connection]:
    """Every sqlite connection opened from now on."""
    made: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def connect(*args, **kwargs):
        con = real(*args, **kwargs)
        made.append(con)
        return con

    monkeypatch.setattr(sqlite3, "connect", connect)
    return made


def _closed(con: sqlite3.Connection) -> bool:
    try:
        con.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_outbox_is_moved_aside_and_a_new_one_started(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture, connections: list[sqlite3.Connection]
) -> None:
    path = tmp_path / "outbox.db"
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 200)
    else:  # a disk that filled up mid-write, a copy cut short: "database disk image is malformed"
        with Outbox(path) as ob:
            for i in range(200):
                ob.enqueue(_event(i), {"oncall": "pending"})
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size // 2)
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        connections.clear()
    original = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="collapse_monitor.alerting"):
        ob = Outbox(path)
    (aside,) = tmp_path.glob("outbox.db.corrupt-*")
    assert aside.read_bytes() == original  # kept for a look, not deleted
    assert ob.quarantined == aside
    assert f"alert outbox {path} is corrupt" in caplog.text and aside.name in caplog.text
    assert _closed(connections[0])  # the connection to the corrupt file was closed
    ob.enqueue(_event(1), {"oncall": "pending"})  # the new outbox works
    assert [r.status for r in ob.rows()] == ["pending"]
    ob.close()
    assert Outbox(path).quarantined is None  # a healthy file is left alone


def test_an_outbox_that_cannot_be_opened_is_a_clear_error(
    tmp_path: Path, connections: list[sqlite3.Connection]
) -> None:
    path = tmp_path / "outbox.db"
    path.mkdir()  # root ignores read-only modes; a folder in the file's place cannot be opened by anyone
    with pytest.raises(AlertDeliveryError) as err:
        Outbox(path)
    msg = str(err.value)
    assert f"alert outbox {path} cannot be opened" in msg and "unable to open database file" in msg
    assert all(_closed(c) for c in connections)
    assert path.is_dir() and not list(tmp_path.glob("outbox.db.corrupt-*"))  # not taken for corrupt
    # a parent that cannot be created (a file in the way)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AlertDeliveryError, match=f"alert outbox {blocker / 'outbox.db'} cannot be opened"):
        Outbox(blocker / "outbox.db")


def test_a_check_pages_through_a_corrupt_outbox(http_receiver, tmp_path: Path) -> None:
    """The library path: the check after the damage queues and delivers its page (it used to
    record ``alerting: DatabaseError`` on every check, for good)."""
    hook = cm.Webhook(http_receiver.url_for("/hook"), name="oncall")

    def monitor() -> cm.CollapseMonitor:  # one process per check, as batch retrain jobs run
        return cm.CollapseMonitor(
            "pager", reference=cm.Reference(labels=HEALTHY), sinks=[], home=tmp_path, alerts=[hook]
        )

    monitor().check(cm.Observation(predictions=HEALTHY))
    for f in tmp_path.glob("outbox.db*"):
        f.unlink()
    (tmp_path / "outbox.db").write_bytes(b"\x00" * 100 + b"not sqlite" * 100)
    fired = monitor().check(cm.Observation(predictions=COLLAPSED))
    assert [(a.rule, a.status) for a in fired.alerts] == [("early_collapse", "firing")]
    assert not [e for e in fired.errors if e.startswith("alerting:")], fired.errors
    (page,) = http_receiver.requests
    assert page.json()["type"] == "collapse_monitor.alert.firing"
    assert len(list(tmp_path.glob("outbox.db.corrupt-*"))) == 1


def _event(i: int):
    from collapse_monitor.alerting.base import AlertEvent

    alert = cm.Alert(
        monitor="m", rule="early_collapse", status="firing", severity="warning",
        stage=cm.Stage.EARLY_COLLAPSE, generation=i, summary=f"early collapse at generation {i}",
    )  # fmt: skip
    return AlertEvent(alert)


def test_two_processes_that_found_it_corrupt_move_it_aside_once(tmp_path: Path, monkeypatch) -> None:
    """Review of stop 36: a second process that had found the outbox corrupt moved aside the
    fresh outbox the first one had just started (and was writing to): its pages were stranded
    in a file nobody reads. The move is decided under a lock, after a second look."""
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database" * 200)
    first = Outbox(path)  # moves it aside, starts a fresh one
    first.enqueue(_event(1), {"oncall": "pending"})
    real_setup = Outbox._setup
    calls = {"n": 0}

    def stale_view(self):  # the second process's first look: from before the first one's move
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.DatabaseError("file is not a database")
        return real_setup(self)

    monkeypatch.setattr(Outbox, "_setup", stale_view)
    second = Outbox(path)
    assert second.quarantined is None
    assert len(list(tmp_path.glob("outbox.db.corrupt-*"))) == 1
    assert [json.loads(r.payload)["alert"]["generation"] for r in second.pending()] == [1]  # the first one's page
    first.close(), second.close()
