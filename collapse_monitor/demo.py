"""``collapse-monitor demo``: recursive-training chains side by side, with the verdict.

Runs a built-in scenario (default: scikit-learn's digits with a rare digit, replace vs
accumulate loop) for N generations, checks every generation with a CollapseMonitor, prints a
per-generation table and a verdict (generation collapse was flagged vs generation overall
accuracy fell by 2 points), and writes an HTML report with PNG charts.
"""

from __future__ import annotations

import json
import numbers
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .detection import at_least
from .errors import ConfigError
from .report_html import AGGREGATE_LABEL
from .types import Report, Stage

if TYPE_CHECKING:
    from .simulate import Scenario

__all__ = ["Verdict", "aggregate_flags", "aggregate_score", "run_chain", "run_demo", "verdict"]

#: table / chart columns per scenario; ``overall_accuracy`` is the scenario's aggregate accuracy
#: (at the natural class mix: what a test set drawn like the training data shows, and what the
#: verdict's "accuracy fell by 2 points" is measured on), not the balanced probe's
TABLE_KEYS = {
    "digits": ["overall_accuracy", "rare_class_recall", "tail_coverage", "vendi_ratio"],
    "selftrain": ["overall_accuracy", "rare_class_recall", "worst_class_recall", "rare_prediction_ratio"],
    "mixture": ["precision", "tail_coverage", "rare_mode_coverage", "vendi_ratio"],
    "gaussian": ["coverage", "tail_coverage", "tail_mass_ratio", "variance_ratio"],
    "zipf_text": ["distinct_2", "rare_ngram_recall", "vocab_ratio", "ngram_entropy"],
}
#: the aggregate alert teams usually watch, on ``aggregate_score``: overall accuracy down 2
#: points from generation 0, or the Frechet distance doubled (the demo's verdict and baseline (a)
#: of the detection benchmarks)
AGG_THRESHOLD = {"accuracy": 2.0, "frechet_distance": 2.0}


#: marks ``<out>/state`` as the demo's own, so that its next run may replace it
DEMO_MARKER = ".collapse-monitor-demo"


#: the most generations a demo runs (each is a retrain and a check; 1,000 take about an hour)
MAX_GENERATIONS = 1000


def _made_by_demo(state: Path) -> bool:
    """``state`` holds the marker, or (demos before the marker) only monitor homes."""
    if (state / DEMO_MARKER).is_file():
        return True
    children = list(state.iterdir()) if state.is_dir() else []
    return bool(children) and all(c.is_dir() and (c / "history.db").is_file() for c in children)


def aggregate_score(aggregates: Sequence[Mapping[str, float]]) -> tuple[str, list[float]] | None:
    """The aggregate alert's statistic per generation, larger = worse: the accuracy drop in
    points from generation 0, or the Frechet distance relative to generation 0's."""
    if aggregates and "accuracy" in aggregates[0]:
        base = aggregates[0]["accuracy"]
        return "accuracy", [100.0 * (base - a.get("accuracy", base)) for a in aggregates]
    if aggregates and "frechet_distance" in aggregates[0]:
        base = max(aggregates[0]["frechet_distance"], 1e-12)
        return "frechet_distance", [a.get("frechet_distance", 0.0) / base for a in aggregates]
    return None


def aggregate_flags(aggregates: Sequence[Mapping[str, float]], threshold: float | None = None) -> list[bool]:
    """Per generation, whether the aggregate alert fires (at ``AGG_THRESHOLD`` unless
    ``threshold``). Up to rounding: an accuracy of 0.93 against 0.95 is a drop of exactly 2
    points, though 100 * (0.95 - 0.93) is 1.9999999999999907."""
    sc = aggregate_score(aggregates)
    if sc is None:
        return [False] * len(aggregates)
    key, vals = sc
    thr = AGG_THRESHOLD[key] if threshold is None else threshold
    return [at_least(v, thr) for v in vals]


class Verdict(dict):
    """flagged_at, stage_at_flag, aggregate_at, lead (generations of warning) for one chain."""


