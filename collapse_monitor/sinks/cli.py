"""``collapse-monitor report`` and ``collapse-monitor gate``: the generation history as MLflow
holds it, and a CI gate on the latest generation (optionally tagging a registered model version).

Both read MLflow only - no local state - so they work from any machine that reaches the
tracking server. Exit codes: ``report`` 0 = printed, 1 = no checks found; ``gate`` 0 = the latest
generation is healthy, 1 = it is not (early or late collapse), 2 = no checks found. Errors
talking to MLflow raise ``SinkError`` (the CLI turns it into exit code 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, SinkError
from ..types import Report, Stage
from .mlflow import MLflowSink, safe_uri

__all__ = ["KEY_METRICS", "gate_command", "history_keys", "report_command"]

#: preferred columns of the history table / panels of the PNG, first present wins
KEY_METRICS = (
    "tail_coverage",
    "rare_mode_coverage",
    "rare_class_recall",
    "worst_class_recall",
    "vendi_ratio",
    "variance_ratio",
    "rare_ngram_recall",
    "distinct_2",
    "accuracy",
    "precision",
    "head_coverage",
)


def history_keys(reports: list[Report], limit: int = 6) -> list[str]:
    """The key metrics present in ``reports`` (tail first, then diversity, then head)."""
    return [k for k in KEY_METRICS if any(k in r.metrics for r in reports)][:limit]


def _console(console: Any) -> Any:
    if console is not None:
        return console
    from rich.console import Console

    return Console()


def _png_path(monitor: str, out: str | Path | None) -> Path:
    name = f"{monitor}-history.png"
    if out is None:
        return Path(name)
    p = Path(out)
    if p.suffix.lower() == ".png":
        return p
    return p / name


def report_command(
    monitor: str, tracking_uri: str | None = None, out: str | Path | None = None, console: Any = None
) -> int:
    """Print the generation history of ``monitor`` from MLflow (rich table) and write its PNG
    (``out``: a ``.png`` path or a directory; default ``./<monitor>-history.png``)."""
    from rich.table import Table

    from ..render import stage_text

    con = _console(console)
    sink = MLflowSink(tracking_uri)
    got = sink.load_history(monitor)
    if not got or not got[0]:
        con.print(f"no checks of monitor {monitor!r} in MLflow at {safe_uri(sink.tracking_uri)}")
        return 1
    reports, baseline = got
    keys = history_keys(reports)
    table = Table(title=f"{monitor}: {len(reports)} generation(s) in MLflow ({safe_uri(sink.tracking_uri)})")
    table.add_column("gen", justify="right")
    table.add_column("stage")
    for k in keys:
        table.add_column(k, justify="right")
    table.add_column("synthetic", justify="right")
    table.add_column("run id", overflow="fold")
    for r in reports:
        row = [str(r.generation), stage_text(r)]
        for k in keys:
            mv = r.metrics.get(k)
            sig = any(f.key == k and f.significant for f in r.findings)
            txt = "-" if mv is None else f"{mv.value:.3f}"
            row.append(f"[red]{txt}↓[/]" if sig and mv is not None else txt)
        sf = r.metrics.get("synthetic_fraction")
        sfv = sf.value if sf is not None else (r.provenance.synthetic_fraction if r.provenance else None)
        row.append("-" if sfv is None else f"{sfv:.2f}")
        row.append(r.run_id or "-")
        table.add_row(*row)
    con.print(table)
    if baseline is not None:
        con.print(f"baseline: generation {baseline.generation} (reference {baseline.fingerprint})")
    if keys:
        from ..report_html import plot_history

        path = _png_path(monitor, out)
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_history({monitor: reports}, keys, path, title=f"{monitor}: generation history")
        con.print(f"wrote {path}")
    return 0


def _latest_version(client: Any, model_name: str) -> str:
    versions = client.search_model_versions(f"name='{model_name}'")
    if not versions:
        raise ConfigError("gate.model_name", f"no versions of registered model {model_name!r}")
    return str(max(int(v.version) for v in versions))


def gate_command(
    monitor: str,
    tracking_uri: str | None = None,
    model_name: str | None = None,
    version: str | int | None = None,
    console: Any = None,
) -> int:
    """Exit code 0 when the latest generation of ``monitor`` is healthy, 1 when it is not, 2 when
    MLflow holds no check of it. With ``model_name`` (and ``version``; default: the newest
    version) the model version gets tags ``collapse.stage``, ``collapse.generation``,
    ``collapse.monitor`` and ``collapse.run_id`` in the MLflow Model Registry."""
    con = _console(console)
    sink = MLflowSink(tracking_uri)
    latest = sink.latest(monitor)
    if latest is None:
        con.print(f"gate: no checks of monitor {monitor!r} in MLflow at {safe_uri(sink.tracking_uri)}")
        return 2
    healthy = latest.stage is Stage.HEALTHY
    if model_name:
        with sink.bounded():
            try:
                client = sink.client()
                ver = str(version) if version is not None else _latest_version(client, model_name)
                for key, value in (
                    ("collapse.stage", latest.stage.value),
                    ("collapse.generation", str(latest.generation)),
                    ("collapse.monitor", monitor),
                    ("collapse.run_id", latest.run_id or ""),
                ):
                    client.set_model_version_tag(model_name, ver, key, value)
            except ConfigError:
                raise
            except Exception as exc:
                raise SinkError(
                    sink.scrub(f"tagging model {model_name!r} version {version}: {type(exc).__name__}: {exc}")
                ) from None
        con.print(f"tagged model {model_name!r} version {ver}: collapse.stage={latest.stage.value}")
    verdict = "[green]PASS[/]" if healthy else "[bold red]FAIL[/]"
    what = ""
    if latest.declines:
        what = " - " + "; ".join(
            f"{f.key} {f.relative_change:+.0%} ({f.value:.3g} vs {f.baseline:.3g})" for f in latest.declines[:3]
        )
    drift = " (drift: a global shift, not collapse)" if latest.drift else ""
    con.print(f"gate {verdict}: {monitor} generation {latest.generation} is {latest.stage.value}{drift}{what}")
    return 0 if healthy else 1
