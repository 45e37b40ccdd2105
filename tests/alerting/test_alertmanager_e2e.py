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
