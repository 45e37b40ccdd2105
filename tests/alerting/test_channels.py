"""Each channel's request against a real local HTTP receiver: payload shape, headers, the
Standard Webhooks signature (checked by an independent verifier), status classification."""

from __future__ import annotations

import json

import pytest

import collapse_monitor as cm
from collapse_monitor.alerting import AlertEvent, report_summary, send_test_event, webhook_signature
from collapse_monitor.alerting._http import parse_retry_after
from collapse_monitor.errors import ConfigError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_webhook_signed_per_standard_webhooks(
    http_receiver, make_alert, make_report, webhook_verifier, assert_complete_message
):
    ch = cm.Webhook(http_receiver.url_for("/hook"), secret=SECRET)
    event = AlertEvent(make_alert(), report=report_summary(make_report()))
    result = ch.send(event)
    assert result.status == "delivered" and result.http_status == 200 and result.ok
    (req,) = http_receiver.wait_for_requests(1)
    assert req.method == "POST" and req.path == "/hook"
    assert req.header("content-type") == "application/json"
    assert req.header("webhook-id") == event.id
    assert webhook_verifier(SECRET, req.headers, req.body)
    # tampering with the body or the id breaks the signature
    assert not webhook_verifier(SECRET, req.headers, req.body.replace(b"0.41", b"0.99"))
    assert not webhook_verifier(SECRET, {**req.headers, "webhook-id": "other"}, req.body)
    assert not webhook_verifier("whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ==", req.headers, req.body)
    body = req.json()
    assert body["type"] == "collapse_monitor.alert.firing"
    assert body["data"]["event_id"] == event.id
    assert body["data"]["alert"] == json.loads(json.dumps(event.alert.to_dict()))
    assert body["data"]["report"]["run_id"] == "0123abcd"
    assert body["data"]["report"]["synthetic_fraction"] == 0.6
    assert body["data"]["report"]["declines"][0]["key"] == "tail_coverage"
    assert_complete_message(body["data"]["text"])


def test_webhook_raw_secret_is_used_as_utf8_key(http_receiver, make_alert):
    import base64
    import hashlib
    import hmac

    ch = cm.Webhook(http_receiver.url, secret="plain-secret-string")
    ch.send(AlertEvent(make_alert()))
    (req,) = http_receiver.wait_for_requests(1)
    signed = f"{req.header('webhook-id')}.{req.header('webhook-timestamp')}.".encode() + req.body
    expected = base64.b64encode(hmac.new(b"plain-secret-string", signed, hashlib.sha256).digest()).decode()
    assert req.header("webhook-signature") == "v1," + expected


def test_webhook_without_secret_is_unsigned(http_receiver, make_alert):
    cm.Webhook(http_receiver.url).send(AlertEvent(make_alert()))
    (req,) = http_receiver.wait_for_requests(1)
    assert req.header("webhook-signature") is None
    assert req.header("webhook-id") and req.header("webhook-timestamp")


def test_webhook_signature_helper_matches_spec_example():
    # the example from the Standard Webhooks spec / reference libraries
    sig = webhook_signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_bad_whsec_secret_is_a_config_error():
    with pytest.raises(ConfigError) as exc:
        cm.Webhook("https://example.com/h", secret="whsec_not*base64!")
    assert exc.value.key == "secret"
    assert "not*base64" not in str(exc.value)


def test_slack_payload(http_receiver, make_alert, assert_complete_message):
    ch = cm.Slack(http_receiver.url_for("/services/T000/B000/XXXXXXXX"))
    r = ch.send(AlertEvent(make_alert()))
    assert r.status == "delivered"
    body = http_receiver.wait_for_requests(1)[0].json()
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("[WARNING] digits-generator: early collapse at generation 3")
    assert body["blocks"][0]["type"] == "header"
    assert {b["type"] for b in body["blocks"]} >= {"header", "section", "actions"}
    buttons = next(b for b in body["blocks"] if b["type"] == "actions")["elements"]
    assert [b["text"]["text"] for b in buttons] == ["MLflow run", "Dashboard", "Runbook"]
    assert_complete_message(body["text"])
    assert_complete_message(json.dumps(body["blocks"]).replace("\\u2022", "").replace("\\n", "\n"))


