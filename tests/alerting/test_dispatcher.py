"""Routing by severity, resolves to the channels that got the firing event, mute windows."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

import collapse_monitor as cm
from collapse_monitor.alerting import AlertDispatcher, Mute, parse_mutes
from collapse_monitor.errors import ConfigError, InputError


@pytest.fixture
def two_channels(http_receiver):
    slack = cm.Slack(http_receiver.url_for("/slack"), name="slack")
    pd = cm.PagerDuty("k" * 32, url=http_receiver.url_for("/pd"), name="pd")
    return slack, pd


def paths(receiver):
    return [r.path for r in receiver.requests]


def test_routing_by_severity_and_resolve_to_who_got_the_firing(http_receiver, tmp_path, make_alert, two_channels):
    routing = {"warning": ["slack"], "critical": ["pd"]}
    with AlertDispatcher(two_channels, outbox_path=tmp_path / "o.db", routing=routing) as d:
        (w,) = d.dispatch([make_alert(severity="warning")])
        assert (w.channel, w.status) == ("slack", "delivered")
        (c,) = d.dispatch([make_alert(severity="critical", rule="late_collapse", stage=cm.Stage.LATE_COLLAPSE)])
        assert (c.channel, c.status) == ("pd", "delivered")
        # the resolve of the warning goes to slack only, with the firing's severity
        (rw,) = d.dispatch([make_alert(status="resolved", severity="info", stage=cm.Stage.HEALTHY)])
        assert rw.channel == "slack"
        assert paths(http_receiver) == ["/slack", "/pd", "/slack"]
        body = http_receiver.requests[-1].json()
        assert body["text"].startswith("[RESOLVED] digits-generator: early collapse resolved")
        # the resolve of the critical goes to pd (a PagerDuty resolve with the same dedup key)
        (rc,) = d.dispatch([make_alert(status="resolved", rule="late_collapse", stage=cm.Stage.HEALTHY)])
        assert rc.channel == "pd"
        last = http_receiver.requests[-1].json()
        assert last["event_action"] == "resolve" and last["dedup_key"] == "digits-generator/late_collapse"
        assert d.outbox.open_alert("digits-generator/late_collapse") == []


def test_channel_severities_filter(http_receiver, tmp_path, make_alert):
    slack = cm.Slack(http_receiver.url_for("/slack"), name="slack", severities=["warning", "critical"])
    pd = cm.PagerDuty("k" * 32, url=http_receiver.url_for("/pd"), name="pd", severities={"critical"})
    with AlertDispatcher([slack, pd], outbox_path=tmp_path / "o.db") as d:
        assert [r.channel for r in d.dispatch([make_alert(severity="warning")])] == ["slack"]
        crit = make_alert(severity="critical", rule="late_collapse")
        assert sorted(r.channel for r in d.dispatch([crit])) == ["pd", "slack"]
        assert d.dispatch([make_alert(severity="info", rule="distribution_drift")]) == []


def test_routing_fallback_star(tmp_path, two_channels, make_alert):
    slack, pd = two_channels
    d = AlertDispatcher([slack, pd], outbox_path=tmp_path / "o.db", routing={"*": ["slack"]}, budget_seconds=0)
    assert d.route(make_alert(severity="critical")) == ["slack"]
    d.close()
    d = AlertDispatcher([slack, pd], outbox_path=tmp_path / "o.db", routing={"critical": ["pd"]}, budget_seconds=0)
    assert d.route(make_alert(severity="warning")) == ["slack", "pd"]  # unrouted severity: all channels
    d.close()


def test_resolve_with_no_record_goes_where_its_firing_would_be_routed(
    http_receiver, tmp_path, make_alert, two_channels
):
    """No record of the firing (a lost outbox, or a firing no channel took): the resolve follows
    the routing and the severity filters, as its firing would; it used to go to every channel."""
    with AlertDispatcher(two_channels, outbox_path=tmp_path / "o.db", routing={"warning": ["slack"]}) as d:
        alert = make_alert(status="resolved", stage=cm.Stage.HEALTHY)
        assert alert.severity == "warning"
        results = d.dispatch([alert])
    assert sorted(r.channel for r in results) == ["slack"]
    assert all(r.status == "delivered" for r in results)


def test_mute_window_records_and_does_not_send(http_receiver, tmp_path, make_alert, fake_clock, two_channels):
    mutes = {"digits-generator": fake_clock.now + 3600}
    with AlertDispatcher(two_channels, outbox_path=tmp_path / "o.db", mutes=mutes, clock=fake_clock) as d:
        results = d.dispatch([make_alert()])
        assert {r.status for r in results} == {"muted"} and all(r.ok and r.final for r in results)
        assert {r.status for r in d.outbox.rows()} == {"muted"}
        # another monitor is not muted
        other = d.dispatch([make_alert(monitor="text-generator")])
        assert {r.status for r in other} == {"delivered"}
        # the muted alert resolves: nobody got the firing, so nobody gets the resolve
        res = d.dispatch([make_alert(status="resolved", stage=cm.Stage.HEALTHY)])
        assert {r.status for r in res} == {"muted"}
        fake_clock.advance(3601)  # the window is over
        after = d.dispatch([make_alert(rule="late_collapse", severity="critical")])
        assert {r.status for r in after} == {"delivered"}
    assert all("text-generator" in r.text or "late" in r.text for r in http_receiver.requests)
    assert len(http_receiver.requests) == 4


def test_resolve_is_sent_even_inside_a_mute_window(http_receiver, tmp_path, make_alert, fake_clock, two_channels):
    slack, _ = two_channels
    start = fake_clock.now + 10
    mutes = [("digits-*", start, start + 3600)]
    with AlertDispatcher([slack], outbox_path=tmp_path / "o.db", mutes=mutes, clock=fake_clock) as d:
        assert d.dispatch([make_alert()])[0].status == "delivered"
        fake_clock.advance(20)
        assert d.dispatch([make_alert(repeat=True)])[0].status == "muted"
        (res,) = d.dispatch([make_alert(status="resolved", stage=cm.Stage.HEALTHY)])
        assert res.status == "delivered"


def test_parse_mutes_forms():
    now = 1_800_000_000.0
    ms = parse_mutes(
        [
            {"monitor": "a", "start": "2027-01-15T08:00:00Z", "end": datetime(2027, 1, 16, tzinfo=UTC), "reason": "x"},
            ("b", now, now + 10),
            ("c", now + 10),
            Mute("d", 0, 1),
        ]
    )
    assert ms[0].start == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp() and ms[0].reason == "x"
    assert ms[1] == Mute("b", now, now + 10)
    assert ms[2].start == -math.inf and ms[2].covers("c", now)
    assert parse_mutes({"m": now})[0].covers("m", now - 1) and not parse_mutes({"m": now})[0].covers("m", now)
    assert parse_mutes([{"monitor": "m", "start": now}])[0].end == math.inf
    with pytest.raises(ConfigError) as e:
        parse_mutes([{"monitor": "a", "until": "tomorrow-ish"}])
    assert e.value.key == "mutes[0].end"
    with pytest.raises(ConfigError) as e:
        parse_mutes([{"monitor": "a", "when": 1}])
    assert e.value.key == "mutes[0].when"
    with pytest.raises(ConfigError) as e:
        parse_mutes([("a", 10, 5)])
    assert e.value.key == "mutes[0].end"


def test_configuration_errors(tmp_path, two_channels, make_alert):
    slack, pd = two_channels
    with pytest.raises(ConfigError) as e:
        AlertDispatcher([slack, pd], outbox_path=tmp_path / "o.db", routing={"warning": ["nope"]})
    assert e.value.key == "routing.warning"
    with pytest.raises(ConfigError) as e:
        AlertDispatcher([slack, cm.Slack("https://e.com/x", name="slack")], outbox_path=tmp_path / "o.db")
    assert e.value.key == "alerts[1].name"
    with pytest.raises(ConfigError):
        AlertDispatcher([object()], outbox_path=tmp_path / "o.db")  # type: ignore[list-item]
    with AlertDispatcher([slack], outbox_path=tmp_path / "o.db", budget_seconds=0) as d, pytest.raises(InputError):
        d.dispatch(["not an alert"])  # type: ignore[list-item]


def test_default_outbox_path(in_tmp_dir, two_channels):
    with AlertDispatcher(list(two_channels)) as d:
        assert d.outbox.path.resolve() == (in_tmp_dir / ".collapse_monitor" / "outbox.db").resolve()
        assert d.outbox.path.exists()
