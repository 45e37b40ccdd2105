"""The alert lifecycle through the monitor: fire on entering a stage, resolve on recovery, and
with ``Rules.resolve_after`` > 1 a stage that flaps stays one incident (the state survives a
new process: it lives in the history store)."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pytest

import collapse_monitor as cm
from collapse_monitor.history import AlertState, HistoryStore

PRIORS = {0: 0.6, 1: 0.37, 2: 0.03}


def _labels() -> np.ndarray:
    return np.random.default_rng(0).choice(3, size=4000, p=list(PRIORS.values()))


def _predictions(labels: np.ndarray, rare_recall: float) -> np.ndarray:
    rng = np.random.default_rng(1)  # the same items are right or wrong in every generation
    preds = labels.copy()
    rare = np.flatnonzero(labels == 2)
    preds[rare[rng.random(rare.size) > rare_recall]] = 0
    return preds


def _run(home, recalls: list[float], **rules) -> list[cm.Report]:
    labels = _labels()
    ref = cm.Reference(labels=labels, class_priors=PRIORS)
    out = []
    for r in recalls:  # a new monitor object per check: the lifecycle state is read back from disk
        mon = cm.CollapseMonitor("flappy", reference=ref, sinks=[], home=home, rules=cm.Rules(**rules))
        out.append(mon.check(cm.Observation(predictions=_predictions(labels, r))))
    return out


def _events(reports: list[cm.Report]) -> list[list[tuple[str, str]]]:
    return [[(a.rule, a.status) for a in r.alerts] for r in reports]


FLAPPING = [0.9, 0.3, 0.9, 0.3, 0.9, 0.9]


def test_by_default_each_recovery_resolves_and_each_relapse_fires_again(tmp_path) -> None:
    reports = _run(tmp_path, FLAPPING)
    assert [r.stage.value for r in reports] == ["healthy", "early_collapse"] * 2 + ["healthy"] * 2
    fired, resolved = ("early_collapse", "firing"), ("early_collapse", "resolved")
    assert _events(reports) == [[], [fired], [resolved], [fired], [resolved], []]


def test_resolve_after_keeps_a_flapping_stage_one_incident(tmp_path) -> None:
    reports = _run(tmp_path, FLAPPING, resolve_after=2)
    # the stages are the same; only the paging differs
    assert [r.stage.value for r in reports] == ["healthy", "early_collapse"] * 2 + ["healthy"] * 2
    assert _events(reports) == [[], [("early_collapse", "firing")], [], [], [], [("early_collapse", "resolved")]]
    first = reports[1].alerts[0]
    assert not first.repeat and first.generation == 1
    assert HistoryStore(tmp_path).alert_states("flappy") == {}
    # the report says which incidents are open, also while one waits out resolve_after
    assert [r.open_alerts for r in reports] == [{}] + [{"early_collapse": "warning"}] * 4 + [{}]
    assert cm.Report.from_dict(reports[2].to_dict()).open_alerts == {"early_collapse": "warning"}


def test_prometheus_alert_firing_follows_the_open_incident(tmp_path) -> None:
    from collapse_monitor.sinks.base import EmitContext
    from collapse_monitor.sinks.prometheus import PrometheusSink

    def firing(sink: PrometheusSink) -> dict[str, float]:
        samples = sink.collector.samples("flappy")
        return {dict(s.labels)["rule"]: s.value for s in samples if s.name.endswith("alert_firing")}

    sink = PrometheusSink()
    seen = []
    for report in _run(tmp_path, FLAPPING, resolve_after=2):
        sink.emit(report, EmitContext())
        seen.append(firing(sink).get("early_collapse"))
    # every rule the library knows reads 0 until it is open (a fresh process clears a stale 1)
    assert seen == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # a report from before open_alerts existed: the gauge follows the stage and the events
    sink = PrometheusSink()
    for report in _run(tmp_path / "old", [0.9, 0.3, 0.9]):
        sink.emit(dataclasses.replace(report, open_alerts=None), EmitContext())
    assert firing(sink) == {"early_collapse": 0.0}


def test_the_pending_state_is_stored(tmp_path) -> None:
    _run(tmp_path, [0.9, 0.3, 0.9], resolve_after=3)
    (st,) = HistoryStore(tmp_path).alert_states("flappy").values()
    assert (st.rule, st.since_generation, st.clear_checks) == ("early_collapse", 1, 1)


def test_a_store_from_before_resolve_after_is_migrated(tmp_path) -> None:
    store = HistoryStore(tmp_path)  # opens nothing until first used
    con = sqlite3.connect(store._db)
    con.execute(
        "CREATE TABLE alert_state (monitor TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL,"
        " since REAL NOT NULL, since_generation INTEGER NOT NULL, last_notified_at REAL NOT NULL,"
        " last_notified_generation INTEGER NOT NULL, PRIMARY KEY (monitor, rule))"
    )
    con.execute("INSERT INTO alert_state VALUES ('m', 'early_collapse', 'warning', 1.0, 3, 1.0, 3)")
    con.commit()
    con.close()
    assert store.alert_states("m") == {"early_collapse": AlertState("early_collapse", "warning", 1.0, 3, 1.0, 3, 0)}
    store.set_alert_states("m", [AlertState("early_collapse", "warning", 1.0, 3, 1.0, 3, 2)])
    assert store.alert_states("m")["early_collapse"].clear_checks == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", "1.5", True])
def test_resolve_after_must_be_a_positive_int(bad) -> None:
    with pytest.raises(cm.ConfigError, match=r"rules\.resolve_after"):
        cm.Rules(resolve_after=bad)
    if bad == "2":  # a config's text (${RESOLVE_AFTER:-2}) is read as the number it spells
        assert cm.Rules.from_dict({"resolve_after": bad}).resolve_after == 2
        return
    with pytest.raises(cm.ConfigError, match=r"rules\.resolve_after"):
        cm.Rules.from_dict({"resolve_after": bad})


def test_a_check_that_did_not_measure_what_fired_an_incident_does_not_resolve_it(tmp_path) -> None:
    """A contract audit (2026-12-08): an incident fired on the rare class's recall was resolved
    by the next check, given embeddings only (no predictions: nothing measured the recall), and
    fired again by the check after. Such a check now leaves the incident open, says so, and does
    not count towards ``resolve_after``; the state survives a new process."""
    labels = _labels()
    rng = np.random.default_rng(5)
    ref = cm.Reference(labels=labels, class_priors=PRIORS, embeddings=rng.normal(size=(600, 4)))

    def check(obs: cm.Observation, **rules) -> cm.Report:
        mon = cm.CollapseMonitor("blind", reference=ref, sinks=[], home=tmp_path, rules=cm.Rules(**rules))
        return mon.check(obs)

    def full(recall: float) -> cm.Observation:
        return cm.Observation(predictions=_predictions(labels, recall), embeddings=rng.normal(size=(600, 4)))

    embeddings_only = cm.Observation(embeddings=rng.normal(size=(600, 4)))
    reports = [check(full(0.9)), check(full(0.3)), check(embeddings_only), check(embeddings_only)]
    assert [r.stage.value for r in reports] == ["healthy", "early_collapse", "healthy", "healthy"]
    assert _events(reports) == [[], [("early_collapse", "firing")], [], []]
    for r in reports[2:]:
        assert r.open_alerts == {"early_collapse": "warning"}
        assert any(
            "the open early collapse alert stays open: this check did not measure " in n and "rare_class_recall" in n
            for n in r.notes
        ), r.notes
    state = HistoryStore(tmp_path).alert_states("blind")["early_collapse"]
    assert state.clear_checks == 0 and "rare_class_recall" in state.evidence
    # with resolve_after=2 the blind checks did not count: one measured recovery is not enough
    recovered = check(full(0.9), resolve_after=2)
    assert recovered.alerts == () and recovered.open_alerts == {"early_collapse": "warning"}
    assert _events([check(full(0.9), resolve_after=2)]) == [[("early_collapse", "resolved")]]


def test_an_incident_stored_without_evidence_resolves_as_before(tmp_path) -> None:
    """A state row from before the evidence was kept (migrated: evidence ``[]``) resolves on
    the next check that does not show its stage, whatever that check measured."""
    store = HistoryStore(tmp_path)
    con = sqlite3.connect(store._db)
    con.execute(
        "CREATE TABLE alert_state (monitor TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL,"
        " since REAL NOT NULL, since_generation INTEGER NOT NULL, last_notified_at REAL NOT NULL,"
        " last_notified_generation INTEGER NOT NULL, clear_checks INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (monitor, rule))"
    )
    con.execute("INSERT INTO alert_state VALUES ('m', 'early_collapse', 'warning', 1.0, 3, 1.0, 3, 0)")
    con.commit()
    con.close()
    assert store.alert_states("m")["early_collapse"].evidence == ()
    store.set_alert_states("m", [dataclasses.replace(store.alert_states("m")["early_collapse"], evidence=("a", "b"))])
    assert store.alert_states("m")["early_collapse"].evidence == ("a", "b")
