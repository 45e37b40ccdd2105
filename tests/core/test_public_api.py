"""The public surface is pinned: renaming or dropping a name is a deliberate, visible change."""

from __future__ import annotations

import subprocess
import sys

import collapse_monitor as cm

EXPECTED = {
    "Alert",
    "AlertDeliveryError",
    "Alertmanager",
    "Channel",
    "CollapseMonitor",
    "CollapseMonitorError",
    "ConfigError",
    "EvidentlySink",
    "Finding",
    "InputError",
    "MLflowSink",
    "MetricValue",
    "Observation",
    "PagerDuty",
    "PrometheusSink",
    "Provenance",
    "Reference",
    "Report",
    "Rules",
    "Sink",
    "SinkError",
    "Slack",
    "Stage",
    "Teams",
    "Webhook",
    "__version__",
}


def test_all_is_pinned() -> None:
    assert set(cm.__all__) == EXPECTED
    assert sorted(cm.__all__) == cm.__all__


def test_every_public_name_resolves() -> None:
    for name in cm.__all__:
        assert getattr(cm, name) is not None, name


def test_functional_metrics_import() -> None:
    from collapse_monitor.metrics import prdc, vendi_score

    assert callable(prdc) and callable(vendi_score)


def test_error_tree() -> None:
    assert issubclass(cm.InputError, ValueError) and issubclass(cm.InputError, cm.CollapseMonitorError)
    assert issubclass(cm.ConfigError, ValueError) and issubclass(cm.ConfigError, cm.CollapseMonitorError)
    assert issubclass(cm.SinkError, cm.CollapseMonitorError)
    assert issubclass(cm.AlertDeliveryError, cm.CollapseMonitorError)


def test_stage_is_a_str_enum() -> None:
    assert cm.Stage("early_collapse") is cm.Stage.EARLY_COLLAPSE
    assert cm.Stage.HEALTHY == "healthy"
    assert [s.value for s in cm.Stage] == ["healthy", "early_collapse", "late_collapse"]


def test_import_is_light() -> None:
    code = (
        "import sys, collapse_monitor as cm;"
        "heavy = [m for m in ('torch', 'mlflow', 'evidently', 'prometheus_client', 'sklearn', 'pandas', 'scipy')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import collapse_monitor pulled in: {out}"
