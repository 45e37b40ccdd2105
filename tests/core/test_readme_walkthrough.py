"""What a new user meets walking through the README: the demo's arguments, its closing lines
and the CLI options the README names. Real parts only: the console script, MLflow's sqlite
store, a closed loopback port for an unreachable Pushgateway."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from collapse_monitor.alerting.cli import DEFAULT_CONFIGS
from collapse_monitor.cli import _build, main
from collapse_monitor.demo import _verdict_line, verdict
from collapse_monitor.types import Report, Stage

README = Path(__file__).resolve().parents[2] / "README.md"


def _cli(cwd: Path, env: dict[str, str], *args: str, timeout: int = 400) -> subprocess.CompletedProcess[str]:
    """``collapse-monitor ARGS`` as a user runs it (the console script, else ``-m``)."""
    cli = Path(sys.executable).parent / "collapse-monitor"
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "collapse_monitor.cli"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ, **env}, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "nope"], "scenario: unknown scenario 'nope'; expected one of"),
        (["--loop", "bogus"], "loop: scenario 'digits' has no loop 'bogus'; expected one of"),
        (["--generations", "1"], "generations: expected an int from 2"),
        (["--generations", "1001"], "to 1000, got 1001"),
        (["--seed", "-1"], "seed"),
    ],
)
def test_demo_refuses_bad_arguments_before_printing_or_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """It used to print its header and an empty progress bar first (the error came after
    them), and ``--generations 1`` printed its complaint on stdout without the usual prefix."""
    out = tmp_path / "out"
    rc = main(["demo", "--no-mlflow", "--out", str(out), *args])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    assert captured.err.startswith("collapse-monitor: error: ") and message in captured.err, captured.err
    assert not out.exists()


def test_demo_out_that_is_a_file_is_a_clear_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` naming an existing file raised FileExistsError out of ``main``."""
    target = tmp_path / "afile"
    target.write_text("keep me")
    rc = main(["demo", "--no-mlflow", "--generations", "2", "--out", str(target)])
    captured = capsys.readouterr()
    assert rc == 2
    assert "out: " in captured.err and "is not a folder" in captured.err, captured.err
    assert captured.out == ""
    assert target.read_text() == "keep me"


def _reports(n: int) -> list[Report]:
    return [Report(monitor="m", generation=g, stage=Stage.HEALTHY, metrics={}) for g in range(n)]


def test_verdict_line_names_the_aggregate_alert_the_scenario_has() -> None:
    """gaussian, mixture and zipf_text have no classifier: their aggregate alert is the Frechet
    distance doubling, yet the verdict line said "overall accuracy -2 pts never within the run"."""
    fd = [{"frechet_distance": 0.3}, {"frechet_distance": 0.5}, {"frechet_distance": 0.7}]
    v = verdict(_reports(3), fd)
    assert v["aggregate"] == "frechet_distance" and v["aggregate_at"] == 2
    line = _verdict_line("replace", v, 3)
    assert "accuracy" not in line
    assert "Frechet distance x2 at generation 2" in line

    acc = [{"accuracy": 0.95}, {"accuracy": 0.95}]
    line = _verdict_line("accumulate", verdict(_reports(2), acc), 2)
    assert "stayed healthy for 2 generations; overall accuracy -2 pts never within the run" in line

    # no aggregate number at all: the line claims no aggregate alert
    line = _verdict_line("replace", verdict(_reports(2), [{}, {}]), 2)
    assert line.endswith("stayed healthy for 2 generations")

    # flagged after the aggregate alert: said so (it read "(no lead)", as for the same generation)
    late = _reports(4)
    late[3] = Report(monitor="m", generation=3, stage=Stage.EARLY_COLLAPSE, metrics={})
    acc = [{"accuracy": 0.95}, {"accuracy": 0.92}, {"accuracy": 0.90}, {"accuracy": 0.88}]
    v = verdict(late, acc)
    assert (v["flagged_at"], v["aggregate_at"], v["lead"]) == (3, 1, -2)
    assert _verdict_line("replace", v, 4).endswith("2 generation(s) after it[/]")


