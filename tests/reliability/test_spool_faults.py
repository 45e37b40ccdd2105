"""The spool directory unwritable or the disk full.

*Unwritable* (tests run as root, where ``chmod 0500`` blocks nothing: the spool path is a
regular FILE, so every ``mkdir`` under it fails with ``NotADirectoryError``): the check returns,
``report.errors`` says the report is held in memory, and the same process delivers it once the
sink is back - nothing is lost while the process lives.

*Full* (``RLIMIT_FSIZE`` in a child process with ``SIGXFSZ`` ignored, so every write that grows a
file fails with ``EFBIG`` - sqlite reports it as "disk I/O error"): the training function's
result passes through, the check records nothing half-way (sqlite transactions roll back), and the
next process - with space again - continues at the right generation and delivers what was
spooled before the disk filled up.
"""

from __future__ import annotations

import json

from reliability.relkit import Recorder, collapsed, healthy, reference, run_child, unique, watched_check

import collapse_monitor as cm


def test_unwritable_spool_keeps_reports_in_memory(tmp_path) -> None:
    (tmp_path / "spool").write_text("not a directory")
    sink = Recorder(fail=True)
    mon = cm.CollapseMonitor(unique("ro"), reference=reference(), sinks=[sink], home=tmp_path)
    for obs in (healthy(), collapsed()):
        report, _ = watched_check(mon, obs)
        assert report is not None
        assert any(e.startswith("recorder:") for e in report.errors)
        assert any(e.startswith("spool:") and "kept in memory" in e for e in report.errors), report.errors
    assert mon.spool.count("recorder") == 2

    sink.fail = False
    report, _ = watched_check(mon, healthy())
    assert report is not None and report.errors == ()
    assert sink.got == [0, 1, 2], "the held reports were delivered first, in order"
    assert mon.spool.count("recorder") == 0
    assert [r.generation for r in mon.reports()] == [0, 1, 2]


_FULL = """
import json, os, resource, signal, sys
import collapse_monitor as cm
from reliability.relkit import Recorder, collapsed, healthy, reference, watched_check

home, name, step = sys.argv[1], sys.argv[2], sys.argv[3]
sink = Recorder(fail=step != "recover")
mon = cm.CollapseMonitor(name, reference=reference(), sinks=[sink], home=home)
if step == "fill":
    mon.check(healthy())                       # generation 0, spooled (the sink is down)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))   # from now on: "disk full"
    report, seconds = watched_check(mon, collapsed())          # asserts the value passes through
    print(json.dumps({"report": report is not None, "error": type(mon.last_error).__name__,
                      "message": str(mon.last_error), "seconds": seconds}))
else:
    report = mon.check(collapsed())
    print(json.dumps({"generation": report.generation, "got": sink.got, "errors": list(report.errors),
                      "alerts": [(a.rule, a.status) for a in report.alerts], "spooled": mon.spool.count("recorder"),
                      "history": [r.generation for r in mon.reports()]}))
"""


def test_full_disk_then_space_again(tmp_path) -> None:
    name = unique("full")
    home = str(tmp_path / "home")
    filled = run_child(_FULL, home, name, "fill")
    assert filled.returncode == 0, filled.stderr[-3000:]
    out = json.loads(filled.stdout.strip().splitlines()[-1])
    assert out["report"] is False, out  # contained: no report, the training result passed through
    assert out["error"] == "CollapseMonitorError" and "history store" in out["message"], out  # typed, named
    assert "I/O" in out["message"] or "full" in out["message"].lower(), out

    again = run_child(_FULL, home, name, "recover")
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout.strip().splitlines()[-1])
    assert out["history"] == [0, 1], "no generation was lost or doubled by the full disk"
    assert out["generation"] == 1 and out["got"] == [0, 1] and out["spooled"] == 0
    assert out["alerts"] == [["early_collapse", "firing"]], "the alert the full disk swallowed fires now"


