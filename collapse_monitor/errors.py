"""The collapse-monitor exception tree.

::

    CollapseMonitorError            root: catch this to catch everything we raise
    ├── InputError(ValueError)      bad Reference / Observation data (NaN, shapes, labels, ...)
    ├── ConfigError(ValueError)     bad configuration (YAML file, rules, constructor options)
    ├── SinkError                   a sink (MLflow, Prometheus, Evidently) failed in strict mode
    │   └── PermanentSinkError      (collapse_monitor.sinks) a sink rejected one report for good:
    │                               its spool moves it to a dead letter instead of retrying
    ├── AlertDeliveryError          an alert channel failed in strict mode / on a test send
    └── WebhookVerificationError(ValueError)  (collapse_monitor.alerting) a received webhook's
                                    signature or timestamp did not verify (``verify_webhook``)

Every message says which field or key was wrong, what was expected and what came, and never
contains a secret (webhook secrets, routing keys, tokens in URLs are redacted before they
reach an exception).
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = [
    "AlertDeliveryError",
    "CollapseMonitorError",
    "ConfigError",
    "InputError",
    "SinkError",
]


class CollapseMonitorError(Exception):
    """Root of every exception raised by collapse-monitor. ``report``: the check's report when
    the check was recorded before the error was raised (a strict sink or alert failure)."""

    report: Any = None


class InputError(CollapseMonitorError, ValueError):
    """Invalid input data. ``field`` names the offending field (e.g. ``"observation.embeddings"``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def under(self, prefix: str) -> InputError:
        """The same error with its field nested under ``prefix`` (``monitors[1]`` +
        ``reference.embeddings``)."""
        return InputError(f"{prefix}.{self.field}" if prefix else self.field, self.message)


#: values read from the environment by ``${VAR}`` in a config (:func:`note_env_value`): a
#: ConfigError never shows them, since a secret may land in the wrong setting
_ENV_VALUES: set[str] = set()
_MAX_ENV_VALUES = 4096
_PLAIN = re.compile(r"[A-Za-z_.-]+")


def note_env_value(value: str) -> None:
    """Remember a value a config read from the environment, so that no ConfigError echoes it.

    Only what can be a token is kept: 8 characters or more, not a number, not a plain word or
    name (letters, ``_ . -``: a severity, a monitor name) and not a path that exists. Error
    messages need those (``expected true or false``, ``file not found: ...``), and a value
    kept here is masked in every later ConfigError of the process."""
    if len(value) < 8 or len(_ENV_VALUES) >= _MAX_ENV_VALUES or _PLAIN.fullmatch(value):
        return
    try:
        float(value)
        return
    except ValueError:
        pass
    if os.sep in value and os.path.exists(value):
        return
    _ENV_VALUES.add(value)


def _without_env_values(text: str) -> str:
    # in any case: a check may echo the value lower-cased (severities)
    low = text.lower()
    found = sorted((v for v in _ENV_VALUES if v.lower() in low), key=len, reverse=True)
    if not found:
        return text
    return re.sub("|".join(re.escape(v) for v in found), "***", text, flags=re.IGNORECASE)


#: shapes of well-known credentials: GitHub, Slack and OpenAI/Stripe-style tokens, AWS access key
#: ids, and 32+ hex digits (a PagerDuty integration key)
_TOKEN_SHAPES = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|sk[-_](?:live[-_]|test[-_]|proj[-_])?[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16})\b"
    # 32+ hex digits only as a whole quoted value (a key pasted where a setting goes): a run id
    # or a snapshot hash inside a file path is not masked (a review)
    r"|(?<=['\"])[0-9a-fA-F]{32,}(?=['\"])"
)


#: a key segment of 32+ hex digits (a PagerDuty key pasted as a setting's name)
_KEY_HEX = re.compile(r"(?:^|(?<=[.\[]))[0-9a-fA-F]{32,}(?=$|[.\[\]])")


def _scrubbed(text: str) -> str:
    from ._redact import MASK, redact_text  # lazy: _redact is the heavier module

    return _TOKEN_SHAPES.sub(MASK, redact_text(text, kv=False))


class ConfigError(CollapseMonitorError, ValueError):
    """Invalid configuration. ``key`` names the offending key (e.g. ``"rules.alpha"``).

    Neither shows a value the config read from the environment (``${VAR}``): a secret given to
    the wrong setting is refused without being echoed."""

    def __init__(self, key: str, message: str) -> None:
        if _ENV_VALUES:
            key, message = _without_env_values(key), _without_env_values(message)
        # a secret written into the wrong setting (or as a key) is not echoed either: URLs'
        # secret parts, whsec_/Bearer values, and the shapes of well-known tokens (a config
        # audit: `knn: <a Slack URL>` and `tail: [<a PagerDuty key>]` were shown whole)
        key, message = _KEY_HEX.sub("***", _scrubbed(str(key))), _scrubbed(str(message))
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")

    def under(self, prefix: str, *, strip: str = "") -> ConfigError:
        """The same error with its key nested under ``prefix`` (``sinks[0]`` + ``timeout``),
        after removing a leading ``strip`` (``MLflowSink.``) from it."""
        key = self.key[len(strip) :] if strip and self.key.startswith(strip) else self.key
        return ConfigError(f"{prefix}.{key}" if prefix else key, self.message)


class SinkError(CollapseMonitorError):
    """A sink failed to emit a report (raised only with ``strict=True``)."""


class AlertDeliveryError(CollapseMonitorError):
    """An alert channel failed to deliver (raised only with ``strict=True`` or on test sends)."""
