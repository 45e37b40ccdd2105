"""`collapse-monitor serve` as a subprocess against a real MLflow server (Model Registry) and a
real HTTP receiver: scheduled checks of each new registered version, /metrics, the dead-man's
switch, and a clean exit within 5 s of SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import requests

D, K = 4, 3
LABELS = np.array([0] * 30 + [1] * 20 + [2] * 10)


def _register(tracking_uri: str, seed: int) -> str:
    """Log a tiny torch classifier and register it as a new version of 'digits'; returns the run id."""
    import mlflow
    import mlflow.pytorch
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(D, K))
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri  # None = "the default"; restoring it pins nothing
    mlflow.set_tracking_uri(tracking_uri)
    try:
        mlflow.set_experiment("digits-training")
        with mlflow.start_run() as run:
            mlflow.pytorch.log_model(
                net,
                name="model",
                registered_model_name="digits",
                pip_requirements=["torch"],
                input_example=np.zeros((2, D), dtype=np.float32),
            )
    finally:  # the global tracking URI must not leak into later tests
        tracking_utils._tracking_uri = previous
    return run.info.run_id


def _metrics(session: requests.Session, url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    try:
        text = session.get(url, timeout=5).text
    except requests.RequestException:
        return out
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def _wait(pred, what: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"serve exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_serve_checks_new_versions_pages_stale_monitors_and_stops(tmp_path: Path, mlflow_server, http_receiver) -> None:
    from mlflow import MlflowClient
    from servers import free_port

    uri = mlflow_server.tracking_uri
    run_v1 = _register(uri, seed=0)
    # a training job elsewhere (its own history home) checks and logs to MLflow only
    import collapse_monitor as cm

    job = cm.CollapseMonitor(
        "remote-job",
        reference=cm.Reference(labels=LABELS),
        home=tmp_path / "job-home",
        sinks=[cm.MLflowSink(uri, evidently=False)],
    )
    job.check(cm.Observation(predictions=LABELS))
    job.check(cm.Observation(predictions=LABELS))
    np.save(tmp_path / "labels.npy", LABELS)
    np.save(tmp_path / "inputs.npy", np.random.default_rng(0).normal(size=(LABELS.size, D)).astype(np.float32))
    port = free_port()
    cfg = tmp_path / "collapse.yaml"
    cfg.write_text(
        textwrap.dedent(f"""
        serve: {{port: {port}, flush_interval_seconds: 1, staleness_check_interval_seconds: 1}}
        home: state
        reference: {{labels: labels.npy}}
        alerts: [{{type: webhook, url: "{http_receiver.url_for("/hook")}"}}]
        monitors:
          - name: digits
            sinks: [{{type: mlflow, tracking_uri: "{uri}", evidently: false}}]
            model: {{registered_name: digits, stage_or_alias: latest, tracking_uri: "{uri}"}}
            probe: {{inputs: inputs.npy}}
            schedule: {{interval_seconds: 1}}
            expected_interval_seconds: 3600
          - name: nightly-job
            sinks: []
            expected_interval_seconds: 1
          - name: remote-job
            sinks: [{{type: mlflow, tracking_uri: "{uri}", evidently: false}}]
            expected_interval_seconds: 3600
    """)
    )
    cfg.chmod(0o600)
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collapse_monitor.cli", "-v", "serve", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    session = requests.Session()
    session.trust_env = False
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        gen = "collapse_monitor_generation{monitor=digits}"
        m = _wait(lambda: (lambda x: x if gen in x else None)(_metrics(session, url)), "the first check", proc, log)
        assert m[gen] == 0 and m["collapse_monitor_serve_model_version{monitor=digits}"] == 1
        assert m["collapse_monitor_serve_up{}"] == 1
        assert m["collapse_monitor_serve_checks_total{monitor=digits,outcome=ok}"] == 1

        # the check logged an MLflow run whose provenance points at the registered version
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("collapse-monitor/digits")
        (run,) = client.search_runs([exp.experiment_id])
        assert run.data.tags["collapse.parent_run_id"] == run_v1
        assert run.data.tags["collapse.generation"] == "0"

        # the monitor that never reports pages once through the webhook
        reqs = http_receiver.wait_for_requests(1, timeout=60, path="/hook")
        alert = json.loads(reqs[0].body)["data"]["alert"]
        assert (alert["monitor"], alert["rule"], alert["status"], alert["severity"]) == (
            "nightly-job",
            "stale_monitor",
            "firing",
            "warning",
        )

        # a new version is checked once, as the next generation
        _register(uri, seed=1)
        # the generation gauge is set by the check's Prometheus sink, the version gauge when the
        # check returns (after its alert delivery): a scrape between the two sees the old version
        version = "collapse_monitor_serve_model_version{monitor=digits}"
        m = _wait(
            lambda: (lambda x: x if x.get(gen) == 1 and x.get(version) == 2 else None)(_metrics(session, url)),
            "version 2",
            proc,
            log,
        )
        time.sleep(2.5)  # more check and staleness rounds
        m = _metrics(session, url)
        assert m["collapse_monitor_serve_checks_total{monitor=digits,outcome=ok}"] == 2
        assert m["collapse_monitor_serve_checks_total{monitor=digits,outcome=skipped}"] >= 1
        assert m["collapse_monitor_serve_stale{monitor=nightly-job}"] == 1
        # serve's own history has nothing of remote-job: it read the latest check back from MLflow
        assert m["collapse_monitor_generation{monitor=remote-job}"] == 1
        assert m["collapse_monitor_serve_stale{monitor=remote-job}"] == 0
        stale = [json.loads(r.body)["data"]["alert"] for r in http_receiver.requests]
        assert [(a["monitor"], a["rule"]) for a in stale] == [("nightly-job", "stale_monitor")]  # once per episode
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"serve did not exit within 5 s of SIGTERM:\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def _register_net(tracking_uri: str, name: str, width: int, seed: int = 0) -> None:
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking._tracking_service import utils as tracking_utils

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(width, K))
    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    try:
        mlflow.set_experiment(f"{name}-training")
        with mlflow.start_run():
            mlflow.pytorch.log_model(
                net,
                name="model",
                registered_model_name=name,
                pip_requirements=["torch"],
                input_example=np.zeros((2, width), dtype=np.float32),
            )
    finally:
        tracking_utils._tracking_uri = previous


def _one_model_config(
    tmp_path: Path, name: str, uri: str, *, interval_seconds: float, selector: str = "latest"
) -> Path:
    """A serve config with one monitor ``name`` that checks the latest version of the registered
    model ``name`` on 60 probe inputs (labels and inputs written beside it)."""
    np.save(tmp_path / "labels.npy", LABELS)
    np.save(tmp_path / "inputs.npy", np.random.default_rng(0).normal(size=(LABELS.size, D)).astype(np.float32))
    cfg = tmp_path / "collapse.yaml"
    cfg.write_text(
        textwrap.dedent(f"""
        home: state
        reference: {{labels: labels.npy}}
        sinks: []
        monitors:
          - name: {name}
            model: {{registered_name: {name}, stage_or_alias: {selector}, tracking_uri: "{uri}"}}
            probe: {{inputs: inputs.npy}}
            schedule: {{interval_seconds: {interval_seconds:g}}}
    """)
    )
    return cfg


def test_a_failing_version_backs_off_leaves_no_model_copies_and_a_new_version_runs_at_once(
    tmp_path: Path, mlflow_server, monkeypatch
) -> None:
    """A version whose check fails (here: the registered net expects 5 features, the probe has 4)
    is tried again after 30 s, then 60 s, not at every tick (each try downloads the model), and
    every download goes to a temporary folder that is removed (MLflow's default kept one model
    copy per load, forever). A new version is checked at once."""
    import tempfile as tf

    from collapse_monitor._service_config import load_serve_config
    from collapse_monitor.service import Service

    uri = mlflow_server.tracking_uri
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tf, "tempdir", str(scratch))
    _register_net(uri, "wide", D + 1)
    cfg = _one_model_config(tmp_path, "wide", uri, interval_seconds=1)
    now = [1_800_000_000.0]
    svc = Service(load_serve_config(cfg), clock=lambda: now[0])
    checks = svc.c_checks

    def count(outcome: str) -> float:
        return checks.labels("wide", outcome)._value.get()

    assert svc.run_check("wide") is None and count("error") == 1
    assert list(scratch.rglob("MLmodel")) == []  # the download went to a temporary folder, now gone
    for dt in (1, 10, 29):  # inside the first backoff: skipped, nothing downloaded
        now[0] = 1_800_000_000.0 + dt
        assert svc.run_check("wide") is None
    assert count("error") == 1 and count("skipped") == 3
    now[0] = 1_800_000_000.0 + 31
    assert svc.run_check("wide") is None and count("error") == 2  # tried again, fails again
    # failures in a row, what CollapseMonitorServeChecksFailing reads (backed-off ticks are not failures)
    failing = svc.g_failing.labels("wide")
    assert failing._value.get() == 2
    now[0] += 45  # the second backoff is 60 s
    assert svc.run_check("wide") is None and count("error") == 2
    _register_net(uri, "wide", D, seed=1)  # a fixed version: checked at once
    report = svc.run_check("wide")
    assert report is not None and report.generation == 0 and count("ok") == 1
    assert failing._value.get() == 0
    assert list(scratch.rglob("MLmodel")) == []
    assert "wide" not in svc._failures


def test_a_version_checked_before_a_lost_state_write_is_not_checked_again(tmp_path: Path, mlflow_server) -> None:
    """The history says what was checked, the state file only caches it: a process stopped
    between a check and its state write (SIGTERM abandoning the job), or a second `serve` on the
    same home, must not check the same model version again as a new generation."""
    from collapse_monitor._service_config import load_serve_config
    from collapse_monitor.service import Service

    uri = mlflow_server.tracking_uri
    _register_net(uri, "resume", D)
    cfg = _one_model_config(tmp_path, "resume", uri, interval_seconds=60)
    first = Service(load_serve_config(cfg))
    report = first.run_check("resume")
    assert report is not None and report.generation == 0
    state = tmp_path / "state" / "serve_state.json"
    assert state.exists()
    state.unlink()  # the state write that SIGTERM (or the other process) never made
    again = Service(load_serve_config(cfg))
    assert again.run_check("resume") is None
    assert again.c_checks.labels("resume", "skipped")._value.get() == 1
    assert [r.generation for r in again.specs["resume"].monitor.reports()] == [0]
    assert json.loads(state.read_text())["resume"]["last_version"].endswith("/1")  # the cache is rebuilt
    _register_net(uri, "resume", D, seed=1)  # a new version is still checked
    assert again.run_check("resume").generation == 1


def test_an_alias_not_yet_set_is_skipped_and_one_rolled_back_is_not_checked_again(
    tmp_path: Path, mlflow_server
) -> None:
    """Serve audit (2026-12-06): an alias not assigned yet was an error (registry backoff, and
    in the end CollapseMonitorServeChecksFailing); an alias moved back v1 -> v2 -> v1 checked v1
    again as a new generation; a restarted serve showed no model version on /metrics until the
    next new version."""
    from mlflow import MlflowClient

    from collapse_monitor._service_config import load_serve_config
    from collapse_monitor.service import Service

    uri = mlflow_server.tracking_uri
    _register_net(uri, "aliased", D)
    cfg = _one_model_config(tmp_path, "aliased", uri, interval_seconds=60, selector="champion")
    svc = Service(load_serve_config(cfg))
    assert svc.run_check("aliased") is None  # champion is not assigned yet: no version yet
    assert svc.c_checks.labels("aliased", "skipped")._value.get() == 1
    assert svc.c_checks.labels("aliased", "error")._value.get() == 0 and "aliased" not in svc._failures
    client = MlflowClient(tracking_uri=uri)
    client.set_registered_model_alias("aliased", "champion", "1")
    assert svc.run_check("aliased").generation == 0
    _register_net(uri, "aliased", D, seed=1)
    client.set_registered_model_alias("aliased", "champion", "2")
    assert svc.run_check("aliased").generation == 1
    client.set_registered_model_alias("aliased", "champion", "1")  # rolled back
    assert svc.run_check("aliased") is None
    assert [r.generation for r in svc.specs["aliased"].monitor.reports()] == [0, 1]
    restarted = Service(load_serve_config(cfg))
    assert restarted.registry.get_sample_value("collapse_monitor_serve_model_version", {"monitor": "aliased"}) == 1
    last = restarted.registry.get_sample_value(
        "collapse_monitor_serve_last_success_timestamp_seconds", {"monitor": "aliased", "task": "check"}
    )
    assert last is not None and last > 0


def test_a_second_serve_on_the_same_home_exits_2_naming_the_first(tmp_path: Path, mlflow_server) -> None:
    """Two services on one home would check each new version twice (two generations): the
    second `serve` process is refused while the first runs, and starts once it has stopped."""
    from servers import free_port

    from collapse_monitor._service_config import load_serve_config
    from collapse_monitor.service import Service

    cfg = _one_model_config(tmp_path, "locked", mlflow_server.tracking_uri, interval_seconds=3600)
    first = Service(load_serve_config(cfg))
    first.start(http=False)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "collapse_monitor.cli", "serve", "--config", str(cfg), "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"another collapse-monitor serve (pid {os.getpid()}) runs on {(tmp_path / 'state').resolve()}" in (
            second.stderr
        )
        assert "Traceback" not in second.stderr
        third = Service(load_serve_config(cfg))  # in-process too: a separate lock, also refused
        with pytest.raises(Exception, match="another collapse-monitor serve") as err:
            third.start(http=False)
        assert getattr(err.value, "key", None) == "home" and third._scheduler is None
    finally:
        first.stop()
    again = Service(load_serve_config(cfg))  # the lock went with the first service
    again.start(http=False)
    again.stop()


def test_a_registry_that_cannot_be_reached_is_asked_again_only_after_a_backoff(
    tmp_path: Path, mlflow_server, monkeypatch
) -> None:
    """A registry outage is one error per backoff (30 s, 60 s, ... at most 600 s), not one per
    tick; once the registry answers, the backoff ends and its version is checked at once."""
    from servers import free_port

    from collapse_monitor._service_config import load_serve_config
    from collapse_monitor.service import _REGISTRY, Service

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    dead = tmp_path / "dead"
    dead.mkdir()
    down = load_serve_config(_one_model_config(dead, "outage", f"http://127.0.0.1:{free_port()}", interval_seconds=1))
    now = [1_800_000_000.0]
    svc = Service(down, clock=lambda: now[0])

    def count(outcome: str) -> float:
        return svc.c_checks.labels("outage", outcome)._value.get()

    assert svc.run_check("outage") is None and count("error") == 1
    assert svc._failures["outage"][:2] == (_REGISTRY, 1)
    for dt in (1, 10, 29):  # inside the first backoff: the registry is not asked
        now[0] = 1_800_000_000.0 + dt
        assert svc.run_check("outage") is None
    assert count("error") == 1 and count("skipped") == 3
    for _ in range(8):  # each failure doubles the wait, up to 600 s
        now[0] = svc._failures["outage"][2]
        assert svc.run_check("outage") is None
    assert count("error") == 9 and svc._failures["outage"][2] - now[0] == 600.0
    assert svc.g_failing.labels("outage")._value.get() == 9
    # the registry is back (the same monitor, now pointing at a live server): one try after the
    # backoff finds the version and checks it
    _register_net(mlflow_server.tracking_uri, "outage", D)
    live = tmp_path / "live"
    live.mkdir()
    up = load_serve_config(_one_model_config(live, "outage", mlflow_server.tracking_uri, interval_seconds=1))
    svc.specs["outage"] = up.monitors[0]
    now[0] += 599
    assert svc.run_check("outage") is None and count("skipped") == 4
    now[0] += 1
    report = svc.run_check("outage")
    assert report is not None and report.generation == 0 and "outage" not in svc._failures
