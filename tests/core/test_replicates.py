"""Replicate baselines: other retrains of the baseline generation (``check_replicate``)."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

import collapse_monitor as cm
from collapse_monitor.history import HistoryStore

LABELS = np.repeat(np.arange(5), [400, 300, 200, 90, 30])  # class 4: 30 probe items, 2.9 %
RARE = np.flatnonzero(LABELS == 4)


def _preds(rare_right: int) -> np.ndarray:
    """Right on every head item and on the first ``rare_right`` items of the rare class."""
    p = LABELS.copy()
    p[RARE[rare_right:]] = 0
    return p


def _obs(rare_right: int, generation: int | None = None) -> cm.Observation:
    emb = np.random.default_rng(7).normal(size=(300, 8))
    return cm.Observation(embeddings=emb, predictions=_preds(rare_right), generation=generation)


def _mlflow_monitor(server, name: str, home) -> cm.CollapseMonitor:
    ref = cm.Reference(embeddings=np.random.default_rng(0).normal(size=(500, 8)), labels=LABELS)
    return cm.CollapseMonitor(name, reference=ref, sinks=[cm.MLflowSink(server.url, evidently=False)], home=home)


def _monitor(home, name: str = "rep") -> cm.CollapseMonitor:
    ref = cm.Reference(embeddings=np.random.default_rng(0).normal(size=(500, 8)), labels=LABELS)
    return cm.CollapseMonitor(name, reference=ref, sinks=[], home=home)


def test_a_replicate_turns_a_lucky_baseline_back_into_retrain_noise(tmp_path) -> None:
    """A baseline retrain that got 28 of 30 rare items right makes a model with 17 a
    significant loss; with a replicate retrain that got 18 on record, the same model is healthy
    (and the report says it was judged against the replicate), while a model with 8 still
    reads as early collapse."""
    lone = _monitor(tmp_path / "lone")
    lone.check(_obs(28))
    assert lone.check(_obs(17)).stage is cm.Stage.EARLY_COLLAPSE

    mon = _monitor(tmp_path / "rep")
    mon.check(_obs(28))
    got = mon.check_replicate(_obs(18, generation=0))
    assert got["rare_class_recall"].value == pytest.approx(18 / 30)
    assert got["rare_class_recall"].baseline == pytest.approx(28 / 30)
    assert "rare_flips" not in got  # counted against the baseline: no replicate of it
    rep = mon.check(_obs(17))
    assert rep.stage is cm.Stage.HEALTHY
    (f,) = [f for f in rep.findings if f.key == "rare_class_recall" and f.kind == "baseline"]
    assert f.test.endswith("+iut-2") and f.baseline == pytest.approx(18 / 30)
    assert any("1 replicate retrain(s) of generation 0" in n for n in rep.notes)
    assert mon.check(_obs(8)).stage is cm.Stage.EARLY_COLLAPSE


def test_replicates_are_kept_with_the_baseline_and_dropped_with_it(tmp_path) -> None:
    mon = _monitor(tmp_path)
    mon.check(_obs(28))
    mon.check_replicate(_obs(18))
    mon.check_replicate(_obs(19))
    # a new process reads them back from the monitor's home
    again = _monitor(tmp_path)
    b = again.history.baseline("rep")
    assert b is not None and len(b.replicates) == 2
    assert b.replicates[1].metrics["rare_class_recall"].value == pytest.approx(19 / 30)
    assert int(b.replicates[0].items["probe.correct"][RARE].sum()) == 18
    assert again.check(_obs(17)).stage is cm.Stage.HEALTHY
    # checking the baseline generation again starts a new baseline, without replicates
    again.check(_obs(28, generation=0))
    assert again.history.baseline("rep").replicates == []
    assert again.check(_obs(17, generation=1)).stage is cm.Stage.EARLY_COLLAPSE


def _baseline_without_replicates_table(home, *statements: str) -> None:
    """A monitor home with a baseline (28 of 30 rare items right) whose replicate table is
    dropped, then ``statements`` run: a store written by an earlier version."""
    _monitor(home).check(_obs(28))
    con = sqlite3.connect(home / "history.db")
    con.execute("DROP TABLE baseline_replicates")
    for sql in statements:
        con.execute(sql)
    con.commit()
    con.close()


def test_a_store_written_before_replicates_opens_and_takes_them(tmp_path) -> None:
    _baseline_without_replicates_table(tmp_path)
    old = _monitor(tmp_path)
    assert old.history.baseline("rep").replicates == []
    old.check_replicate(_obs(18))
    assert len(HistoryStore(tmp_path).baseline("rep").replicates) == 1


def test_bad_replicates_are_input_errors_that_say_what_to_do(tmp_path) -> None:
    mon = _monitor(tmp_path)
    with pytest.raises(cm.InputError, match="check the baseline generation first") as e:
        mon.check_replicate(_obs(18))
    assert e.value.field == "observation"
    mon.check(_obs(28))
    with pytest.raises(cm.InputError) as e:
        mon.check_replicate(_obs(18, generation=3))
    assert e.value.field == "observation.generation" and "baseline generation 0" in e.value.message
    with pytest.raises(cm.InputError) as e:
        mon.check_replicate("not an observation")  # type: ignore[arg-type]
    assert e.value.field == "observation"
    narrow = cm.Observation(embeddings=np.zeros((300, 5)), predictions=_preds(21))  # the reference has d = 8
    with pytest.raises(cm.InputError) as e:
        mon.check_replicate(narrow)
    assert "embeddings" in e.value.field
    assert mon.history.baseline("rep").replicates == []  # nothing stored by a refused replicate


def test_the_check_command_adds_a_replicate(tmp_path, capsys) -> None:
    """``collapse-monitor check --replicate``: the files are another retrain of the baseline
    generation; the table shows each metric beside the baseline's, ``--json`` the same data,
    and the next ``check`` is judged against it (no sinks: the config has none)."""
    from collapse_monitor.cli import main

    np.save(tmp_path / "labels.npy", LABELS)
    for k in (28, 19, 18, 17):
        np.save(tmp_path / f"p{k}.npy", _preds(k))
    cfg = tmp_path / "collapse.yaml"
    cfg.write_text("name: digits\nhome: state\nreference: {labels: labels.npy}\nsinks: []\n")

    def run(*args: str) -> str:
        capsys.readouterr()
        assert main(["check", "--config", str(cfg), *args]) == 0
        return capsys.readouterr().out

    run("--predictions", str(tmp_path / "p28.npy"))
    out = run("--predictions", str(tmp_path / "p18.npy"), "--replicate")
    assert "baseline replicate 1" in out and "rare_class_recall" in out and "-0.333" in out
    got = json.loads(run("--predictions", str(tmp_path / "p19.npy"), "--replicate", "--json"))
    assert got["replicate"] == 2 and got["added"] is True
    assert got["metrics"]["rare_class_recall"]["value"] == pytest.approx(19 / 30)
    # the same outputs again (a script run twice): one more copy would add nothing to the test
    out = run("--predictions", str(tmp_path / "p18.npy"), "--replicate")
    assert "baseline replicate 1" in out and "equal replicate 1, already stored: not added again" in out
    got = json.loads(run("--predictions", str(tmp_path / "p18.npy"), "--replicate", "--json"))
    assert got["replicate"] == 1 and got["added"] is False
    report = json.loads(run("--predictions", str(tmp_path / "p17.npy"), "--json"))
    assert report["stage"] == "healthy" and report["generation"] == 1
    assert any("2 replicate retrain(s)" in n for n in report["notes"])
    capsys.readouterr()
    assert main(["check", "--config", str(cfg), "--predictions", str(tmp_path / "p18.npy"), "--drop-replicates"]) == 2
    assert "--drop-replicates: runs alone: no outputs and no other check option (got --predictions)" in (
        capsys.readouterr().err
    )
    assert "digits: 2 replicate(s) of the baseline dropped, 0 kept" in run("--drop-replicates")
    report = json.loads(run("--predictions", str(tmp_path / "p17.npy"), "--json"))
    assert report["stage"] == "early_collapse"
    # a replicate before any baseline: exit 2 with what to do
    cfg.write_text("name: other\nhome: state\nreference: {labels: labels.npy}\nsinks: []\n")
    capsys.readouterr()
    assert main(["check", "--config", str(cfg), "--predictions", str(tmp_path / "p18.npy"), "--replicate"]) == 2
    assert "check the baseline generation first" in capsys.readouterr().err


def test_show_baseline_prints_the_retrains_side_by_side(tmp_path, capsys) -> None:
    """``check --show-baseline`` (and ``mon.baseline()``): the baseline and each replicate per
    metric with the spread between them; a baseline better than every replicate's 95% interval
    is marked (lucky); ``--json`` the same data; refused with outputs, or before any
    baseline."""
    from collapse_monitor.cli import main

    np.save(tmp_path / "labels.npy", LABELS)
    for k in (28, 19, 18):
        np.save(tmp_path / f"p{k}.npy", _preds(k))
    cfg = tmp_path / "collapse.yaml"
    cfg.write_text("name: show\nhome: state\nreference: {labels: labels.npy}\nsinks: []\n")

    def run(*args: str, code: int = 0) -> str:
        capsys.readouterr()
        assert main(["check", "--config", str(cfg), *args]) == code
        out = capsys.readouterr()
        return out.out + out.err

    assert "show has no baseline yet: check the baseline generation first" in run("--show-baseline", code=2)
    run("--predictions", str(tmp_path / "p28.npy"))
    out = run("--show-baseline")
    flat = " ".join(out.split())  # the title wraps over the narrow table
    assert "baseline generation 0 and 0 replicate(s)" in flat and "rare_class_recall" in out and "spread" not in out
    for k in (19, 18):
        run("--predictions", str(tmp_path / f"p{k}.npy"), "--replicate")
    out = run("--show-baseline")
    flat = " ".join(out.split())
    assert "baseline generation 0 and 2 replicate(s)" in flat and "rep 2" in out and "spread" in out
    (row,) = [line for line in out.splitlines() if "rare_class_recall" in line]
    assert "0.933↑" in row and "0.633" in row and "0.600" in row and "0.333" in row  # 28, 19, 18 of 30
    (row,) = [line for line in out.splitlines() if line.lstrip("│ ").startswith("class_recall.0")]
    assert "↑" not in row  # all three equal: nothing stands out
    assert "rare_flips" not in out  # counted against the baseline itself: no replicate of it
    got = json.loads(run("--show-baseline", "--json"))
    assert got["generation"] == 0 and len(got["replicates"]) == 2
    assert got["replicates"][1]["rare_class_recall"]["value"] == pytest.approx(18 / 30)
    mon = cm.CollapseMonitor.from_config(cfg)
    assert [r.metrics["rare_class_recall"].value for r in mon.baseline().replicates] == pytest.approx([19 / 30, 0.6])
    err = run("--show-baseline", "--predictions", str(tmp_path / "p18.npy"), code=2)
    assert "--show-baseline: runs alone: no outputs and no other check option (got --predictions)" in err
    err = run("--show-baseline", "--generation", "3", code=2)  # it was silently ignored
    assert "(got --generation)" in err
    err = run("--drop-replicates", "--show-baseline", code=2)
    assert "--drop-replicates: runs alone: no outputs and no other check option (got --show-baseline)" in err


def test_the_lucky_baseline_mark_follows_each_metrics_direction() -> None:
    """The table marks a baseline *better* than every replicate's interval: above it for
    recall, below it for the Frechet distance (lower is better; a high one is an unlucky
    retrain, not a lucky one); a metric no replicate measured has no spread and no mark."""
    from rich.console import Console

    from collapse_monitor.history import Baseline, Replicate
    from collapse_monitor.render import baseline_table

    def mv(v: float) -> cm.MetricValue:
        return cm.MetricValue(v, v - 0.02, v + 0.02)

    def rows(base: dict, reps: list[dict]) -> dict[str, str]:
        b = Baseline(0, "fp", {k: mv(v) for k, v in base.items()})
        b.replicates = [Replicate({k: mv(v) for k, v in r.items()}) for r in reps]
        console = Console(width=200, record=True)
        console.print(baseline_table("m", b))
        out = console.export_text()
        return {k: line for line in out.splitlines() for k in base if line.lstrip("│ ").startswith(k + " ")}

    got = rows(
        {"rare_class_recall": 0.9, "frechet_distance": 0.9, "vendi_score": 5.0},
        [{"rare_class_recall": 0.6, "frechet_distance": 0.3}, {"rare_class_recall": 0.62, "frechet_distance": 0.35}],
    )
    assert "0.900↑" in got["rare_class_recall"] and "0.300" in got["rare_class_recall"]
    assert "↑" not in got["frechet_distance"]  # a high distance is the unlucky direction
    assert got["vendi_score"].rstrip(" │").endswith("-")  # no replicate measured it: no spread
    got = rows({"frechet_distance": 0.1}, [{"frechet_distance": 0.3}])
    assert "0.100↑" in got["frechet_distance"]


def test_one_failed_replicate_is_shown_and_dropped_alone(tmp_path, capsys) -> None:
    """A replicate that reads as collapsed against the baseline (a failed retrain, here the
    rare class never predicted) is kept, as a lucky baseline needs, but it lowers the bar for
    every later check: the CLI says so on stderr with the command that drops it, ``--json``
    carries its stage, and ``--drop-replicates N`` drops that one and keeps the good one."""
    from collapse_monitor.cli import main

    np.save(tmp_path / "labels.npy", LABELS)
    for k in (28, 20, 19, 0, 8):
        np.save(tmp_path / f"p{k}.npy", _preds(k))
    cfg = tmp_path / "collapse.yaml"
    cfg.write_text("name: drop\nhome: state\nreference: {labels: labels.npy}\nsinks: []\n")

    def run(*args: str, code: int = 0) -> tuple[str, str]:
        capsys.readouterr()
        assert main(["check", "--config", str(cfg), *args]) == code
        out = capsys.readouterr()
        return out.out, out.err

    run("--predictions", str(tmp_path / "p28.npy"))
    good = json.loads(run("--predictions", str(tmp_path / "p19.npy"), "--replicate", "--json")[0])
    assert good["added"] is True and good["reads"] == "early_collapse"  # 19 of 30 against a lucky 28
    _, err = run("--predictions", str(tmp_path / "p0.npy"), "--replicate")
    assert "replicate 2 reads early_collapse against the baseline" in err
    assert f"collapse-monitor check --config {cfg} --drop-replicates 2" in err
    report = json.loads(run("--predictions", str(tmp_path / "p8.npy"), "--json")[0])
    assert report["stage"] == "healthy"  # the failed replicate hides a real loss (8 of 30 rare items)
    got = json.loads(run("--drop-replicates", "2", "--json")[0])
    assert got == {"monitor": "drop", "dropped": 1, "kept": 1}
    shown = json.loads(run("--show-baseline", "--json")[0])
    assert shown["dropped"] == 1 and len(shown["replicates"]) == 1
    assert "1 replicate(s) dropped earlier, kept out" in run("--show-baseline")[0]
    report = json.loads(run("--predictions", str(tmp_path / "p8.npy"), "--json")[0])
    assert report["stage"] == "early_collapse"  # judged against the good replicate again
    _, err = run("--drop-replicates", "3", code=2)
    assert "no replicate 3: the baseline has 1" in err
    mon = cm.CollapseMonitor.from_config(cfg)
    for bad in (1, np.int64(1), 1.0, {1: "a"}, "1", [0], [True]):
        with pytest.raises(cm.InputError, match="numbers"):
            mon.drop_replicates(bad)  # type: ignore[arg-type]
    assert mon.drop_replicates([1]) == 1 and mon.baseline().replicates == []
    # a dropped retrain stays out: the same outputs again are not added back
    out, _ = run("--predictions", str(tmp_path / "p19.npy"), "--replicate")
    assert "equal a replicate dropped from the baseline" in out and mon.baseline().replicates == []
    got = json.loads(run("--predictions", str(tmp_path / "p19.npy"), "--replicate", "--json")[0])
    assert got["replicate"] is None and got["added"] is False and got["dropped"] is True
    # the option repeated drops every number given (it kept the last occurrence only)
    for k in (20, 8):
        run("--predictions", str(tmp_path / f"p{k}.npy"), "--replicate")
    assert json.loads(run("--drop-replicates", "1", "--drop-replicates", "2", "--json")[0])["dropped"] == 2
    # the baseline generation's own outputs again are no replicate: not stored
    out, _ = run("--predictions", str(tmp_path / "p28.npy"), "--replicate")
    assert "these outputs equal the baseline generation's own: not added" in out
    got = json.loads(run("--predictions", str(tmp_path / "p28.npy"), "--replicate", "--json")[0])
    assert got["replicate"] is None and got["added"] is False
    assert mon.baseline().replicates == []


def test_a_baseline_without_item_vectors_takes_a_retrain_with_equal_counts(tmp_path) -> None:
    """A baseline rebuilt from a report's metrics alone (read back from MLflow without its
    artifact) has no per-item vectors: a retrain right on other rare items, with the same counts,
    is another retrain and is stored (equal metrics alone made it "the baseline's own outputs")."""
    from collapse_monitor.history import Baseline

    mon = _monitor(tmp_path)
    rep = mon.check(_obs(18))
    mon.history.save_baseline("rep", Baseline(rep.generation, rep.reference_fingerprint, dict(rep.metrics)))
    other = LABELS.copy()
    other[RARE[:12]] = 0  # the last 18 rare items right, not the first 18
    mon.check_replicate(cm.Observation(embeddings=np.random.default_rng(7).normal(size=(300, 8)), predictions=other))
    assert len(mon.baseline().replicates) == 1


def test_replicates_travel_through_mlflow_to_a_new_machine(mlflow_server, tmp_path) -> None:
    """The first check after a replicate was added uploads the baseline again with its
    replicates (``baseline/replicate-<i>.npz``); a monitor with an empty home, rebuilt from the
    real MLflow server alone, judges against them too."""
    import uuid

    name = f"rep-{uuid.uuid4().hex[:8]}"

    def monitor(home):
        return _mlflow_monitor(mlflow_server, name, home)

    first = monitor(tmp_path / "machine-1")
    first.check(_obs(28))
    first.check_replicate(_obs(18))
    first.check_replicate(_obs(19))
    assert first.check(_obs(28)).errors == ()
    first.flush()
    local = first.history.baseline(name)

    second = monitor(tmp_path / "machine-2")
    report = second.check(_obs(17))
    assert report.generation == 2 and report.stage is cm.Stage.HEALTHY
    assert any("2 replicate retrain(s) of generation 0" in n for n in report.notes)
    back = second.history.baseline(name)
    assert back is not None and len(back.replicates) == 2
    for a, b in zip(local.replicates, back.replicates, strict=True):
        assert a.metrics == b.metrics and set(a.items) == set(b.items)
        for k in a.items:
            np.testing.assert_array_equal(a.items[k], b.items[k])


def test_a_replicate_that_lacks_outputs_of_the_baseline_is_named(tmp_path, caplog) -> None:
    """A replicate without the predictions the baseline had: stored, with a warning naming what
    it lacks (those metrics are judged against the baseline alone)."""
    import logging

    mon = _monitor(tmp_path)
    mon.check(_obs(28))
    emb_only = cm.Observation(embeddings=np.random.default_rng(7).normal(size=(300, 8)))
    with caplog.at_level(logging.WARNING, logger="collapse_monitor"):
        got = mon.check_replicate(emb_only)
    assert "rare_class_recall" not in got and "tail_coverage" in got
    text = caplog.text
    assert "the replicate has no accuracy" in text and "judged against the baseline alone" in text
    rep = mon.check(_obs(17))
    (f,) = [f for f in rep.findings if f.key == "rare_class_recall" and f.kind == "baseline"]
    assert f.test == "mcnemar-exact" and rep.stage is cm.Stage.EARLY_COLLAPSE


def test_replicate_rows_of_another_baseline_or_unreadable_are_left_out(tmp_path, caplog) -> None:
    """Replicate rows belong to the baseline row they were stored with: a version that knew
    nothing of them and re-baselined the same home leaves them behind, and they must not be
    attached to the new baseline; a corrupt row is left out with an error, and the baseline
    (and every later check) stays readable."""
    import logging

    mon = _monitor(tmp_path)
    mon.check(_obs(28))
    mon.check_replicate(_obs(18))
    mon.check_replicate(_obs(19))
    con = sqlite3.connect(tmp_path / "history.db")
    con.execute("UPDATE baseline_replicates SET metrics_json = '{not json' WHERE idx = 0")
    con.commit()
    with caplog.at_level(logging.ERROR, logger="collapse_monitor"):
        b = HistoryStore(tmp_path).baseline("rep")
    assert b is not None and len(b.replicates) == 1
    assert b.replicates[0].metrics["rare_class_recall"].value == pytest.approx(19 / 30)
    assert "replicate 0 of the baseline of rep cannot be read (JSONDecodeError)" in caplog.text
    # an older version re-baselines (INSERT OR REPLACE of the baselines row alone)
    con.execute("UPDATE baselines SET generation = 5")
    con.commit()
    con.close()
    b = HistoryStore(tmp_path).baseline("rep")
    assert b is not None and b.generation == 5 and b.replicates == []


def test_a_replicate_must_be_measured_like_the_baseline(tmp_path, caplog) -> None:
    """Fewer sample embeddings or texts than the baseline, or more synthetic data than the
    baseline generation declared, would lower the bar for every later check: InputError naming
    the field, nothing stored. A replicate that reads as collapsed against the baseline is kept,
    with a warning that says what to do if its training failed."""
    import logging

    texts = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(60)]
    ref = cm.Reference(
        embeddings=np.random.default_rng(0).normal(size=(500, 8)), labels=LABELS, texts=[*texts, "a b c d"]
    )
    mon = cm.CollapseMonitor("like", reference=ref, sinks=[], home=tmp_path)
    emb = np.random.default_rng(7).normal(size=(300, 8))

    def obs(n_emb=300, n_texts=60, frac=0.0, rare_right=28):
        return cm.Observation(
            embeddings=emb[:n_emb],
            predictions=_preds(rare_right),
            texts=texts[:n_texts],
            provenance=cm.Provenance(synthetic_fraction=frac),
        )

    mon.check(obs(frac=0.1))
    for bad, field in (
        (obs(n_emb=200), "observation.embeddings"),
        (obs(n_texts=40), "observation.texts"),
        (obs(frac=0.3), "observation.provenance.synthetic_fraction"),
    ):
        with pytest.raises(cm.InputError) as e:
            mon.check_replicate(bad)
        assert e.value.field == field
    assert mon.history.baseline("like").replicates == []
    mon.check_replicate(obs(frac=0.1, rare_right=27))  # as much synthetic data as the baseline generation: fine
    with caplog.at_level(logging.WARNING, logger="collapse_monitor"):
        mon.check_replicate(obs(rare_right=5))
    assert "replicate 2 reads early_collapse against the baseline" in caplog.text
    assert "drop_replicates([2]) (collapse-monitor check --config <its config> --drop-replicates 2)" in caplog.text
    assert len(mon.history.baseline("like").replicates) == 2
    assert mon.drop_replicates() == 2 and mon.drop_replicates() == 0
    assert mon.history.baseline("like").replicates == []


def test_replicates_added_or_dropped_on_a_new_machine_reach_mlflow(mlflow_server, tmp_path) -> None:
    """On a machine with an empty home, ``check_replicate`` first reads the baseline back from
    MLflow (it used to say "check the baseline generation first", and doing so re-baselined);
    after ``drop_replicates`` the next check uploads the baseline without them, though that
    exact baseline is on the server already in an older run (the newest artifact is the one a
    rebuilt monitor reads)."""
    import uuid

    name = f"rep-{uuid.uuid4().hex[:8]}"

    def monitor(home):
        return _mlflow_monitor(mlflow_server, name, home)

    first = monitor(tmp_path / "m1")
    first.check(_obs(28))
    first.flush()
    second = monitor(tmp_path / "m2")
    second.check_replicate(_obs(18))  # reads generation 0 back from MLflow first
    assert second.check(_obs(17)).stage is cm.Stage.HEALTHY  # uploads the baseline with the replicate
    second.flush()
    third = monitor(tmp_path / "m3")
    assert third.drop_replicates() == 1  # read back first: it used to drop nothing, and say 0
    assert third.check(_obs(17)).stage is cm.Stage.EARLY_COLLAPSE  # uploads it again, without
    third.flush()
    fourth = monitor(tmp_path / "m4")
    report = fourth.check(_obs(17))
    assert report.generation == 3 and report.stage is cm.Stage.EARLY_COLLAPSE
    assert fourth.history.baseline(name).replicates == []


def test_the_newest_baseline_upload_wins_whatever_the_uploaders_clocks(mlflow_server, tmp_path) -> None:
    """The baseline runs of a monitor are ordered by their upload sequence
    (``collapse.baseline_seq``), not by the run's start time, which is the uploading machine's
    clock: a machine whose clock is an hour behind drops the replicates, and a monitor rebuilt
    from MLflow used to read the older baseline with them (its run started "later"), and the
    skewed machine uploaded its baseline again at every check."""
    import time
    import uuid

    name = f"skew-{uuid.uuid4().hex[:8]}"
    ref = cm.Reference(embeddings=np.random.default_rng(0).normal(size=(500, 8)), labels=LABELS)

    def monitor(home, behind: float = 0.0):
        return cm.CollapseMonitor(
            name,
            reference=ref,
            sinks=[cm.MLflowSink(mlflow_server.url, evidently=False)],
            home=home,
            clock=lambda: time.time() - behind,
        )

    first = monitor(tmp_path / "m1")
    first.check(_obs(28))
    first.check_replicate(_obs(18))
    assert first.check(_obs(17)).stage is cm.Stage.HEALTHY  # uploads the baseline with its replicate
    first.flush()
    skewed = monitor(tmp_path / "m2", behind=3600.0)
    assert skewed.drop_replicates() == 1
    for _ in range(2):  # the first uploads the baseline without the replicate, the second nothing
        assert skewed.check(_obs(17)).stage is cm.Stage.EARLY_COLLAPSE
        skewed.flush()
        skewed = monitor(tmp_path / "m2", behind=3600.0)  # a new process of the skewed machine
    client = mlflow_server.client()
    exp_id = client.get_experiment_by_name(f"collapse-monitor/{name}").experiment_id
    runs = client.search_runs([exp_id], "tags.`collapse.baseline` = 'true'", max_results=100)
    seqs = sorted(int(r.data.tags["collapse.baseline_seq"]) for r in runs)
    assert seqs == [1, 2, 3]
    by_seq = {int(r.data.tags["collapse.baseline_seq"]): r.data.tags["collapse.baseline_replicates"] for r in runs}
    assert by_seq == {1: "0", 2: "1", 3: "0"}  # the count each artifact carries, for the UI
    rebuilt = monitor(tmp_path / "m3")
    assert rebuilt.check(_obs(17)).stage is cm.Stage.EARLY_COLLAPSE
    assert rebuilt.history.baseline(name).replicates == []


def test_monitors_sharing_an_experiment_upload_their_baselines_once(mlflow_server, tmp_path) -> None:
    """Two monitors logging to one experiment: each uploads its baseline at its baseline
    generation and not again (the newest baseline run of the *experiment* used to be the other
    monitor's, so every check uploaded its MB-sized artifact again)."""
    import uuid

    exp = f"shared-{uuid.uuid4().hex[:8]}"
    ref = cm.Reference(embeddings=np.random.default_rng(0).normal(size=(500, 8)), labels=LABELS)
    for _ in range(3):  # a new process per check: new monitors and sinks on the same homes
        mons = [
            cm.CollapseMonitor(
                f"{n}-{exp}",
                reference=ref,
                sinks=[cm.MLflowSink(mlflow_server.url, experiment=exp, evidently=False)],
                home=tmp_path / n,
            )
            for n in ("a", "b")
        ]
        for mon, right in zip(mons, (28, 27), strict=True):  # two baselines (equal ones share a digest)
            assert mon.check(_obs(right)).errors == ()
            mon.flush()
    client = mlflow_server.client()
    exp_id = client.get_experiment_by_name(exp).experiment_id
    stored = client.search_runs([exp_id], "tags.`collapse.baseline` = 'true'", max_results=100)
    assert sorted(r.data.tags["collapse.monitor"] for r in stored) == [m.name for m in mons]


def test_replicates_on_a_new_machine_with_the_sink_down_say_what_to_do(tmp_path) -> None:
    """An empty home and an MLflow server that does not answer: no replicate is stored, nothing
    is dropped, and the error says to retry (not "check the baseline generation first", which
    would start a new baseline there)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ref = cm.Reference(embeddings=np.random.default_rng(0).normal(size=(500, 8)), labels=LABELS)
    sink = cm.MLflowSink(f"http://127.0.0.1:{port}", evidently=False, timeout=2.0)
    mon = cm.CollapseMonitor("down", reference=ref, sinks=[sink], home=tmp_path)
    for call in (lambda: mon.check_replicate(_obs(18)), mon.drop_replicates):
        with pytest.raises(cm.CollapseMonitorError, match="retry when they are reachable") as e:
            call()
        assert "check the baseline generation first" not in str(e.value)
    assert mon.history.baseline("down") is None


def test_a_replicates_table_without_owners_is_migrated(tmp_path) -> None:
    """A store whose replicate rows name no baseline (the first version of this table) opens,
    ignores those rows, and takes new replicates."""
    _baseline_without_replicates_table(
        tmp_path,
        "CREATE TABLE baseline_replicates (monitor TEXT NOT NULL, idx INTEGER NOT NULL, metrics_json TEXT NOT NULL,"
        " items BLOB, PRIMARY KEY (monitor, idx))",
        "INSERT INTO baseline_replicates VALUES ('rep', 0, '{}', NULL)",
    )
    again = _monitor(tmp_path)
    assert again.history.baseline("rep").replicates == []
    again.check_replicate(_obs(18))
    assert len(HistoryStore(tmp_path).baseline("rep").replicates) == 1
    # a new table takes rows from a writer that knows no owners (an older version), unused
    fresh = _monitor(tmp_path / "fresh")
    fresh.check(_obs(28))
    con = sqlite3.connect(tmp_path / "fresh" / "history.db")
    con.execute("INSERT INTO baseline_replicates(monitor, idx, metrics_json) VALUES ('rep', 5, '{}')")
    con.commit()
    con.close()
    assert HistoryStore(tmp_path / "fresh").baseline("rep").replicates == []


# -- replicates from the training hooks (watch, retrain; the callbacks are in tests/hooks) ------


def test_watch_and_retrain_add_a_replicate_instead_of_a_generation(tmp_path, caplog) -> None:
    """A job that retrains the baseline generation once more declares it with replicate=True: the
    result passes through, the replicate lands in the baseline (not in the history of
    generations), ``last_replicate`` holds its metrics, and the same weights measured again (a
    resumed job, a script run twice) are not stored twice."""
    import logging

    mon = _monitor(tmp_path)
    mon.check(_obs(28))

    @mon.watch(evaluate=lambda right: _obs(right), replicate=True)
    def train(right: int) -> int:
        return right

    assert train(18) == 18
    assert mon.last_report is None and mon.last_error is None
    assert mon.last_replicate["rare_class_recall"].value == pytest.approx(18 / 30)
    assert mon.last_replicate["rare_class_recall"].baseline == pytest.approx(28 / 30)
    with caplog.at_level(logging.INFO, logger="collapse_monitor"):
        assert train(18) == 18
    assert "equals replicate 1 of baseline generation 0, already stored" in caplog.text
    assert mon.last_replicate is not None
    assert len(mon.history.baseline("rep").replicates) == 1

    with mon.retrain(replicate=True) as r:
        got = r.observe(lambda: _obs(19))
    assert r.report is None and r.replicate is got and got["rare_class_recall"].value == pytest.approx(19 / 30)
    assert len(mon.history.baseline("rep").replicates) == 2
    assert [x.generation for x in mon.reports()] == [0]  # no generation was added
    assert mon.check(_obs(17)).stage is cm.Stage.HEALTHY  # judged against the replicates too


def test_a_failed_replicate_from_a_hook_never_breaks_the_job(tmp_path) -> None:
    """A replicate refused as bad input (fewer sample embeddings than the baseline, a later
    generation) is contained like a failed check: logged, ``last_error``; strict raises it."""
    mon = _monitor(tmp_path)
    mon.check(_obs(28))
    small = cm.Observation(embeddings=np.zeros((10, 8)) + np.arange(10)[:, None], predictions=_preds(18))

    @mon.watch(evaluate=lambda _: small, replicate=True)
    def train() -> str:
        return "model"

    assert train() == "model"
    assert mon.last_replicate is None and isinstance(mon.last_error, cm.InputError)
    assert mon.last_error.field == "observation.embeddings"

    @mon.watch(evaluate=lambda _: _obs(18), generation=3, replicate=True, strict=True)
    def later() -> str:
        return "model"

    with pytest.raises(cm.InputError, match="another retrain of the baseline generation 0"):
        later()
    assert mon.history.baseline("rep").replicates == []
    # a failed direct call leaves no earlier replicate's metrics behind
    assert mon.check_replicate(_obs(18)) is mon.last_replicate
    with pytest.raises(cm.InputError):
        mon.check_replicate(small)
    assert mon.last_replicate is None
    with pytest.raises(cm.ConfigError, match=r"watch\.replicate"):
        mon.watch(evaluate=lambda _: _obs(1), replicate="yes")
    with pytest.raises(cm.ConfigError, match=r"retrain\.replicate"), mon.retrain(replicate=1):
        pass


def test_an_async_trainer_adds_its_replicate_off_the_loop(tmp_path) -> None:
    import asyncio

    mon = _monitor(tmp_path)
    mon.check(_obs(28))

    @mon.watch(evaluate=lambda right: _obs(right), replicate=True)
    async def train(right: int) -> int:
        await asyncio.sleep(0)
        return right

    async def main() -> tuple[int, dict | None]:
        got = await train(18)
        return got, mon.last_replicate  # as the awaiting task sees it

    got, rep = asyncio.run(main())
    assert got == 18 and rep is not None and rep["rare_class_recall"].value == pytest.approx(18 / 30)
    assert len(mon.history.baseline("rep").replicates) == 1


def _rare(b) -> list[float]:
    return [round(r.metrics["rare_class_recall"].value * 30) for r in b.replicates]


def _machines(server, tmp_path, name: str):
    """Monitors of ``name`` by machine (a home each, one MLflow server), and machine A after it
    checked the baseline generation (28 of 30 rare items right)."""

    def monitor(machine: str):
        return _mlflow_monitor(server, name, tmp_path / machine)

    a = monitor("a")
    a.check(_obs(28))
    a.flush()
    return monitor, a


def _two_machines(server, tmp_path, name: str):
    """:func:`_machines`, and machine B, which reads the baseline back from MLflow and adds a
    replicate (18 of 30)."""
    monitor, a = _machines(server, tmp_path, name)
    b = monitor("b")
    b.check_replicate(_obs(18))  # reads the baseline back from MLflow first
    return monitor, a, b


def test_replicates_from_several_machines_merge_through_mlflow(mlflow_server, tmp_path, caplog) -> None:
    """Two machines with their own histories add a replicate each, and one drops the other's:
    each check first merges the newest copy on MLflow into its own (added ones join, dropped ones
    leave and stay out) and uploads the merge, so neither machine's upload loses the other's
    work. Before, the last machine to check uploaded its own copy over the other's: machine B's
    check lost machine A's replicate, and B kept judging against the one A dropped."""
    import logging
    import uuid

    name = f"merge-{uuid.uuid4().hex[:8]}"
    monitor, a, b = _two_machines(mlflow_server, tmp_path, name)
    a.check_replicate(_obs(19))  # A's replicate
    a.check(_obs(17))  # uploads A's copy: one replicate
    a.flush()
    report = b.check(_obs(17))
    assert any("1 added and 0 dropped on other machines, 2 now" in n for n in report.notes)
    assert any("2 replicate retrain(s) of generation 0" in n for n in report.notes)
    assert _rare(b.baseline()) == [18, 19]  # B's first, then the one merged in
    b.flush()
    assert _rare(monitor("c").baseline()) == [18, 19]  # uploaded with both (it used to hold B's alone)

    # A drops its own replicate: A reads B's first (a merge), then drops number 1 (its own)
    assert _rare(a.baseline()) == [19, 18]
    assert a.drop_replicates([1]) == 1 and _rare(a.baseline()) == [18]
    a.check(_obs(17))
    a.flush()
    report = b.check(_obs(17))
    assert any("0 added and 1 dropped on other machines, 1 now" in n for n in report.notes)
    assert _rare(b.baseline()) == [18]
    b.flush()
    with caplog.at_level(logging.WARNING, logger="collapse_monitor"):
        b.check_replicate(_obs(19))  # the dropped retrain again: it stays out on every machine
    assert "equals one dropped from baseline generation 0" in caplog.text
    assert _rare(b.baseline()) == [18]
    fresh = monitor("d")
    assert _rare(fresh.baseline()) == [18] and len(fresh.baseline().dropped) == 1
    client = mlflow_server.client()
    exp_id = client.get_experiment_by_name(f"collapse-monitor/{name}").experiment_id
    runs = client.search_runs([exp_id], "tags.`collapse.baseline` = 'true'", max_results=100)
    by_seq = {int(r.data.tags["collapse.baseline_seq"]): r.data.tags["collapse.baseline_replicates"] for r in runs}
    assert by_seq == {1: "0", 2: "1", 3: "2", 4: "1"}  # B's last check found the merge there: no upload
    assert len({r.data.tags["collapse.baseline_uid"] for r in runs}) == 1


def _sqlite_machines(tmp_path, name: str):
    """Monitors of ``name`` by machine (a home each under ``tmp_path``), all logging to one
    sqlite MLflow store whose artifacts a test can reach and delete."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ref = cm.Reference(embeddings=np.random.default_rng(0).normal(size=(500, 8)), labels=LABELS)

    def monitor(home: str):
        return cm.CollapseMonitor(
            name, reference=ref, sinks=[cm.MLflowSink(uri, evidently=False)], home=tmp_path / home
        )

    return monitor


def _baseline_uploads(server, name: str) -> dict[int, str]:
    """The monitor's baseline uploads on the server: sequence number -> number of replicates."""
    client = server.client()
    exp_id = client.get_experiment_by_name(f"collapse-monitor/{name}").experiment_id
    runs = client.search_runs([exp_id], "tags.`collapse.baseline` = 'true'", max_results=100)
    return {int(r.data.tags["collapse.baseline_seq"]): r.data.tags["collapse.baseline_replicates"] for r in runs}


def test_a_baseline_checked_again_elsewhere_is_neither_merged_nor_taken_over(mlflow_server, tmp_path) -> None:
    """A machine that checks the baseline generation again starts a new baseline (a new
    identity): the replicates of the old one are not merged into it, and the machine still on the
    old one does not take the new one over (an upload order cannot tell which is right: a machine
    whose history could not be read back starts one of its own too). Each judges against its
    own, and a monitor rebuilt from MLflow reads the newest upload."""
    import uuid

    name = f"rebase-{uuid.uuid4().hex[:8]}"
    monitor, a = _machines(mlflow_server, tmp_path, name)
    a.check_replicate(_obs(19))
    a.check(_obs(17))
    a.flush()
    b = monitor("b")
    assert _rare(b.baseline()) == [19]
    b.check(_obs(27, generation=0))  # a new baseline on B
    b.check_replicate(_obs(20))
    report = b.check(_obs(17))
    assert not any("merged" in n for n in report.notes)
    b.flush()
    assert _rare(b.baseline()) == [20]
    report = monitor("a").check(_obs(17))
    assert not any("merged" in n for n in report.notes)
    assert any("1 replicate retrain(s)" in n for n in report.notes)
    # said, with what to do: two baselines are a state someone has to end
    assert any("the newest baseline on mlflow is another one (generation 0" in n for n in report.notes)
    assert _rare(monitor("a").baseline()) == [19]
    assert _rare(monitor("c").baseline()) == [19]  # A's upload is the newest now
    # the README's way to end it: a check where the right baseline is, then this machine's
    # history.db moved aside (the spool and outbox stay): the next check reads that one back
    b = monitor("b")
    b.check(_obs(17))
    b.flush()
    for f in (tmp_path / "a").glob("history.db*"):
        f.rename(f.with_name(f.name + ".aside"))
    report = monitor("a").check(_obs(17))
    assert not any("another one" in n for n in report.notes)
    assert _rare(monitor("a").baseline()) == [20]


def test_equal_baselines_under_two_identities_are_not_uploaded_in_turn(mlflow_server, tmp_path) -> None:
    """The same pipeline run from its start on a second machine checks the baseline generation
    again with the same outputs: a new identity with the same contents. Neither machine uploads
    it again at its checks (an identity alone used to make the copies differ, and the two
    machines uploaded the artifact in turn at every check)."""
    import uuid

    name = f"twin-{uuid.uuid4().hex[:8]}"
    monitor, _ = _machines(mlflow_server, tmp_path, name)
    b = monitor("b")
    b.check(_obs(28, generation=0))
    b.flush()
    for machine in ("a", "b", "a", "b"):  # new processes of both machines
        mon = monitor(machine)
        assert mon.check(_obs(17)).errors == ()
        mon.flush()
    assert _baseline_uploads(mlflow_server, name) == {1: "0"}


def test_an_unreadable_baseline_on_mlflow_is_replaced_not_stuck(tmp_path, caplog) -> None:
    """The newest baseline artifact lost on the server (storage loss, a hand deletion): the next
    check uploads this machine's copy over it, with a warning. The merge step used to give up
    there at every check, so no baseline was uploaded again."""
    import logging

    monitor = _sqlite_machines(tmp_path, "lost")

    mon = monitor("h")
    mon.check(_obs(28))
    mon.check_replicate(_obs(18))
    mon.check(_obs(17))
    mon.flush()
    stored = list((tmp_path / "mlruns").rglob("baseline/baseline.json"))
    max(stored, key=lambda p: p.stat().st_mtime).unlink()
    mon = monitor("h")
    mon.check_replicate(_obs(19))
    with caplog.at_level(logging.WARNING, logger="collapse_monitor"):
        assert mon.check(_obs(17)).errors == ()
    mon.flush()
    assert "cannot be read" in caplog.text and "uploaded over it" in caplog.text
    assert _rare(monitor("new").baseline()) == [18, 19]


def test_a_copy_that_cannot_be_downloaded_is_not_uploaded_over(tmp_path) -> None:
    """MLflow not answering the artifact download once: the check's run is logged without the
    baseline, with a warning in the report, instead of this machine's copy going up over one
    that may hold the only record of another machine's replicate (a training job's machine whose
    home is gone). The next check merges it. It used to upload over it, and the replicate was
    lost for good."""
    import shutil

    monitor = _sqlite_machines(tmp_path, "eph")

    a = monitor("a")
    a.check(_obs(28))
    a.flush()
    job = monitor("job")
    job.check_replicate(_obs(18))
    job.check(_obs(17))  # uploads the baseline with the job's replicate
    job.flush()
    shutil.rmtree(tmp_path / "job")  # the job's machine is gone
    client = a.sinks[0].client()
    real = client.list_artifacts

    def down(*args, **kwargs):
        raise ConnectionError("artifact store not answering")

    client.list_artifacts = down
    a.check_replicate(_obs(19))  # its sync fails too: added to this machine's copy alone
    report = a.check(_obs(17))
    assert any("could not be read" in e and "logged without the baseline" in e for e in report.errors)
    assert any("not compared with its copy on mlflow" in n for n in report.notes)
    client.list_artifacts = real
    report = a.check(_obs(17))
    assert any("1 added and 0 dropped on other machines, 2 now" in n for n in report.notes)
    a.flush()
    assert _rare(monitor("new").baseline()) == [19, 18]


def test_merging_copies_of_a_baseline_converges() -> None:
    """``merge_baselines`` is idempotent and, up to order, commutative; drops win over adds;
    metrics one copy gained later join the other."""
    from collapse_monitor.history import Baseline, Replicate, merge_baselines, state_digest

    def rep(v: float) -> Replicate:
        return Replicate({"m": cm.MetricValue(v, v, v)}, {"m": np.array([v])})

    base = Baseline(0, "fp", {"m": cm.MetricValue(1.0, 1.0, 1.0)}, {"m": np.array([1.0])}, uid="u")
    x = Baseline(0, "fp", dict(base.metrics), dict(base.items), replicates=[rep(0.1), rep(0.2)], uid="u")
    y = Baseline(
        0, "fp", {**base.metrics, "n": cm.MetricValue(5.0, 5.0, 5.0)}, dict(base.items), replicates=[rep(0.3)], uid="u"
    )
    y.dropped = {rep(0.2).digest()}
    xy, yx = merge_baselines(x, y), merge_baselines(y, x)
    assert state_digest(xy) == state_digest(yx)
    assert [r.metrics["m"].value for r in xy.replicates] == [0.1, 0.3]
    assert [r.metrics["m"].value for r in yx.replicates] == [0.3, 0.1]
    assert "n" in xy.metrics and xy.dropped == {rep(0.2).digest()}
    assert state_digest(merge_baselines(xy, y)) == state_digest(xy) == state_digest(merge_baselines(xy, xy))
    assert state_digest(x) != state_digest(
        Baseline(0, "fp", dict(x.metrics), dict(x.items), replicates=x.replicates[:1])
    )
    # both gained a metric at once, with different values: the copy on the server (remote) wins,
    # so the machines that merge with it take the same values
    z = Baseline(0, "fp", {**base.metrics, "n": cm.MetricValue(7.0, 7.0, 7.0)}, dict(base.items), uid="u")
    assert merge_baselines(y, z).metrics["n"].value == 7.0 and merge_baselines(z, y).metrics["n"].value == 5.0
    assert state_digest(merge_baselines(merge_baselines(z, y), y)) == state_digest(merge_baselines(z, y))


def test_baselines_stored_before_identities_merge_by_their_contents(mlflow_server, tmp_path, monkeypatch) -> None:
    """A baseline stored by an older version has no identity (``uid``), in the local history
    or on MLflow (no ``collapse.baseline_uid`` tag): each machine derives it from the
    baseline's contents, equal for copies of one baseline, so they merge after the upgrade."""
    import types
    import uuid

    name = f"legacy-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(
        "collapse_monitor.monitor.uuid", types.SimpleNamespace(uuid4=lambda: types.SimpleNamespace(hex=""))
    )
    _, a, b = _two_machines(mlflow_server, tmp_path, name)
    for home in ("a", "b"):  # as an older version left them: no identity row
        with sqlite3.connect(tmp_path / home / "history.db") as con:
            con.execute("DELETE FROM baseline_sync")
    client = mlflow_server.client()
    exp_id = client.get_experiment_by_name(f"collapse-monitor/{name}").experiment_id
    for run in client.search_runs([exp_id], "tags.`collapse.baseline` = 'true'"):
        client.delete_tag(run.info.run_id, "collapse.baseline_uid")
    a.check_replicate(_obs(19))
    a.check(_obs(17))
    a.flush()
    report = b.check(_obs(17))
    assert any("1 added and 0 dropped on other machines, 2 now" in n for n in report.notes)
    assert _rare(b.baseline()) == [18, 19]


