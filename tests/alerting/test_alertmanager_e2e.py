"""cm.Alertmanager against a real Alertmanager that forwards to a real webhook receiver
(payload version "4"), then resolves."""

from __future__ import annotations

import time
from datetime import datetime

import collapse_monitor as cm
from collapse_monitor.alerting import AlertDispatcher


def _notifications(receiver, status: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        found = [r.json() for r in receiver.requests_to("/am") if r.json().get("status") == status]
        if found:
            return found
        assert time.monotonic() < deadline, f"no {status!r} notification from Alertmanager within {timeout} s"
        time.sleep(0.1)


def test_real_alertmanager_fires_and_resolves(alertmanager_server, http_receiver, tmp_path, make_alert):
    am = alertmanager_server(
        webhook_url=http_receiver.url_for("/am"), group_wait="0s", group_interval="1s", repeat_interval="1h"
    )
    channel = cm.Alertmanager(am.url, name="am", labels={"team": "ml"})
    with AlertDispatcher([channel], outbox_path=tmp_path / "o.db") as d:
        (r,) = d.dispatch([make_alert()])
        assert (r.status, r.http_status) == ("delivered", 200)

        held = am.wait_for_alerts(lambda a: len(a) == 1)[0]
        assert held["labels"]["alertname"] == "CollapseMonitorEarlyCollapse"
        assert held["status"]["state"] == "active"
        starts = datetime.fromisoformat(held["startsAt"].replace("Z", "+00:00")).timestamp()
        ends = datetime.fromisoformat(held["endsAt"].replace("Z", "+00:00")).timestamp()
        assert abs((ends - starts) - 72 * 3600) < 5  # endsAt = start + resend window

        (fired,) = _notifications(http_receiver, "firing")
        assert fired["version"] == "4"
        assert fired["receiver"] == "webhook"
        assert fired["groupLabels"] == {"alertname": "CollapseMonitorEarlyCollapse", "monitor": "digits-generator"}
        (alert,) = fired["alerts"]
        assert alert["labels"] == {
            "alertname": "CollapseMonitorEarlyCollapse",
            "monitor": "digits-generator",
            "rule": "early_collapse",
            "severity": "warning",
            "team": "ml",
        }
        assert alert["annotations"]["summary"] == "[WARNING] digits-generator: early collapse at generation 3"
        assert "tail_coverage 0.41 (95% CI 0.38 to 0.45)" in alert["annotations"]["description"]
        assert alert["generatorURL"].startswith("http://127.0.0.1:5000/")
        assert alert["fingerprint"]

        # a repeat keeps the same alert (same label set), it does not open a second one
        d.dispatch([make_alert(repeat=True, generation=4)])
        assert len(am.wait_for_alerts(lambda a: len(a) == 1)) == 1

        # the lifecycle may give the resolve another severity: the dispatcher sends the
        # firing's, so Alertmanager matches the label set and resolves the alert
        (res,) = d.dispatch([make_alert(status="resolved", severity="info", stage=cm.Stage.HEALTHY, generation=5)])
        assert res.status == "delivered"
        resolved = _notifications(http_receiver, "resolved")[0]
        assert resolved["version"] == "4"
        assert resolved["alerts"][0]["status"] == "resolved"
        assert resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]
        assert am.wait_for_alerts(lambda a: all(x["status"]["state"] != "active" for x in a)) is not None


def _amtool_query(amtool: str, url: str, *matchers: str) -> list[dict]:
    """``amtool alert query`` (active alerts only, its default) as JSON."""
    import json
    import subprocess

    p = subprocess.run(
        [amtool, "alert", "query", f"--alertmanager.url={url}", "-o", "json", *matchers],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout or "[]")


