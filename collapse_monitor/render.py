"""Terminal rendering of reports and histories (rich tables). Rendering never computes."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from .types import MetricValue, Report, Stage

__all__ = [
    "STAGE_STYLE",
    "as_number",
    "column_width",
    "error_console",
    "escape",
    "fmt_aggregate",
    "history_table",
    "report_table",
    "stage_text",
]

STAGE_STYLE = {Stage.HEALTHY: "green", Stage.EARLY_COLLAPSE: "yellow", Stage.LATE_COLLAPSE: "bold red"}


def visible(text: object) -> str:
    r"""``text`` with control and format characters (ESC sequences, bidi overrides, zero-width
    characters: Unicode categories Cc and Cf) written as ``\xNN`` / ``\uNNNN``: a class label or
    a stored name with an ESC sequence cleared the screen, set the terminal's title or opened a
    hyperlink, and shifted the table's columns (an audit). Tabs and newlines stay.

    >>> visible("x\x1b[41mEVIL") == "x\\x1b[41mEVIL"
    True
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(
        c if c in "\t\n" or unicodedata.category(c) not in ("Cc", "Cf") else c.encode("unicode_escape").decode("ascii")
        for c in s
    )


def escape(text: object) -> str:
    """``text`` shown literally in rich markup: class labels such as ``[unk]`` or ``[/s]`` (common
    in NLP) used to vanish from tables or raise ``MarkupError`` after the check had been logged;
    control characters are shown as escapes (:func:`visible`)."""
    from rich.markup import escape as _escape

    return _escape(visible(text))


