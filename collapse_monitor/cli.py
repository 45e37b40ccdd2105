"""``collapse-monitor`` command line: demo | check | report | gate | serve | dashboards | alerts."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import CollapseMonitorError

__all__ = ["main"]


_TRACKING_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"
_EXPERIMENT_DEFAULT = "collapse-monitor/{monitor}"
_EXPERIMENT_HELP = "the MLflowSink's experiment= ({monitor} is the monitor's name; default: %(default)s)"


def _common() -> argparse.ArgumentParser:
    """Options every subcommand accepts too (``collapse-monitor check -v ...``)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at INFO level")
    return p


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo", parents=[_common()], help="run a recursive-training chain and show when collapse is flagged"
    )
    p.add_argument("--scenario", default="digits", help="digits | selftrain | mixture | gaussian | zipf_text")
    p.add_argument(
        "--loop",
        action="append",
        help="replace | accumulate | fresh | stable (alias real; selftrain also: sampled, and true_labels for its "
        "stable loop, argmax for its replace loop); repeat the option to run several side by side (default: replace "
        "and accumulate)",
    )
    p.add_argument(
        "--generations",
        type=int,
        default=10,
        help="generations per loop, the human-data generation 0 included (default 10, 2 to 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the scenario (default 0)")
    p.add_argument(
        "--out",
        default="collapse-demo-out",
        help="output folder for the HTML report, PNG charts and monitor state (default collapse-demo-out)",
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLflow's default)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--pushgateway", default=None, help="also push every check to this Pushgateway URL")
    p.add_argument(
        "--replicates",
        type=int,
        default=0,
        help="also retrain generation 0 this many more times (0-5) and add them as replicate baselines "
        "(check_replicate): declines must then hold against each (default 0)",
    )


def _add_check(sub: Any) -> None:
    p = sub.add_parser(
        "check", parents=[_common()], help="check one generation from files against a configured monitor"
    )
    p.add_argument("--config", required=True, help="YAML config (see collapse_monitor.config)")
    p.add_argument("--embeddings", help=".npy/.npz/.csv of generated samples' embeddings")
    p.add_argument("--predictions", help=".npy/.json/.txt of the model's predictions on the probe set")
    p.add_argument("--texts", help=".txt/.jsonl/.json of generated texts")
    p.add_argument("--generation", type=int, default=None, help="generation number (default: the next one)")
    p.add_argument(
        "--synthetic-fraction", type=float, default=None, help="share of model-generated training data, 0..1"
    )
    p.add_argument("--parent-run-id", default=None, help="MLflow run id of the training run (provenance)")
    p.add_argument(
        "--source",
        action="append",
        default=None,
        help="URI or name of a data set in the training mix (provenance; repeatable; credentials are masked)",
    )
    p.add_argument("--digest", default=None, help="content hash of the training set (provenance)")
    p.add_argument(
        "--replicate",
        action="store_true",
        help="add these outputs as another retrain of the baseline generation (human data, another seed) "
        "instead of checking a generation: later declines must hold against it too",
    )
    p.add_argument(
        "--drop-replicates",
        nargs="*",
        action="extend",  # repeated: the numbers of every occurrence (a bare one adds none)
        type=int,
        default=None,
        metavar="N",
        help="remove replicates of the monitor's baseline (a failed retrain added by mistake) and exit: those "
        "numbered N (as --show-baseline numbers them), or all of them without a number",
    )
    p.add_argument(
        "--show-baseline",
        action="store_true",
        help="print the baseline generation and its replicates side by side, with the spread per metric, and exit",
    )
    p.add_argument(
        "--take-baseline",
        action="store_true",
        help="replace this machine's baseline with the newest one uploaded to MLflow (two machines on two "
        "baselines: run it where the baseline is not the right one) and exit",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collapse-monitor",
        description="Early warning for model collapse in recursive training.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_check(sub)

    p = sub.add_parser(
        "report", parents=[_common()], help="print a monitor's generation history from MLflow and write its PNG"
    )
    p.add_argument("--monitor", required=True, help="monitor name (as in CollapseMonitor(name, ...))")
    p.add_argument("--tracking-uri", default=None, help=_TRACKING_HELP)
    p.add_argument("--experiment", default=_EXPERIMENT_DEFAULT, help=_EXPERIMENT_HELP)
    p.add_argument("--out", default=None, help="PNG path (default: <monitor>-history.png)")

    p = sub.add_parser(
        "gate",
        parents=[_common()],
        help="CI/CD gate: exit 0 if the latest generation is healthy, 1 if not, 2 if there is no check or store",
    )
    p.add_argument("--monitor", required=True, help="monitor name (as in CollapseMonitor(name, ...))")
    p.add_argument("--tracking-uri", default=None, help=_TRACKING_HELP)
    p.add_argument("--experiment", default=_EXPERIMENT_DEFAULT, help=_EXPERIMENT_HELP)
    p.add_argument("--model-name", default=None, help="tag this registered model version with its collapse stage")
    p.add_argument("--version", default=None, help="registered model version to tag (default: the newest)")

    p = sub.add_parser(
        "serve", parents=[_common()], help="scheduled checks, outbox redelivery, dead-man's switch and /metrics"
    )
    p.add_argument("--config", required=True, help="YAML config with a serve: block (see collapse_monitor.service)")
    p.add_argument("--port", type=int, default=None, help="/metrics port (default 9108, or serve.port)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")

    p = sub.add_parser("dashboards", parents=[_common()], help="Grafana dashboards")
    dsub = p.add_subparsers(dest="dash_command", required=True, metavar="{export}")
    e = dsub.add_parser("export", parents=[_common()], help="write dashboards and provisioning files into DIR")
    e.add_argument("dir", help="output folder (created if missing)")
    e.add_argument("--force", action="store_true", help="overwrite files that differ (dashboards edited in place)")

    p = sub.add_parser(
        "integrations", parents=[_common()], help="Prometheus rules, Alertmanager routing and the on-call runbook"
    )
    isub = p.add_subparsers(dest="integrations_command", required=True, metavar="{export}")
    e = isub.add_parser(
        "export",
        parents=[_common()],
        help="write the Prometheus rules (+ promtool tests), prometheus.yml, alertmanager.yml and runbook.md into DIR",
    )
    e.add_argument("dir", help="output folder (created if missing)")
    e.add_argument("--force", action="store_true", help="overwrite files that differ (edited deployments)")

    p = sub.add_parser("metrics", parents=[_common()], help="a monitor's Prometheus series")
    msub = p.add_subparsers(dest="metrics_command", required=True, metavar="{delete}")
    d = msub.add_parser(
        "delete",
        parents=[_common()],
        help="remove a deleted or renamed monitor's series: its Pushgateway group (kept for ever, so its "
        "stale and collapse alerts fire for ever) and its textfile series",
    )
    d.add_argument("--monitor", required=True, help="monitor name (as in CollapseMonitor(name, ...))")
    d.add_argument("--pushgateway", default=None, help="Pushgateway URL (user:password@ for basic auth)")
    d.add_argument("--textfile", default=None, help="node_exporter textfile path, as given to PrometheusSink")
    d.add_argument(
        "--job", default="collapse_monitor", help="job label the sink pushed under (default collapse_monitor)"
    )
    d.add_argument(
        "--grouping-key",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="extra grouping-key label the sink pushed with (repeatable)",
    )

    p = sub.add_parser("alerts", parents=[_common()], help="alert channels")
    asub = p.add_subparsers(dest="alerts_command", required=True, metavar="{test}")
    t = asub.add_parser("test", parents=[_common()], help="send a test event to every configured channel")
    t.add_argument(
        "--config",
        default=None,
        help="YAML config whose alerts: to test (default: $COLLAPSE_MONITOR_CONFIG, else the first of collapse.yaml, "
        "collapse.yml, collapse_monitor.yaml, collapse_monitor.yml in the working directory)",
    )
    return parser


def _show_baseline(mon: Any, as_json: bool) -> int:
    """``check --show-baseline``: the baseline and its replicates (exit 2 before any check)."""
    from .monitor import _NO_LATE_BASELINE
    from .render import baseline_table, retrain_spread

    baseline = mon.baseline()
    if baseline is None:
        from .errors import ConfigError

        raise ConfigError("--show-baseline", f"{mon.name} has no baseline yet: check the baseline generation first")
    if as_json:
        import json

        def metrics(ms: Any) -> dict[str, Any]:
            return {k: v.to_dict() for k, v in sorted(ms.items()) if k not in _NO_LATE_BASELINE}

        spread: dict[str, Any] = {}
        for k, mv in sorted(baseline.metrics.items()):
            got = None if k in _NO_LATE_BASELINE else retrain_spread(k, mv, baseline.replicates)
            if got is not None:
                spread[k] = {"spread": got[0], "lucky_baseline": got[1]}
        out = {
            "monitor": mon.name,
            "generation": baseline.generation,
            "metrics": metrics(baseline.metrics),
            "replicates": [metrics(r.metrics) for r in baseline.replicates],
            "spread": spread,  # per metric measured by a replicate: max - min, and the table's mark
            "dropped": len(baseline.dropped),  # replicates dropped earlier: kept out, here and on other machines
        }
        print(json.dumps(out, indent=2))
    else:
        from rich.console import Console

        Console().print(baseline_table(mon.name, baseline, hidden=sorted(_NO_LATE_BASELINE)))
    return 0


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from .config import _load_array, _load_list, _refuse_url
    from .monitor import CollapseMonitor
    from .render import replicate_table, report_table
    from .types import Observation, Provenance, Stage

    options = ("embeddings", "predictions", "texts", "replicate", "parent_run_id", "source", "digest")
    given = [f"--{k.replace('_', '-')}" for k in options if getattr(args, k)]
    given += [f"--{k.replace('_', '-')}" for k in ("generation", "synthetic_fraction") if getattr(args, k) is not None]
    dropping = args.drop_replicates is not None
    alone = [
        f
        for f, on in (
            ("--drop-replicates", dropping),
            ("--show-baseline", args.show_baseline),
            ("--take-baseline", args.take_baseline),
        )
        if on
    ]
    if alone and (given or len(alone) > 1):
        from .errors import ConfigError

        got = ", ".join(given + alone[1:])
        raise ConfigError(alone[0], f"runs alone: no outputs and no other check option (got {got})")
    mon = CollapseMonitor.from_config(args.config)
    if dropping:
        if mon.baseline() is None:  # as --show-baseline says (it printed "0 dropped, 0 kept", exit 0)
            from .errors import ConfigError

            raise ConfigError(
                "--drop-replicates", f"{mon.name} has no baseline yet: check the baseline generation first"
            )
        from .errors import InputError

        try:
            n = mon.drop_replicates(args.drop_replicates or None)
        except InputError as exc:  # keyed by the Python parameter, which a shell user never typed
            if exc.field != "numbers":
                raise
            raise InputError("--drop-replicates", exc.message) from None
        baseline = mon.history.baseline(mon.name)
        kept = 0 if baseline is None else len(baseline.replicates)
        if args.json:
            import json

            print(json.dumps({"monitor": mon.name, "dropped": n, "kept": kept}, indent=2))
        else:
            line = f"{mon.name}: {n} replicate(s) of the baseline dropped, {kept} kept"
            if any(type(s).__name__ == "MLflowSink" for s in mon.sinks):
                line += (
                    "; MLflow gets the baseline without them with this machine's next check, and other machines "
                    "drop them from their copies at their next check after that"
                )
            print(line)
        return 0
    if args.show_baseline:
        return _show_baseline(mon, args.json)
    if args.take_baseline:
        taken = mon.take_baseline()
        if args.json:
            import json

            print(
                json.dumps({"monitor": mon.name, "generation": taken.generation, "replicates": len(taken.replicates)})
            )
        else:
            print(
                f"{mon.name}: baseline generation {taken.generation} with {len(taken.replicates)} replicate(s) taken "
                "from MLflow; later checks are judged against it"
            )
        return 0
    kw: dict[str, Any] = {}
    for key in ("embeddings", "predictions", "texts"):
        if getattr(args, key):
            _refuse_url(getattr(args, key), key)
    if args.embeddings:
        kw["embeddings"] = _load_array(Path(args.embeddings), "embeddings")
    if args.predictions:
        kw["predictions"] = _load_list(Path(args.predictions), "predictions", texts=False)
    if args.texts:
        kw["texts"] = _load_list(Path(args.texts), "texts", texts=True)
    prov = None
    if args.synthetic_fraction is not None or args.parent_run_id or args.source or args.digest:
        prov = Provenance(
            synthetic_fraction=args.synthetic_fraction,
            parent_run_id=args.parent_run_id,
            sources=tuple(args.source or ()),
            digest=args.digest,
        )
    obs = Observation(generation=args.generation, provenance=prov, **kw)
    if args.replicate:
        from . import monitor as _monitor_module

        # the library's warning on a collapsed replicate is said below, once, with this --config
        # (--json leaves it: its output carries only the stage)
        said_below = _SaidBelow() if not args.json else logging.Filter()
        _monitor_module.log.addFilter(said_below)
        try:
            metrics = mon.check_replicate(obs)
        finally:
            _monitor_module.log.removeFilter(said_below)
        index, added, reads = mon._last("replicate_slot")
        if args.json:
            import json

            out = {
                "replicate": index if index > 0 else None,  # None: the baseline's own outputs, or a dropped one
                "added": added,
                "dropped": index < 0,  # equal to a replicate dropped earlier: kept out
                "reads": reads,  # its stage against the baseline (None: not added, or not judgeable)
                "metrics": {k: v.to_dict() for k, v in metrics.items()},
            }
            print(json.dumps(out, indent=2))
        else:
            if index > 0:  # 0: the baseline's own outputs, -1: a dropped one; no replicate to show
                Console().print(replicate_table(mon.name, index, metrics))
            if index < 0:
                print(
                    f"{mon.name}: these outputs equal a replicate dropped from the baseline (here or on another "
                    "machine): not added again"
                )
            elif not added and index == 0:
                print(
                    f"{mon.name}: these outputs equal the baseline generation's own: not added (a replicate is another "
                    "retrain of it, on another seed or draw of the human data)"
                )
            elif not added:
                print(f"{mon.name}: these outputs equal replicate {index}, already stored: not added again")
            elif reads is not None and reads != Stage.HEALTHY.value:
                import shlex

                Console(stderr=True).print(
                    f"replicate {index} reads {reads} against the baseline: every later decline must now beat it. "
                    f"If its training failed: collapse-monitor check --config {shlex.quote(str(args.config))} "
                    f"--drop-replicates {index}",
                    style="yellow",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        return 0
    report = mon.check(obs)
    # the sinks' background work (MLflow's history plot) ends here, not at exit, where Ctrl-C hit
    # the interpreter's thread join
    mon._wait_for_sinks(60.0)
    if args.json:
        import json

        from ._redact import redact_url

        out = report.to_dict()
        for alert in out.get("alerts") or ():  # links may carry tokens: the output goes to CI logs
            if isinstance(alert, dict) and isinstance(alert.get("links"), dict):
                alert["links"] = {k: redact_url(v) for k, v in alert["links"].items()}
        print(json.dumps(out, indent=2))
    else:
        Console().print(report_table(report))
    return 0


def _metrics_delete(args: argparse.Namespace) -> int:
    """Delete a monitor's Pushgateway group and textfile series (SinkError: exit 2)."""
    from .errors import ConfigError
    from .sinks.prometheus import PrometheusSink

    key: dict[str, str] = {}
    for item in args.grouping_key:
        label, eq, value = item.partition("=")
        if not eq:
            raise ConfigError("--grouping-key", f"expected LABEL=VALUE, got {item!r}")
        key[label] = value
    sink = PrometheusSink(pushgateway=args.pushgateway, textfile=args.textfile, job=args.job, grouping_key=key)
    path = sink.textfile_path(args.monitor)
    if path is not None and path.is_dir():
        raise ConfigError("--textfile", f"{path} is a folder: give the .prom file the sink writes")
    if path is not None and path.is_file():
        # a mistyped monitor name said "deleted" and rewrote the file without changing a series
        from .sinks.prometheus import _read_textfile

        held = sorted({dict(smp.labels)["monitor"] for smp in _read_textfile(path)})
        if args.monitor not in held:
            raise ConfigError(
                "--monitor",
                f"{path} holds no series of monitor {args.monitor!r}; nothing deleted"
                + (
                    f" (it holds {', '.join(repr(m) for m in held[:20])})"
                    if held
                    else " (it holds no monitor's series)"
                ),
            )
    missing = path is not None and not path.exists()  # a mistyped path said "deleted", exit 0
    sink.delete(args.monitor)
    where = [
        f"the Pushgateway at {sink._shown}" if sink.pushgateway else "",
        f"{path}" if path is not None and not missing else "",
    ]
    if any(where):
        print(f"deleted the series of monitor {args.monitor!r} from {' and '.join(w for w in where if w)}")
    if missing:
        print(
            f"collapse-monitor: error: no textfile at {path}: nothing deleted there (check --textfile)", file=sys.stderr
        )
        return 2
    return 0


class _SaidBelow(logging.Filter):
    """Drops the library's collapsed-replicate warning, which ``check --replicate`` prints itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not hasattr(record, "cm_replicate_reads")


class _PipeSafe:
    """``sys.stdout`` for the commands: a reader that closes early (``| head``, ``| true``) makes
    the rest of the output go nowhere instead of ending the command. Before, rich's console
    exited 1 on the broken pipe ("not healthy" for ``gate``, whatever the result), ``print``
    raised an error that exited 2, and ``report`` never wrote its PNG nor ``demo`` its report."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._closed_pipe = False

    def _to_devnull(self) -> None:
        self._closed_pipe = True
        import contextlib

        with contextlib.suppress(OSError, ValueError):  # the interpreter's final flush must not fail either
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def write(self, text: str) -> int:
        if not self._closed_pipe:
            try:
                return int(self._stream.write(text))
            except BrokenPipeError:
                self._to_devnull()
        return len(text)

    def flush(self) -> None:
        if not self._closed_pipe:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._to_devnull()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...: the real stream's
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    real = sys.stdout
    if real is None or isinstance(real, _PipeSafe):
        return _main(argv)
    sys.stdout = safe = _PipeSafe(real)
    try:
        return _main(argv)
    finally:
        safe.flush()
        if sys.stdout is safe:
            sys.stdout = real


def _main(argv: Sequence[str] | None) -> int:
    parser = _build()
    args = parser.parse_args(argv)
    if args.command == "gate" and args.version is not None and args.model_name is None:
        parser.error("gate: --version names a version of --model-name; give --model-name too")
    if args.command == "metrics" and args.pushgateway is None and args.textfile is None:
        parser.error("metrics delete: give --pushgateway URL, --textfile PATH or both")
    from ._redact import redact_http_client_logs

    redact_http_client_logs()
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(
                scenario=args.scenario,
                loops=args.loop,
                generations=args.generations,
                seed=args.seed,
                out=args.out,
                tracking_uri=args.tracking_uri,
                mlflow=not args.no_mlflow,
                pushgateway=args.pushgateway,
                replicates=args.replicates,
            )
        if args.command == "check":
            return _check(args)
        if args.command == "report":
            from .sinks.cli import report_command

            return report_command(
                args.monitor, tracking_uri=args.tracking_uri, out=args.out, experiment=args.experiment
            )
        if args.command == "gate":
            from .sinks.cli import gate_command

            return gate_command(
                args.monitor,
                tracking_uri=args.tracking_uri,
                model_name=args.model_name,
                version=args.version,
                experiment=args.experiment,
            )
        if args.command == "serve":
            from .service import serve_command

            return serve_command(args.config, port=args.port, host=args.host)
        if args.command == "dashboards":
            from .dashboards import dashboards_export_command

            return dashboards_export_command(args.dir, force=args.force)
        if args.command == "integrations":
            from .deploy import integrations_export_command

            return integrations_export_command(args.dir, force=args.force)
        if args.command == "metrics":
            return _metrics_delete(args)
        if args.command == "alerts":
            from .alerting.cli import alerts_test_command

            return alerts_test_command(args.config)
    except CollapseMonitorError as exc:
        print(f"collapse-monitor: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that cannot be written or read (e.g. report --out): one line, no traceback
        from ._redact import redact_text

        print(f"collapse-monitor: error: {redact_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