def test_take_baseline_ends_two_baselines_at_once(tmp_path, capsys) -> None:
    """``check --take-baseline`` (``take_baseline()``): a machine whose baseline is not the
    newest upload takes the newest, right after a check where that one is; its notes about
    another baseline stop, and its later checks are judged against the one taken. It runs alone,
    and a monitor without a sink that keeps baselines says so."""
    from collapse_monitor.cli import main

    np.save(tmp_path / "labels.npy", LABELS)
    for k in (28, 27, 17):
        np.save(tmp_path / f"p{k}.npy", _preds(k))
    for machine in ("a", "b"):
        (tmp_path / f"{machine}.yaml").write_text(
            f"name: take\nhome: {machine}\nreference: {{labels: labels.npy}}\n"
            "sinks: [{type: mlflow, tracking_uri: 'sqlite:///mlflow.db', evidently: false}]\n"
        )

    def run(machine: str, *args: str, code: int = 0) -> str:
        capsys.readouterr()
        assert main(["check", "--config", str(tmp_path / f"{machine}.yaml"), *args]) == code
        return capsys.readouterr().out

    def notes(machine: str) -> list[str]:
        return json.loads(run(machine, "--predictions", str(tmp_path / "p17.npy"), "--json"))["notes"]

    run("a", "--predictions", str(tmp_path / "p28.npy"))
    run("b", "--predictions", str(tmp_path / "p27.npy"), "--generation", "0")  # reads A's back, then a new one
    said = [n for n in notes("a") if "the newest baseline on mlflow is another one" in n]
    assert said and "collapse-monitor check --take-baseline" in said[0]
    notes("b")  # B's check: its copy is the newest upload again
    assert "baseline generation 0 with 0 replicate(s) taken from MLflow" in run("a", "--take-baseline")
    assert not any("another one" in n for n in notes("a"))
    taken = cm.CollapseMonitor.from_config(tmp_path / "a.yaml").history.baseline("take")
    assert taken.metrics["rare_class_recall"].value == pytest.approx(27 / 30)
    assert not any("another one" in n for n in notes("b"))
    capsys.readouterr()
    assert main(["check", "--config", str(tmp_path / "a.yaml"), "--take-baseline", "--generation", "1"]) == 2
    assert "--take-baseline: runs alone" in capsys.readouterr().err
    with pytest.raises(cm.CollapseMonitorError, match="none of its sinks keeps one"):
        _monitor(tmp_path / "plain").take_baseline()


