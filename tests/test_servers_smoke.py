"""Smoke tests of the real-server fixtures: each server starts, answers, and does its one job."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
import requests
from servers import (
    HttpReceiver,
    MLflowServer,
    PrometheusServer,
    Pushgateway,
    Response,
    alertmanager_webhook_config,
    prometheus_config,
    run_tool,
)

pytestmark = pytest.mark.e2e


def _no_proxy() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def test_pushgateway_to_prometheus_with_honor_labels(pushgateway: Pushgateway, prometheus_server: Any) -> None:
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    registry = CollectorRegistry()
    gauge = Gauge("collapse_monitor_smoke_ratio", "smoke test gauge", ["rule"], registry=registry)
    gauge.labels(rule="tail").set(0.25)
    pushadd_to_gateway(pushgateway.address, job="smoke-job", registry=registry, grouping_key={"monitor": "m1"})

    assert pushgateway.value("collapse_monitor_smoke_ratio", job="smoke-job", monitor="m1", rule="tail") == 0.25

    prom: PrometheusServer = prometheus_server([pushgateway.address], job="scraper")
    result = prom.wait_for('collapse_monitor_smoke_ratio{monitor="m1"}')
    assert len(result) == 1
    labels = result[0]["metric"]
    # honor_labels keeps the pushed job, not the scrape job's name
    assert labels["job"] == "smoke-job"
    assert labels["rule"] == "tail"
    assert float(result[0]["value"][1]) == 0.25
    assert prom.query_value('push_time_seconds{job="smoke-job",monitor="m1"}') is not None


def test_pushgateway_is_wiped_between_tests(pushgateway: Pushgateway) -> None:
    # the previous test pushed collapse_monitor_smoke_ratio; each test starts from an empty gateway
    assert pushgateway.samples("collapse_monitor_smoke_ratio") == []
    assert pushgateway.groups() == []


def test_prometheus_config_is_valid_for_promtool(promtool: str, tmp_path: Any) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n- name: smoke\n  rules:\n  - alert: Smoke\n    expr: vector(1) > 0\n    for: 1m\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(["127.0.0.1:9"], rule_files=[rules], alertmanagers=["127.0.0.1:9"]))
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_and_amtool_run(promtool: str, amtool: str) -> None:
    for tool in ("promtool", "amtool"):
        done = run_tool(tool, "--version")
        assert done.returncode == 0, done.stderr
        assert "version" in (done.stdout + done.stderr).lower()


def test_alertmanager_delivers_to_http_receiver(
    alertmanager_server: Any, http_receiver: HttpReceiver, amtool: str
) -> None:
    am = alertmanager_server(webhook_url=http_receiver.url_for("/am"))
    checked = subprocess.run([amtool, "check-config", str(am.config_path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    status = am.status()
    assert status["cluster"]["status"] == "disabled"
    assert "webhook_configs" in status["config"]["original"]

    am.post_alerts([{"labels": {"alertname": "CollapseSmoke", "monitor": "m1", "severity": "warning"}}])
    am.wait_for_alerts(lambda alerts: any(a["labels"]["alertname"] == "CollapseSmoke" for a in alerts))

    delivered = http_receiver.wait_for_requests(1, timeout=30, path="/am")[0]
    payload = delivered.json()
    assert delivered.method == "POST"
    assert payload["version"] == "4"
    assert payload["status"] == "firing"
    assert [a["labels"]["alertname"] for a in payload["alerts"]] == ["CollapseSmoke"]
    assert payload["groupLabels"] == {"alertname": "CollapseSmoke", "monitor": "m1"}


def test_alertmanager_webhook_config_validates(amtool: str, tmp_path: Any) -> None:
    path = tmp_path / "am.yml"
    path.write_text(alertmanager_webhook_config("http://127.0.0.1:9/hook"))
    checked = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_mlflow_server_round_trip_and_restart(mlflow_server: MLflowServer, tmp_path: Any) -> None:
    client = mlflow_server.client()
    experiment_id = client.create_experiment(f"smoke-{time.time_ns()}")
    run = client.create_run(experiment_id, tags={"collapse.monitor": "smoke"})
    client.log_metric(run.info.run_id, "collapse.tail_coverage", 0.75, step=3)
    artifact = tmp_path / "report.json"
    artifact.write_text('{"stage": "healthy"}')
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)

    # a crash and a restart keep the same URL and the same store
    url = mlflow_server.url
    mlflow_server.kill()
    assert not mlflow_server.running
    with pytest.raises(requests.ConnectionError):
        _no_proxy().get(url + "/health", timeout=2)
    mlflow_server.start()
    assert mlflow_server.url == url

    fetched = mlflow_server.client().get_run(run.info.run_id)
    assert fetched.data.metrics["collapse.tail_coverage"] == 0.75
    assert fetched.data.tags["collapse.monitor"] == "smoke"
    history = mlflow_server.client().get_metric_history(run.info.run_id, "collapse.tail_coverage")
    assert [(m.step, m.value) for m in history] == [(3, 0.75)]
    # artifacts are proxied by the server: the upload went over HTTP into its own directory
    assert fetched.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [f.path for f in mlflow_server.client().list_artifacts(run.info.run_id)] == ["report.json"]
    assert list(mlflow_server.artifacts_dir.rglob("report.json"))


def test_mlflow_server_is_running_again_for_the_next_test(mlflow_server: MLflowServer) -> None:
    assert mlflow_server.running
    assert _no_proxy().get(mlflow_server.url + "/health", timeout=5).status_code == 200


def test_http_receiver_programmed_responses(http_receiver: HttpReceiver) -> None:
    http_receiver.respond(500, 500, (503, {}, "busy"), 200)
    http_receiver.respond((429, {"Retry-After": "7"}, {"error": "slow down"}), path="/slack")
    http = _no_proxy()

    statuses = [http.post(http_receiver.url_for("/hook"), json={"n": i}, timeout=5).status_code for i in range(5)]
    assert statuses == [500, 500, 503, 200, 200]  # queue, then the default 200

    limited = http.post(http_receiver.url_for("/slack"), data=b"x", headers={"X-Test": "1"}, timeout=5)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.json() == {"error": "slow down"}

    recorded = http_receiver.requests
    assert [r.json()["n"] for r in recorded[:5]] == [0, 1, 2, 3, 4]
    assert recorded[5].path == "/slack"
    assert recorded[5].header("x-test") == "1"
    assert recorded[5].body == b"x"


def test_http_receiver_slow_and_dropped(http_receiver: HttpReceiver) -> None:
    http_receiver.respond(Response(200, delay=2.0), Response(drop=True), Response(410))
    http = _no_proxy()
    with pytest.raises(requests.Timeout):
        http.get(http_receiver.url_for("/slow"), timeout=0.3)
    with pytest.raises(requests.ConnectionError):
        http.get(http_receiver.url_for("/dropped"), timeout=5)
    assert http.get(http_receiver.url_for("/gone"), timeout=5).status_code == 410
    assert [r.path for r in http_receiver.wait_for_requests(3)] == ["/slow", "/dropped", "/gone"]


def test_missing_binary_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from servers import require_binary

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_binary("prometheus-definitely-not-installed")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_binary("prometheus-definitely-not-installed")