def test_slack_plain_text_error_and_retry_after(http_receiver, make_alert):
    ch = cm.Slack(http_receiver.url)
    http_receiver.respond((400, {}, "invalid_payload"), (429, {"Retry-After": "7"}, "rate_limited"))
    r1 = ch.send(AlertEvent(make_alert()))
    assert (r1.status, r1.http_status) == ("failed", 400) and "invalid_payload" in r1.error
    r2 = ch.send(AlertEvent(make_alert()))
    assert (r2.status, r2.http_status, r2.retry_after) == ("retry", 429, 7.0)


def test_pagerduty_trigger_and_resolve(http_receiver, make_alert):
    key = "R0UTINGKEY0123456789abcdefABCDEF"
    ch = cm.PagerDuty(key, url=http_receiver.url_for("/v2/enqueue"))
    http_receiver.respond((202, {}, {"status": "success", "message": "Event processed", "dedup_key": "x"}))
    long_summary = "x" * 3000
    r = ch.send(AlertEvent(make_alert(severity="critical", stage=cm.Stage.LATE_COLLAPSE, summary=long_summary)))
    assert (r.status, r.http_status) == ("delivered", 202)
    trig = http_receiver.wait_for_requests(1)[0].json()
    assert trig["routing_key"] == key and trig["event_action"] == "trigger"
    assert trig["dedup_key"] == "digits-generator/early_collapse"
    p = trig["payload"]
    assert len(p["summary"]) <= 1024
    assert p["severity"] == "critical" and p["source"] == "collapse-monitor/digits-generator"
    cd = p["custom_details"]
    assert cd["generation"] == 3 and cd["synthetic_fraction"] == 0.6 and cd["stage"] == "late_collapse"
    assert cd["what_fell"][0].startswith("tail_coverage 0.41 (95% CI 0.38 to 0.45) vs baseline 0.61: -32.8%")
    assert {"href": "http://127.0.0.1:5000/#/experiments/1/runs/0123abcd", "text": "MLflow run"} in trig["links"]
    ch.send(AlertEvent(make_alert(status="resolved", severity="critical")))
    res = http_receiver.wait_for_requests(2)[1].json()
    assert res == {"routing_key": key, "event_action": "resolve", "dedup_key": "digits-generator/early_collapse"}


@pytest.mark.parametrize(("status", "expected"), [(400, "failed"), (429, "retry"), (500, "retry"), (503, "retry")])
def test_pagerduty_status_classes(http_receiver, make_alert, status, expected):
    http_receiver.respond((status, {}, {"status": "invalid event", "message": "Event object is invalid"}))
    r = cm.PagerDuty("k" * 32, url=http_receiver.url).send(AlertEvent(make_alert()))
    assert (r.status, r.http_status) == (expected, status)


def test_pagerduty_severity_mapping(http_receiver, make_alert):
    ch = cm.PagerDuty("k" * 32, url=http_receiver.url)
    for sev in ("info", "warning", "error", "critical", "page-me"):
        ch.send(AlertEvent(make_alert(severity=sev)))
    got = [r.json()["payload"]["severity"] for r in http_receiver.wait_for_requests(5)]
    assert got == ["info", "warning", "error", "critical", "error"]


def test_pagerduty_test_event_is_resolved_right_away(http_receiver):
    ch = cm.PagerDuty("k" * 32, url=http_receiver.url)
    (r,) = send_test_event([ch])
    assert r.status == "delivered"
    trig, res = (q.json() for q in http_receiver.wait_for_requests(2))
    assert trig["event_action"] == "trigger" and trig["payload"]["severity"] == "info"
    assert res["event_action"] == "resolve" and res["dedup_key"] == trig["dedup_key"]