def verdict(reports: Sequence[Report], aggregates: Sequence[dict[str, float]]) -> Verdict:
    flagged = next((r for r in reports if r.stage is not Stage.HEALTHY), None)
    agg_at = next((i for i, fired in enumerate(aggregate_flags(aggregates)) if fired), None)
    score = aggregate_score(aggregates)
    v = Verdict(
        flagged_at=None if flagged is None else flagged.generation,
        stage_at_flag=None if flagged is None else flagged.stage.value,
        aggregate_at=agg_at,
        aggregate=None if score is None else score[0],
    )
    v["lead"] = None if v["flagged_at"] is None or agg_at is None else agg_at - v["flagged_at"]
    return v


def _verdict_line(loop: str, v: Verdict, generations: int) -> str:
    label = AGGREGATE_LABEL.get(v.get("aggregate") or "")
    if label is None:
        agg = ""
    else:
        agg = f"; {label} " + (
            "never within the run" if v["aggregate_at"] is None else f"at generation {v['aggregate_at']}"
        )
    if v["flagged_at"] is None:
        return f"[green]{loop}[/]: stayed healthy for {generations} generations{agg}"
    from .report_html import lead_text

    lead = ""
    if v["lead"] is not None:
        said = lead_text(v["lead"])
        if v["lead"] > 0:
            lead = f" -> [bold]{said}[/]"
        elif v["lead"] == 0:
            lead = f" ({said})"
        else:
            lead = f" -> [yellow]{said}[/]"
    return f"[bold]{loop}[/]: collapse flagged at generation {v['flagged_at']} ({v['stage_at_flag']}){agg}{lead}"


def run_chain(
    scenario: str | Scenario,
    loop: str,
    generations: int,
    *,
    seed: int = 0,
    sinks: Sequence[Any] = (),
    home: str | Path,
    name: str | None = None,
    rules: Any = None,
    progress: Any = None,
    task: Any = None,
    scenario_options: dict[str, Any] | None = None,
    replicates: int = 0,
    replicate_metrics: list[dict[str, Any]] | None = None,
) -> tuple[list[Report], list[dict[str, float]]]:
    """Run one chain, check every generation; returns (reports, aggregates). ``scenario`` is a
    scenario name (built here with ``loop``, ``seed`` and ``scenario_options``) or a
    :class:`~collapse_monitor.simulate.Scenario` already built. ``replicates``: that many more
    retrains of generation 0 (``Scenario.baseline_replicates``) are added to the baseline
    (``check_replicate``) right after it, as the detection benchmark's ``--replicates`` does;
    their metrics are appended to ``replicate_metrics`` when given."""
    from .monitor import CollapseMonitor
    from .simulate import Scenario, make_scenario

    if isinstance(scenario, Scenario):
        sc = scenario
    else:
        sc = make_scenario(scenario, loop=loop, seed=seed, **(scenario_options or {}))
    mon = CollapseMonitor(
        name or f"demo-{sc.name}-{loop}", reference=sc.reference, sinks=list(sinks), home=home, rules=rules
    )
    reports: list[Report] = []
    aggs: list[dict[str, float]] = []
    for g in sc.generations(generations):
        reports.append(mon.check(g.observation))
        if g.generation == 0 and replicates:
            for r in sc.baseline_replicates(replicates):
                got = mon.check_replicate(r.observation)
                if replicate_metrics is not None:
                    replicate_metrics.append(got)
                if progress is not None:
                    progress.advance(task)
        agg = dict(g.aggregate)
        if "accuracy" in agg:
            agg["overall_accuracy"] = agg["accuracy"]
        aggs.append(agg)
        if progress is not None:
            progress.advance(task)
    return reports, aggs


