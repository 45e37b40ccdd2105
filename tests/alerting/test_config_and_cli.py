"""channel_from_config (YAML items, ${ENV} expansion, errors naming the key) and
``collapse-monitor alerts test`` (alerts_test_command) against real receivers."""

from __future__ import annotations

import io

import pytest
import yaml

import collapse_monitor as cm
from collapse_monitor.alerting import channel_from_config, channels_from_config
from collapse_monitor.alerting.cli import alerts_test_command
from collapse_monitor.errors import ConfigError


def test_every_type_from_config(monkeypatch):
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.com/services/T1/B2/tokentokentoken")
    monkeypatch.setenv("PD_KEY", "R0UTINGKEY0123456789abcdefABCDEF")
    monkeypatch.setenv("HOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    chans = channels_from_config(
        yaml.safe_load(
            """
            - {type: slack, url: "${SLACK_URL}", severities: [warning], name: team-slack}
            - {type: pagerduty, routing_key: "${PD_KEY}", severities: critical, timeout: 2}
            - {type: webhook, url: "https://hooks.example.com/c", secret: "${HOOK_SECRET}", headers: {X-Team: ml}}
            - {type: alertmanager, url: "http://127.0.0.1:9093", resend_window: 3600, labels: {team: ml}}
            - {type: teams, url: "${TEAMS_URL:-https://example.com/workflows/x}", verify_tls: true}
            """
        )
    )
    slack, pd, hook, am, teams = chans
    assert isinstance(slack, cm.Slack) and slack.name == "team-slack" and slack.severities == {"warning"}
    assert isinstance(pd, cm.PagerDuty) and pd.severities == {"critical"} and pd.timeout == 2
    assert isinstance(hook, cm.Webhook) and isinstance(am, cm.Alertmanager) and am.resend_window == 3600
    assert isinstance(teams, cm.Teams) and teams.target == "https://example.com/workflows/x"
    # names are stable across processes (they key the outbox)
    assert channel_from_config({"type": "pagerduty", "routing_key": "${PD_KEY}"}).name == pd.name


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ({"type": "slack", "url": "https://e.com/x", "secret": "s"}, "secret"),
        ({"type": "pagerduty", "url": "https://e.com/x"}, "routing_key"),
        ({"type": "smoke-signal", "url": "https://e.com/x"}, "type"),
        ({"url": "https://e.com/x"}, "type"),
        ({"type": "webhook", "url": "ftp://e.com/x"}, "url"),
        ({"type": "webhook", "url": "https://e.com/x", "timeout": "soon"}, "timeout"),
        ({"type": "webhook", "url": "https://e.com/x", "timeout": -1}, "timeout"),
        ({"type": "slack", "url": "https://e.com/x", "severities": ["urgent"]}, "severities"),
        ({"type": "alertmanager", "url": "http://h:9093", "labels": {"severity": "x"}}, "labels.severity"),
        ({"type": "alertmanager", "url": "http://h:9093", "resend_window": 0}, "resend_window"),
        # past the year 9999 every firing alert failed to render and was dropped for good
        ({"type": "alertmanager", "url": "http://h:9093", "resend_window": 1e12}, "resend_window"),
        ({"type": "alertmanager", "url": "http://h:9093", "resend_window": float("inf")}, "resend_window"),
        ({"type": "slack", "url": "${UNSET_VAR_FOR_TEST}"}, "url"),
        # found by the config audit of 2026-12-07: each was accepted
        ({"type": "alertmanager", "url": "http://h:9093", "resend_window": True}, "resend_window"),  # 1 s
        ({"type": "webhook", "url": "https://e.com/x", "timeout": 1e10}, "timeout"),  # every send failed
        ({"type": "pagerduty", "routing_key": "k" * 32, "source": 5}, "source"),  # PagerDuty answered 400
        ({"type": "pagerduty", "routing_key": "k" * 32, "source": ["team-a"]}, "source"),
        ({"type": "pagerduty", "routing_key": "k" * 32, "source": " "}, "source"),
    ],
)
def test_bad_config_names_the_key(item, key, monkeypatch):
    monkeypatch.delenv("UNSET_VAR_FOR_TEST", raising=False)
    with pytest.raises(ConfigError) as e:
        channel_from_config(item)
    assert e.value.key == key


def test_list_errors_are_prefixed_and_names_unique():
    with pytest.raises(ConfigError) as e:
        channels_from_config([{"type": "slack", "url": "https://e.com/a"}, {"type": "slack", "urll": "x"}])
    assert e.value.key == "alerts[1].urll"
    with pytest.raises(ConfigError) as e:
        channels_from_config([{"type": "slack", "url": "https://e.com/a"}] * 2)
    assert e.value.key == "alerts[1].name"


def _write_config(tmp_path, items) -> str:
    p = tmp_path / "collapse.yaml"
    p.write_text(yaml.safe_dump({"name": "digits-generator", "alerts": items}))
    return str(p)


