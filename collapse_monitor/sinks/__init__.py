"""Where reports go: MLflow, Prometheus, Evidently. One Protocol: ``emit(report, context)``."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import EmitContext, PermanentSinkError, Sink, Spool

_LAZY = {
    "MLflowSink": ".mlflow",
    "PrometheusSink": ".prometheus",
    "EvidentlySink": ".evidently",
}

__all__ = ["EmitContext", "EvidentlySink", "MLflowSink", "PermanentSinkError", "PrometheusSink", "Sink", "Spool"]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'collapse_monitor.sinks' has no attribute {name!r}")
    value = getattr(import_module(mod, __name__), name)
    globals()[name] = value
    return value
