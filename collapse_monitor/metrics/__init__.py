"""Pure metric functions (numpy / torch): arrays in, MetricValue out.

``from collapse_monitor.metrics import prdc, vendi_score`` is the functional entry point.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "prdc": ".coverage",
    "vendi_score": ".diversity",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'collapse_monitor.metrics' has no attribute {name!r}")
    value = getattr(import_module(mod, __name__), name)
    globals()[name] = value
    return value
