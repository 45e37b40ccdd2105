"""`collapse-monitor demo` end to end, with MLflow logging on (a local sqlite store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import collapse_monitor as cm

pytestmark = pytest.mark.slow


def _run_demo(cwd: Path, env: dict[str, str], *args: str, timeout: int = 400) -> subprocess.CompletedProcess[str]:
    """``collapse-monitor demo ARGS`` as a user runs it (the console script, else ``-m``)."""
    cli = Path(sys.executable).parent / "collapse-monitor"
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "collapse_monitor.cli"]
    env = {**os.environ, **env}
    return subprocess.run(
        [*cmd, "demo", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False
    )


def test_demo_three_generations_logs_every_check_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    db = tmp_path / "mlflow.db"
    env = {"COLUMNS": "80", "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    result = _run_demo(tmp_path, env, "--generations", "3", "--seed", "1", "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout
    # the per-generation tables (one per loop), the verdict lines and the MLflow hint
    for needle in ("digits / replace loop", "digits / accumulate loop", "accuracy", "recall", "coverage", "stage"):
        assert needle in text, needle
    # COLUMNS=80: the table fits (metric keys wrap onto header lines, the stage is not cut)
    rows = [line for line in text.splitlines() if line[:1] in set("┏┃┡│└")]
    assert len(rows) >= 2 * (3 + 3 + 1), rows  # two tables: borders, header lines, 3 generations
    assert all(len(line) <= 80 for line in rows), max(rows, key=len)
    assert "…" not in text
    assert "replace: " in text and "accumulate: " in text
    # the progress bars go to stderr: `demo > out.txt` keeps only the results
    assert "   replace loop" in result.stderr and "   replace loop" not in text
    assert f"  mlflow ui --backend-store-uri sqlite:///{db}\n" in text  # one line, to copy whole
    # the output folder: HTML report, PNG charts, machine-readable verdicts
    assert (out / "report.html").is_file()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"metrics.png", "replace.png", "accumulate.png"} <= set(pngs), pngs
    verdicts = json.loads((out / "verdict.json").read_text())
    assert verdicts["scenario"] == "digits" and set(verdicts["verdicts"]) == {"replace", "accumulate"}
    from collapse_monitor.report_html import lead_text

    page = (out / "report.html").read_text()
    for v in verdicts["verdicts"].values():
        assert set(v) >= {"flagged_at", "aggregate_at", "lead"}
        if v["flagged_at"] is not None and v["lead"] is not None:  # the console's lead, in the report too
            assert lead_text(v["lead"]) in page and lead_text(v["lead"]) in text.replace("\n", " ")
    # every check is an MLflow run with the contract's tags
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exps = [e for e in client.search_experiments() if e.name.startswith("collapse-monitor/demo-digits-")]
    assert len(exps) == 2
    runs = [r for e in exps for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 6
    assert sorted(int(r.data.tags["collapse.generation"]) for r in runs) == [0, 0, 1, 1, 2, 2]
    assert all(r.data.tags["collapse.stage"] in {"healthy", "early_collapse", "late_collapse"} for r in runs)
    assert all("collapse.rare_class_recall" in r.data.metrics for r in runs)


def test_the_verdict_counts_an_accuracy_drop_of_exactly_two_points() -> None:
    """The verdict's aggregate alert fires at 2 points *or more*: 0.95 -> 0.93 is 2 points
    though 0.95 - 0.93 is 0.019999999999999907, the same rounding the monitor's min_effect and
    the benchmark's baseline (a) tolerate."""
    from collapse_monitor.demo import verdict
    from collapse_monitor.types import Report

    reports = [Report(monitor="m", generation=g, stage=cm.Stage.HEALTHY, metrics={}) for g in range(3)]
    acc = [{"accuracy": 0.95}, {"accuracy": 0.9301}, {"accuracy": 0.93}]
    assert 0.95 - 0.93 < 0.02
    assert verdict(reports, acc)["aggregate_at"] == 2
    fd = [{"frechet_distance": 0.3}, {"frechet_distance": 0.59}, {"frechet_distance": 0.6}]
    assert verdict(reports, fd)["aggregate_at"] == 2


