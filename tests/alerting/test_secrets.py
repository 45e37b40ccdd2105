"""Secrets (signing secrets, routing keys, tokens in URL paths, query strings and userinfo,
header tokens) appear in no log line, repr, exception, DeliveryResult or outbox row - even when
a receiver echoes them back in its error body."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import collapse_monitor as cm
from collapse_monitor._redact import Redactor, redact_text, redact_url
from collapse_monitor.alerting import AlertDispatcher, channel_from_config, send_test_event
from collapse_monitor.errors import ConfigError

SLACK_TOKEN = "xoxbSLACKtoken9f8e7d6c5b4a"
TEAMS_SIG = "TeAmSsIg0123456789abcdefXYZ"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK_KEY_B64 = HOOK_SECRET.removeprefix("whsec_")
PASSWORD = "PaSsW0rd-4711"
PD_KEY = "PDROUTINGKEY0123456789abcdef0001"
HEADER_TOKEN = "HeaderT0ken-abcdef123456"
SECRETS = [SLACK_TOKEN, TEAMS_SIG, HOOK_SECRET, HOOK_KEY_B64, PASSWORD, PD_KEY, HEADER_TOKEN]


def assert_clean(text: str, where: str) -> None:
    for s in SECRETS:
        assert s not in text, f"secret {s[:4]}... leaked into {where}: {text[:500]}"


@pytest.fixture
def leaky_channels(http_receiver_factory):
    """Channels whose receivers answer with errors that echo the secrets back."""
    from servers import free_port

    rx = http_receiver_factory()
    port = rx.port
    slack_url = f"http://127.0.0.1:{port}/services/T0AAAA/B0BBBB/{SLACK_TOKEN}"
    teams_url = f"http://127.0.0.1:{port}/workflows/3fa9/triggers/manual/paths/invoke?api-version=1&sig={TEAMS_SIG}"
    hook_url = f"http://hookuser:{PASSWORD}@127.0.0.1:{port}/hook"
    rx.respond((400, {}, f"invalid_token {SLACK_TOKEN} for {slack_url}"), path=f"/services/T0AAAA/B0BBBB/{SLACK_TOKEN}")
    rx.respond((500, {}, f"bad sig={TEAMS_SIG} url {teams_url}"), path="/workflows/3fa9/triggers/manual/paths/invoke")
    rx.respond((401, {}, f"wrong password {PASSWORD} / {HEADER_TOKEN} / {HOOK_SECRET}"), path="/hook")
    rx.respond((400, {}, {"status": "invalid event", "message": f"unknown routing key {PD_KEY}"}), path="/pd")
    chans = [
        cm.Slack(slack_url, name="slack"),
        cm.Teams(teams_url, name="teams"),
        cm.Webhook(hook_url, secret=HOOK_SECRET, headers={"Authorization": f"Bearer {HEADER_TOKEN}"}, name="hook"),
        cm.PagerDuty(PD_KEY, url=f"http://127.0.0.1:{port}/pd", name="pd"),
        # nobody listens here: the connection error must not show the token either
        cm.Slack(f"http://127.0.0.1:{free_port()}/services/T0AAAA/B0BBBB/{SLACK_TOKEN}", name="dead-slack"),
    ]
    return rx, chans


def test_no_secret_in_logs_reprs_results_or_outbox(leaky_channels, tmp_path, make_alert, caplog, fast_retry):
    rx, chans = leaky_channels
    db = tmp_path / "o.db"
    with caplog.at_level(logging.DEBUG):
        with AlertDispatcher(chans, outbox_path=db, retry=fast_retry, budget_seconds=2) as d:
            results = d.dispatch([make_alert()])
            rows = d.outbox.rows()
            text_repr = repr(d) + " ".join(repr(c) for c in chans)
        test_results = send_test_event(chans)
    assert {r.channel: r.status for r in results} == {
        "slack": "dead",  # 400
        "teams": "delivered",  # 500, then 200
        "hook": "dead",  # 401
        "pd": "dead",  # 400
        "dead-slack": "dead",  # connection refused until the attempts ran out
    }
    # the error texts are informative...
    by = {r.channel: r for r in results}
    assert "invalid_token" in by["slack"].error and "unknown routing key" in by["pd"].error
    assert "Connection refused" in by["dead-slack"].error
    # ...and clean
    assert_clean(caplog.text, "logs")
    assert_clean(text_repr, "repr")
    for r in [*results, *test_results]:
        assert_clean(repr(r) + str(r.to_dict()), f"DeliveryResult of {r.channel}")
    for row in rows:
        assert_clean(repr(row), f"outbox row of {row.channel}")
    for f in Path(tmp_path).glob("o.db*"):  # the sqlite file and its WAL, byte for byte
        raw = f.read_bytes()
        for s in SECRETS:
            assert s.encode() not in raw, f"secret {s[:4]}... in {f.name}"
    # the receivers did get what they need
    assert any(SLACK_TOKEN in r.path for r in rx.requests)
    assert any(r.header("authorization") == f"Bearer {HEADER_TOKEN}" for r in rx.requests)


def test_no_secret_in_config_exceptions():
    cases = [
        {"type": "slack", "url": f"ftp://hooks.slack.com/services/T/B/{SLACK_TOKEN}"},
        {"type": "webhook", "url": f"https://h.example.com/x?sig={TEAMS_SIG}", "secret": "whsec_" + PASSWORD},
        {"type": "teams", "url": f"not-a-url-{TEAMS_SIG}"},
        {"type": "pagerduty", "routing_key": PD_KEY, "url": f"gopher://{PASSWORD}"},
    ]
    for item in cases:
        with pytest.raises(ConfigError) as e:
            channel_from_config(item)
        assert_clean(str(e.value) + repr(e.value), f"ConfigError for {item['type']}")


def test_redact_url_cases():
    assert redact_url(f"https://hooks.slack.com/services/T0AAAA/B0BBBB/{SLACK_TOKEN}") == (
        "https://hooks.slack.com/services/***/***/***"
    )
    assert redact_url(f"https://u:{PASSWORD}@am.example.com:9093/api/v2/alerts") == (
        "https://***@am.example.com:9093/api/v2/alerts"
    )
    assert redact_url(
        f"https://x.logic.azure.com:443/workflows/abc123/triggers/manual/paths/invoke?sp=%2F&sig={TEAMS_SIG}"
    ) == ("https://x.logic.azure.com:443/workflows/***/triggers/manual/paths/invoke?sp=***&sig=***")
    assert redact_url("https://events.pagerduty.com/v2/enqueue") == "https://events.pagerduty.com/v2/enqueue"
    assert redact_url("http://[::1]:8080/hook#frag") == "http://[::1]:8080/hook#***"
    for bad in ("", "hooks.slack.com/services/x", None, 42, "http://:99999/x"):
        assert redact_url(bad) == "***"


def test_redact_text_and_redactor():
    msg = (
        f"POST https://hooks.slack.com/services/T1/B2/{SLACK_TOKEN}, failed; Authorization: Bearer {HEADER_TOKEN} "
        f"routing_key={PD_KEY} secret: {HOOK_SECRET} token={PASSWORD}"
    )
    assert_clean(redact_text(msg), "redact_text")
    assert "https://hooks.slack.com/services/***/***/***," in redact_text(msg)
    r = Redactor(secrets=[PD_KEY], urls=[f"http://h/x/{SLACK_TOKEN}?sig={TEAMS_SIG}"])
    assert r(f"{PD_KEY} {SLACK_TOKEN} {TEAMS_SIG}") == "*** *** ***"
    assert r("api v2") == "api v2"  # short, harmless fragments are never scrubbed
    assert PD_KEY not in repr(r)