class _Rejecting:
    """A sink that rejects some generations for good and is down (transient) while ``fail``."""

    name = "rejecting"

    def __init__(self, poison: set[int], fail: bool = False) -> None:
        self.poison, self.fail, self.got = poison, fail, []

    def emit(self, report: cm.Report, context: object = None) -> None:
        from collapse_monitor.sinks.base import PermanentSinkError

        if report.generation in self.poison:
            raise PermanentSinkError(f"generation {report.generation} refused: token=s3cr3t-v4lue")
        if self.fail:
            raise ConnectionError("rejecting is down")
        self.got.append(report.generation)


def _spooled(spool: object, generations: list[int], name: str = "m") -> None:
    for g in generations:
        spool.put("rejecting", cm.Report(monitor=name, generation=g, stage=cm.Stage.HEALTHY, metrics={}))


def test_permanent_rejection_is_dead_lettered_and_the_rest_replayed_in_order(tmp_path, caplog) -> None:
    from collapse_monitor.sinks.base import Spool

    spool = Spool(tmp_path / "spool")
    _spooled(spool, [0, 1, 2, 3])
    sink = _Rejecting(poison={0, 2}, fail=True)
    done, errors = spool.replay(sink)  # 0 rejected for good, 1 down: the replay stops there
    assert (done, sink.got) == (0, [])
    assert "rejected for good" in errors[0] and "replay failed" in errors[1] and len(errors) == 2
    assert [p.name[21:27] for p in spool.pending("rejecting")] == ["000001", "000002", "000003"]
    sink.fail = False
    with caplog.at_level("WARNING", logger="collapse_monitor.sinks"):
        done, errors = spool.replay(sink)
    assert (done, sink.got) == (2, [1, 3]), "order kept; the rejected report no longer blocks"
    assert spool.count("rejecting") == 0 and len(errors) == 1 and "generation 2" in errors[0]
    letters = spool.dead_letters("rejecting")
    assert [json.loads(p.read_text())["report"]["generation"] for p in letters] == [0, 2]
    said = caplog.text + json.dumps(errors) + "".join(p.read_text() for p in letters)
    assert "s3cr3t-v4lue" not in said and "token=***" in said  # the reason is redacted
    assert "moved to dead letter" in caplog.text


def test_permanent_rejection_held_in_memory_is_dropped(tmp_path) -> None:
    (tmp_path / "spool").write_text("not a directory")
    sink = _Rejecting(poison={0}, fail=True)
    mon = cm.CollapseMonitor(unique("mem"), reference=reference(), sinks=[sink], home=tmp_path)
    r0, _ = watched_check(mon, healthy())  # rejected for good on the live emit, no spool dir: dropped
    assert r0 is not None and mon.spool.count("rejecting") == 0
    assert any("dropped (dead letter not writable)" in e for e in r0.errors), r0.errors
    r1, _ = watched_check(mon, collapsed())  # the sink is down: generation 1 is held in memory
    assert r1 is not None and mon.spool.count("rejecting") == 1
    sink.fail = False
    r2, _ = watched_check(mon, healthy())
    assert r2 is not None and r2.errors == () and sink.got == [1, 2]
    assert mon.spool.count("rejecting") == 0


def test_flush_on_a_home_whose_history_cannot_be_opened_does_not_raise(tmp_path, caplog) -> None:
    """A fault audit (2026-12-08): on a read-only or full home the watched check was contained
    (``last_error``), but ``flush()``, which a training script calls at its end to wait for the
    history charts, raised the history's CollapseMonitorError into it. (Here the history's
    file is a directory, which fails the same way without a read-only mount.)"""
    mon = cm.CollapseMonitor(unique("ro"), reference=reference(), sinks=[Recorder()], home=tmp_path)
    report, _ = watched_check(mon, healthy())
    assert report is not None
    for p in tmp_path.glob("history.db*"):
        p.unlink()
    (tmp_path / "history.db").mkdir()
    report, _ = watched_check(mon, collapsed())
    assert report is None and isinstance(mon.last_error, cm.CollapseMonitorError)
    with caplog.at_level("WARNING", logger="collapse_monitor"):
        assert mon.flush() == {"recorder": 0}
    assert any("flush could not replay the spool" in r.getMessage() for r in caplog.records)
