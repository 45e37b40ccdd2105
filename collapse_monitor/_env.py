"""``${VAR}`` / ``${VAR:-default}`` expansion for YAML configs (one definition, used by
``collapse_monitor.config``, ``collapse_monitor.alerting.config`` and ``serve``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["ENV_REF", "expand_env"]

#: ``${VAR}`` or ``${VAR:-default}``
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, key: str = "", env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in strings, recursively. A variable that is
    not set and has no default raises ``ConfigError(key)`` naming the variable; values never
    appear in messages.

    >>> expand_env("${NOT_SET_ANYWHERE:-fallback}")
    'fallback'
    >>> expand_env({"sinks": [{"url": "${NOT_SET_ANYWHERE}"}]})
    Traceback (most recent call last):
    ...
    collapse_monitor.errors.ConfigError: sinks[0].url: environment variable NOT_SET_ANYWHERE is not set
    """
    env = os.environ if env is None else env
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            raise ConfigError(key or "config", f"environment variable {var} is not set")

        return ENV_REF.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: expand_env(v, f"{key}.{k}" if key else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{key}[{i}]", env) for i, v in enumerate(value)]
    return value
