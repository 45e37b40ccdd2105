"""MLflow down, slow (10 s answers) or answering 5xx: a check stays bounded, the training
function's result passes through, and every report reaches MLflow once the server is back
(one FINISHED run per check, none duplicated).

Bounds (``MLflowSink(timeout=1, max_retries=1)``): one failing MLflow round trip costs at most
``(max_retries + 1) * timeout`` = 2 s (urllib3 does not back off before the first retry, and the
sink ignores ``Retry-After``); a failing check makes at most two such rounds (reading the history
back on an empty home, or replaying the spool, or syncing the baseline with MLflow's copy, one
request without retry; and then the live emit), so it returns within
``2 * 2 s`` plus the check itself. The asserts below allow ``ROUND_BOUND`` = 7 s: generous for
slow CI machines, far below MLflow's own default of 7 retries x 120 s.
"""

from __future__ import annotations

import pytest
from reliability.relkit import collapsed, healthy, mlflow_runs, reference, unique, watched_check

import collapse_monitor as cm

TIMEOUT, RETRIES = 1, 1
ROUND = (RETRIES + 1) * TIMEOUT  # worst case of one failing MLflow round trip
ROUND_BOUND = 2 * ROUND + 3.0  # two rounds per failing check + the check itself + slack


def _monitor(name: str, uri: str, home) -> tuple[cm.CollapseMonitor, cm.MLflowSink]:
    sink = cm.MLflowSink(uri, evidently=False, timeout=TIMEOUT, max_retries=RETRIES)
    return cm.CollapseMonitor(name, reference=reference(), sinks=[sink], home=home), sink


def _assert_one_finished_run_per_check(uri: str, mon: cm.CollapseMonitor, checks: int) -> None:
    runs = mlflow_runs(uri, mon.name)
    gens = sorted(int(r.data.tags["collapse.generation"]) for r in runs)
    assert gens == list(range(checks)), f"runs per generation: {gens}"
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["collapse.report_id"] for r in runs}) == checks
    assert [r.generation for r in mon.reports()] == list(range(checks))


@pytest.mark.timeout(120)  # hang guard; the bound itself is asserted per check
def test_mlflow_down_from_the_first_check(fault_proxy, mlflow_server, tmp_path) -> None:
    """Nothing listens at the tracking URI (connection refused, as from a killed server; the
    proxy in front of the real server stops listening) from the first check of a fresh home
    on: the history read-back and the emit both fail fast; reports go to the spool;
    ``flush()`` (what ``serve`` runs on a timer) delivers them once the server is back.
    (A real ``mlflow server`` SIGKILLed mid-chain: tests/sinks/test_mlflow_chain.py.)"""
    mon, sink = _monitor(unique("down"), fault_proxy.url, tmp_path)
    fault_proxy.down()
    for obs in (healthy(), collapsed()):
        report, seconds = watched_check(mon, obs)
        assert report is not None and report.run_id is None
        assert any(e.startswith("mlflow:") and "refused" in e.lower() for e in report.errors), report.errors
        assert seconds < ROUND_BOUND, f"check took {seconds:.1f} s with MLflow down"
    assert mon.spool.count(sink.spool_key) == 2
    fault_proxy.up()
    assert mon.flush() == {"mlflow": 2}
    assert mon.spool.count(sink.spool_key) == 0
    report, _ = watched_check(mon, healthy())
    assert report is not None and report.errors == () and report.run_id
    _assert_one_finished_run_per_check(mlflow_server.url, mon, 3)


@pytest.mark.timeout(180)
def test_mlflow_slow_10s_answers(fault_proxy, mlflow_server, tmp_path) -> None:
    """Every answer 10 s late (the server still does the work, after the client gave up), then
    only ``log-batch`` late (a run is created, then its metrics time out: a partial run)."""
    mon, sink = _monitor(unique("slow"), fault_proxy.url, tmp_path)
    fault_proxy.set("slow", delay=10.0)
    for obs in (healthy(), collapsed()):
        report, seconds = watched_check(mon, obs)
        assert report is not None and any("timed out" in e.lower() or "timeout" in e.lower() for e in report.errors)
        assert seconds < ROUND_BOUND, f"check took {seconds:.1f} s against 10 s answers"
    fault_proxy.set("slow", delay=10.0, paths=["/api/2.0/mlflow/runs/log-batch"])
    report, seconds = watched_check(mon, collapsed())
    assert report is not None and report.errors and seconds < ROUND_BOUND
    assert mon.spool.count(sink.spool_key) == 3
    assert fault_proxy.faulted(), "the proxy never delayed anything: the test proves nothing"

    fault_proxy.set("forward")
    fault_proxy.wait_idle(timeout=30)  # late writes of the delayed requests have landed
    assert mon.flush() == {"mlflow": 3}
    _assert_one_finished_run_per_check(mlflow_server.url, mon, 3)


@pytest.mark.timeout(120)
def test_mlflow_answering_500_and_503_with_retry_after(fault_proxy, mlflow_server, tmp_path) -> None:
    """500 on every call; 503 with ``Retry-After: 3600`` (must not block for an hour); 500 on
    artifact uploads only (the run exists but is FAILED: the replay deletes it and logs again)."""
    mon, sink = _monitor(unique("err"), fault_proxy.url, tmp_path)
    faults = [
        dict(kind="status", status=500),
        dict(kind="status", status=503, headers={"Retry-After": "3600"}),
        dict(kind="status", status=500, paths=["/api/2.0/mlflow-artifacts/"]),
    ]
    for i, fault in enumerate(faults):
        fault_proxy.set(**fault)
        report, seconds = watched_check(mon, collapsed() if i else healthy())
        assert report is not None and any(e.startswith("mlflow:") for e in report.errors), (fault, report)
        assert seconds < ROUND_BOUND, f"check took {seconds:.1f} s with {fault}"
    assert mon.spool.count(sink.spool_key) == 3
    failed_partial = [r for r in mlflow_runs(mlflow_server.url, mon.name) if r.info.status == "FAILED"]
    assert failed_partial, "the artifact fault should have left a FAILED partial run behind"

    fault_proxy.set("forward")
    assert mon.flush() == {"mlflow": 3}
    _assert_one_finished_run_per_check(mlflow_server.url, mon, 3)


