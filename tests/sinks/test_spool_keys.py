"""Which spool a sink's failed reports wait in: one per export target, independent of the
credentials, and what older versions spooled is still replayed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import collapse_monitor as cm
from collapse_monitor.sinks.mlflow import MLflowSink, safe_uri
from collapse_monitor.sinks.prometheus import PrometheusSink

LABELS = np.array([0] * 90 + [1] * 10)


def test_two_prometheus_sinks_keep_their_own_spools(tmp_path: Path) -> None:
    """A textfile sink that is up used to replay, and delete, the reports spooled for a
    Pushgateway that was down (both spooled under "prometheus"): they never reached it."""
    from servers import free_port

    down = PrometheusSink(pushgateway=f"http://127.0.0.1:{free_port()}", timeout=1)
    up = PrometheusSink(textfile=tmp_path / "collapse.prom")
    assert down.spool_key != up.spool_key
    mon = cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[down, up], home=tmp_path / "h")
    for _ in range(3):
        r = mon.check(cm.Observation(predictions=LABELS))
        # the gateway's errors only (from the second check on, the report waits behind the failed replay untried)
        assert r.errors and all("Pushgateway" in e or e.startswith("prometheus: not tried") for e in r.errors)
    # waiting for the gateway: the latest report at least (a spooled report that a newer one
    # supersedes for the gauges is dropped at replay, by design)
    waiting = [p.name for p in mon.spool.pending(down.spool_key)]
    assert waiting and "-000002-" in waiting[-1], waiting
    assert (
        mon.spool.count(up.spool_key) == 0 and "collapse_monitor_generation" in (tmp_path / "collapse.prom").read_text()
    )


def test_the_spool_key_depends_on_the_target_not_its_credentials() -> None:
    a = MLflowSink("http://alice:old-pass@127.0.0.1:5999", evidently=False)
    b = MLflowSink("http://alice:new-pass@127.0.0.1:5999", evidently=False)
    other = MLflowSink("http://alice:old-pass@127.0.0.1:6000", evidently=False)
    assert a.spool_key == b.spool_key != other.spool_key
    assert "old-pass" not in a.spool_key and a.legacy_spool_keys != b.legacy_spool_keys
    p1 = PrometheusSink(pushgateway="http://u:one@127.0.0.1:9091")
    p2 = PrometheusSink(pushgateway="http://u:two@127.0.0.1:9091")
    assert p1.spool_key == p2.spool_key
    assert PrometheusSink(pushgateway="http://127.0.0.1:9091", job="other").spool_key != p1.spool_key


def test_reports_spooled_before_a_credential_rotation_reach_mlflow_after_it(tmp_path: Path, mlflow_server) -> None:
    """Reports spooled while the password was wrong (here: under the key an older version
    derived from the whole URI) are replayed by the sink built with the new password."""
    host = mlflow_server.url.split("://", 1)[1]
    old_uri, new_uri = f"http://ci:old-pass@{host}", f"http://ci:new-pass@{host}"
    ref = cm.Reference(labels=LABELS)
    mon = cm.CollapseMonitor("rotated", reference=ref, sinks=[], home=tmp_path)
    stranded = mon.check(cm.Observation(predictions=LABELS))
    legacy = "mlflow-" + hashlib.sha256(old_uri.encode()).hexdigest()[:10]
    mon.spool.put(legacy, stranded)
    sink = MLflowSink(new_uri, evidently=False)
    assert legacy not in (sink.spool_key, *sink.legacy_spool_keys)  # not the new URI's legacy key
    mon2 = cm.CollapseMonitor("rotated", reference=ref, sinks=[MLflowSink(old_uri, evidently=False)], home=tmp_path)
    assert mon2.flush()["mlflow"] == 1  # the old URI's sink (its legacy key): what a restart with it replays
    assert mon2.spool.count(legacy) == 0
    runs = mlflow_server.client().search_runs(
        [e.experiment_id for e in mlflow_server.client().search_experiments() if e.name.endswith("/rotated")]
    )
    assert [r.data.tags["collapse.generation"] for r in runs] == ["0"]
    # and a report spooled under the shared key by the old-password sink goes out with the new one
    nxt = mon.check(cm.Observation(predictions=LABELS))
    mon.spool.put(MLflowSink(old_uri, evidently=False).spool_key, nxt)
    mon3 = cm.CollapseMonitor("rotated", reference=ref, sinks=[sink], home=tmp_path)
    assert mon3.flush()["mlflow"] == 1


def test_ipv6_hosts_keep_their_brackets() -> None:
    """The URL was rebuilt from the bare hostname: http://::1:9091, which nothing can parse."""
    assert PrometheusSink(pushgateway="http://user:pw@[::1]:9091").pushgateway == "http://[::1]:9091"
    assert safe_uri("http://user:pw@[::1]:5000/x?token=t") == "http://[::1]:5000/x"


def test_sinks_that_log_elsewhere_on_one_server_keep_their_own_spools(tmp_path: Path) -> None:
    """MLflow audit (2026-12-06, second): the spool key was the server alone, so monitors sharing
    a home with other experiments (or a mirror sink with other settings) replayed each other's
    reports into their own experiment, or skipped the second copy as delivered."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    team_a = MLflowSink(uri, experiment="team-a/{monitor}", evidently=False, history_plot="off")
    team_b = MLflowSink(uri, experiment="team-b/{monitor}", evidently=False, history_plot="off")
    default = MLflowSink(uri, evidently=False, history_plot="off")
    no_artifacts = MLflowSink(uri, artifacts=False, evidently=False, history_plot="off")
    keys = {s.spool_key for s in (team_a, team_b, default, no_artifacts)}
    assert len(keys) == 4
    assert default.spool_key in team_a.legacy_spool_keys  # what an older version spooled is replayed
    ref = cm.Reference(labels=LABELS)
    home = tmp_path / "home"
    mon_b = cm.CollapseMonitor("b", reference=ref, sinks=[], home=home)
    mon_b.spool.put(team_b.spool_key, mon_b.check(cm.Observation(predictions=LABELS)))
    mon_a = cm.CollapseMonitor("a", reference=ref, sinks=[team_a], home=home)
    mon_a.check(cm.Observation(predictions=LABELS))
    assert mon_a.spool.count(team_b.spool_key) == 1  # not replayed by team a's sink
    assert cm.CollapseMonitor("b", reference=ref, sinks=[team_b], home=home).flush()["mlflow"] == 1
    client = MlflowClient(tracking_uri=uri)
    names = sorted(e.name for e in client.search_experiments() if e.name.startswith("team-"))
    assert names == ["team-a/a", "team-b/b"]
