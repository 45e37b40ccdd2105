"""Alert channels and durable delivery.

::

    import collapse_monitor as cm
    channels = [
        cm.Slack(os.environ["SLACK_WEBHOOK_URL"], severities={"warning", "critical"}),
        cm.PagerDuty(os.environ["PD_ROUTING_KEY"], severities={"critical"}),
        cm.Webhook("https://hooks.example.com/collapse", secret=os.environ["WEBHOOK_SECRET"]),
        cm.Alertmanager("http://127.0.0.1:9093"),
        cm.Teams(os.environ["TEAMS_WORKFLOW_URL"]),
    ]
    mon = cm.CollapseMonitor("digits-generator", reference=ref, alerts=channels)

Every channel implements one Protocol, ``send(event, *, timeout=None) -> DeliveryResult``
(one attempt). :class:`AlertDispatcher` routes by severity, applies mute windows, commits
every event to the sqlite :class:`Outbox` before delivering it, and delivers within a
bounded budget; what is left is retried later (``redeliver()``, ``collapse-monitor serve``).
Secrets (signing secrets, routing keys, tokens in URLs) never appear in reprs, logs,
exceptions, results or the outbox. Receivers of signed webhooks check them with
:func:`verify_webhook` (signature in constant time, timestamp against replay).
"""

from __future__ import annotations

from .alertmanager import Alertmanager
from .base import AlertEvent, Channel, DeliveryResult, report_summary
from .config import channel_from_config, channels_from_config
from .dispatcher import AlertDispatcher, Mute, parse_mutes, send_test_event
from .outbox import Outbox, OutboxRow, RetryPolicy
from .pagerduty import PagerDuty
from .slack import Slack
from .teams import Teams
from .webhook import Webhook, WebhookVerificationError, verify_webhook, webhook_signature

__all__ = [
    "AlertDispatcher",
    "AlertEvent",
    "Alertmanager",
    "Channel",
    "DeliveryResult",
    "Mute",
    "Outbox",
    "OutboxRow",
    "PagerDuty",
    "RetryPolicy",
    "Slack",
    "Teams",
    "Webhook",
    "WebhookVerificationError",
    "channel_from_config",
    "channels_from_config",
    "parse_mutes",
    "report_summary",
    "send_test_event",
    "verify_webhook",
    "webhook_signature",
]
