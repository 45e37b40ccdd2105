"""collapse-monitor: early warning for model collapse in recursive training.

Public API (everything else may move)::

    import collapse_monitor as cm
    mon = cm.CollapseMonitor("name", reference=cm.Reference(...))
    report = mon.check(cm.Observation(...))

Importing this package pulls numpy only; mlflow, evidently, torch and prometheus_client load
when first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import AlertDeliveryError, CollapseMonitorError, ConfigError, InputError, SinkError
from .types import Alert, Finding, MetricValue, Observation, Provenance, Reference, Report, Stage

__version__ = "0.1.0"

# lazily imported public names: name -> module
_LAZY = {
    "CollapseMonitor": ".monitor",
    "Rules": ".detection",
    "MLflowSink": ".sinks",
    "PrometheusSink": ".sinks",
    "EvidentlySink": ".sinks",
    "Sink": ".sinks",
    "Webhook": ".alerting",
    "Slack": ".alerting",
    "PagerDuty": ".alerting",
    "Alertmanager": ".alerting",
    "Teams": ".alerting",
    "Channel": ".alerting",
}

__all__ = [
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
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'collapse_monitor' has no attribute {name!r}")
    value = getattr(import_module(mod, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from .alerting import Alertmanager, Channel, PagerDuty, Slack, Teams, Webhook
    from .detection import Rules
    from .monitor import CollapseMonitor
    from .sinks import EvidentlySink, MLflowSink, PrometheusSink, Sink