def test_alertmanager_payload(http_receiver, make_alert, assert_complete_message):
    ch = cm.Alertmanager(http_receiver.url + "/", labels={"team": "ml"}, resend_window=3600)
    alert = make_alert()
    assert ch.send(AlertEvent(alert)).status == "delivered"
    req = http_receiver.wait_for_requests(1)[0]
    assert req.path == "/api/v2/alerts"
    (obj,) = req.json()
    assert obj["labels"] == {
        "alertname": "CollapseMonitorEarlyCollapse",
        "monitor": "digits-generator",
        "rule": "early_collapse",
        "severity": "warning",
        "team": "ml",
    }
    assert obj["generatorURL"] == alert.links["mlflow_run"]
    assert obj["annotations"]["runbook_url"] == alert.links["runbook"]
    from datetime import datetime

    starts = datetime.fromisoformat(obj["startsAt"].replace("Z", "+00:00")).timestamp()
    ends = datetime.fromisoformat(obj["endsAt"].replace("Z", "+00:00")).timestamp()
    assert starts == pytest.approx(alert.timestamp, abs=1e-3) and ends - starts == pytest.approx(3600, abs=1e-3)
    assert_complete_message(obj["annotations"]["summary"] + "\n" + obj["annotations"]["description"])
    # resolve: same labels, endsAt = the resolve time
    resolved = make_alert(status="resolved", stage=cm.Stage.HEALTHY)
    ch.send(AlertEvent(resolved))
    (obj2,) = http_receiver.wait_for_requests(2)[1].json()
    assert obj2["labels"] == obj["labels"]
    assert obj2["endsAt"] == obj2["startsAt"]


@pytest.mark.parametrize("path", ["/", "", "/am/", "/am/api/v2/alerts", "/am/api/v1/alerts"])
def test_alertmanager_url_keeps_its_query(http_receiver, make_alert, path):
    """A token in the query (a proxy in front of Alertmanager) stays the query: the API path
    goes into the path, once."""
    ch = cm.Alertmanager(f"{http_receiver.url}{path}?token=abc123&x=1")
    assert ch.send(AlertEvent(make_alert())).status == "delivered"
    (req,) = http_receiver.wait_for_requests(1)
    assert req.path == ("/am" if path.startswith("/am") else "") + "/api/v2/alerts"
    assert req.query == {"token": ["abc123"], "x": ["1"]}
    assert "abc123" not in repr(ch) and ch.target.endswith("/api/v2/alerts?token=***&x=***")


def test_teams_adaptive_card(http_receiver, make_alert, assert_complete_message):
    http_receiver.respond(202)
    r = cm.Teams(http_receiver.url_for("/workflows/abc123/triggers/manual/paths/invoke?sig=s3cr3tSig")).send(
        AlertEvent(make_alert())
    )
    assert (r.status, r.http_status) == ("delivered", 202)
    req = http_receiver.wait_for_requests(1)[0]
    assert req.query["sig"] == ["s3cr3tSig"]
    body = req.json()
    assert body["type"] == "message"
    (att,) = body["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["type"] == "TextBlock"
    facts = {f["title"]: f["value"] for f in next(b for b in card["body"] if b["type"] == "FactSet")["facts"]}
    assert facts["Monitor"] == "digits-generator" and facts["Synthetic share"] == "60%"
    assert [a["type"] for a in card["actions"]] == ["Action.OpenUrl"] * 3
    text = "\n".join(b.get("text", "") for b in card["body"]) + json.dumps(card)
    assert_complete_message(text)


def test_network_failures_and_timeouts_are_retryable(http_receiver, make_alert):
    from servers import Response, free_port

    dead = cm.Webhook(f"http://127.0.0.1:{free_port()}/hook")
    r = dead.send(AlertEvent(make_alert()))
    assert r.status == "retry" and r.http_status is None and "Connection refused" in r.error
    http_receiver.respond(Response(200, delay=2.0))
    slow = cm.Webhook(http_receiver.url, timeout=0.3)
    r = slow.send(AlertEvent(make_alert()))
    assert r.status == "retry" and "timed out" in r.error


def test_redirects_are_not_followed(http_receiver, make_alert):
    http_receiver.respond((302, {"Location": "http://127.0.0.1:1/elsewhere"}, ""))
    r = cm.Webhook(http_receiver.url, secret=SECRET).send(AlertEvent(make_alert()))
    assert (r.status, r.http_status) == ("failed", 302)
    assert len(http_receiver.requests) == 1


def test_gone_is_reported(http_receiver, make_alert):
    http_receiver.respond((410, {}, "channel_is_archived"))
    r = cm.Slack(http_receiver.url).send(AlertEvent(make_alert()))
    assert (r.status, r.http_status) == ("gone", 410)


def test_nan_in_details_still_renders_valid_json(http_receiver, make_alert):
    alert = make_alert(details=({"key": "vendi_ratio", "value": float("nan"), "q_value": float("inf")},))
    assert cm.Webhook(http_receiver.url).send(AlertEvent(alert)).status == "delivered"
    body = json.loads(http_receiver.wait_for_requests(1)[0].body)  # strict JSON: NaN would not parse in JS
    assert body["data"]["alert"]["details"][0]["value"] is None


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 10) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 + 10) == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("") is None and parse_retry_after("later") is None and parse_retry_after(None) is None