def run_demo(
    *,
    scenario: str = "digits",
    loops: Sequence[str] | None = None,
    generations: int = 10,
    seed: int = 0,
    out: str | Path = "collapse-demo-out",
    tracking_uri: str | None = None,
    mlflow: bool = True,
    pushgateway: str | None = None,
    replicates: int = 0,
) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.style import Style
    from rich.text import Text

    from .render import history_table, visible
    from .report_html import write_report
    from .simulate import make_scenario

    console = Console()
    loops = list(dict.fromkeys(loops or ["replace", "accumulate"]))  # a loop given twice runs once
    out = Path(out)
    # every argument is checked before anything is printed or written
    if (
        isinstance(generations, bool)
        or not isinstance(generations, numbers.Integral)
        or not 2 <= generations <= MAX_GENERATIONS
    ):
        # 3.0 or "10" from Python got past "< 2" and failed after the earlier state was deleted; 10**20
        # ran until killed, writing nothing (an audit)
        raise ConfigError(
            "generations",
            f"expected an int from 2 (generation 0 is the human-data baseline) to {MAX_GENERATIONS}, got {generations!r}",
        )
    generations = int(generations)  # numpy's ints too
    if isinstance(replicates, bool) or not isinstance(replicates, int) or not 0 <= replicates <= 5:
        raise ConfigError("replicates", f"expected an int from 0 to 5 (retrains of generation 0), got {replicates!r}")
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder; give --out a folder (created if missing)")
    # the files written at the end: a folder in the way failed the run after all its minutes
    for file in ("report.html", "verdict.json", "metrics.png", *(f"{loop}.png" for loop in loops)):
        if (out / file).is_dir():
            raise ConfigError("out", f"{out / file} is a folder, where the demo writes its {file}; give another --out")
    scenarios: dict[str, Any] = {}
    for loop in loops:
        made = make_scenario(scenario, loop=loop, seed=seed)
        # an alias of a loop given already (stable / real, replace / argmax) ran the same chain twice
        if all(other.loop != made.loop for other in scenarios.values()):
            scenarios[loop] = made
    loops = list(scenarios)
    # the sinks are built (and their options checked) before the earlier run's state is replaced
    sinks: list[Any] = []
    if mlflow:
        from .sinks import MLflowSink
        from .sinks.cli import sqlite_folder
        from .sinks.mlflow import safe_uri, shown_uri

        if tracking_uri is not None and not tracking_uri.strip():
            raise ConfigError(
                "tracking_uri", "is empty: give --tracking-uri an MLflow URI, or leave it out for the default store"
            )
        sink = MLflowSink(tracking_uri=tracking_uri, evidently=False)
        folder = sqlite_folder(sink)
        if folder is not None:  # the progress bar stayed at 0 for minutes
            raise ConfigError("tracking_uri", folder)
        sinks.append(sink)
    if pushgateway:
        from .sinks import PrometheusSink

        sinks.append(PrometheusSink(pushgateway=pushgateway))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = {loop: f"demo-{scenario}-{loop}-{stamp}" for loop in loops}
    state = out / "state"
    if state.exists():
        # only a folder an earlier demo made is replaced: "--out ." in a project with its own
        # state/ folder used to delete it
        if not _made_by_demo(state):
            raise ConfigError(
                "out",
                f"{state} exists and was not made by the demo; give --out a new or earlier demo folder",
            )
        shutil.rmtree(state)
    try:
        out.mkdir(parents=True, exist_ok=True)
        state.mkdir()
        (state / DEMO_MARKER).write_text("monitor homes of `collapse-monitor demo`; replaced by its next run\n")
    except OSError as exc:
        raise ConfigError(
            "out", f"cannot create the folder {out} ({exc.strerror or exc}); give --out a writable folder"
        ) from None

    with_reps = f", {replicates} replicate baseline(s)" if replicates else ""
    console.print(
        f"[bold]collapse-monitor demo[/]: scenario [cyan]{scenario}[/], loops {', '.join(loops)}, "
        f"{generations} generations, seed {seed}{with_reps}"
    )
    chains: dict[str, tuple[list[Report], list[dict[str, float]]]] = {}
    spread: dict[str, list[dict[str, Any]]] = {loop: [] for loop in loops}
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # the bars are progress, not results: `demo > out.txt` keeps the tables
        transient=False,
    ) as progress:
        for loop in loops:
            extra = f" +{replicates} rep" if replicates else ""  # the bar counts the retrains of generation 0 too
            task = progress.add_task(f"{loop:>10} loop{extra}", total=generations + replicates)
            chains[loop] = run_chain(
                scenarios[loop],
                loop,
                generations,
                seed=seed,
                sinks=sinks,
                home=state / loop,
                name=names[loop],
                progress=progress,
                task=task,
                replicates=replicates,
                replicate_metrics=spread[loop],
            )
    elapsed = time.perf_counter() - t0

    keys = TABLE_KEYS.get(scenario, ["accuracy", "tail_coverage", "vendi_ratio"])
    verdicts = {}
    for loop, (reports, aggs) in chains.items():
        console.print(history_table(reports, keys, title=f"{scenario} / {loop} loop", aggregates=aggs))
        verdicts[loop] = verdict(reports, aggs)
    for loop, v in verdicts.items():
        console.print(_verdict_line(loop, v, generations))
    lines: dict[str, list[str]] = {}  # the retrain noise a decline must now beat; one line where loops agree
    for loop, reps in spread.items():
        base = chains[loop][0][0].metrics if chains[loop][0] else {}
        shown = [k for k in ("rare_class_recall", *keys) if k in base and all(k in r for r in reps)][:1]
        if reps and shown:
            values = " / ".join(f"{v:.3f}" for v in [base[shown[0]].value] + [r[shown[0]].value for r in reps])
            lines.setdefault(f"generation 0 and {len(reps)} replicate retrain(s), {shown[0]} {values}", []).append(loop)
    for text, where in lines.items():
        console.print(
            f"{', '.join(where)}: {text}; each decline must hold against all of them",
            markup=False,
            highlight=False,
        )

    html = write_report(out, chains, title=f"collapse-monitor demo: {scenario}", keys=keys, verdicts=verdicts)
    (out / "verdict.json").write_text(
        json.dumps(
            {"scenario": scenario, "seed": seed, "replicates": replicates, "verdicts": verdicts, "seconds": elapsed},
            indent=2,
        )
    )
    # a Text, not markup: "--out runs[1]" raised MarkupError here, after the whole run (an audit)
    console.print(
        Text("\nReport: ")
        .append(visible(html), style=Style(link=html.resolve().as_uri()))
        .append(" (PNG charts beside it)")
    )
    n_checks = sum(len(r) for r, _ in chains.values())

    def failed(sink: Any) -> int:
        return sum(any(e.startswith(f"{sink.name}:") for e in rep.errors) for r, _ in chains.values() for rep in r)

    # what a failed sink missed is spooled in state/, which the next demo run replaces: say so,
    # say what to do, and exit 1 (a demo whose logging failed is not a success for a script)
    kept = (
        f"spooled in {state}, which the next demo run replaces; see the warnings above, make sure the server "
        "is up and reachable, and run the demo again"
    )
    for sink in sinks[1:] if mlflow else sinks:  # the Pushgateway
        if failed(sink):
            console.print(
                f"Pushgateway: {failed(sink)} of {n_checks} checks could not be pushed ({kept})",
                style="yellow",
                markup=False,
                highlight=False,
            )
    if mlflow:
        # never print credentials (user:token@ or ?token= in the URI)
        # shown_uri: a token-like path segment of a server's URI is masked as everywhere else
        uri = shown_uri(safe_uri(tracking_uri or _default_tracking_uri()))
        if failed(sinks[0]):
            console.print(
                f"MLflow: {failed(sinks[0])} of {n_checks} checks could not be logged to {uri} ({kept})",
                style="yellow",
                markup=False,
                highlight=False,
            )
        else:
            console.print(f"MLflow: every check was logged to {uri}. Open it with:", markup=False, highlight=False)
            # one line whatever the width, so the command copies whole from the terminal
            console.print(f"  mlflow ui --backend-store-uri {uri}", soft_wrap=True, markup=False, highlight=False)
            # each loop is a monitor of its own: name them, so `report` and `gate` can be tried on them
            console.print(
                f"Monitors: {', '.join(names.values())}. History table and CI gate of one:",
                markup=False,
                highlight=False,
            )
            first = next(iter(names.values()))
            for cmd in ("report", "gate"):
                console.print(
                    f"  collapse-monitor {cmd} --monitor {first} --tracking-uri {uri}",
                    soft_wrap=True,
                    markup=False,
                    highlight=False,
                )
    console.print(f"[dim]{n_checks} checks in {elapsed:.1f} s[/]")
    return 1 if any(failed(sink) for sink in sinks) else 0


def _default_tracking_uri() -> str:
    try:
        import mlflow

        return str(mlflow.get_tracking_uri())
    except Exception:  # pragma: no cover
        return "sqlite:///mlflow.db"
