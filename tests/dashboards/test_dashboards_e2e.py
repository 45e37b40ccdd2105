"""Every panel of every dashboard against a real Prometheus that scraped real exporter output.

The ``stack`` fixture (conftest.py) runs a collapsing chain through a real CollapseMonitor and
real PrometheusSinks (Pushgateway and a ``/metrics`` endpoint), with Prometheus running the
repository's prometheus.yml + collapse_rules.yml and alerting an Alertmanager that runs the
repository's alertmanager.yml. Grafana is not installed here, so its template variables are
substituted the way Grafana does before the queries go to Prometheus.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from collapse_monitor import dashboards as D
from collapse_monitor.types import Stage

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RULES_YML = REPO / "integrations" / "prometheus" / "collapse_rules.yml"
BOARDS = D.build_dashboards()
#: the monitors the ``stack`` fixture feeds: one through the Pushgateway, one through /metrics
MONITORS = ("dash-e2e-push", "dash-e2e-serve")
Stack = Any  # conftest.Stack (conftest modules are not importable by name)

#: Grafana's substitutions: multi-value variables become a regex alternation
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${monitor}": "|".join(MONITORS),
    "$monitor": "|".join(MONITORS),
    "${class}": ".*",
    "$class": ".*",
}


def substitute(expr: str, monitor: str | None = None) -> str:
    """Grafana's interpolation; ``monitor``: the single value of a single-valued ``$monitor``
    (substituted as is, as Grafana does for a variable without multi / All)."""
    values = VARIABLES if monitor is None else {**VARIABLES, "${monitor}": monitor, "$monitor": monitor}
    for var in sorted(values, key=len, reverse=True):
        expr = expr.replace(var, values[var])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def _panel_targets() -> list[Any]:
    params = []
    for _name, board in sorted(BOARDS.items()):
        for panel in D.iter_panels(board):
            for t in panel.get("targets", []):
                params.append(
                    pytest.param(
                        board,
                        panel,
                        t,
                        id=f"{board['uid'].removeprefix('collapse-monitor-')}:{panel['title']}:{t['refId']}",
                    )
                )
    return params


def test_the_chain_collapsed_and_covered_every_family(stack: Stack) -> None:
    assert tuple(stack.monitors) == MONITORS
    first, last = stack.reports[0], stack.reports[-1]
    assert first.stage is Stage.HEALTHY
    assert last.stage is not Stage.HEALTHY
    for key in (
        "tail_coverage",
        "rare_mode_coverage",
        "rare_mode_mass",
        "rare_class_recall",
        "rare_flips",
        "distinct_2",
        "rare_ngram_recall",
        "vendi_ratio",
        "synthetic_fraction",
    ):
        assert key in last.metrics, key
    assert any(k.startswith("class_recall.") for k in last.metrics)


def _single_monitor(board: dict[str, Any]) -> bool:
    var = next(v for v in board["templating"]["list"] if v["name"] == "monitor")
    return not var["multi"] and not var["includeAll"]


@pytest.mark.parametrize(("board", "panel", "target"), _panel_targets())
def test_every_panel_query_returns_series(
    stack: Stack, board: dict[str, Any], panel: dict[str, Any], target: dict[str, Any]
) -> None:
    if _single_monitor(board):
        # each monitor on its own, and only it: the selector must not match a second monitor
        for monitor in MONITORS:
            expr = substitute(target["expr"], monitor)
            result = stack.query(expr)
            assert result, f"{panel['title']!r} {target['refId']}: {expr} returned no series"
            if "by (monitor" in target["expr"]:
                assert {s["metric"].get("monitor") for s in result} == {monitor}, (expr, result)
        return
    expr = substitute(target["expr"])
    result = stack.query(expr)
    assert result, f"{panel['title']!r} {target['refId']}: {expr} returned no series"
    for series in result:
        assert not math.isnan(float(series["value"][1])), f"{expr} returned NaN"
    # both delivery paths (Pushgateway, serve /metrics) show up where a panel splits by monitor
    if "by (monitor" in target["expr"]:
        assert {s["metric"].get("monitor") for s in result} >= set(MONITORS), (expr, result)
    if not target.get("instant"):
        now = time.time()
        assert stack.query_range(expr, now - 30, now, 1.0), f"range query of {expr} returned no series"


def test_template_variable_queries_resolve(stack: Stack) -> None:
    for board in BOARDS.values():
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["definition"])
            assert m, var["definition"]
            match, label = substitute(m.group(1), MONITORS[0] if _single_monitor(board) else None), m.group(2)
            values = stack.label_values(label, match)
            if label == "monitor":
                assert set(MONITORS) <= set(values)
            else:
                assert values, var["definition"]
    classes = stack.label_values("class", "collapse_monitor_class_recall")
    assert set(classes) == {"d", "e"}, "only the rare classes get per-class series"


def test_dashboards_use_only_metrics_the_exporter_emits(stack: Stack) -> None:
    used = set().union(*(D.metric_names(D.panel_queries(b)) for b in BOARDS.values()))
    assert used, "no metric names found in the dashboards"
    missing = used - stack.exported
    assert not missing, f"dashboards query metrics the PrometheusSink never exported: {sorted(missing)}"


def test_every_exported_metric_is_on_a_dashboard(stack: Stack) -> None:
    used = set().union(*(D.metric_names(D.panel_queries(b)) for b in BOARDS.values()))
    not_shown = stack.exported - used
    assert not not_shown, f"exported but on no dashboard: {sorted(not_shown)}"
    for key in (
        "stage",
        "generation",
        "last_check_timestamp_seconds",
        "check_duration_seconds",
        "alert_firing",
        "synthetic_fraction",
        "drift",
        "class_recall",
        "tail_coverage",
        "rare_class_recall",
    ):
        assert "collapse_monitor_" + key in stack.exported


def _rule_exprs() -> tuple[list[str], set[str]]:
    doc = yaml.safe_load(RULES_YML.read_text())
    exprs, recorded = [], set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            exprs.append(str(rule["expr"]))
            if "record" in rule:
                recorded.add(rule["record"])
    return exprs, recorded


def _service_metric_names(tmp: Path) -> set[str]:
    """The series ``collapse-monitor serve`` exports about itself (its real registry)."""
    from collapse_monitor._service_config import ServeConfig, ServeSettings
    from collapse_monitor.service import Service

    names = set()
    for fam in Service(ServeConfig(ServeSettings(), (), tmp)).registry.collect():
        names.add(fam.name + "_total" if fam.type == "counter" else fam.name)
    return {n for n in names if n.startswith("collapse_monitor_serve_")}


def test_alert_rules_use_only_metrics_the_exporter_emits(stack: Stack, tmp_path: Path) -> None:
    exprs, recorded = _rule_exprs()
    used = D.metric_names(exprs) - recorded
    assert used
    serve_own = _service_metric_names(tmp_path)
    assert "collapse_monitor_serve_checks_total" in serve_own
    missing = used - stack.exported - serve_own
    assert not missing, f"collapse_rules.yml uses metrics collapse-monitor never exports: {sorted(missing)}"
    # Prometheus loaded the very rule file and evaluates it without errors
    groups = stack.prometheus.rules()
    assert groups and all(g["file"] == str(RULES_YML.resolve()) for g in groups)
    rules = [r for g in groups for r in g["rules"]]
    assert rules and all(r["health"] in ("ok", "unknown") for r in rules), rules


def test_collapse_alert_reaches_alertmanager(stack: Stack) -> None:
    last = stack.reports[-1]
    assert last.generation == len(stack.reports) - 1
    alertname = {
        Stage.EARLY_COLLAPSE: "CollapseMonitorEarlyCollapse",
        Stage.LATE_COLLAPSE: "CollapseMonitorLateCollapse",
    }[last.stage]

    def ours(alerts: list[dict[str, Any]]) -> bool:
        got = {(a["labels"].get("alertname"), a["labels"].get("monitor")) for a in alerts}
        return all((alertname, m) in got for m in MONITORS)

    alerts = stack.alertmanager.wait_for_alerts(ours, timeout=30)
    for a in alerts:
        if a["labels"].get("alertname") == alertname:
            assert a["labels"]["severity"] == last.stage.severity