def test_verify_tls_false_warns(caplog):
    with caplog.at_level("WARNING", logger="collapse_monitor.alerting"):
        cm.Webhook("https://example.com/h", verify_tls=False)
    assert "TLS certificate verification is OFF" in caplog.text
    with pytest.raises(ConfigError):
        cm.Webhook("https://example.com/h", verify_tls="no")  # type: ignore[arg-type]


def test_channels_satisfy_the_protocol():
    for ch in (
        cm.Webhook("https://e.com/h"),
        cm.Slack("https://e.com/h"),
        cm.PagerDuty("k" * 32),
        cm.Alertmanager("http://127.0.0.1:9093"),
        cm.Teams("https://e.com/h"),
    ):
        assert isinstance(ch, cm.Channel)
        assert ch.name.startswith(ch.kind + "-")


def test_userinfo_becomes_basic_auth(http_receiver, make_alert):
    import base64

    url = http_receiver.url.replace("http://", "http://am-user:p%40ss@") + "/am"
    cm.Alertmanager(url).send(AlertEvent(make_alert()))
    (req,) = http_receiver.wait_for_requests(1)
    assert req.path == "/am/api/v2/alerts"
    assert req.header("authorization") == "Basic " + base64.b64encode(b"am-user:p@ss").decode()


def test_slack_text_is_escaped_like_the_blocks(http_receiver, make_alert):
    """Slack parses the top-level ``text`` (the notification) as mrkdwn as well: a class label
    such as ``<unk>`` would vanish from it and ``<!channel>`` in a name would ping everyone."""
    detail = {"key": "class_recall.<unk>", "value": 0.1, "baseline": 0.5, "relative_change": -0.8}
    alert = make_alert(monitor="lm <!channel> & co", details=(detail,), summary="class_recall.<unk> -80%")
    assert cm.Slack(http_receiver.url).send(AlertEvent(alert)).status == "delivered"
    body = http_receiver.wait_for_requests(1)[0].json()
    assert body["blocks"][0]["text"]["type"] == "plain_text"  # shown literally: not escaped
    texts = [o for b in body["blocks"] for o in [b.get("text"), *b.get("fields", ())] if o and o["type"] == "mrkdwn"]
    for where, text in [("text", body["text"]), ("mrkdwn blocks", json.dumps(texts))]:
        assert "<unk>" not in text and "<!channel>" not in text, where
        assert "&lt;unk&gt;" in text and "lm &lt;!channel&gt; &amp; co" in text, where
    assert len(body["text"]) <= 3900


def test_slack_truncation_never_splits_an_entity():
    from collapse_monitor.alerting.slack import _truncate

    text = "a" * 3897 + "&lt;unk&gt;"
    cut = _truncate(text, 3900)
    assert cut == "a" * 3897 and len(_truncate("&amp;" * 1000, 3000)) == 3000


def test_undecodable_file_name_in_the_report_does_not_lose_the_alert(http_receiver, make_alert, make_report):
    """A provenance source read with os.listdir from a non-UTF-8 file name carries a lone
    surrogate; the body must still be rendered (valid UTF-8), not the alert dropped."""
    report = make_report(provenance=cm.Provenance(synthetic_fraction=0.6, sources=["/data/gen\udcff3.parquet"]))
    event = AlertEvent(make_alert(), report=report_summary(report))
    key = "k" * 32
    for ch in (cm.Webhook(http_receiver.url, secret=SECRET), cm.PagerDuty(key, url=http_receiver.url)):
        r = ch.send(event)
        assert r.status == "delivered", r.error
    for req in http_receiver.wait_for_requests(2):
        req.body.decode("utf-8")  # strict: valid UTF-8
        # Provenance writes the lone surrogate as an escape on arrival (since 2026-12-06)
        assert "/data/gen\\\\xff3.parquet" in json.dumps(req.json(), ensure_ascii=False)


