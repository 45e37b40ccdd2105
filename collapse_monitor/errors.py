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


class ConfigError(CollapseMonitorError, ValueError):
    """Invalid configuration. ``key`` names the offending key (e.g. ``"rules.alpha"``)."""

    def __init__(self, key: str, message: str) -> None:
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
