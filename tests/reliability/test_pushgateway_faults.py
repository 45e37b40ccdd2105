"""Pushgateway down or hanging: the check stays bounded (``PrometheusSink(timeout=1)``: one
push attempt, no retry; the spool is the retry), the report is spooled, and once the gateway
is back the next process's ``flush()`` exports it - unless a newer check is already exported
(gauges are "latest value": an old replay never overwrites a newer state)."""

from __future__ import annotations

import pytest
from reliability.relkit import collapsed, healthy, reference, unique, watched_check
from servers import Response

import collapse_monitor as cm

TIMEOUT = 1.0
BOUND = 2 * TIMEOUT + 2.0  # the push, the replay-ordering probe of a fresh process, slack


def _monitor(name: str, url: str, home) -> tuple[cm.CollapseMonitor, cm.PrometheusSink]:
    sink = cm.PrometheusSink(pushgateway=url, timeout=TIMEOUT)
    return cm.CollapseMonitor(name, reference=reference(), sinks=[sink], home=home), sink


@pytest.mark.timeout(120)
def test_pushgateway_down_then_back(pushgateway, tmp_path) -> None:
    name = unique("pgw")
    mon, sink = _monitor(name, pushgateway.url, tmp_path)
    report, _ = watched_check(mon, healthy())
    assert report is not None and report.errors == ()
    assert pushgateway.value("collapse_monitor_generation", monitor=name) == 0

    pushgateway.stop()
    try:
        report, seconds = watched_check(mon, collapsed())
        assert report is not None and report.stage is cm.Stage.EARLY_COLLAPSE
        assert any(e.startswith("prometheus:") and "Pushgateway" in e for e in report.errors), report.errors
        assert seconds < BOUND, f"check took {seconds:.1f} s with the Pushgateway down"
        assert mon.spool.count(sink.spool_key) == 1
    finally:
        pushgateway.start()

    # a new process (fresh sink, same home) replays: the gateway still holds generation 0
    mon2, sink2 = _monitor(name, pushgateway.url, tmp_path)
    assert mon2.flush() == {"prometheus": 1}
    assert pushgateway.value("collapse_monitor_generation", monitor=name) == 1
    assert pushgateway.value("collapse_monitor_stage", monitor=name) == 1
    assert pushgateway.value("collapse_monitor_alert_firing", monitor=name, rule="early_collapse") == 1

    # an older report replayed late (e.g. from another host's spool) never overwrites it
    mon2.spool.put(sink2.spool_key, mon2.reports()[0])
    mon3, _ = _monitor(name, pushgateway.url, tmp_path)
    assert mon3.flush() == {"prometheus": 1}  # accepted (dropped as stale), not retried forever
    assert pushgateway.value("collapse_monitor_generation", monitor=name) == 1


@pytest.mark.timeout(60)
def test_pushgateway_hanging(http_receiver, tmp_path) -> None:
    """A gateway that accepts the connection and answers after 10 s."""
    http_receiver.default = Response(200, delay=10.0)
    mon, sink = _monitor(unique("pgw-hang"), http_receiver.url, tmp_path)
    report, seconds = watched_check(mon, healthy())
    assert report is not None and any("timed out" in e for e in report.errors), report.errors
    assert seconds < BOUND, f"check took {seconds:.1f} s against a hanging Pushgateway"
    assert mon.spool.count(sink.spool_key) == 1


@pytest.mark.timeout(60)
def test_pushgateway_redirect_is_refused_and_credentials_stay(http_receiver_factory, tmp_path) -> None:
    """A gateway URL that answers 302 to another host: the credentials of ``user:pass@`` used
    to follow the redirect (urllib forwards ``Authorization``; prometheus_client's handlers and
    the replay-ordering read both follow redirects). Now no request reaches the other host: the
    push fails, the report is spooled, the error names the refused target (redacted)."""
    import base64

    gateway, elsewhere = http_receiver_factory(), http_receiver_factory()
    url = f"http://ops:pgwPa55-redirect@127.0.0.1:{gateway.port}"
    mon, sink = _monitor(unique("pgw-redirect"), url, tmp_path)
    report, _ = watched_check(mon, healthy())  # a plain 200: the push carries the credentials
    assert report is not None and report.errors == ()
    # the read of the group (to blank families the check lacks), then the push itself
    assert [r.method for r in gateway.requests] == ["GET", "POST"]
    read, push = gateway.requests
    assert read.header("authorization") == push.header("authorization")
    assert push.header("authorization") == "Basic " + base64.b64encode(b"ops:pgwPa55-redirect").decode()

    gateway.default = Response(302, headers={"Location": elsewhere.url_for("/steal?token=stolen-42")})
    report, _ = watched_check(mon, collapsed())
    assert report is not None and mon.spool.count(sink.spool_key) == 1
    assert any("redirect to" in e and "refused" in e for e in report.errors), report.errors
    assert not any("stolen-42" in e or "pgwPa55" in e for e in report.errors), report.errors
    mon2, _ = _monitor(mon.name, url, tmp_path)  # a new process: the ordering read (GET) and the replay
    assert mon2.flush() == {"prometheus": 0}
    assert len(gateway.requests) >= 3
    assert any(r.method == "GET" and r.path == "/api/v1/metrics" for r in gateway.requests)
    assert elsewhere.requests == [], "a request (with the gateway's credentials) went to another host"

    gateway.default = Response(200)  # back to normal: the spooled report goes out
    assert mon2.flush() == {"prometheus": 1}
    assert elsewhere.requests == []


def test_a_gateway_that_hides_its_groups_still_gets_the_push(http_receiver, tmp_path) -> None:
    """A proxy in front of the gateway that passes pushes but answers 404 to the read of the
    groups (``/api/v1/metrics``): the push goes out without blanking, not spooled."""
    http_receiver.default = Response(200)
    http_receiver.respond(Response(404), path="/api/v1/metrics")
    mon, sink = _monitor(unique("pgw-proxy"), http_receiver.url, tmp_path)
    report, _ = watched_check(mon, healthy())
    assert report is not None and report.errors == (), report.errors
    assert [r.method for r in http_receiver.requests] == ["GET", "POST"]
    assert mon.spool.count(sink.spool_key) == 0
