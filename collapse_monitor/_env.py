"""``${VAR}`` / ``${VAR:-default}`` expansion for YAML configs (one definition, used by
``collapse_monitor.config``, ``collapse_monitor.alerting.config`` and ``serve``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, note_env_value

__all__ = ["ENV_REF", "expand_env", "flag_from_text", "number_from_text"]

#: ``${VAR}``, ``${VAR:-default}`` (unset or empty) or ``${VAR-default}`` (unset); ``$${`` is a
#: literal ``${``
ENV_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
_ESCAPED = re.compile(r"\$\$\{")


def expand_env(value: Any, key: str = "", env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` in strings, recursively, as the shell does: ``${VAR:-default}`` when
    VAR is unset or empty, ``${VAR-default}`` only when it is unset, ``$${`` for a literal
    ``${``. A variable that is not set and has no default, and a ``${`` that is not one of these
    (``${1X}``, a nested ``${A:-${B}}``), raise ``ConfigError(key)``; values never appear in
    messages.

    >>> expand_env("${NOT_SET_ANYWHERE:-fallback}")
    'fallback'
    >>> expand_env("$${NOT_SET_ANYWHERE}")
    '${NOT_SET_ANYWHERE}'
    >>> expand_env({"sinks": [{"url": "${NOT_SET_ANYWHERE}"}]})
    Traceback (most recent call last):
    ...
    collapse_monitor.errors.ConfigError: sinks[0].url: environment variable NOT_SET_ANYWHERE is not set
    """
    env = os.environ if env is None else env
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            var, op, default = m.group(1), m.group(2), m.group(3)
            got = env.get(var)
            if got is not None and not (op == ":-" and got == ""):
                note_env_value(got)
                return got
            if op is not None:
                return default
            raise ConfigError(key or "config", f"environment variable {var} is not set")

        nested = any("${" in _ESCAPED.sub("", m.group(3) or "") for m in ENV_REF.finditer(value))
        if nested or "${" in _ESCAPED.sub("", ENV_REF.sub("", value)):
            raise ConfigError(
                key or "config",
                "a ${ that is not ${VAR}, ${VAR:-default} or ${VAR-default} (nested references are not "
                "expanded; write $${ for a literal ${)",
            )
        return _ESCAPED.sub("${", ENV_REF.sub(sub, value))
    if isinstance(value, Mapping):
        return {k: expand_env(v, f"{key}.{k}" if key else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{key}[{i}]", env) for i, v in enumerate(value)]
    return value


def flag_from_text(v: Any) -> Any:
    """``"true"`` / ``"false"`` (any case, as ``${FLAG:-false}`` expands) as a bool; anything
    else as given, for the setting's own check to judge."""
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    return v


def number_from_text(v: Any) -> Any:
    """A number written as text (``${TIMEOUT:-5}``, or ``1e-3``, which YAML 1.1 leaves a
    string) as an int or float; anything else as given."""
    if not isinstance(v, str):
        return v
    t = v.strip()
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return v