def test_taking_this_machines_own_baseline_keeps_its_local_replicates(tmp_path) -> None:
    """CLI audit (stop 41): `check --take-baseline` on a machine whose baseline is the newest
    upload replaced it with MLflow's copy, which lacks the replicates added here since (a
    replicate logs no run) and undoes drops, and said "it was this machine's already". The
    two copies of one baseline are now merged."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ref = cm.Reference(embeddings=np.random.default_rng(0).normal(size=(500, 8)), labels=LABELS)
    mon = cm.CollapseMonitor("own", reference=ref, sinks=[cm.MLflowSink(uri, evidently=False)], home=tmp_path / "h")
    mon.check(_obs(28))  # the baseline, uploaded with its run
    mon.check_replicate(_obs(27))
    mon.check_replicate(_obs(26))
    assert mon.drop_replicates([2]) == 1
    taken = mon.take_baseline()
    assert len(taken.replicates) == 1 and len(taken.dropped) == 1
    kept = mon.history.baseline("own")
    assert len(kept.replicates) == 1 and kept.replicates[0].metrics["rare_class_recall"].value == pytest.approx(27 / 30)


def test_the_cli_says_a_collapsed_replicate_once(tmp_path) -> None:
    """In a real process (the library's log reaches stderr there, not under pytest's capture),
    ``check --replicate`` warns about a collapsed replicate once, with the real --config; the
    library's own warning, which names ``<its config>``, was printed above it too."""
    import subprocess
    import sys

    np.save(tmp_path / "labels.npy", LABELS)
    for k in (28, 0):
        np.save(tmp_path / f"p{k}.npy", _preds(k))
    cfg = tmp_path / "collapse.yaml"
    cfg.write_text("name: once\nhome: state\nreference: {labels: labels.npy}\nsinks: []\n")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        code = "from collapse_monitor.cli import main; raise SystemExit(main())"
        run = subprocess.run([sys.executable, "-c", code, "check", "--config", str(cfg), *args],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        return run

    cli("--predictions", str(tmp_path / "p28.npy"))
    err = cli("--predictions", str(tmp_path / "p0.npy"), "--replicate").stderr
    assert err.count("reads early_collapse") == 1, err
    assert f"--config {cfg} --drop-replicates 1" in err and "<its config>" not in err
    # --json prints only the stage: the library's warning stays on stderr
    np.save(tmp_path / "p1.npy", _preds(1))
    err = cli("--predictions", str(tmp_path / "p1.npy"), "--replicate", "--json").stderr
    assert "replicate 2 reads early_collapse" in err and "<its config>" in err