def test_a_pagerduty_event_of_a_huge_incident_stays_under_the_size_limit(
    http_receiver, make_alert, make_report
) -> None:
    """2,000 class findings and 20,000 provenance sources made an 800 KB event, which PagerDuty
    refuses (512 KB) with a 4xx: the biggest incidents did not page."""
    import dataclasses

    from collapse_monitor.alerting.pagerduty import MAX_EVENT_BYTES

    details = tuple(
        {"key": f"class_recall.class-{i:04d}", "kind": "baseline", "value": 0.1, "baseline": 0.9,
         "relative_change": -0.89, "q_value": 1e-6}
        for i in range(2000)
    )  # fmt: skip
    alert = make_alert(details=details)
    report = make_report()
    sources = tuple(f"s3://bucket/shard-{i:05d}.parquet" for i in range(20_000))
    report = dataclasses.replace(report, provenance=cm.Provenance(synthetic_fraction=0.5, sources=sources))
    ch = cm.PagerDuty("k" * 32, url=http_receiver.url_for("/v2/enqueue"))
    result = ch.send(AlertEvent(alert, report=report_summary(report)))
    assert result.ok, result
    (req,) = http_receiver.requests
    assert len(req.body) <= MAX_EVENT_BYTES
    cd = json.loads(req.body)["payload"]["custom_details"]
    assert len(cd["details"]) == 50 and cd["details_not_shown"] == 1950
    # the report summary lists 20 of the sources since 2026-12-06 (it was dropped for size here)
    assert cd["report"]["provenance"]["sources_total"] == 20_000

    # what is bounded in count can still be large in size: 20 sources of 8,192 characters and
    # 50 findings on classes with 10,000-character names. The report goes first, then the findings
    long_sources = tuple(f"s3://bucket/{i:02d}/" + "x" * 8000 for i in range(25))
    report = dataclasses.replace(report, provenance=cm.Provenance(synthetic_fraction=0.5, sources=long_sources))
    long_details = tuple(dict(d, key=f"class_recall.{i:04d}" + "y" * 10_000) for i, d in enumerate(details[:60]))
    http_receiver.clear()
    result = ch.send(AlertEvent(make_alert(details=long_details), report=report_summary(report)))
    assert result.ok, result
    (req,) = http_receiver.requests
    assert len(req.body) <= MAX_EVENT_BYTES
    cd = json.loads(req.body)["payload"]["custom_details"]
    assert cd["report"].startswith("not shown: the event would exceed") and "report is in the links" in cd["report"]
    assert cd["details"].startswith("not shown") and cd["details_not_shown"] == 10


def test_a_report_with_thousands_of_sources_sends_a_bounded_provenance(http_receiver, make_alert, make_report):
    """Provenance audit (2026-12-06): every channel's report summary carried the whole source
    list (5,000 sources: about 210 KB of a webhook body)."""
    import dataclasses

    sources = tuple(f"s3://bucket/shard-{i:05d}.parquet" for i in range(5000))
    report = dataclasses.replace(make_report(), provenance=cm.Provenance(synthetic_fraction=0.5, sources=sources))
    summary = report_summary(report)
    assert summary["provenance"]["sources"] == list(sources[:20])
    assert summary["provenance"]["sources_total"] == 5000
    r = cm.Webhook(http_receiver.url, secret=SECRET).send(AlertEvent(make_alert(), report=summary))
    assert r.status == "delivered", r.error
    (req,) = http_receiver.wait_for_requests(1)
    assert len(req.body) < 20_000
    assert req.json()["data"]["report"]["provenance"]["sources_total"] == 5000


# --- alerting audit of 2026-12-06 (second) -------------------------------------------------------


def test_a_200_whose_body_stalls_is_delivered_not_posted_again(make_alert):
    """The receiver accepted the alert (status line and headers arrived) and then the body
    stalled: that was a 'retry', and Slack got the message two or three times."""
    import socket
    import threading

    got: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    conns: list[socket.socket] = []

    def serve() -> None:
        c, _ = srv.accept()
        conns.append(c)
        data = b""
        while b"\r\n\r\n" not in data:
            data += c.recv(65536)
        got.append(data)
        # promises two bytes of body, sends one, then goes quiet
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\no")

    threading.Thread(target=serve, daemon=True).start()
    try:
        r = cm.Slack(f"http://127.0.0.1:{srv.getsockname()[1]}/services/T0/B0/x", timeout=0.5).send(
            AlertEvent(make_alert())
        )
    finally:
        for c in conns:
            c.close()
        srv.close()
    assert (r.status, r.http_status) == ("delivered", 200), r
    assert len(got) == 1