@pytest.mark.timeout(180)
def test_rejected_report_is_dead_lettered_not_blocking(fault_proxy, mlflow_server, tmp_path) -> None:
    """A report MLflow refuses for good (400 INVALID_PARAMETER_VALUE: a provenance source over
    MLflow's 65535-character limit) used to block the spool forever: every replay stopped at it,
    so the reports behind it - spooled while the server was down - never reached MLflow. Now it
    is moved to a dead letter and the others are delivered in order; a sha256 provenance digest
    (64 characters, over MLflow's 36-character dataset digest) is delivered, not rejected."""
    import hashlib
    import json

    mon, sink = _monitor(unique("poison"), fault_proxy.url, tmp_path)
    # Provenance refuses such a source since 2026-12-06: injected, as from a version before it
    poison = cm.Provenance(synthetic_fraction=0.0, sources=["generated"])
    object.__setattr__(poison, "sources", ("generated-" + "x" * 70_000,))
    r0, _ = watched_check(mon, healthy(provenance=poison))
    assert r0 is not None and any("INVALID_PARAMETER_VALUE" in e for e in r0.errors), r0.errors
    # rejected for good on the live emit: straight to a dead letter, not into the retry queue
    assert mon.spool.count(sink.spool_key) == 0 and len(mon.spool.dead_letters(sink.spool_key)) == 1
    assert any("dead letter" in e for e in r0.errors), r0.errors
    fault_proxy.down()
    r1, _ = watched_check(mon, collapsed())  # spooled: the server is down, not refusing
    assert r1 is not None and r1.run_id is None
    assert mon.spool.count(sink.spool_key) == 1
    fault_proxy.up()
    assert mon.flush() == {"mlflow": 1}  # generation 1 delivered past the rejected one
    assert mon.spool.count(sink.spool_key) == 0
    [letter] = mon.spool.dead_letters(sink.spool_key)
    dead = json.loads(letter.read_text())
    assert dead["sink"] == "mlflow" and dead["report"]["generation"] == 0
    assert "INVALID_PARAMETER_VALUE" in dead["reason"] and "65535" in dead["reason"]
    digest = hashlib.sha256(b"training-set").hexdigest()
    r2, _ = watched_check(mon, collapsed(provenance=cm.Provenance(synthetic_fraction=1.0, digest=digest)))
    assert r2 is not None and r2.errors == () and r2.run_id
    runs = mlflow_runs(mlflow_server.url, mon.name)
    finished = sorted(int(r.data.tags["collapse.generation"]) for r in runs if r.info.status == "FINISHED")
    assert finished == [1, 2]
    assert mlflow_server.client().get_run(r2.run_id).data.tags["collapse.data_digest"] == digest


@pytest.mark.timeout(180)
def test_a_long_backlog_into_a_slow_server_is_replayed_within_the_checks_budget(
    fault_proxy, mlflow_server, tmp_path
) -> None:
    """A fault audit (2026-12-08): every check replayed the whole spool before its own report,
    so after an outage a slow but answering server (each request 1 s, below the timeout) held
    the training job 50 s for 5 spooled reports, growing with the outage. A check now stops
    starting replays after ``replay_budget_seconds`` (the report in progress finishes) and
    queues its own report behind the rest, in order; ``flush()`` replays the whole spool."""
    sink = cm.MLflowSink(fault_proxy.url, evidently=False, timeout=5, max_retries=0)
    name = unique("backlog")
    mon = cm.CollapseMonitor(name, reference=reference(), sinks=[sink], home=tmp_path, replay_budget_seconds=1.0)
    fault_proxy.down()
    for obs in (healthy(), healthy(), collapsed(), collapsed()):
        report, _ = watched_check(mon, obs)
        assert report is not None and report.run_id is None
    assert mon.spool.count(sink.spool_key) == 4
    fault_proxy.up()
    fault_proxy.set("slow", delay=0.3)  # every request answered, 0.3 s late
    before = len(fault_proxy.log)
    report, seconds = watched_check(mon, collapsed())
    per_report = (len(fault_proxy.log) - before) * 0.3  # the one replayed report's requests
    assert report is not None and report.run_id is None
    assert any("replay budget of 1 s is spent" in e and "queued behind 3 earlier" in e for e in report.errors), (
        report.errors
    )
    assert mon.spool.count(sink.spool_key) == 4  # one replayed, this check's own report queued
    assert seconds < 1.0 + per_report + 3.0, f"check took {seconds:.1f} s ({per_report:.1f} s a report)"
    assert per_report >= 1.0, "the replay of one report did not outlast the budget: the test proves nothing"

    fault_proxy.set("forward")
    fault_proxy.wait_idle(timeout=30)
    assert mon.flush() == {"mlflow": 4}
    report, _ = watched_check(mon, healthy())
    assert report is not None and report.errors == () and report.run_id
    _assert_one_finished_run_per_check(mlflow_server.url, mon, 6)
    with pytest.raises(cm.ConfigError, match="replay_budget_seconds"):
        cm.CollapseMonitor(name, reference=reference(), sinks=[], home=tmp_path, replay_budget_seconds=0)