def test_alerts_test_command_all_delivered(http_receiver, tmp_path, monkeypatch):
    from rich.console import Console

    monkeypatch.setenv("TEST_HOOK_URL", http_receiver.url_for("/hook/tok3nSecretPart"))
    cfg = _write_config(
        tmp_path,
        [
            {"type": "webhook", "url": "${TEST_HOOK_URL}", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
            {"type": "slack", "url": http_receiver.url_for("/slack"), "name": "slack"},
            {"type": "alertmanager", "url": http_receiver.url, "name": "am"},
        ],
    )
    out = io.StringIO()
    code = alerts_test_command(cfg, console=Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert code == 0, text
    assert "all 3 channel(s) accepted the test event" in text
    assert "slack" in text and "am" in text and "delivered" in text
    assert "tok3nSecretPart" not in text and "whsec_" not in text
    bodies = {r.path: r.json() for r in http_receiver.wait_for_requests(3)}
    assert bodies["/hook/tok3nSecretPart"]["type"] == "collapse_monitor.alert.test"
    assert bodies["/slack"]["text"].startswith("[TEST]")
    assert bodies["/api/v2/alerts"][0]["labels"]["alertname"] == "CollapseMonitorTest"


def test_alerts_test_command_reports_failures(http_receiver, tmp_path):
    from rich.console import Console

    http_receiver.respond((404, {}, "no_service"), path="/slack")
    cfg = _write_config(
        tmp_path,
        [
            {"type": "slack", "url": http_receiver.url_for("/slack"), "name": "broken-slack"},
            {"type": "webhook", "url": http_receiver.url_for("/ok"), "name": "hook"},
        ],
    )
    out = io.StringIO()
    code = alerts_test_command(cfg, console=Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert code == 1
    assert "broken-slack" in text and "failed" in text and "404" in text and "no_service" in text
    assert "1 of 2 channel(s) did not accept" in text


def test_alerts_test_command_config_problems(tmp_path, monkeypatch):
    from rich.console import Console

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COLLAPSE_MONITOR_CONFIG", raising=False)
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    assert alerts_test_command(None, console=console) == 2  # no file anywhere
    assert alerts_test_command(str(tmp_path / "missing.yaml"), console=console) == 2
    bad = _write_config(
        tmp_path, [{"type": "slack", "url": "https://hooks.slack.com/services/T/B/zzzTOKENzzz", "x": 1}]
    )
    assert alerts_test_command(bad, console=console) == 2
    assert "alerts[0].x" in out.getvalue() and "zzzTOKENzzz" not in out.getvalue()
    empty = _write_config(tmp_path, [])
    assert alerts_test_command(empty, console=console) == 2


def test_an_alertmanager_window_up_to_the_repeat_interval_is_refused(tmp_path) -> None:
    """Alerting audit (stop 41): the firing is posted again only with a repeat, so a
    resend_window at or below rules.repeat_interval_seconds let an open incident expire between
    repeats, and Alertmanager notified 'resolved' while the model was still collapsed."""
    import numpy as np

    ref = cm.Reference(labels=np.array([0] * 40 + [1] * 10))
    am = cm.Alertmanager("http://127.0.0.1:9093", resend_window=3600)
    with pytest.raises(cm.ConfigError, match=r"alerts\[1\]\.resend_window.*repeat_interval_seconds") as info:
        cm.CollapseMonitor(
            "am", reference=ref, sinks=[], alerts=[cm.Webhook("http://127.0.0.1:9/h"), am], home=tmp_path
        )
    assert "3600 s" in str(info.value)
    fast = cm.Rules(repeat_interval_seconds=1800)
    assert cm.CollapseMonitor("am", reference=ref, sinks=[], alerts=[am], rules=fast, home=tmp_path).channels == [am]
    assert cm.CollapseMonitor(
        "am", reference=ref, sinks=[], alerts=[cm.Alertmanager("http://127.0.0.1:9093")], home=tmp_path / "2"
    ).channels  # the defaults (72 h against 6 h) pass


def test_the_python_api_refuses_a_bool_as_seconds_as_yaml_does() -> None:
    with pytest.raises(ConfigError) as e:
        cm.Alertmanager("http://127.0.0.1:9093", resend_window=True)
    assert e.value.key == "resend_window" and "bool" in str(e.value)
    with pytest.raises(ConfigError) as e:
        cm.Webhook("https://e.com/x", timeout=True)
    assert e.value.key == "timeout"
    with pytest.raises(ConfigError) as e:
        cm.Webhook("https://e.com/x", timeout="sk-live-0123456789abcdef")  # a secret in the wrong setting
    assert "sk-live" not in str(e.value)
    assert cm.Webhook("https://e.com/x", timeout=3600).timeout == 3600.0