@pytest.mark.parametrize(
    ("url", "headers", "key"),
    [
        ("http://127.0.0.1:99999/hook", None, "url"),
        ("https://hooks.example.com/caf\u00e9", None, "url"),
        ("https://hooks.example.com/a b", None, "url"),
        ("https://hooks.example.com/x", {"X-Team": "\u65e5\u672c"}, "headers.X-Team"),
        ("https://hooks.example.com/x", {"X-Team": "a\r\nX-Injected: 1"}, "headers.'X-Team'"),
    ],
)
def test_a_request_that_can_never_be_sent_is_refused_when_built(url, headers, key):
    """Each was accepted, then failed before reaching the wire on every attempt, retried for
    24 hours (port 99999 as a retryable 'Connection refused')."""
    with pytest.raises(ConfigError) as info:
        cm.Webhook(url, headers=headers)
    assert info.value.key == key


def test_a_request_the_transport_cannot_build_fails_without_retries(make_alert):
    import http.client

    def transport(*args, **kwargs):
        raise http.client.InvalidURL("URL can't contain control characters")

    r = cm.Webhook("https://hooks.example.com/x", transport=transport).send(AlertEvent(make_alert()))
    assert r.status == "failed", r
    refused = cm.Webhook(
        "https://hooks.example.com/x", transport=lambda *a, **k: (_ for _ in ()).throw(OSError("down"))
    )
    assert refused.send(AlertEvent(make_alert())).status == "retry"


@pytest.mark.parametrize("routing", [{"*": ["a"], "critcal": ["a", "b"]}, {"Critical": ["b"], "critical": ["a"]}])
def test_a_routing_severity_typo_is_a_config_error(routing):
    """``critcal`` was accepted: every critical alert went to ``*`` alone and PagerDuty never paged."""
    channels = [cm.Webhook("https://a.example.com/x", name="a"), cm.Webhook("https://b.example.com/x", name="b")]
    with pytest.raises(ConfigError, match=r"routing\.(critcal|critical)"):
        cm.CollapseMonitor("r", reference=cm.Reference(labels=[0, 1] * 10), sinks=[], alerts=channels, routing=routing)


def test_mixed_case_routing_reaches_the_channel(tmp_path):
    from collapse_monitor.alerting import AlertDispatcher

    channels = [cm.Webhook("https://a.example.com/x", name="a"), cm.Webhook("https://b.example.com/x", name="b")]
    d = AlertDispatcher(channels, outbox_path=tmp_path / "o.db", routing={"*": ["a"], "Critical": ["b"]})
    try:
        assert d.routing == {"*": ["a"], "critical": ["b"]}
    finally:
        d.close()


