"""PrometheusSink: exposition units, a real Pushgateway scraped by a real Prometheus, the
textfile (parsed by prometheus_client's parser) and a caller's registry."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import collapse_monitor as cm
from collapse_monitor.errors import ConfigError, SinkError
from collapse_monitor.metrics._spec import spec_for
from collapse_monitor.sinks.base import EmitContext
from collapse_monitor.sinks.prometheus import PrometheusSink, rare_classes, report_samples
from collapse_monitor.types import Alert, Stage


def _parse(text: str) -> dict[str, list]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams, name: str, **labels: str) -> float | None:
    fam = fams.get(name)
    if fam is None:
        return None
    hits = [s.value for s in fam.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) <= 1
    return hits[0] if hits else None


def _alert(monitor: str, rule: str, status: str, severity: str = "warning") -> Alert:
    return Alert(
        monitor=monitor,
        rule=rule,
        status=status,
        severity=severity,
        stage=Stage(rule) if rule in ("early_collapse", "late_collapse") else Stage.HEALTHY,
        generation=1,
        summary=rule,
    )


# --- units --------------------------------------------------------------------------------------


def test_samples_names_labels_and_help(kit) -> None:
    r = kit.make_report("m1", 4, stage=Stage.EARLY_COLLAPSE, alerts=(_alert("m1", "early_collapse", "firing"),))
    reg = CollectorRegistry()
    sink = PrometheusSink(registry=reg)
    sink.emit(r, EmitContext())
    fams = _parse(generate_latest(reg).decode())
    assert _value(fams, "collapse_monitor_stage", monitor="m1") == 1
    assert _value(fams, "collapse_monitor_generation", monitor="m1") == 4
    assert _value(fams, "collapse_monitor_tail_coverage", monitor="m1") == pytest.approx(0.8)
    assert _value(fams, "collapse_monitor_tail_coverage_ci_low", monitor="m1") == pytest.approx(0.75)
    assert _value(fams, "collapse_monitor_tail_coverage_ci_high", monitor="m1") == pytest.approx(0.85)
    assert _value(fams, "collapse_monitor_synthetic_fraction", monitor="m1") == 0.5
    assert _value(fams, "collapse_monitor_last_check_timestamp_seconds", monitor="m1") == pytest.approx(r.created_at)
    assert _value(fams, "collapse_monitor_check_duration_seconds", monitor="m1") == 0.25
    assert _value(fams, "collapse_monitor_drift", monitor="m1") == 0
    assert _value(fams, "collapse_monitor_alert_firing", monitor="m1", rule="early_collapse", severity="warning") == 1
    assert fams["collapse_monitor_tail_coverage"].documentation == spec_for("tail_coverage").help
    # rare classes only (support 12 and 8 of 400 < 5 %), as a `class` label; never a run id
    cls = {s.labels["class"]: s.value for s in fams["collapse_monitor_class_recall"].samples}
    assert cls == {"4": 0.5, "odd|label": 0.6}
    for fam in fams.values():
        for s in fam.samples:
            assert set(s.labels) <= {"monitor", "class", "rule", "severity"}


def test_the_mlflow_only_drift_share_is_not_exported(kit) -> None:
    """With sinks [MLflowSink, PrometheusSink] the MLflow sink hands Evidently's drift share to
    the Prometheus sink, which exported it (and a zero-width interval), on no dashboard and only
    in that sink order."""
    import dataclasses

    from collapse_monitor.types import MetricValue

    r = kit.make_report("m", 1)
    r = dataclasses.replace(r, metrics={**r.metrics, "embedding_drift_share": MetricValue(0.6, 0.6, 0.6)})
    names = {s.name for s in report_samples(r)}
    assert "collapse_monitor_tail_coverage" in names
    assert not {n for n in names if "embedding_drift_share" in n}


def test_rare_class_series_are_capped(kit) -> None:
    r = kit.make_report("m", 0)
    assert rare_classes(r) == ["odd|label", "4"]  # lowest support first
    names = [s.labels for s in report_samples(r, max_class_series=1) if s.name == "collapse_monitor_class_recall"]
    assert names == [(("monitor", "m"), ("class", "odd|label"))]
    assert not [s for s in report_samples(r, max_class_series=0) if "class_recall" in s.name]


def test_alert_firing_resolves_to_zero_and_stage_moves(kit) -> None:
    sink = PrometheusSink()
    r1 = kit.make_report("a", 1, stage=Stage.EARLY_COLLAPSE, alerts=(_alert("a", "early_collapse", "firing"),))
    sink.emit(r1, EmitContext())
    r2 = kit.make_report(
        "a",
        2,
        stage=Stage.LATE_COLLAPSE,
        alerts=(_alert("a", "early_collapse", "resolved"), _alert("a", "late_collapse", "firing", "critical")),
    )
    sink.emit(r2, EmitContext())
    got = {dict(s.labels)["rule"]: s.value for s in sink.collector.samples("a") if s.name.endswith("alert_firing")}
    assert got == {"early_collapse": 0.0, "late_collapse": 1.0}
    r3 = kit.make_report("a", 3, alerts=(_alert("a", "late_collapse", "resolved", "critical"),))
    sink.emit(r3, EmitContext())
    got = {dict(s.labels)["rule"]: s.value for s in sink.collector.samples("a") if s.name.endswith("alert_firing")}
    assert got == {"early_collapse": 0.0, "late_collapse": 0.0}


def test_registry_collector_registered_once_and_keeps_newest(kit) -> None:
    reg = CollectorRegistry()
    a, b = PrometheusSink(registry=reg), PrometheusSink(registry=reg)
    assert a.collector is b.collector  # one collector per registry, no duplicate series
    new = kit.make_report("x", 5, created_at=2000.0)
    old = kit.make_report("x", 4, created_at=1000.0)
    a.emit(new, EmitContext())
    b.emit(kit.make_report("y", 1), EmitContext())
    assert a.emit(old, None) == {"prometheus": "skipped: a newer check is already exported"}
    fams = _parse(generate_latest(reg).decode())
    assert _value(fams, "collapse_monitor_generation", monitor="x") == 5
    assert _value(fams, "collapse_monitor_generation", monitor="y") == 1


def test_textfile_is_parseable_and_per_monitor(tmp_path, kit) -> None:
    sink = PrometheusSink(textfile=tmp_path / "tf" / "collapse_{monitor}.prom")
    sink.emit(kit.make_report("t1", 2, stage=Stage.LATE_COLLAPSE), EmitContext())
    sink.emit(kit.make_report("t2", 0), EmitContext())
    f1 = _parse((tmp_path / "tf" / "collapse_t1.prom").read_text())
    assert _value(f1, "collapse_monitor_stage", monitor="t1") == 2
    assert _value(f1, "collapse_monitor_stage", monitor="t2") is None
    # written atomically: a temp file renamed over the target, nothing else left behind
    assert sorted(p.name for p in (tmp_path / "tf").iterdir()) == ["collapse_t1.prom", "collapse_t2.prom"]
    # a later process replaying an older spooled report does not overwrite the newer file
    late = PrometheusSink(textfile=tmp_path / "tf" / "collapse_{monitor}.prom")
    late.emit(kit.make_report("t1", 1, created_at=1.0), None)
    assert (
        _value(_parse((tmp_path / "tf" / "collapse_t1.prom").read_text()), "collapse_monitor_generation", monitor="t1")
        == 2
    )
    sink.delete("t2")
    assert not (tmp_path / "tf" / "collapse_t2.prom").exists()


def test_a_shared_textfile_keeps_every_monitor(tmp_path, kit) -> None:
    """Without ``{monitor}`` in the path, each retrain job (a process, a sink of its own) wrote
    only its own samples: the last monitor to check wiped the others' series, and no staleness
    alert could tell (the series were gone, not old)."""
    path = tmp_path / "tf" / "collapse.prom"
    PrometheusSink(textfile=path).emit(kit.make_report("alpha", 2, stage=Stage.LATE_COLLAPSE), EmitContext())
    PrometheusSink(textfile=path).emit(kit.make_report("beta", 1), EmitContext())
    fams = _parse(path.read_text())
    assert _value(fams, "collapse_monitor_stage", monitor="alpha") == 2
    assert _value(fams, "collapse_monitor_stage", monitor="beta") == 0
    # alpha's next job replaces alpha's series only
    PrometheusSink(textfile=path).emit(kit.make_report("alpha", 3), EmitContext())
    fams = _parse(path.read_text())
    assert _value(fams, "collapse_monitor_generation", monitor="alpha") == 3
    assert _value(fams, "collapse_monitor_stage", monitor="alpha") == 0
    assert _value(fams, "collapse_monitor_generation", monitor="beta") == 1
    # deleting a monitor from another process takes its series out of the shared file
    PrometheusSink(textfile=path).delete("alpha")
    fams = _parse(path.read_text())
    assert _value(fams, "collapse_monitor_generation", monitor="alpha") is None
    assert _value(fams, "collapse_monitor_generation", monitor="beta") == 1
    # per-class series (two labels, written sorted in the file) of every monitor survive, and a
    # foreign collapse_monitor_* line with another label set does not push this sink's out
    import dataclasses

    def with_class(name: str) -> cm.Report:
        r = kit.make_report(name, 1)
        mv = cm.MetricValue(0.5, 0.4, 0.6, n=10)
        return dataclasses.replace(r, metrics={**r.metrics, "class_recall.7": mv}, rare_classes=("7",))

    path.write_text(path.read_text() + 'collapse_monitor_stage{job="other",monitor="zeta"} 1.0\n')
    PrometheusSink(textfile=path).emit(with_class("gamma"), EmitContext())
    PrometheusSink(textfile=path).emit(with_class("delta"), EmitContext())
    fams = _parse(path.read_text())
    assert _value(fams, "collapse_monitor_class_recall", monitor="gamma", **{"class": "7"}) == 0.5
    assert _value(fams, "collapse_monitor_class_recall", monitor="delta", **{"class": "7"}) == 0.5
    assert _value(fams, "collapse_monitor_stage", monitor="delta") == 0
    # node_exporter reads *.prom only: the lock file beside it is not collected
    assert sorted(p.name for p in path.parent.iterdir()) == ["collapse.prom", "collapse.prom.lock"]


@pytest.mark.parametrize(
    "kw",
    [
        {"job": ""},
        {"max_class_series": -1},
        {"grouping_key": {"monitor": "x"}},
        {"grouping_key": {"bad-name": "x"}},
        # the gateway rewrote every alert series' rule / severity, and class="x" made every push a 400
        {"grouping_key": {"rule": "x"}},
        {"grouping_key": {"severity": "x"}},
        {"grouping_key": {"class": "x"}},
        {"grouping_key": {"instance": "x"}},
        {"pushgateway": ""},
        {"pushgateway": "http://127.0.0.1:9091/#frag"},
        {"timeout": 0},
    ],
)
def test_bad_options(kw) -> None:
    with pytest.raises(ConfigError):
        PrometheusSink(**kw)


def test_unreachable_gateway_raises_redacted(kit, tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = PrometheusSink(pushgateway=f"http://ops:Pr0mPassw0rd@127.0.0.1:{port}", timeout=2)
    assert "Pr0mPassw0rd" not in repr(sink)
    with pytest.raises(SinkError) as info:
        sink.emit(kit.make_report("dead", 0), EmitContext())
    assert "Pr0mPassw0rd" not in str(info.value) and f"127.0.0.1:{port}" in str(info.value)


def test_a_gateway_url_with_a_query_pushes_reads_and_deletes(pushgateway, http_receiver, kit) -> None:
    """An auth proxy's ``?token=`` in the gateway URL was accepted (and masked), but the push
    path was appended after it, into the query: every push failed with 405 and was spooled for
    ever. The query now follows the path of every request."""
    name = kit.unique("query")
    sink = PrometheusSink(pushgateway=f"{pushgateway.url}/?token=pgwQTOK-9", timeout=5)
    assert "pgwQTOK-9" not in repr(sink)
    sink.emit(kit.make_report(name, 2), EmitContext())
    assert pushgateway.value("collapse_monitor_generation", monitor=name) == 2
    assert sink.gateway_value(name, "collapse_monitor_generation") == 2  # /api/v1/metrics?token=
    sink.delete(name)
    assert pushgateway.value("collapse_monitor_generation", monitor=name) is None

    proxy = PrometheusSink(pushgateway=http_receiver.url_for("/pg?token=pgwQTOK-9"), timeout=5)
    proxy.emit(kit.make_report(name, 3), EmitContext())
    reqs = http_receiver.requests  # what the gateway holds (/api/v1/metrics), then the push
    assert [r.path for r in reqs] == ["/pg/api/v1/metrics", f"/pg/metrics/job/collapse_monitor/monitor/{name}"]
    assert all(r.query == {"token": ["pgwQTOK-9"]} for r in reqs)


def test_metrics_delete_command_removes_a_renamed_monitors_series(pushgateway, kit, tmp_path, capsys) -> None:
    """The Pushgateway keeps a group until it is deleted, so a deleted or renamed monitor kept
    its stale (and collapse) alerts firing for ever; only PrometheusSink.delete could remove
    it. ``collapse-monitor metrics delete`` does, for the gateway and a shared textfile."""
    from collapse_monitor import cli

    old, kept = kit.unique("renamed"), kit.unique("kept")
    textfile = tmp_path / "collapse.prom"
    for name in (old, kept):
        sink = PrometheusSink(pushgateway=pushgateway.url, textfile=textfile, grouping_key={"team": "ml"})
        sink.emit(kit.make_report(name, 4, stage=Stage.LATE_COLLAPSE), EmitContext())
    assert pushgateway.value("collapse_monitor_stage", monitor=old) == 2
    gateway = pushgateway.url.replace("http://", "http://ops:Pr0mPassw0rd@")
    argv = ["metrics", "delete", "--monitor", old, "--pushgateway", gateway, "--textfile", str(textfile)]
    assert cli.main([*argv, "--grouping-key", "team=ml"]) == 0
    out = capsys.readouterr().out
    assert f"deleted the series of monitor '{old}'" in out and "Pr0mPassw0rd" not in out
    assert pushgateway.value("collapse_monitor_stage", monitor=old) is None
    assert pushgateway.value("collapse_monitor_stage", monitor=kept) == 2
    fams = _parse(textfile.read_text())
    assert _value(fams, "collapse_monitor_stage", monitor=old) is None
    assert _value(fams, "collapse_monitor_stage", monitor=kept) == 2
    # nothing to delete from: refused with what to give; a malformed label is a ConfigError (exit 2)
    with pytest.raises(SystemExit) as info:
        cli.main(["metrics", "delete", "--monitor", old])
    assert info.value.code == 2 and "--pushgateway URL, --textfile PATH" in capsys.readouterr().err
    assert cli.main([*argv, "--grouping-key", "team"]) == 2
    assert "expected LABEL=VALUE" in capsys.readouterr().err
    # a mistyped textfile path said "deleted ... from it" with exit 0 (README audit, stop 36)
    typo = tmp_path / "colapse.prom"
    assert cli.main(["metrics", "delete", "--monitor", old, "--textfile", str(typo)]) == 2
    out = capsys.readouterr()
    assert "deleted" not in out.out and f"no textfile at {typo}" in out.err


# --- real Pushgateway + Prometheus --------------------------------------------------------------


def test_pushgateway_scraped_by_prometheus(pushgateway, prometheus_server, kit) -> None:
    name = kit.unique("push")
    sink = PrometheusSink(pushgateway=pushgateway.url, grouping_key={"team": "ml"})
    r = kit.make_report(name, 3, stage=Stage.EARLY_COLLAPSE, alerts=(_alert(name, "early_collapse", "firing"),))
    sink.emit(r, EmitContext())
    assert pushgateway.value("collapse_monitor_stage", monitor=name, job="collapse_monitor", team="ml") == 1
    prom = prometheus_server([pushgateway.address])  # honor_labels: true
    prom.wait_for(f'collapse_monitor_stage{{monitor="{name}"}}')
    series = prom.query(f'collapse_monitor_stage{{monitor="{name}"}}')
    assert len(series) == 1
    assert series[0]["metric"]["job"] == "collapse_monitor" and series[0]["metric"]["team"] == "ml"
    assert float(series[0]["value"][1]) == 1.0
    assert prom.query_value(f'collapse_monitor_tail_coverage{{monitor="{name}"}}') == pytest.approx(0.8)
    assert (
        prom.query_value(f'collapse_monitor_alert_firing{{monitor="{name}",rule="early_collapse",severity="warning"}}')
        == 1.0
    )

    # the training job pushes a family of its own into the same group (same job + grouping key)
    from prometheus_client import Gauge, pushadd_to_gateway

    own = CollectorRegistry()
    Gauge("trainer_epochs_done", "the training job's own gauge", registry=own).set(7)
    pushadd_to_gateway(
        pushgateway.address, job="collapse_monitor", registry=own, grouping_key={"monitor": name, "team": "ml"}
    )
    assert pushgateway.value("trainer_epochs_done", monitor=name, team="ml") == 7

    # the next check replaces the values (pushadd keeps the group's other families)
    sink.emit(
        dataclasses.replace(
            r,
            generation=4,
            stage=Stage.HEALTHY,
            alerts=(_alert(name, "early_collapse", "resolved"),),
            created_at=r.created_at + 1,
        ),
        EmitContext(),
    )
    prom.wait_for(f'collapse_monitor_stage{{monitor="{name}"}} == 0')
    assert pushgateway.value("collapse_monitor_alert_firing", monitor=name, rule="early_collapse") == 0
    # a PUT (push_to_gateway) would have replaced the whole group and dropped the job's gauge
    assert pushgateway.value("trainer_epochs_done", monitor=name, team="ml") == 7

    # an older report replayed from the spool by a new process is not pushed over the newer one
    PrometheusSink(pushgateway=pushgateway.url, grouping_key={"team": "ml"}).emit(r, None)
    assert pushgateway.value("collapse_monitor_generation", monitor=name) == 4

    sink.delete(name)
    assert pushgateway.value("collapse_monitor_stage", monitor=name) is None


def test_monitor_chain_pushes_every_check(pushgateway, kit, tmp_path) -> None:
    ref, labels = kit.chain_reference()
    sink = PrometheusSink(pushgateway=pushgateway.url, textfile=tmp_path / "collapse.prom")
    name = kit.unique("pchain")
    mon = cm.CollapseMonitor(name, reference=ref, sinks=[sink], home=tmp_path / "home")
    for g in range(3):
        r = mon.check(kit.chain_observation(labels, g))
        assert r.errors == ()
        assert pushgateway.value("collapse_monitor_generation", monitor=name) == g
        assert pushgateway.value("collapse_monitor_stage", monitor=name) == r.stage.level
    fams = _parse((tmp_path / "collapse.prom").read_text())
    assert _value(fams, "collapse_monitor_rare_class_recall", monitor=name) == pytest.approx(
        r.metrics["rare_class_recall"].value
    )


def test_batch_jobs_push_the_resolve_and_unknown_provenance(pushgateway, kit, tmp_path) -> None:
    """One process (one sink, an empty alert book) per check, as batch retrain jobs run: the
    check that resolves an alert fired by an earlier job pushes its 0, and a check without
    provenance replaces the earlier job's synthetic share with NaN. A Pushgateway POST keeps the
    families a push leaves out, so both used to show the earlier job's values for good."""
    import math

    name = kit.unique("batch")
    ref = cm.Reference(labels=[0] * 90 + [1] * 10)
    healthy, collapsed = [0] * 90 + [1] * 10, [0] * 100
    jobs = [
        (healthy, cm.Provenance(synthetic_fraction=0.0)),
        (collapsed, cm.Provenance(synthetic_fraction=0.9)),
        (healthy, None),
    ]
    reports = []
    for preds, prov in jobs:
        sink = PrometheusSink(pushgateway=pushgateway.url, timeout=5)  # a new process's sink
        mon = cm.CollapseMonitor(name, reference=ref, sinks=[sink], home=tmp_path)
        reports.append(mon.check(cm.Observation(predictions=preds, provenance=prov)))
        assert reports[-1].errors == ()
        firing = pushgateway.value("collapse_monitor_alert_firing", monitor=name, rule="late_collapse")
        share = pushgateway.value("collapse_monitor_synthetic_fraction", monitor=name)
        if len(reports) == 2:
            assert reports[1].open_alerts == {"late_collapse": "critical"} and firing == 1 and share == 0.9
    assert [(a.rule, a.status) for a in reports[2].alerts] == [("late_collapse", "resolved")]
    assert firing == 0
    assert share is not None and math.isnan(share)
    assert pushgateway.value("collapse_monitor_stage", monitor=name) == 0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://push.example.com/Xk9fTOKENpath", "https://push.example.com/***"),
        ("http://127.0.0.1:9091/?token=pgwQTOK-1", "http://127.0.0.1:9091/?token=***"),
        ("http://u:pgwPASS-2@127.0.0.1:9091/push", "http://127.0.0.1:9091/push"),
    ],
)
def test_repr_hides_tokens_in_the_gateway_path_and_query(url, shown) -> None:
    sink = PrometheusSink(pushgateway=url)
    assert repr(sink).startswith(f"PrometheusSink(pushgateway={shown!r}, ")
    for secret in ("Xk9fTOKENpath", "pgwQTOK-1", "pgwPASS-2"):
        assert secret not in repr(sink) and secret not in str(sink)