def test_demo_never_prints_tracking_credentials_and_says_when_logging_failed(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a closed loopback port: every MLflow write fails
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://bob:s3cretPASS@127.0.0.1:{port}/"
    env = {"COLUMNS": "100", "COLLAPSE_MONITOR_HOME": str(tmp_path / "home")}
    result = _run_demo(
        tmp_path,
        env,
        "--scenario",
        "gaussian",
        "--loop",
        "replace",
        "--generations",
        "2",
        "--tracking-uri",
        uri,
        "--out",
        str(tmp_path / "out"),
        timeout=300,
    )
    text = result.stdout + result.stderr
    # exit 1: no check reached MLflow (it exited 0, and a script could not tell)
    assert result.returncode == 1, text[-3000:]
    assert "s3cretPASS" not in text and "bob" not in text
    assert f"MLflow: 2 of 2 checks could not be logged to http://127.0.0.1:{port}/" in text
    flat = " ".join(text.split())  # the line wraps at COLUMNS
    assert "which the next demo run replaces" in flat and "run the demo again" in flat
    assert "mlflow ui" not in text  # no command that would open an empty store


def test_demo_replaces_only_its_own_state_folder(tmp_path: Path, monkeypatch) -> None:
    """``--out .`` in a project with its own ``state/`` folder used to delete it."""
    import pytest

    from collapse_monitor.demo import DEMO_MARKER, run_demo
    from collapse_monitor.errors import ConfigError

    monkeypatch.setenv("COLUMNS", "100")
    mine = tmp_path / "project" / "state" / "precious.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep me")
    with pytest.raises(ConfigError) as info:
        run_demo(scenario="gaussian", loops=["replace"], generations=2, out=tmp_path / "project", mlflow=False)
    assert info.value.key == "out" and "was not made by the demo" in str(info.value)
    assert mine.read_text() == "keep me" and not (tmp_path / "project" / "report.html").exists()

    out = tmp_path / "demo"
    for _ in range(2):  # the second run replaces the first one's monitor homes
        assert run_demo(scenario="gaussian", loops=["replace"], generations=2, out=out, mlflow=False) == 0
        assert (out / "state" / DEMO_MARKER).is_file()
        assert len([p for p in (out / "state").iterdir() if p.is_dir()]) == 1
    # a state folder from a demo before the marker (monitor homes only) is still replaced
    (out / "state" / DEMO_MARKER).unlink()
    assert run_demo(scenario="gaussian", loops=["replace"], generations=2, out=out, mlflow=False) == 0


def test_bad_demo_options_are_refused_before_the_earlier_state_is_touched(tmp_path: Path, monkeypatch) -> None:
    """CLI audit (2026-12-06): a bad sink option was refused only after the earlier run's
    state/ (and what it had spooled) was deleted; a sqlite URI naming a folder hung for minutes
    with the progress bar at 0; a seed past 2^32 ended in a torch traceback; a folder named
    report.html failed the run after all its minutes."""
    from collapse_monitor import cli
    from collapse_monitor.demo import DEMO_MARKER, run_demo
    from collapse_monitor.errors import ConfigError

    monkeypatch.setenv("COLUMNS", "100")
    out = tmp_path / "demo"
    spooled = out / "state" / "replace" / "spool" / "kept.json"
    spooled.parent.mkdir(parents=True)
    spooled.write_text("{}")
    (out / "state" / DEMO_MARKER).write_text("")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    cases = [
        ({"tracking_uri": f"sqlite:///{folder}"}, "tracking_uri", "names a folder, not a sqlite file"),
        ({"tracking_uri": "  "}, "tracking_uri", "is empty"),
        ({"pushgateway": "http://127.0.0.1:9091/#x"}, "PrometheusSink.pushgateway", "fragment"),
        ({"seed": 2**32}, "seed", "expected an int in [0, 4294967295]"),
        # README audit (stop 36): a scheme MLflow has no store for ran the whole demo and
        # ended "make sure the server is up" with status 1
        ({"tracking_uri": "sqllite:///mlflow.db"}, "MLflowSink.tracking_uri", "scheme 'sqllite'"),
        # simulate audit (2026-12-07): 3.0 / "10" from Python failed after the state was deleted,
        # and 10**20 ran until killed
        ({"generations": 3.0}, "generations", "expected an int from 2"),
        ({"generations": "10"}, "generations", "expected an int from 2"),
        ({"generations": 10**20}, "generations", "to 1000"),
    ]
    for kw, key, needle in cases:
        with pytest.raises(ConfigError) as info:
            run_demo(**{"scenario": "digits", "loops": ["replace"], "generations": 2, "out": out, **kw})
        assert info.value.key == key and needle in str(info.value), (kw, str(info.value))
        assert spooled.is_file(), kw  # the earlier run's state is still there
    assert cli.main(["demo", "--seed", str(2**63), "--generations", "2", "--out", str(out)]) == 2
    (out / "report.html").mkdir()
    with pytest.raises(ConfigError) as info:
        run_demo(scenario="gaussian", loops=["replace"], generations=2, out=out, mlflow=False)
    assert info.value.key == "out" and "report.html is a folder" in str(info.value)
    assert spooled.is_file()


