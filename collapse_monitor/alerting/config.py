"""Alert channels from configuration (the ``alerts:`` list of the YAML config)::

    alerts:
      - type: slack                       # webhook | slack | pagerduty | alertmanager | teams
        url: ${SLACK_WEBHOOK_URL}         # ${VAR} / ${VAR:-default} come from the environment
        severities: [warning, critical]   # optional; default: all
        name: team-slack                  # optional; default: <type>-<hash of the target>
      - {type: pagerduty, routing_key: "${PD_ROUTING_KEY}", severities: [critical]}
      - {type: webhook, url: "https://hooks.example.com/collapse", secret: "${WEBHOOK_SECRET}"}
      - {type: alertmanager, url: "http://127.0.0.1:9093", resend_window: 259200, labels: {team: ml}}
      - {type: teams, url: "${TEAMS_WORKFLOW_URL}"}

Keys for every type: ``type``, ``name``, ``severities``, ``timeout`` (seconds, default 5),
``headers`` (mapping), ``verify_tls`` (default true; false logs a warning). Per type:
webhook ``url``, ``secret``, ``max_body_bytes`` (default 524288); slack ``url``; pagerduty ``routing_key``, ``url``, ``source``;
alertmanager ``url``, ``resend_window``, ``labels``; teams ``url``. An unknown key, a missing
required key or a wrong value raises ``ConfigError`` naming the key (relative to the item:
the caller prefixes ``alerts[i].``). Error messages never contain the values of secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._env import expand_env, number_from_text
from ..errors import ConfigError
from .alertmanager import Alertmanager
from .base import Channel
from .pagerduty import PagerDuty
from .slack import Slack
from .teams import Teams
from .webhook import Webhook

__all__ = ["CHANNEL_TYPES", "channel_from_config", "channels_from_config", "expand_env"]

CHANNEL_TYPES: dict[str, type] = {
    "webhook": Webhook,
    "slack": Slack,
    "pagerduty": PagerDuty,
    "alertmanager": Alertmanager,
    "teams": Teams,
}
_COMMON = {"type", "name", "severities", "timeout", "headers", "verify_tls"}
_KEYS = {
    "webhook": {"url", "secret", "max_body_bytes"},
    "slack": {"url"},
    "pagerduty": {"routing_key", "url", "source"},
    "alertmanager": {"url", "resend_window", "labels"},
    "teams": {"url"},
}
_REQUIRED = {"webhook": "url", "slack": "url", "pagerduty": "routing_key", "alertmanager": "url", "teams": "url"}


def channel_from_config(d: Mapping[str, Any], *, expand: bool = True) -> Channel:
    """Build one channel from a config mapping (see the module docstring). ``expand=False``:
    ``d`` comes from a config whose ``${VAR}`` were already expanded (a second pass would
    undo the ``$${`` escape and read a ``${`` inside a secret's value as a variable)."""
    if not isinstance(d, Mapping):
        raise ConfigError("type", f"expected a mapping with a 'type' key, got {type(d).__name__}")
    kind = d.get("type")
    if not isinstance(kind, str) or kind.lower() not in CHANNEL_TYPES:
        raise ConfigError("type", f"expected one of {sorted(CHANNEL_TYPES)}, got {kind!r}")
    kind = kind.lower()
    allowed = _COMMON | _KEYS[kind]
    for k in d:
        if k not in allowed:
            raise ConfigError(str(k), f"unknown key for a {kind} channel; expected one of {sorted(allowed)}")
    cfg = {k: v for k, v in d.items() if k != "type"}
    if expand:
        cfg = expand_env(cfg)
    req = _REQUIRED[kind]
    if cfg.get(req) in (None, ""):
        raise ConfigError(req, f"a {kind} channel needs {req}")
    if "severities" in cfg and isinstance(cfg["severities"], str):
        cfg["severities"] = [cfg["severities"]]
    timeout = cfg["timeout"] = number_from_text(cfg.get("timeout", 5.0))  # ${TIMEOUT:-5}
    # verify_tls stays a real boolean: a "false" from ${VAR} does not turn TLS checks off
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigError("timeout", f"expected seconds > 0, got {type(timeout).__name__}")
    if "max_body_bytes" in cfg:
        cfg["max_body_bytes"] = number_from_text(cfg["max_body_bytes"])  # ${MAX_BODY:-524288}
    for k in ("secret", "routing_key"):
        if k in cfg and cfg[k] is not None and not isinstance(cfg[k], str):
            raise ConfigError(k, f"expected a string, got {type(cfg[k]).__name__}")
    cls = CHANNEL_TYPES[kind]
    if kind == "pagerduty":
        routing_key = cfg.pop("routing_key")
        return cls(routing_key, **cfg)
    url = cfg.pop("url")
    return cls(url, **cfg)


def channels_from_config(items: Any, key: str = "alerts", *, expand: bool = True) -> list[Channel]:
    """Channels from the ``alerts:`` list; errors name ``alerts[i].<key>``. ``expand``: as
    :func:`channel_from_config`."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigError(key, f"expected a list of channels, got {type(items).__name__}")
    out: list[Channel] = []
    for i, item in enumerate(items):
        try:
            out.append(channel_from_config(item, expand=expand))
        except ConfigError as exc:
            raise exc.under(f"{key}[{i}]") from None
    names = [c.name for c in out]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"{key}[{i}].name", f"duplicate channel name {n!r}: give each channel its own name")
    return out