def test_a_check_without_a_metric_blanks_the_earlier_push_of_it(pushgateway, kit, tmp_path) -> None:
    """A Pushgateway POST keeps the families a push leaves out: a job that checked texts, then
    one that did not, left the earlier text metrics on the dashboards as if current. They are
    pushed as NaN now, rare-class series included; alert states are left alone."""
    import math

    name = kit.unique("blank")
    texts = ["the cat sat on the mat", "a dog ran far", "the bird sang a song"] * 20
    healthy = [0] * 970 + [1] * 30  # class 1 is rare (prior 3 %)
    ref = cm.Reference(labels=healthy, texts=texts)
    jobs = [
        cm.Observation(predictions=healthy, texts=texts),
        cm.Observation(predictions=[0] * 1000),  # no texts; the rare class lost: early collapse
        cm.Observation(predictions=healthy),
    ]
    for i, obs in enumerate(jobs):
        sink = PrometheusSink(pushgateway=pushgateway.url, timeout=5)  # a new process's sink
        mon = cm.CollapseMonitor(name, reference=ref, sinks=[sink], home=tmp_path)
        r = mon.check(obs)
        assert r.errors == ()
        distinct = pushgateway.value("collapse_monitor_distinct_2", monitor=name)
        if i == 0:
            assert distinct == pytest.approx(r.metrics["distinct_2"].value)
            assert pushgateway.value("collapse_monitor_distinct_2_ci_low", monitor=name) is not None
        else:
            assert distinct is not None and math.isnan(distinct), distinct
            assert math.isnan(pushgateway.value("collapse_monitor_distinct_2_ci_high", monitor=name))
        assert pushgateway.value("collapse_monitor_generation", monitor=name) == i
        if i == 1:
            assert pushgateway.value("collapse_monitor_alert_firing", monitor=name, rule="early_collapse") == 1
            assert pushgateway.value("collapse_monitor_class_recall", monitor=name, **{"class": "1"}) == 0
    assert pushgateway.value("collapse_monitor_alert_firing", monitor=name, rule="early_collapse") == 0
    assert pushgateway.value("collapse_monitor_rare_class_recall", monitor=name) == 1.0
    assert pushgateway.value("collapse_monitor_class_recall", monitor=name, **{"class": "1"}) == 1.0


