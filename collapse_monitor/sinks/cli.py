"""``collapse-monitor report`` and ``collapse-monitor gate``: the generation history as MLflow
holds it, and a CI gate on the latest generation (optionally tagging a registered model version).

Both read MLflow only - no local state - so they work from any machine that reaches the
tracking server. Exit codes: ``report`` 0 = printed, 2 = no checks found (the message names
the monitors the store has) or no MLflow store; ``gate`` 0 = the latest generation is healthy, 1 = it is not (early or late collapse), 2 = no
checks found or no MLflow store. Errors talking to MLflow raise ``SinkError`` (the CLI turns it
into exit code 2). Neither creates a store: a local tracking URI (``sqlite:///...``, ``file:...``,
MLflow's default ``sqlite:///mlflow.db`` in the working directory) whose file does not exist is
reported as such, not created empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, SinkError
from ..render import error_console, escape, fmt_share
from ..types import Report, Stage
from .mlflow import MLflowSink, local_store_path, ready_versions, safe_uri, shown_uri

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


#: the MLflowSink's default experiment name (``{monitor}`` is the monitor's name)
DEFAULT_EXPERIMENT = "collapse-monitor/{monitor}"


def history_keys(reports: list[Report], limit: int = 6) -> list[str]:
    """The key metrics present in ``reports`` (tail first, then diversity, then head)."""
    return [k for k in KEY_METRICS if any(k in r.metrics for r in reports)][:limit]


def sqlite_folder(sink: MLflowSink) -> str | None:
    """Why ``sink``'s sqlite tracking URI cannot be opened when it names a folder (SQLAlchemy
    retries opening it for minutes); None otherwise."""
    path = local_store_path(sink.tracking_uri)
    if path is None or not path.is_dir() or not sink.tracking_uri.startswith("sqlite:"):
        return None
    return (
        f"{safe_uri(sink.tracking_uri)} names a folder, not a sqlite file ({path}); "
        "pass --tracking-uri sqlite:///path/to/mlflow.db"
    )


def _missing_store(sink: MLflowSink) -> str | None:
    """Why there is nothing to read when ``sink``'s local store does not exist. ``report`` and
    ``gate`` only read: asking MLflow would create an empty store there (a ~1 MB sqlite file
    and "Creating initial MLflow database tables" for the default ``sqlite:///mlflow.db``)."""
    path = local_store_path(sink.tracking_uri)
    if path is None:
        return None
    folder = sqlite_folder(sink)
    if folder is not None:
        return folder
    if path.exists():
        return None
    return (
        f"no MLflow store at {safe_uri(sink.tracking_uri)} ({path} does not exist); "
        "pass --tracking-uri or set MLFLOW_TRACKING_URI"
    )


def _no_checks(sink: MLflowSink, monitor: str) -> str:
    """The message for a monitor the store has no check of, naming the ones it has."""
    msg = f"no checks of monitor {monitor!r} in MLflow at {shown_uri(sink.tracking_uri)}"
    looked = sink.experiment_name(monitor)
    try:
        runs = sink.where_runs_are(monitor)
    except SinkError:
        runs = {}
    # where its runs are, by the runs' own tags (the experiments' tag names only the monitor
    # that made a shared experiment: the second monitor of one was told "monitors there: first")
    finished = sorted(name for name, statuses in runs.items() if "FINISHED" in statuses and name != looked)
    if finished:
        # logged with MLflowSink(experiment=...): the command looked in the default experiment
        return (
            f"no checks of monitor {monitor!r} in experiment {looked!r} at {shown_uri(sink.tracking_uri)}; its "
            f"checks are in experiment {finished[0]!r}: give --experiment {finished[0]!r} (the MLflowSink's "
            "experiment=)"
        )
    if runs:
        # a FAILED or still running run is no check (a monitor's only run failed: it was told
        # its checks were in another experiment)
        where = ", ".join(f"{name!r} ({', '.join(sorted(st))})" for name, st in sorted(runs.items()))
        return f"{msg}: its runs there ({where}) are not finished checks (failed, or still logging)"
    try:
        known = sink.known_monitors()
    except SinkError:
        return msg
    if not known:
        return msg + " (it holds no collapse-monitor checks)"
    return msg + "; monitors there: " + ", ".join(known)


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


#: width of a shortened run id in the history table (a prefix, like a short git hash)
RUN_ID_CHARS = 8


def report_command(
    monitor: str,
    tracking_uri: str | None = None,
    out: str | Path | None = None,
    console: Any = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> int:
    """Print the generation history of ``monitor`` from MLflow (rich table) and write its PNG
    (``out``: a ``.png`` path or a directory; default ``./<monitor>-history.png``).

    The table fits the terminal (80 columns included): metric headers wrap at word breaks, the
    stage and the values are never cut, run ids are shortened to their first 8 characters when
    the full ids do not fit, and metric columns that still do not fit are left out of the table
    (named below it; the PNG has them all). On a terminal too narrow for one metric column, the
    run id goes next, then the synthetic share, then the last metric."""
    from rich.table import Table

    from ..render import column_width, stage_text

    con = _console(console)
    if out is not None and Path(out).suffix and Path(out).suffix.lower() != ".png" and not Path(out).is_dir():
        # "hist.svg" used to become a folder holding <monitor>-history.png
        error_console(console).print(escape(f"report: --out {out}: the chart is a PNG; give a .png path or a folder"))
        return 2
    sink = MLflowSink(tracking_uri, experiment=experiment)
    missing = _missing_store(sink)
    if missing is not None:
        error_console(console).print(escape(f"report: {missing}"))
        return 2
    got = sink.load_history(monitor)
    if not got or not got[0]:
        error_console(console).print(escape(f"report: {_no_checks(sink, monitor)}"))
        return 2
    reports, baseline = got
    keys = history_keys(reports)
    stages = [stage_text(r) for r in reports]
    values: dict[str, list[str]] = {}
    for k in keys:
        col = []
        for r in reports:
            mv = r.metrics.get(k)
            sig = any(f.key == k and f.significant for f in r.findings)
            txt = "-" if mv is None else f"{mv.value:.3f}"
            col.append(f"[red]{txt}↓[/]" if sig and mv is not None else txt)
        values[k] = col
    synthetic = []
    for r in reports:
        sf = r.metrics.get("synthetic_fraction")
        sfv = sf.value if sf is not None else (r.provenance.synthetic_fraction if r.provenance else None)
        synthetic.append(fmt_share(sfv))
    run_ids = [r.run_id or "-" for r in reports]

    heads = {k: k.replace("_", " ") for k in keys}
    wrapped = {k: column_width(heads[k], values[k]) for k in keys}  # headers on one line per word
    unwrapped = {k: max(len(heads[k]), wrapped[k]) for k in keys}
    fixed = [
        column_width("gen", [str(r.generation) for r in reports]),
        column_width("stage", stages, wrap=True),
        column_width("synthetic", synthetic),
    ]

    def tablecolumn_width(widths: dict[str, int], n_keys: int, id_width: int, extras: tuple[bool, bool]) -> int:
        cols = [*fixed[:2], *(widths[k] for k in keys[:n_keys])]
        cols += [fixed[2]] if extras[0] else []
        cols += [id_width] if extras[1] else []
        return sum(cols) + 3 * len(cols) + 1  # each column: its width + 2 padding + 1 rule

    short = max(len("run id"), min(RUN_ID_CHARS, max(len(i) for i in run_ids)))
    full = max(len("run id"), *(len(i) for i in run_ids))
    # what gives way on a narrow terminal, in order: metric columns down to one, the run id, the
    # synthetic share, the last metric; gen and stage are never cut (they were, to "late_colla…",
    # below about 60 columns)
    shown, extras = len(keys), (True, True)
    while tablecolumn_width(wrapped, shown, short, extras) > con.width:
        if shown > 1:
            shown -= 1
        elif extras[1]:
            extras = (True, False)
        elif extras[0]:
            extras = (False, False)
        elif shown:
            shown = 0
        else:
            break
    # room to spare (all metrics shown): full run ids first, then headers on one line
    widths, id_width = wrapped, short
    if shown == len(keys) and extras[1]:
        for w, i in ((unwrapped, full), (wrapped, full)):
            if tablecolumn_width(w, shown, i, extras) <= con.width:
                widths, id_width = w, i
                break

    table = Table(title=escape(f"{monitor}: {len(reports)} generation(s) in MLflow ({shown_uri(sink.tracking_uri)})"))
    table.add_column("gen", justify="right", no_wrap=True)
    table.add_column("stage", width=fixed[1])  # wraps only at the space before "(drift)"
    for k in keys[:shown]:
        table.add_column(escape(heads[k]), justify="right", width=widths[k])  # the header wraps at spaces
    if extras[0]:
        table.add_column("synthetic", justify="right", no_wrap=True)
    if extras[1]:
        table.add_column("run id", width=id_width, no_wrap=True)
    for i, r in enumerate(reports):
        row = [str(r.generation), stages[i], *(values[k][i] for k in keys[:shown])]
        row += [synthetic[i]] if extras[0] else []
        row += [run_ids[i][:id_width]] if extras[1] else []
        table.add_row(*row)
    con.print(table)
    hidden = [*keys[shown:], *(["synthetic"] if not extras[0] else []), *(["run id"] if not extras[1] else [])]
    if hidden:
        con.print(escape(f"not shown at {con.width} columns: {', '.join(hidden)} (metrics are in the PNG)"))
    if baseline is not None:
        # the fingerprint is read back from the store: shown literally (markup in it raised MarkupError)
        con.print(escape(f"baseline: generation {baseline.generation} (reference {baseline.fingerprint})"))
    if keys:
        from ..report_html import plot_history

        path = _png_path(monitor, out)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            plot_history({monitor: reports}, keys, path, title=f"{monitor}: generation history")
        except OSError as exc:  # named with its option and what to do, not a bare errno line
            where = f"--out {out}" if out is not None else str(path)
            error_console(console).print(
                escape(
                    f"collapse-monitor: error: report {where}: cannot write the chart ({exc.strerror or exc}); "
                    "give --out a writable path"
                )
            )
            return 2
        con.print(escape(f"wrote {path}"))
    return 0


def _latest_version(client: Any, model_name: str) -> str:
    """The newest version whose registration finished (a pending or failed one is not tagged)."""
    versions = ready_versions(client, model_name)
    if not versions:
        raise ConfigError("gate.model_name", f"no ready versions of registered model {model_name!r}")
    return str(max(int(v.version) for v in versions))


def gate_command(
    monitor: str,
    tracking_uri: str | None = None,
    model_name: str | None = None,
    version: str | int | None = None,
    console: Any = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> int:
    """Exit code 0 when the latest generation of ``monitor`` is healthy, 1 when it is not, 2 when
    MLflow holds no check of it. With ``model_name`` (and ``version``; default: the newest
    version) the model version gets tags ``collapse.stage``, ``collapse.generation``,
    ``collapse.monitor`` and ``collapse.run_id`` in the MLflow Model Registry. A local store that
    does not exist is exit code 2 too, and is not created."""
    con = _console(console)
    sink = MLflowSink(tracking_uri, experiment=experiment)
    missing = _missing_store(sink)
    if missing is not None:
        error_console(console).print(escape(f"gate: {missing}"))
        return 2
    latest = sink.latest(monitor)
    if latest is None:
        error_console(console).print(escape(f"gate: {_no_checks(sink, monitor)}"))
        return 2
    healthy = latest.stage is Stage.HEALTHY
    if model_name:
        with sink.bounded():
            failure: SinkError | None = None
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
                which = "the newest version" if version is None else f"version {version}"
                failure = SinkError(sink.scrub(f"tagging model {model_name!r} {which}: {type(exc).__name__}: {exc}"))
            if failure is not None:  # raised outside the except block: MLflow's error (its
                raise failure  # message may hold the tracking URI's password) is not its __context__
        con.print(escape(f"tagged model {model_name!r} version {ver}: collapse.stage={latest.stage.value}"))
    verdict = "[green]PASS[/]" if healthy else "[bold red]FAIL[/]"
    what = ""
    if latest.declines:
        what = " - " + "; ".join(
            f"{f.key}{' (trend)' if f.kind == 'trend' else ''} {f.relative_change:+.0%} ({f.value:.3g} vs {f.baseline:.3g})"
            for f in latest.declines[:3]
        )
    drift = " (drift: a global shift, not collapse)" if latest.drift else ""
    said = escape(f"{monitor} generation {latest.generation} is {latest.stage.value}{drift}{what}")
    con.print(f"gate {verdict}: {said}", soft_wrap=True)  # one line for a pipe to read, whatever the width
    return 0 if healthy else 1