def _wait_amtool(amtool: str, url: str, predicate, *matchers: str, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = _amtool_query(amtool, url, *matchers)
        if predicate(got):
            return got
        assert time.monotonic() < deadline, f"amtool alert query {matchers}: not as expected within {timeout} s: {got}"
        time.sleep(0.25)


def test_amtool_sees_the_alert_fire_repeat_and_clear(alertmanager_server, amtool, tmp_path, make_alert):
    """The on-call view: ``amtool alert query`` lists the alert while it fires (one alert through
    repeats) and no longer once the lifecycle resolves it - with another severity than the
    firing (the dispatcher sends the firing's, so the label sets match). Two monitors at once:
    resolving one leaves the other firing."""
    am = alertmanager_server()
    channel = cm.Alertmanager(am.url, name="am", labels={"team": "ml"})
    match = ["alertname=CollapseMonitorEarlyCollapse", "monitor=digits-generator"]
    with AlertDispatcher([channel], outbox_path=tmp_path / "o.db") as d:
        assert [r.status for r in d.dispatch([make_alert(), make_alert(monitor="other-model")])] == ["delivered"] * 2
        (held,) = _wait_amtool(amtool, am.url, lambda a: len(a) == 1, *match)
        assert held["labels"] == {
            "alertname": "CollapseMonitorEarlyCollapse",
            "monitor": "digits-generator",
            "rule": "early_collapse",
            "severity": "warning",
            "team": "ml",
        }
        assert held["status"]["state"] == "active"
        assert held["annotations"]["summary"] == "[WARNING] digits-generator: early collapse at generation 3"
        fingerprint = held["fingerprint"]

        (rep,) = d.dispatch([make_alert(repeat=True, generation=4)])
        assert rep.status == "delivered"
        (again,) = _wait_amtool(amtool, am.url, lambda a: a and a[0]["annotations"]["generation"] == "4", *match)
        assert again["fingerprint"] == fingerprint and again["startsAt"] == held["startsAt"]

        (res,) = d.dispatch([make_alert(status="resolved", severity="info", stage=cm.Stage.HEALTHY, generation=5)])
        assert res.status == "delivered"
        assert _wait_amtool(amtool, am.url, lambda a: a == [], *match) == []
        (other,) = _amtool_query(amtool, am.url, "alertname=CollapseMonitorEarlyCollapse")
        assert other["labels"]["monitor"] == "other-model"

        # firing again later opens it again (a new episode, not stuck resolved)
        (refire,) = d.dispatch([make_alert(generation=6)])
        assert refire.status == "delivered"
        (back,) = _wait_amtool(amtool, am.url, lambda a: len(a) == 1, *match)
        assert back["fingerprint"] == fingerprint and back["annotations"]["generation"] == "6"


def test_a_malformed_mlflow_link_does_not_cost_the_alert(alertmanager_server, amtool, tmp_path, make_alert):
    """Alertmanager answers 422 to the WHOLE alert when ``generatorURL`` does not parse as a URI
    (a stray ``%``, a bad host): the alert must still arrive, the link in the annotations."""
    am = alertmanager_server()
    channel = cm.Alertmanager(am.url, name="am")
    links = {
        "digits-generator": "http://mlflow.example/runs/50%off",
        "bad-host": "http://[mlflow/#/experiments/1/runs/abc",
        "bad-port": "http://mlflow.example:99999/#/runs/abc",
        "no-path": "http://mlflow.example:5000#/experiments/1/runs/abc",  # 422 as it is
        "after-bracket": "http://[::1]x/#/runs/abc",  # 422 as it is
    }
    with AlertDispatcher([channel], outbox_path=tmp_path / "o.db") as d:
        for monitor, link in links.items():
            (r,) = d.dispatch([make_alert(monitor=monitor, links={"mlflow_run": link})])
            assert (r.status, r.http_status) == ("delivered", 200), r.error
    held = _wait_amtool(amtool, am.url, lambda a: len(a) == 5, "alertname=CollapseMonitorEarlyCollapse")
    by = {a["labels"]["monitor"]: a for a in held}
    assert by["digits-generator"]["generatorURL"] == "http://mlflow.example/runs/50%25off"
    assert by["no-path"]["generatorURL"] == "http://mlflow.example:5000/#/experiments/1/runs/abc"
    for monitor in ("bad-host", "bad-port", "after-bracket"):
        assert not by[monitor].get("generatorURL"), monitor
    assert {m: a["annotations"]["mlflow_run_url"] for m, a in by.items()} == links


def test_an_open_incident_is_kept_alive_between_repeats(alertmanager_server, http_receiver, tmp_path) -> None:
    """The firing was posted to Alertmanager only with a repeat, so a window shorter than the
    repeat interval plus a check interval let Alertmanager notify "resolved" while the model
    was still collapsed. Every check that finds the incident open now posts it again to
    Alertmanager alone (a keep-alive: ``endsAt`` moves on), with no notification elsewhere and
    nothing in ``report.alerts``; the resolve still closes it."""
    am = alertmanager_server()
    window = 3601.0
    now = [time.time() - 3600.0]  # five checks 10 minutes apart, the last (the resolve) in the past
    mon = cm.CollapseMonitor(
        "kept",
        reference=cm.Reference(labels=[0] * 240 + [1] * 10),
        sinks=[],
        home=tmp_path,
        alerts=[cm.Alertmanager(am.url, name="am", resend_window=window), cm.Webhook(http_receiver.url_for("/hook"))],
        rules={"repeat_interval_seconds": 3600},
        clock=lambda: now[0],
    )
    good, lost = [0] * 240 + [1] * 10, [0] * 250

    def check(preds: list[int]) -> cm.Report:
        now[0] += 600.0  # a check every 10 minutes
        return mon.check(cm.Observation(predictions=preds))

    def ends() -> float:
        (a,) = am.wait_for_alerts(lambda a: len(a) == 1)
        return datetime.fromisoformat(a["endsAt"].replace("Z", "+00:00")).timestamp()

    check(good)
    fired = check(lost)
    assert [a.status for a in fired.alerts] == ["firing"]
    assert abs(ends() - (now[0] + window)) < 2
    for _ in range(2):
        kept = check(lost)
        assert kept.alerts == () and kept.open_alerts == {"early_collapse": "warning"}
        deadline = time.monotonic() + 30
        while abs(ends() - (now[0] + window)) >= 2:  # moved on with this check
            assert time.monotonic() < deadline, (ends(), now[0] + window)
            time.sleep(0.2)
    assert len(http_receiver.requests_to("/hook")) == 1  # the firing only: no page per keep-alive
    resolved = check(good)
    assert [a.status for a in resolved.alerts] == ["resolved"]
    assert am.wait_for_alerts(lambda a: all(x["status"]["state"] != "active" for x in a)) is not None
    assert len(http_receiver.requests_to("/hook")) == 2


def test_a_failed_keep_alive_is_said_but_never_raises_in_strict_mode(tmp_path) -> None:
    """Alertmanager took the firing, then refused everything (400): the next check, which sent
    no alert of its own, raised AlertDeliveryError in strict mode over its keep-alive (a review)."""
    from collapse_monitor.alerting._http import HttpResponse

    answers = []

    def transport(method, url, *, body=None, headers=None, timeout=None, verify_tls=True):
        answers.append(200 if not answers else 400)
        return HttpResponse(answers[-1], {}, b"bad request")

    now = [1_800_000_000.0]
    mon = cm.CollapseMonitor(
        "ka",
        reference=cm.Reference(labels=[0] * 240 + [1] * 10),
        sinks=[],
        home=tmp_path,
        alerts=[cm.Alertmanager("http://am.example:9093", name="am", transport=transport)],
        strict=True,
        clock=lambda: now[0],
    )
    mon.check(cm.Observation(predictions=[0] * 240 + [1] * 10))
    now[0] += 600
    assert [a.status for a in mon.check(cm.Observation(predictions=[0] * 250)).alerts] == ["firing"]
    now[0] += 600
    kept = mon.check(cm.Observation(predictions=[0] * 250))  # strict, and no exception
    assert kept.alerts == () and answers == [200, 400]
    assert kept.errors == ("alert am: HTTP 400: bad request (keep-alive)",)
