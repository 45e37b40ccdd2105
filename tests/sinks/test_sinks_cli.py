"""`collapse-monitor report` / `gate` pieces against a real MLflow server."""

from __future__ import annotations

from rich.console import Console

from collapse_monitor.sinks.base import EmitContext
from collapse_monitor.sinks.cli import gate_command, history_keys, report_command
from collapse_monitor.sinks.mlflow import MLflowSink
from collapse_monitor.types import Stage


def _console() -> Console:
    return Console(record=True, width=200, color_system=None)


def test_history_keys_prefer_tail_metrics(kit) -> None:
    assert history_keys([kit.make_report("k", 0)]) == ["tail_coverage", "accuracy"]


def test_report_prints_history_and_writes_png(mlflow_server, kit, tmp_path) -> None:
    name = kit.unique("clirep")
    sink = MLflowSink(mlflow_server.url, evidently=False)
    runs = [
        sink.emit(
            kit.make_report(name, g, tail=0.8 - 0.1 * g, stage=Stage.EARLY_COLLAPSE if g == 2 else Stage.HEALTHY), None
        )["run_id"]
        for g in range(3)
    ]
    con = _console()
    assert report_command(name, tracking_uri=mlflow_server.url, out=tmp_path / "out", console=con) == 0
    text = con.export_text()
    for run_id in runs:
        assert run_id in text
    assert "early_collapse" in text and "tail coverage" in text and "0.600" in text  # headers wrap at spaces
    png = tmp_path / "out" / f"{name}-history.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    # an unwritable --out: one line naming the option and what to do (a bare errno line before)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    con = _console()
    assert report_command(name, tracking_uri=mlflow_server.url, out=blocker / "x.png", console=con) == 2
    text = " ".join(con.export_text().split())
    assert f"error: report --out {blocker / 'x.png'}: cannot write the chart" in text and "writable path" in text
    con = _console()
    assert report_command(kit.unique("nothing"), tracking_uri=mlflow_server.url, console=con) == 2  # as gate
    text = con.export_text().replace("\n", "")
    assert "no checks" in text and name in text  # names the monitors the store does hold


def test_gate_exit_codes_and_model_version_tag(mlflow_server, kit) -> None:
    name = kit.unique("cligate")
    sink = MLflowSink(mlflow_server.url, evidently=False)
    assert gate_command(name, tracking_uri=mlflow_server.url, console=_console()) == 2  # nothing logged yet
    r0 = kit.make_report(name, 0)
    sink.emit(r0, EmitContext())
    assert gate_command(name, tracking_uri=mlflow_server.url, console=_console()) == 0
    r1 = kit.make_report(name, 1, stage=Stage.EARLY_COLLAPSE, tail=0.5, declined=True, created_at=r0.created_at + 5)
    out1 = sink.emit(r1, EmitContext())

    client = mlflow_server.client()
    model = f"model-{name}"
    client.create_registered_model(model)
    run = client.get_run(out1["run_id"])
    version = client.create_model_version(model, source=f"{run.info.artifact_uri}/collapse", run_id=out1["run_id"])
    con = _console()
    assert (
        gate_command(name, tracking_uri=mlflow_server.url, model_name=model, version=version.version, console=con) == 1
    )
    text = con.export_text()
    assert "FAIL" in text and "tail_coverage" in text
    tags = client.get_model_version(model, version.version).tags
    assert tags["collapse.stage"] == "early_collapse" and tags["collapse.generation"] == "1"
    assert tags["collapse.monitor"] == name and tags["collapse.run_id"] == out1["run_id"]

    sink.emit(kit.make_report(name, 2, created_at=r0.created_at + 10), EmitContext())
    assert gate_command(name, tracking_uri=mlflow_server.url, model_name=model, console=_console()) == 0
    assert client.get_model_version(model, version.version).tags["collapse.stage"] == "healthy"  # newest version


def test_cli_main_wires_report_and_gate(mlflow_server, kit, tmp_path) -> None:
    from collapse_monitor import cli

    name = kit.unique("climain")
    sink = MLflowSink(mlflow_server.url, evidently=False)
    sink.emit(kit.make_report(name, 0), EmitContext())
    assert cli.main(["gate", "--monitor", name, "--tracking-uri", mlflow_server.url]) == 0
    png = tmp_path / "h.png"
    assert cli.main(["report", "--monitor", name, "--tracking-uri", mlflow_server.url, "--out", str(png)]) == 0
    assert png.exists()
    sink.emit(kit.make_report(name, 1, stage=Stage.LATE_COLLAPSE), EmitContext())
    assert cli.main(["gate", "--monitor", name, "--tracking-uri", mlflow_server.url]) == 1


def _wide_report(kit, name, g, **kw):
    """A report with every key metric of the history table (seven of them)."""
    import dataclasses

    from collapse_monitor.types import MetricValue

    r = kit.make_report(name, g, **kw)
    extra = {
        k: MetricValue(v, v - 0.01, v + 0.01)
        for k, v in {
            "rare_mode_coverage": 0.7,
            "rare_class_recall": 0.6,
            "vendi_ratio": 0.95,
            "variance_ratio": 1.05,
            "precision": 0.9,
            "head_coverage": 0.96,
        }.items()
    }
    return dataclasses.replace(r, metrics={**r.metrics, **extra})