def test_a_generic_webhook_body_is_capped_and_keeps_the_largest_drops(
    http_receiver, make_alert, make_report, webhook_verifier
) -> None:
    """5,000 findings made a 1.2 MB body, which nginx (1 MiB by default) and many gateways
    refuse with a 413: the largest incidents did not reach the receiver."""
    import dataclasses

    from collapse_monitor.alerting.webhook import DEFAULT_MAX_BODY_BYTES

    details = tuple(
        {"key": f"class_recall.class-{i:05d}", "family": "tail", "kind": "baseline", "value": 0.1, "baseline": 0.9,
         "ci_low": 0.05, "ci_high": 0.2, "relative_change": -0.9 + i * 1e-5, "p_value": 1e-7, "q_value": 1e-6,
         "test": "mcnemar-exact+design-effect"}
        for i in range(5000)
    )  # fmt: skip
    event = AlertEvent(make_alert(details=details), report=report_summary(make_report()))
    uncapped = cm.Webhook(http_receiver.url, max_body_bytes=10**9).body(event)
    assert len(uncapped) > 1_000_000  # the size of the defect
    assert json.loads(uncapped)["data"]["details_not_shown"] == 0
    ch = cm.Webhook(http_receiver.url, secret=SECRET)
    assert ch.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 512 * 1024
    assert ch.body(event) == ch.body(event)  # the same bytes on every attempt
    assert ch.send(event).ok
    (req,) = http_receiver.wait_for_requests(1)
    assert webhook_verifier(SECRET, req.headers, req.body)
    assert DEFAULT_MAX_BODY_BYTES - 400 < len(req.body) <= DEFAULT_MAX_BODY_BYTES  # as many as fit
    data = req.json()["data"]
    kept = data["alert"]["details"]
    assert 1000 < len(kept) < 5000 and data["details_not_shown"] == 5000 - len(kept)
    assert kept == json.loads(json.dumps(details[: len(kept)]))  # the first ones: the largest drops
    assert data["report"]["run_id"] == "0123abcd"  # the report summary is kept while findings go
    # a report that alone overflows the cap goes too, and the findings take its room
    long_sources = tuple(f"s3://bucket/{i:02d}/" + "x" * 8000 for i in range(20))
    report = dataclasses.replace(make_report(), provenance=cm.Provenance(synthetic_fraction=0.5, sources=long_sources))
    small = cm.Webhook(http_receiver.url, max_body_bytes=64 * 1024)
    body = json.loads(small.body(AlertEvent(make_alert(details=details[:400]), report=report_summary(report))))
    assert len(small.body(AlertEvent(make_alert(details=details[:400]), report=report_summary(report)))) <= 64 * 1024
    assert body["data"]["report"].startswith("not shown: the body would exceed max_body_bytes")
    assert 100 < len(body["data"]["alert"]["details"]) < 400
    assert body["data"]["details_not_shown"] == 400 - len(body["data"]["alert"]["details"])
    # an event that fits is sent whole, report and all
    whole = json.loads(small.body(AlertEvent(make_alert(details=details[:3]), report=report_summary(make_report()))))
    assert len(whole["data"]["alert"]["details"]) == 3 and whole["data"]["details_not_shown"] == 0
    assert whole["data"]["report"]["run_id"] == "0123abcd"


@pytest.mark.parametrize("value", [0, 1024, -5, 1.5e4 + 0.5, True, "big", float("nan")])
def test_a_bad_webhook_body_cap_names_the_key(value) -> None:
    with pytest.raises(ConfigError, match="max_body_bytes"):
        cm.Webhook("https://example.com/h", max_body_bytes=value)
    with pytest.raises(ConfigError, match=r"alerts\[0\]\.max_body_bytes"):
        cm.alerting.config.channels_from_config(
            [{"type": "webhook", "url": "https://e.com/h", "max_body_bytes": value}]
        )


def test_the_webhook_body_cap_comes_from_yaml_and_the_environment(monkeypatch) -> None:
    from collapse_monitor.alerting.config import channels_from_config

    monkeypatch.setenv("CM_MAX_BODY", "100000")
    (ch,) = channels_from_config([{"type": "webhook", "url": "https://e.com/h", "max_body_bytes": "${CM_MAX_BODY}"}])
    assert ch.max_body_bytes == 100_000
    with pytest.raises(ConfigError, match=r"alerts\[0\]\.max_body_bytes: unknown key for a slack channel"):
        channels_from_config([{"type": "slack", "url": "https://e.com/h", "max_body_bytes": 100_000}])


def test_a_webhook_alert_too_long_by_itself_is_sent_without_findings_and_logged(
    http_receiver, make_alert, make_report, caplog
) -> None:
    """A review: links or names longer than the cap left the body over it, silently."""
    import logging

    details = tuple({"key": f"class_recall.c{i}", "relative_change": -0.5} for i in range(10))
    alert = make_alert(details=details, links=(("runbook", "https://wiki.example.com/" + "x" * 40_000),))
    event = AlertEvent(alert, report=report_summary(make_report()))
    ch = cm.Webhook(http_receiver.url, max_body_bytes=16 * 1024)
    with caplog.at_level(logging.WARNING, logger="collapse_monitor.alerting"):
        body = ch.body(event)
    data = json.loads(body)["data"]
    assert data["alert"]["details"] == [] and data["details_not_shown"] == 10
    assert data["report"].startswith("not shown")
    assert any(
        "over max_body_bytes" in r.getMessage() and "sent without them" in r.getMessage() for r in caplog.records
    )
    assert ch.send(event).ok