def as_number(x: Any) -> float:
    """An aggregate value: NaN for a missing or non-numeric one (a gap in a chart's line)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def fmt_aggregate(x: Any) -> str:
    """An aggregate value in a table: 3 decimals, ``-`` when missing, NaN or not a number (``None``
    used to raise a ``TypeError`` from the format)."""
    v = as_number(x)
    return "-" if v != v else f"{v:.3f}"


def fmt_share(x: float | None) -> str:
    """A synthetic share for a table: two decimals, but a share under 0.005 that is not 0 keeps
    one significant digit (0.004 printed as 0.00 beside an origin that says "mixed").

    >>> [fmt_share(x) for x in (None, 0.0, 0.004, 0.25, 1.0)]
    ['-', '0.00', '0.004', '0.25', '1.00']
    """
    if x is None:
        return "-"
    return f"{x:.1g}" if 0 < x < 0.005 else f"{x:.2f}"


def stage_text(report: Report) -> str:
    s = f"[{STAGE_STYLE[report.stage]}]{report.stage.value}[/]"
    if report.drift:
        s += " [magenta](drift)[/]"
    return s


def _fmt(report: Report, key: str) -> str:
    mv = report.metrics.get(key)
    if mv is None:
        return "-"
    txt = f"{mv.value:.3f}"
    sig = [f for f in report.findings if f.key == key and f.significant]
    return f"[red]{txt}↓[/]" if sig else txt


def column_width(header: str, cells: list[str], *, wrap: bool = False) -> int:
    """Column width: its longest header word (headers wrap at spaces) or its widest cell (its
    longest word with ``wrap``: the cells may wrap at spaces, never inside a word), in terminal
    cells, markup not counted. Used by ``history_table`` and ``collapse-monitor report``."""
    from rich.cells import cell_len
    from rich.text import Text

    plain = [Text.from_markup(c).plain for c in cells]
    cell = [cell_len(w) for c in plain for w in c.split()] if wrap else [cell_len(c) for c in plain]
    return max([*(cell_len(w) for w in header.split()), *cell, 1])


def history_table(
    reports: Sequence[Report],
    keys: Sequence[str],
    *,
    title: str | None = None,
    aggregates: Sequence[Mapping[str, Any]] | None = None,
) -> Any:
    """One row per generation: the given metric keys and the stage. Significant declines are
    red with an arrow."""
    from rich.table import Table

    rows = []
    for i, r in enumerate(reports):
        sf = r.metrics.get("synthetic_fraction")
        row = [str(r.generation)]
        for k in keys:
            if k not in r.metrics and aggregates is not None and i < len(aggregates) and k in aggregates[i]:
                row.append(fmt_aggregate(aggregates[i][k]))
            else:
                row.append(_fmt(r, k))
        row += [fmt_share(None if sf is None else sf.value), stage_text(r)]
        rows.append(row)
    table = Table(title=None if title is None else escape(title), show_lines=False)
    table.add_column("gen", justify="right")
    for j, k in enumerate(keys, start=1):
        # a metric key's words on separate header lines ("rare / class / recall"), no wider than
        # its longest word or value: the table fits an 80-column terminal instead of cutting
        # headers and the stage to "overall_a..." and "late_coll..."
        header = k.replace("_", " ")
        width = max(6, column_width(header, [row[j] for row in rows]))
        table.add_column(escape(header), justify="right", max_width=width)
    table.add_column("synthetic", justify="right")
    table.add_column("stage")
    for row in rows:
        table.add_row(*row)
    return table


def report_table(report: Report) -> Any:
    """All metrics of one report with interval, baseline and decline test."""
    from rich.table import Table

    table = Table(title=escape(f"{report.monitor} - generation {report.generation} - {report.stage.value}"))
    for col, j in (("metric", "left"), ("value", "right"), ("95% CI", "right"), ("baseline", "right"), ("q", "right")):
        table.add_column(col, justify=j)  # type: ignore[arg-type]
    q = {f.key: f for f in report.findings if f.kind == "baseline"}
    for key, mv in sorted(report.metrics.items()):
        f = q.get(key)
        base = "-" if mv.baseline is None else f"{mv.baseline:.3f}"
        qv = "-" if f is None else f"{f.q_value:.3g}"
        val = f"{mv.value:.3f}"
        if f is not None and f.significant:
            val = f"[red]{val}↓[/]"
        table.add_row(escape(key), val, f"[{mv.ci_low:.3f}, {mv.ci_high:.3f}]", base, qv)
    return table


def retrain_spread(key: str, base: MetricValue, replicates: Sequence[Any]) -> tuple[float, bool] | None:
    """The spread (max - min) of a metric over the baseline retrain and its replicates, and
    whether the baseline is better than every replicate's 95% interval (above it; below it
    where lower is better, as for the Frechet distance; never for a metric without a quality
    direction): a lucky baseline retrain. None when no replicate measured the metric."""
    from .metrics._spec import spec_for

    others = [r.metrics[key] for r in replicates if key in r.metrics]
    if not others:
        return None
    known = [base.value] + [o.value for o in others]
    higher = spec_for(key).higher_is_better
    lucky = (higher is True and base.value > max(o.ci_high for o in others)) or (
        higher is False and base.value < min(o.ci_low for o in others)
    )
    return max(known) - min(known), lucky


def baseline_table(monitor: str, baseline: Any, hidden: Sequence[str] = ()) -> Any:
    """The baseline generation and its replicates side by side, per metric (``check
    --show-baseline``): each retrain's value, the spread between them (max - min: the retrain
    noise a decline must beat) and a mark where the baseline is better than every replicate's
    95% interval (above it; below it for a metric where lower is better, such as the Frechet
    distance): a lucky baseline retrain, which replicates are for. ``hidden``: metric keys not
    judged against replicates (counted against the baseline itself)."""
    from rich.table import Table

    reps = list(getattr(baseline, "replicates", ()))
    title = f"{monitor} - baseline generation {baseline.generation} and {len(reps)} replicate(s)"
    notes = ["↑ better than every replicate's 95% interval: a lucky baseline retrain"] if reps else []
    if baseline.dropped:  # kept out on every machine that shares the baseline through MLflow
        notes.append(f"{len(baseline.dropped)} replicate(s) dropped earlier, kept out")
    caption = "\n".join(notes) or None
    table = Table(title=escape(title), caption=caption)
    # the metric names whole and short number headers: five replicates fit 80 columns
    table.add_column("metric", justify="left", no_wrap=True)
    table.add_column("base", justify="right", no_wrap=True)
    for i in range(1, len(reps) + 1):
        table.add_column(f"rep {i}", justify="right", no_wrap=True)
    if reps:
        table.add_column("spread", justify="right", no_wrap=True)
    for key, mv in sorted(baseline.metrics.items()):
        if key in hidden:
            continue
        values = [mv.value] + [r.metrics[key].value if key in r.metrics else None for r in reps]
        cells = ["-" if v is None else f"{v:.3f}" for v in values]
        got = retrain_spread(key, mv, reps)
        if got is not None:
            spread, lucky = got
            if lucky:
                cells[0] = f"[yellow]{cells[0]}↑[/]"  # the baseline retrain stands out: lucky
            cells.append(f"{spread:.3f}")
        elif reps:  # no replicate measured it: no spread, no mark
            cells.append("-")
        table.add_row(escape(key), *cells)
    return table


def replicate_table(monitor: str, count: int, metrics: Mapping[str, MetricValue]) -> Any:
    """A replicate of the baseline generation (``check_replicate``): each metric with its
    interval, the baseline's value and the difference, the retrain noise a decline must beat."""
    from rich.table import Table

    table = Table(title=escape(f"{monitor} - baseline replicate {count}"))
    for col, j in (
        ("metric", "left"),
        ("value", "right"),
        ("95% CI", "right"),
        ("baseline", "right"),
        ("diff", "right"),
    ):
        table.add_column(col, justify=j)  # type: ignore[arg-type]
    for key, mv in sorted(metrics.items()):
        base = "-" if mv.baseline is None else f"{mv.baseline:.3f}"
        diff = "-" if mv.baseline is None else f"{mv.value - mv.baseline:+.3f}"
        table.add_row(escape(key), f"{mv.value:.3f}", f"[{mv.ci_low:.3f}, {mv.ci_high:.3f}]", base, diff)
    return table


def error_console(console: Any = None) -> Any:
    """Where a command's exit-2 message goes: ``console`` when the caller passed one (tests),
    else stderr, unwrapped, so a script reads one line on the error stream."""
    if console is not None:
        return console
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)