def test_report_table_is_readable_at_80_columns(mlflow_server, kit, tmp_path, monkeypatch) -> None:
    import dataclasses

    name = kit.unique("cli80")
    sink = MLflowSink(mlflow_server.url, evidently=False, history_plot="off")
    t0 = 1_700_000_000.0
    runs = []
    for g, stage in enumerate([Stage.HEALTHY, Stage.EARLY_COLLAPSE, Stage.LATE_COLLAPSE]):
        r = _wide_report(kit, name, g, stage=stage, tail=0.8 - 0.1 * g, declined=g > 0, created_at=t0 + g)
        runs.append(sink.emit(dataclasses.replace(r, drift=g == 1), None)["run_id"])
    monkeypatch.setenv("COLUMNS", "80")
    con = Console(record=True, color_system=None)  # width from COLUMNS, as in a terminal
    assert con.width == 80
    assert report_command(name, tracking_uri=mlflow_server.url, out=tmp_path, console=con) == 0
    text = con.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text, text  # nothing cut: no "heal…", no "0.00…"
    table = "\n".join(lines[: next(i for i, line in enumerate(lines) if line.startswith("└")) + 1])
    for word in ("healthy", "early_collapse", "(drift)", "late_collapse", "0.800", "0.700↓", "0.600↓", "0.50"):
        assert word in table, (word, text)
    for run_id in runs:
        assert run_id[:8] in table and run_id not in table  # shortened run ids
    assert "tail" in table and "coverage" in table  # wrapped header "tail / coverage"
    assert "not shown at 80 columns:" in text and "accuracy" in text  # named, and in the PNG
    assert (tmp_path / f"{name}-history.png").exists()


def test_report_table_never_cuts_stage_or_values_on_narrow_terminals(mlflow_server, kit, tmp_path, monkeypatch) -> None:
    """Below about 60 columns the table used to cut the stage and values ("late_colla…"): it
    dropped metric columns down to one but kept the run id and synthetic columns."""
    import dataclasses

    name = kit.unique("clinarrow")
    sink = MLflowSink(mlflow_server.url, evidently=False, history_plot="off")
    t0 = 1_700_000_000.0
    for g, stage in enumerate([Stage.HEALTHY, Stage.EARLY_COLLAPSE, Stage.LATE_COLLAPSE]):
        r = _wide_report(kit, name, g, stage=stage, tail=0.8 - 0.1 * g, declined=g > 0, created_at=t0 + g)
        sink.emit(dataclasses.replace(r, drift=g == 1), None)
    hidden_at = {}
    for width in (58, 50, 44, 36):
        monkeypatch.setenv("COLUMNS", str(width))
        con = Console(record=True, color_system=None)
        assert report_command(name, tracking_uri=mlflow_server.url, out=tmp_path, console=con) == 0
        text = con.export_text()
        lines = text.splitlines()
        end = next(i for i, line in enumerate(lines) if line.startswith("└"))
        table = "\n".join(lines[: end + 1])
        assert max(len(line) for line in lines[: end + 1]) <= width, text
        assert "…" not in table, text
        for word in ("healthy", "early_collapse", "late_collapse"):
            assert word in table, (width, word, text)
        below = " ".join(lines[end + 1 :])  # the note wraps at this width
        hidden_at[width] = below[below.index("not shown at") : below.index("(")]
    assert "run id" not in hidden_at[58] and "synthetic" not in hidden_at[58]  # one metric first
    assert "run id" in hidden_at[44] and "synthetic" in hidden_at[36], hidden_at


def test_report_and_gate_never_create_a_store(in_tmp_dir, monkeypatch, capsys) -> None:
    from collapse_monitor import cli

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    for command in ("gate", "report"):
        assert cli.main([command, "--monitor", "m"]) == 2
        out = capsys.readouterr().err  # one unwrapped line on stderr
        assert f"no MLflow store at sqlite:///{in_tmp_dir / 'mlflow.db'}" in out, out
        assert "pass --tracking-uri or set MLFLOW_TRACKING_URI" in out
        assert "Creating initial MLflow database tables" not in out
    missing = in_tmp_dir / "elsewhere" / "mlruns"
    assert cli.main(["gate", "--monitor", "m", "--tracking-uri", missing.as_uri()]) == 2
    assert f"no MLflow store at file://{missing}" in capsys.readouterr().err
    assert list(in_tmp_dir.iterdir()) == []  # no mlflow.db, no mlruns/


def test_gate_tagging_error_chains_no_mlflow_exception(mlflow_server, kit) -> None:
    import pytest

    from collapse_monitor.errors import SinkError

    name = kit.unique("clichain")
    MLflowSink(mlflow_server.url, evidently=False, history_plot="off").emit(kit.make_report(name, 0), None)
    host = mlflow_server.url.split("://", 1)[1]
    uri = f"http://alice:pa55-clichain@{host}"
    with pytest.raises(SinkError) as info:  # version 7 of a model that does not exist
        gate_command(name, tracking_uri=uri, model_name=f"absent-{name}", version=7, console=_console())
    err = info.value
    assert "version 7" in str(err) and "pa55-clichain" not in str(err)
    assert err.__cause__ is None and err.__context__ is None


def test_gate_tags_a_model_whose_name_has_a_quote(mlflow_server, kit) -> None:
    """``o'brien`` broke MLflow's filter ("Invalid clause(s) in filter string")."""
    name = kit.unique("cliquote")
    sink = MLflowSink(mlflow_server.url, evidently=False, history_plot="off")
    out = sink.emit(kit.make_report(name, 0), EmitContext())
    client = mlflow_server.client()
    model = f"o'brien-{name}"
    client.create_registered_model(model)
    run = client.get_run(out["run_id"])
    version = client.create_model_version(model, source=f"{run.info.artifact_uri}/collapse", run_id=out["run_id"])
    assert gate_command(name, tracking_uri=mlflow_server.url, model_name=model, console=_console()) == 0
    assert client.get_model_version(model, version.version).tags["collapse.stage"] == "healthy"
