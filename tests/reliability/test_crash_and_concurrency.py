"""SIGKILL in the middle of a check, and four processes checking one monitor at once.

Kill points (a child process is SIGKILLed there while checking generation 1, which fires
``early_collapse``; the next process then checks again):

``measure``         while the metrics are computed: nothing was written
``baselines``       right after a write to the ``baselines`` table of ``history.db`` commits
                    (the child checks generation 0 here: only the baseline's own check writes
                    that table; the next process checks generation 1)
``alert_state``     right after a write to the ``alert_state`` table commits
``checks``          right after the report row (table ``checks``) commits, before any sink or
                    channel saw the report
``sink``            inside the live MLflow emit
``outbox``          right after the alert events were committed to the outbox

Afterwards: the history holds each generation exactly once with no gap and one baseline;
MLflow holds exactly one FINISHED run per generation in the history (the killed check's report
included when it was committed); the webhook got the ``early_collapse`` firing exactly once
per idempotency key, and nothing is left in the spool or the outbox.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections import Counter

import pytest
from reliability.relkit import collapsed, healthy, mlflow_runs, reference, run_child, start_child, unique

import collapse_monitor as cm
from collapse_monitor.alerting import Outbox

_CHILD = """
import contextlib, json, os, signal, sys
import collapse_monitor as cm
from collapse_monitor.history import HistoryStore
from reliability.relkit import collapsed, healthy, reference

home, name, mlflow_url, hook_url, kill_at = sys.argv[1:6]

def die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)

if kill_at == "measure":
    import collapse_monitor.metrics.engine as engine
    engine.compute_panel = die
elif kill_at in ("baselines", "alert_state", "checks"):
    original = HistoryStore._tx

    @contextlib.contextmanager
    def tx(self):
        seen = []
        with original(self) as con:
            class Spy:
                def execute(self, sql, *a):
                    seen.append(sql)
                    return con.execute(sql, *a)
                def executemany(self, sql, *a):
                    seen.append(sql)
                    return con.executemany(sql, *a)
            yield Spy()
        if any(f"INTO {kill_at}" in s for s in seen):
            die()
    HistoryStore._tx = tx
elif kill_at == "sink":
    original_emit = cm.MLflowSink.emit
    def emit(self, report, context=None):
        if context is not None and context.observation is not None:
            die()
        return original_emit(self, report, context)
    cm.MLflowSink.emit = emit
elif kill_at == "outbox":
    from collapse_monitor.alerting import Outbox
    original_enqueue = Outbox.enqueue
    def enqueue(self, *a, **k):
        original_enqueue(self, *a, **k)
        die()
    Outbox.enqueue = enqueue

sink = cm.MLflowSink(mlflow_url, evidently=False, timeout=5, max_retries=1)
mon = cm.CollapseMonitor(name, reference=reference(), sinks=[sink], alerts=[cm.Webhook(hook_url, name="hook")],
                         home=home, alert_budget_seconds=5)
mon.check(healthy() if kill_at == "baselines" else collapsed())
print("not killed")
"""

KILL_POINTS = ["measure", "baselines", "alert_state", "checks", "sink", "outbox"]


def _monitor(name: str, home, mlflow_url: str, hook_url: str) -> cm.CollapseMonitor:
    sink = cm.MLflowSink(mlflow_url, evidently=False, timeout=5, max_retries=1)
    hook = cm.Webhook(hook_url, name="hook")
    return cm.CollapseMonitor(
        name, reference=reference(), sinks=[sink], alerts=[hook], home=home, alert_budget_seconds=5
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_sigkill_mid_check_next_process_continues(kill_at, mlflow_server, http_receiver, tmp_path) -> None:
    name = unique(f"kill-{kill_at}")
    home = tmp_path / "home"
    hook = http_receiver.url_for("/hook")
    if kill_at != "baselines":  # that child checks generation 0 itself
        first = _monitor(name, home, mlflow_server.url, hook).check(healthy())  # generation 0, the baseline
        assert first.errors == () and first.generation == 0

    child = run_child(_CHILD, str(home), name, mlflow_server.url, hook, kill_at)
    assert child.returncode == -signal.SIGKILL, (child.stdout, child.stderr[-2000:])

    # the next retrain process (a fresh monitor object: nothing shared but the home)
    nxt = _monitor(name, home, mlflow_server.url, hook)
    report = nxt.check(collapsed())
    assert report.errors == (), report.errors
    nxt.flush(budget_seconds=10)

    history = nxt.reports()
    gens = [r.generation for r in history]
    assert gens == list(range(len(gens))) and len(gens) in (2, 3), f"generations after the kill: {gens}"
    if kill_at == "measure":
        assert gens == [0, 1], "a check killed before writing anything leaves no trace"
    assert {r.baseline_generation for r in history} == {0}
    with sqlite3.connect(home / "history.db") as db:
        assert db.execute("SELECT count(*) FROM baselines WHERE monitor=?", (name,)).fetchone() == (1,)

    runs = mlflow_runs(mlflow_server.url, name)
    assert {r.info.status for r in runs} == {"FINISHED"}
    got = Counter(r.data.tags["collapse.report_id"] for r in runs)
    want = {f"{r.monitor}:{r.generation}:{r.created_at!r}" for r in history}
    assert set(got) == want, f"MLflow runs {sorted(got)} vs history {sorted(want)}"
    assert max(got.values()) == 1, f"duplicate runs: {got}"
    assert nxt.spool.count() == 0

    firing = [r for r in http_receiver.requests if r.json()["data"]["alert"]["status"] == "firing"]
    ids = Counter(r.header("webhook-id") for r in firing)
    assert len(ids) == 1, f"the early_collapse firing reached the receiver under {len(ids)} keys: {ids}"
    with Outbox(home / "outbox.db") as ob:
        assert {r.status for r in ob.rows()} == {"delivered"}


_WORKER = """
import json, os, sys, time
import collapse_monitor as cm
from reliability.relkit import collapsed, healthy, reference

home, name, go, mlflow_url, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
sink = cm.MLflowSink(mlflow_url, evidently=False, timeout=10, max_retries=1)
mon = cm.CollapseMonitor(name, reference=reference(), sinks=[sink], home=home)
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.01)
out = []
for i in range(n):
    r = mon.check(healthy() if (os.getpid() + i) % 2 else collapsed())
    out.append({"generation": r.generation, "baseline": r.baseline_generation, "errors": list(r.errors)})
print(json.dumps(out))
"""


@pytest.mark.timeout(240)
def test_four_processes_check_one_monitor_at_once(mlflow_server, tmp_path) -> None:
    name, home, go = unique("conc"), tmp_path / "home", tmp_path / "go"
    per_process, workers = 3, 4
    procs = [
        start_child(_WORKER, str(home), name, str(go), mlflow_server.url, str(per_process)) for _ in range(workers)
    ]
    time.sleep(1.0)  # let them import; they then start together
    go.write_text("go")
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=200)
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    n = workers * per_process
    gens = sorted(c["generation"] for out in outs for c in out)
    assert gens == list(range(n)), f"generations handed out: {gens}"
    assert {c["baseline"] for out in outs for c in out} == {0}
    assert all(c["errors"] == [] for out in outs for c in out)
    mon = cm.CollapseMonitor(name, reference=reference(), sinks=[], home=home)
    assert [r.generation for r in mon.reports()] == list(range(n))
    runs = mlflow_runs(mlflow_server.url, name)
    assert sorted(int(r.data.tags["collapse.generation"]) for r in runs) == list(range(n))