def test_html_report_names_the_aggregate_alert(tmp_path: Path) -> None:
    """The report's verdicts said only "aggregate metric alert at generation N"."""
    from collapse_monitor.report_html import write_report
    from collapse_monitor.types import MetricValue

    reports = [
        Report(monitor="m", generation=g, stage=Stage.HEALTHY, metrics={"tail_coverage": MetricValue(0.9, 0.8, 1.0)})
        for g in range(2)
    ]
    aggs = [{"accuracy": 0.95}, {"accuracy": 0.92}]
    html = write_report(
        tmp_path,
        {"replace": (reports, aggs)},
        title="t",
        keys=["tail_coverage"],
        verdicts={"replace": verdict(reports, aggs)},
    ).read_text(encoding="utf-8")
    assert "replace: healthy throughout; overall accuracy -2 pts at generation 1" in html


@pytest.mark.slow
def test_demo_names_its_monitors_so_report_and_gate_run_on_them(tmp_path: Path) -> None:
    """The monitors' names carry a timestamp and were printed nowhere, so the README's next
    steps (``report`` / ``gate`` on a monitor) needed a look into MLflow first; a Pushgateway
    that refused every push was only in the warnings, while MLflow failures got a summary line."""
    with socket.socket() as s:  # a closed loopback port: every push is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "mlflow.db"
    env = {"COLUMNS": "80", "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    args = ["--scenario", "gaussian", "--loop", "replace", "--generations", "2"]
    result = _cli(
        tmp_path, env, "demo", *args, "--pushgateway", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "o")
    )
    text = result.stdout
    assert result.returncode == 1, text[-3000:] + result.stderr[-3000:]  # the pushes failed: exit 1
    assert "Pushgateway: 2 of 2 checks could not be pushed" in text
    assert "Frechet distance x2" in text and "accuracy" not in text.split("replace: ", 1)[1].splitlines()[0]
    names = re.findall(r"^Monitors: (demo-gaussian-replace-\d{8}-\d{6})\.", text, flags=re.M)
    assert len(names) == 1, text[-2000:]
    commands = re.findall(r"^  (collapse-monitor (?:report|gate) .*)$", text, flags=re.M)
    assert [c.split()[1] for c in commands] == ["report", "gate"], commands
    for command in commands:
        assert f"--monitor {names[0]} " in command
        ran = _cli(tmp_path, {"COLUMNS": "80"}, *command.split()[1:], timeout=120)
        assert ran.returncode in (0, 1), ran.stdout + ran.stderr  # 2 would be "no checks of it"
        assert names[0] in ran.stdout


def _long_options(parser) -> set[str]:  # type: ignore[no-untyped-def]
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - {"--help", "--verbose"}


def test_readme_names_every_option_of_every_subcommand() -> None:
    """The README's CLI list named `check --config F --embeddings X.npy` and `serve --config F`
    only: --predictions, --texts, --json, --port, --host, --tracking-uri ... were nowhere."""
    readme = README.read_text(encoding="utf-8")
    cli_bullet = readme[readme.index("- **CLI**") : readme.index("- **Examples**")]
    demo_options = readme[readme.index("Options: `collapse-monitor demo") :].split("\n\n", 1)[0]
    subparsers = next(a for a in _build()._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = []
    for name, sub in subparsers.choices.items():
        text = demo_options if name == "demo" else cli_bullet
        if name != "demo" and f"`{name} " not in text and f"`collapse-monitor {name} " not in text:
            missing.append(name)
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        parsers = [sub, *(p for a in nested for p in a.choices.values())]
        missing += [f"{name} {o}" for p in parsers for o in sorted(_long_options(p)) if o not in text]
    assert not missing, missing


def test_alerts_test_help_names_the_configs_it_looks_for() -> None:
    """The help said "(default: collapse.yaml)"; it reads $COLLAPSE_MONITOR_CONFIG first and
    then any of four file names."""
    alerts = next(a for a in _build()._actions if a.__class__.__name__ == "_SubParsersAction").choices["alerts"]
    test = next(a for a in alerts._actions if a.__class__.__name__ == "_SubParsersAction").choices["test"]
    help_text = next(a.help for a in test._actions if "--config" in a.option_strings)
    assert "COLLAPSE_MONITOR_CONFIG" in help_text
    assert all(name in help_text for name in DEFAULT_CONFIGS), help_text
