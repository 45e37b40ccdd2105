"""A monitor chain logging to a real MLflow server: a new process continues from MLflow alone,
and a tracking server that dies mid-chain costs neither a check nor a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import collapse_monitor as cm
from collapse_monitor.sinks.mlflow import MLflowSink

# A later retrain: a new process, an empty working directory and an empty monitor home.
CONTINUE = textwrap.dedent(
    """
    import json, runpy, sys
    import collapse_monitor as cm
    chain = runpy.run_path(sys.argv[1])
    ref, labels = chain["chain_reference"]()
    sink = cm.MLflowSink(sys.argv[2], evidently=False)
    mon = cm.CollapseMonitor(sys.argv[3], reference=ref, sinks=[sink])
    report = mon.check(chain["chain_observation"](labels, int(sys.argv[4]), with_embeddings=True))
    print(json.dumps({"report": report.to_dict(), "reports": [r.generation for r in mon.reports()]}))
    """
)


def _runs(server, monitor: str) -> list:
    client = server.client()
    exp = client.get_experiment_by_name(f"collapse-monitor/{monitor}")
    return [] if exp is None else list(client.search_runs([exp.experiment_id], max_results=1000))


@pytest.mark.slow
def test_new_process_continues_generations_and_baseline_from_mlflow(mlflow_server, kit, tmp_path) -> None:
    name = kit.unique("chain")
    ref, labels = kit.chain_reference()
    mon = cm.CollapseMonitor(
        name, reference=ref, sinks=[MLflowSink(mlflow_server.url, evidently=False)], home=tmp_path / "home-1"
    )
    first = [mon.check(kit.chain_observation(labels, g, with_embeddings=True)) for g in range(3)]
    mon.flush()  # waits for the history charts the sink draws in the background
    assert [r.generation for r in first] == [0, 1, 2]
    assert all(r.errors == () and r.run_id for r in first)

    runs = _runs(mlflow_server, name)
    assert len(runs) == 3
    by_gen = {int(r.data.tags["collapse.generation"]): r for r in runs}
    for r in first:  # metrics, tags and artifacts of every check are there
        run = by_gen[r.generation]
        assert run.info.run_id == r.run_id
        assert run.data.tags["collapse.stage"] == r.stage.value
        assert run.data.metrics["collapse.rare_class_recall"] == pytest.approx(r.metrics["rare_class_recall"].value)
        assert "collapse.tail_coverage" in run.data.metrics
        assert run.inputs.dataset_inputs, "provenance is logged as dataset inputs"
        arts = {a.path for a in mlflow_server.client().list_artifacts(r.run_id, "collapse")}
        assert {"collapse/report.json", "collapse/history.png"} <= arts

    workdir = tmp_path / "fresh-cwd"
    workdir.mkdir()
    env = {**os.environ, "COLLAPSE_MONITOR_HOME": str(tmp_path / "fresh-home"), "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-c", CONTINUE, str(kit.chaindata), mlflow_server.url, name, "3"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    report = cm.Report.from_dict(out["report"])
    assert report.generation == 3 and out["reports"] == [0, 1, 2, 3]
    assert report.baseline_generation == 0
    # paired tests against the baseline need its per-item vectors and predictions: they came back
    assert "rare_flips" in report.metrics
    assert report.metrics["tail_coverage"].baseline == pytest.approx(first[0].metrics["tail_coverage"].value)
    assert report.metrics["rare_class_recall"].baseline == pytest.approx(first[0].metrics["rare_class_recall"].value)
    assert not any("reference changed" in n for n in report.notes)
    assert sorted(os.listdir(workdir)) == [], "nothing written into the working directory"
    assert len(_runs(mlflow_server, name)) == 4


@pytest.mark.slow
@pytest.mark.timeout(300)  # hang guard: a dead server must cost seconds per check, not minutes
def test_tracking_server_killed_mid_chain(mlflow_server, kit, tmp_path) -> None:
    name = kit.unique("crash")
    ref, labels = kit.chain_reference(seed=3)
    sink = MLflowSink(mlflow_server.url, evidently=False, timeout=3, max_retries=1)
    mon = cm.CollapseMonitor(name, reference=ref, sinks=[sink], home=tmp_path / "home")
    reports = [mon.check(kit.chain_observation(labels, 0, seed=3))]
    assert reports[0].errors == ()

    mlflow_server.kill()
    for g in (1, 2):
        r = mon.check(kit.chain_observation(labels, g, seed=3))
        reports.append(r)
        assert r.generation == g and r.run_id is None
        assert r.errors and "mlflow" in r.errors[0].lower()
    assert mon.spool.count(sink.spool_key) == 2

    mlflow_server.start()
    reports.append(mon.check(kit.chain_observation(labels, 3, seed=3)))
    assert reports[-1].errors == () and reports[-1].run_id
    assert mon.spool.count(sink.spool_key) == 0
    runs = _runs(mlflow_server, name)
    assert sorted(int(r.data.tags["collapse.generation"]) for r in runs) == [0, 1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in runs)
    # a second replay of the same reports (a crash after delivery, before the spool file went)
    for r in reports[1:3]:
        mon.spool.put(sink.spool_key, r)
    assert mon.flush()[sink.name] == 2
    assert len(_runs(mlflow_server, name)) == 4
