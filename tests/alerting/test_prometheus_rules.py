"""The ops files are valid and do what they say: promtool checks and unit-tests the alert rules,
amtool checks the Alertmanager config and its routes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "integrations" / "prometheus" / "collapse_rules.yml"
RULES_TEST = ROOT / "integrations" / "prometheus" / "collapse_rules_test.yml"
AM_CONFIG = ROOT / "integrations" / "alertmanager" / "alertmanager.yml"
METRICS = {
    "collapse_monitor_alert_firing",
    "collapse_monitor_last_check_timestamp_seconds",
    "push_time_seconds",
    "push_failure_time_seconds",
    "collapse_monitor_serve_consecutive_failures",
    'up{job=~"pushgateway|collapse-monitor-serve"}',
}


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def test_promtool_check_rules(promtool):
    p = run(promtool, "check", "rules", str(RULES))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 7 rules found" in p.stdout


def test_promtool_unit_tests(promtool):
    p = run(promtool, "test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_promtool_unit_tests_catch_a_broken_rule(promtool, tmp_path):
    """The unit tests can fail: an early-collapse rule that also fires on late collapse is caught."""
    (tmp_path / RULES.name).write_text(
        RULES.read_text().replace('{rule="early_collapse"}) == 1', '{rule=~"early_collapse|late_collapse"}) == 1')
    )
    (tmp_path / RULES_TEST.name).write_text(RULES_TEST.read_text())
    p = run(promtool, "test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert p.returncode != 0 and "CollapseMonitorEarlyCollapse" in p.stdout + p.stderr


def test_every_rule_has_severity_annotations_and_tests():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert names == {
        "CollapseMonitorEarlyCollapse",
        "CollapseMonitorLateCollapse",
        "CollapseMonitorDistributionDrift",
        "CollapseMonitorStale",
        "CollapseMonitorPushFailing",
        "CollapseMonitorServeChecksFailing",
        "CollapseMonitorExporterDown",
    }
    for r in rules:
        assert r["labels"]["severity"] in {"info", "warning", "critical"}
        assert {"summary", "description", "runbook_url"} <= set(r["annotations"])
        assert any(m in r["expr"] for m in METRICS)
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    for name in names:  # a firing and a not-firing case for every rule
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), name
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), name


def test_amtool_check_config(amtool):
    p = run(amtool, "check-config", str(AM_CONFIG))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=critical"], "pagerduty,webhook"),
        (["severity=warning"], "slack,webhook"),
        (["severity=info"], "webhook"),
    ],
)
def test_amtool_routes(amtool, labels, receivers):
    p = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={AM_CONFIG}",
        "alertname=CollapseMonitorX",
        "monitor=m",
        *labels,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == receivers


def test_alertmanager_config_holds_no_secrets_and_only_loopback_receivers():
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    assert cfg["route"]["group_by"] == ["alertname", "monitor"]
    urls = [
        c.get("url") or c.get("api_url")
        for r in cfg["receivers"]
        for kind in ("webhook_configs", "slack_configs", "pagerduty_configs")
        for c in r.get(kind, [])
    ]
    assert urls and all(u.startswith("http://127.0.0.1:") for u in urls)