def test_a_fresh_process_clears_the_firing_an_earlier_one_pushed(pushgateway, kit) -> None:
    """Dashboards audit (2026-12-06, second): a restarted job (fresh home) knew no rule, pushed
    no alert_firing at all, and the gateway kept the 1 of the job before it: FIRING on a
    healthy monitor until it fired again. Every library rule reads 0 unless open now."""
    import dataclasses

    name = kit.unique("restart")
    late = dataclasses.replace(
        kit.make_report(name, 5, stage=Stage.LATE_COLLAPSE), open_alerts={"late_collapse": "critical"}
    )
    PrometheusSink(pushgateway=pushgateway.url, timeout=5).emit(late, EmitContext())
    assert pushgateway.value("collapse_monitor_alert_firing", monitor=name, rule="late_collapse") == 1
    healthy = dataclasses.replace(kit.make_report(name, 0), open_alerts={})
    PrometheusSink(pushgateway=pushgateway.url, timeout=5).emit(healthy, EmitContext())  # a new process
    for rule in ("early_collapse", "late_collapse", "distribution_drift"):
        assert pushgateway.value("collapse_monitor_alert_firing", monitor=name, rule=rule) == 0, rule


def test_a_class_label_that_is_not_utf8_does_not_break_the_exposition(tmp_path) -> None:
    """A class named by a non-UTF-8 folder (surrogateescape) could not be encoded by
    prometheus_client: the textfile was not written, /metrics failed for every monitor, and
    the spool retried it for good (an audit). The label is written with escapes."""
    odd = b"caf\xe9".decode("utf-8", "surrogateescape")
    labels = [odd] * 6 + ["big"] * 194
    mon = cm.CollapseMonitor("odd", reference=cm.Reference(labels=labels), sinks=[], home=tmp_path)
    report = mon.check(cm.Observation(predictions=labels))
    sink = PrometheusSink(textfile=tmp_path / "m.prom")
    sink.emit(report, EmitContext())
    text = (tmp_path / "m.prom").read_text(encoding="utf-8")
    assert 'class="caf\\\\xe9"' in text, text  # the label value caf\xe9, escaped in the exposition
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "collapse_monitor_class_recall" in families
