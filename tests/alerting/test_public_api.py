"""The alerting package's public names are pinned; cm.<Channel> resolves lazily."""

from __future__ import annotations

import subprocess
import sys

import collapse_monitor as cm
import collapse_monitor.alerting as alerting


def test_alerting_all_is_pinned():
    assert alerting.__all__ == [
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
    for name in alerting.__all__:
        assert getattr(alerting, name) is not None


def test_top_level_names_come_from_alerting():
    for name in ("Webhook", "Slack", "PagerDuty", "Alertmanager", "Teams", "Channel"):
        assert getattr(cm, name) is getattr(alerting, name)
        assert name in cm.__all__


def test_import_collapse_monitor_does_not_load_alerting():
    code = (
        "import sys, collapse_monitor as cm\n"
        "assert 'collapse_monitor.alerting' not in sys.modules\n"
        "cm.Webhook\n"
        "assert 'collapse_monitor.alerting' in sys.modules\n"
        "heavy = {'torch', 'mlflow', 'evidently', 'prometheus_client', 'requests', 'rich'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
