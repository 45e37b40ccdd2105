"""Which check the Prometheus series show: the generation decides, not the wall clock.

Audit (B2): after the wall clock stepped back (an NTP correction, a training host whose clock
is behind the previous one's), every later check had an earlier ``created_at`` than the one
exported, and was dropped without a word: /metrics kept generation 1 "healthy" while generation
2 was an early collapse. A lower generation checked after a higher one (a spool replay, a
backfill) must still not replace it; a baseline checked again (a chain re-run from scratch)
does."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import collapse_monitor as cm
from collapse_monitor.sinks.base import EmitContext
from collapse_monitor.sinks.prometheus import PrometheusSink
from collapse_monitor.types import Report, Stage

T = 1_800_000_000.0
SKIPPED = {"prometheus": "skipped: a newer check is already exported"}


def _gauge(text: str, name: str, monitor: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels.get("monitor") == monitor:
                return s.value
    return None


def _shown(reg: CollectorRegistry, monitor: str) -> tuple[float | None, float | None]:
    text = generate_latest(reg).decode()
    return _gauge(text, "collapse_monitor_generation", monitor), _gauge(text, "collapse_monitor_stage", monitor)


def test_supersedes_orders_by_generation_then_time() -> None:
    from collapse_monitor.sinks.prometheus import supersedes

    r = Report("m", 2, Stage.HEALTHY, {}, baseline_generation=0, created_at=T)
    assert supersedes(None, r) is False
    assert supersedes((1, T + 3600), r) is False  # a lower generation, dated later: older
    assert supersedes((3, T - 3600), r) is True  # a higher generation, dated earlier: newer
    assert supersedes((2, T + 1), r) is True  # the same generation: the later check
    assert supersedes((2, T), r) is False  # the same check again
    assert supersedes((None, T + 1), r) is True  # no generation known: the time decides
    assert supersedes((None, T - 1), r) is False
    # a baseline checked now starts a new chain, and so does one later than the held chain's
    # own baseline (or, where that is unknown, than the held check: a chain re-run from scratch
    # that serve's tick reads from the history); the held chain's own baseline re-exported
    # (serve's tick after a clock step back) is an older generation like any other
    rerun = Report("m", 0, Stage.HEALTHY, {}, baseline_generation=0, created_at=T)
    assert supersedes((5, T - 60), rerun, live=True) is False
    assert supersedes((5, T - 60), rerun) is False
    assert supersedes((5, T - 60), rerun, chain_start=T) is True
    assert supersedes((5, T - 60), rerun, chain_start=T - 120) is False
    assert supersedes((5, T + 60), rerun) is True
    assert supersedes((5, T - 60), r, live=True) is True  # a backfill checked now: not a baseline


def test_checks_after_the_wall_clock_stepped_back_are_exported(tmp_path) -> None:
    """The audit's repro (t9.py): generation 2, checked after the clock stepped back an hour,
    stayed off /metrics (generation 1, healthy) with no error anywhere."""
    labels = np.repeat(np.arange(5), [400, 300, 200, 90, 10])
    rng = np.random.default_rng(0)
    now = [T]
    reg = CollectorRegistry()
    mon = cm.CollapseMonitor(
        "stepped",
        reference=cm.Reference(labels=labels, embeddings=rng.normal(size=(500, 8))),
        home=tmp_path,
        sinks=[PrometheusSink(registry=reg)],
        clock=lambda: now[0],
    )

    def obs(gen: int, collapsed: bool = False) -> cm.Observation:
        p = labels.copy()
        if collapsed:
            p[labels == 4] = 0
        return cm.Observation(predictions=p, embeddings=rng.normal(size=(300, 8)), generation=gen)

    mon.check(obs(0))
    now[0] += 60
    mon.check(obs(1))
    assert _shown(reg, "stepped") == (1, 0)
    now[0] -= 3600  # NTP stepped the clock back an hour
    r2 = mon.check(obs(2, collapsed=True))
    assert r2.stage is Stage.EARLY_COLLAPSE and r2.errors == ()
    assert _shown(reg, "stepped") == (2, 1)
    now[0] += 60
    mon.check(obs(3, collapsed=True))
    assert _shown(reg, "stepped") == (3, 1)


def test_a_lower_generation_never_replaces_a_higher_one_and_says_so(kit, caplog) -> None:
    """A spool replay of generation 3 after generation 4 was exported (dated later: the replay
    process's clock is ahead) is skipped, as is a backfill checked now - which also says so in
    its errors instead of vanishing from the dashboards silently."""
    reg = CollectorRegistry()
    sink = PrometheusSink(registry=reg)
    sink.emit(kit.make_report("lower", 4, created_at=T, stage=Stage.LATE_COLLAPSE), EmitContext())
    late = kit.make_report("lower", 3, created_at=T + 3600)
    with caplog.at_level(logging.WARNING, logger="collapse_monitor"):
        assert sink.emit(late, None) == SKIPPED  # a replay: counted as done, and logged
    assert "generation 3 of 'lower' not exported: generation 4" in caplog.text
    assert _shown(reg, "lower") == (4, 2)
    got = sink.emit(late, EmitContext())  # a backfill checked now
    assert got is not None and got["prometheus"] == SKIPPED["prometheus"]
    (warning,) = got["warnings"]
    assert "generation 3 of 'lower' not exported: generation 4" in warning
    assert _shown(reg, "lower") == (4, 2)
    # a higher generation dated earlier replaces it; so does a later check of the same generation
    assert sink.emit(kit.make_report("lower", 5, created_at=T - 7200), None) is None
    assert _shown(reg, "lower") == (5, 0)
    assert sink.emit(kit.make_report("lower", 5, created_at=T - 7000, stage=Stage.EARLY_COLLAPSE), None) is None
    assert _shown(reg, "lower") == (5, 1)


def test_a_backfill_through_the_monitor_is_reported_not_silently_dropped(tmp_path) -> None:
    labels = np.array([0] * 970 + [1] * 30)
    reg = CollectorRegistry()
    mon = cm.CollapseMonitor(
        "backfill", reference=cm.Reference(labels=labels), home=tmp_path, sinks=[PrometheusSink(registry=reg)]
    )
    for _ in range(3):
        mon.check(cm.Observation(predictions=labels))
    old = mon.check(cm.Observation(predictions=labels, generation=1))
    assert any("generation 1 of 'backfill' not exported: generation 2" in e for e in old.errors), old.errors
    assert _shown(reg, "backfill")[0] == 2


def test_a_chain_re_run_from_its_baseline_replaces_the_earlier_chain(tmp_path) -> None:
    """A baseline checked again (a chain re-run from scratch) starts a new chain: it and the
    generations after it are shown, although the earlier chain reached a higher generation."""
    labels = np.array([0] * 970 + [1] * 30)
    reg = CollectorRegistry()
    mon = cm.CollapseMonitor(
        "rerun", reference=cm.Reference(labels=labels), home=tmp_path, sinks=[PrometheusSink(registry=reg)]
    )
    for g in range(4):
        mon.check(cm.Observation(predictions=labels, generation=g))
    assert _shown(reg, "rerun")[0] == 3
    r0 = mon.check(cm.Observation(predictions=labels, generation=0))
    assert r0.is_baseline and r0.errors == () and _shown(reg, "rerun")[0] == 0
    mon.check(cm.Observation(predictions=[0] * 1000, generation=1))
    assert _shown(reg, "rerun") == (1, 1)
    # the original baseline replayed (from a spool) is not taken for a new chain
    first = mon.reports()[0]
    assert first.generation == 0 and PrometheusSink(registry=reg).emit(first, None) == SKIPPED
    assert _shown(reg, "rerun") == (1, 1)


def test_a_new_process_reads_the_generation_back_from_the_textfile(tmp_path, kit) -> None:
    """A replay in a fresh process compares with what the textfile holds: by generation."""
    path = tmp_path / "tf" / "collapse_{monitor}.prom"
    PrometheusSink(textfile=path).emit(kit.make_report("tf", 5, created_at=T), EmitContext())
    file = tmp_path / "tf" / "collapse_tf.prom"
    # a replay of generation 4, dated later than generation 5 (another host's clock): skipped
    assert PrometheusSink(textfile=path).emit(kit.make_report("tf", 4, created_at=T + 600), None) == SKIPPED
    assert _gauge(file.read_text(), "collapse_monitor_generation", "tf") == 5
    # generation 6, dated earlier (the clock stepped back): exported
    assert PrometheusSink(textfile=path).emit(kit.make_report("tf", 6, created_at=T - 600), None) is None
    assert _gauge(file.read_text(), "collapse_monitor_generation", "tf") == 6


def test_a_new_process_reads_the_generation_back_from_the_pushgateway(pushgateway, kit) -> None:
    name = kit.unique("pgorder")
    r5 = kit.make_report(name, 5, created_at=T)
    PrometheusSink(pushgateway=pushgateway.url).emit(r5, EmitContext())
    assert pushgateway.value("collapse_monitor_generation", monitor=name) == 5
    later4 = dataclasses.replace(kit.make_report(name, 4), created_at=T + 600)
    assert PrometheusSink(pushgateway=pushgateway.url).emit(later4, None) == SKIPPED
    assert pushgateway.value("collapse_monitor_generation", monitor=name) == 5
    earlier6 = kit.make_report(name, 6, created_at=T - 600)
    assert PrometheusSink(pushgateway=pushgateway.url).emit(earlier6, None) is None
    assert pushgateway.value("collapse_monitor_generation", monitor=name) == 6
    PrometheusSink(pushgateway=pushgateway.url).delete(name)


@pytest.mark.parametrize("live", [False, True])
def test_the_same_check_again_is_exported_again(kit, live) -> None:
    reg = CollectorRegistry()
    sink = PrometheusSink(registry=reg)
    r = kit.make_report("same", 2, created_at=T)
    assert sink.emit(r, EmitContext()) is None
    assert sink.emit(r, EmitContext() if live else None) is None
    assert _shown(reg, "same")[0] == 2


def test_serve_shows_a_chain_re_run_by_a_training_job() -> None:
    """Review of stop 36: reports a training job writes reach serve's /metrics through its
    refresh tick, never as checks made now, so a chain re-run from scratch (new generations 0,
    1, ...) stayed behind the old chain's generation 5: its late-collapse stage stayed on the
    dashboard until the new chain passed generation 5."""
    import types

    from collapse_monitor.service import Service

    sink = PrometheusSink(registry=CollectorRegistry())
    svc = types.SimpleNamespace(prometheus=sink, specs={})  # no history: the chain is not known
    old5 = Report("m", 5, Stage.LATE_COLLAPSE, {}, baseline_generation=0, created_at=T)
    new0 = Report("m", 0, Stage.HEALTHY, {}, baseline_generation=0, created_at=T + 1000)
    new1 = Report("m", 1, Stage.HEALTHY, {}, baseline_generation=0, created_at=T + 1100)
    for r in (old5, new0, new1):
        Service._export(svc, r)  # type: ignore[arg-type]
        assert sink.collector.held("m") == (r.generation, r.created_at)
    Service._export(svc, new0)  # the tick re-reading the new chain's baseline: not a newer chain
    assert sink.collector.held("m") == (1, T + 1100)
