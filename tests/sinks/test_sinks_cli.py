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
    assert "early_collapse" in text and "tail_coverage" in text and "0.600" in text
    png = tmp_path / "out" / f"{name}-history.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    con = _console()
    assert report_command(kit.unique("nothing"), tracking_uri=mlflow_server.url, console=con) == 1
    assert "no checks" in con.export_text()


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