def test_demo_with_replicate_baselines(tmp_path: Path, capsys, monkeypatch) -> None:
    """``demo --replicates N``: N more retrains of generation 0 join each loop's baseline
    (``check_replicate``), the terminal shows their spread on the rare class, verdict.json
    records N, and each later check is judged against them (its report says so)."""
    from collapse_monitor import cli
    from collapse_monitor.demo import run_demo
    from collapse_monitor.errors import ConfigError

    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "demo"
    assert cli.main(["demo", "--loop", "replace", "--generations", "2", "--replicates", "1", "--no-mlflow",
                     "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "1 replicate baseline(s)" in text
    (line,) = [x for x in text.splitlines() if x.startswith("replace: generation 0 and 1 replicate retrain(s)")]
    base, rep = (float(v) for v in line.split("rare_class_recall ")[1].split(";")[0].split(" / "))
    assert 0 < base <= 1 and 0 < rep <= 1
    assert json.loads((out / "verdict.json").read_text())["replicates"] == 1
    from collapse_monitor.history import HistoryStore

    store = HistoryStore(out / "state" / "replace")
    ((name,),) = store._read("SELECT monitor FROM baselines")
    assert len(store.baseline(name).replicates) == 1
    assert any("1 replicate retrain(s) of generation 0" in n for n in store.reports(name)[1].notes)
    for bad in (-1, 6, True, 1.5):
        with pytest.raises(ConfigError) as info:
            run_demo(scenario="digits", loops=["replace"], generations=2, out=out, mlflow=False, replicates=bad)
        assert info.value.key == "replicates"


def test_an_out_folder_with_brackets_finishes_the_demo(tmp_path: Path, monkeypatch, capsys) -> None:
    """``--out 'runs[1]'``: the report line was rich markup, MarkupError after the whole run,
    exit 1 and no closing lines (an audit)."""
    from collapse_monitor import cli

    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "runs[1]" / "x[/]"
    code = cli.main(["demo", "--scenario", "gaussian", "--loop", "replace", "--generations", "2", "--no-mlflow",
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert f"Report: {out / 'report.html'}" in text.replace("\n", "") and (out / "report.html").is_file()


def test_a_loop_and_its_alias_run_once(tmp_path: Path, monkeypatch) -> None:
    """A simulation audit (2026-12-08): ``--loop stable --loop real`` ran the same chain twice,
    in two tables; the loops are deduplicated by what they run, not by how they are spelt."""
    monkeypatch.setenv("COLLAPSE_MONITOR_HOME", str(tmp_path / "home"))
    from collapse_monitor.demo import run_demo

    out = tmp_path / "out"
    assert run_demo(scenario="gaussian", loops=["stable", "real"], generations=2, out=out, mlflow=False) == 0
    verdict = json.loads((out / "verdict.json").read_text())
    text = json.dumps(verdict)
    assert "stable" in text and "real" not in text, text
    assert sorted(p.name for p in out.glob("*.png")) == ["metrics.png", "stable.png"]


@pytest.mark.parametrize(
    ("lead", "said"),
    [
        (2, "-&gt; 2 generation(s) of early warning"),
        (0, "(no lead: the same generation)"),
        (-1, "-&gt; 1 generation(s) after it"),
    ],
)
def test_the_html_verdict_says_the_lead_as_the_console_does(tmp_path: Path, lead: int, said: str) -> None:
    """A simulation audit (2026-12-08): the report's verdict lines left out the lead the console
    prints ("N generation(s) before / after it")."""
    import numpy as np

    from collapse_monitor.report_html import write_report

    y = np.array([0] * 90 + [1] * 10)
    mon = cm.CollapseMonitor("html", reference=cm.Reference(labels=y), sinks=[], home=tmp_path / "home")
    lost = y.copy()
    lost[90:] = 0
    reports = [mon.check(cm.Observation(predictions=y)), mon.check(cm.Observation(predictions=lost))]
    verdict = {"flagged_at": 1, "stage_at_flag": "early_collapse", "aggregate": "accuracy", "aggregate_at": 1 + lead}
    page = write_report(
        tmp_path / "out",
        {"replace": (reports, [{"overall_accuracy": 0.95}, {"overall_accuracy": 0.9}])},
        title="t",
        keys=["accuracy", "rare_class_recall"],
        verdicts={"replace": {**verdict, "lead": lead}},
    ).read_text()
    assert f"at generation {1 + lead} {said}</div>" in page, page[:2000]
