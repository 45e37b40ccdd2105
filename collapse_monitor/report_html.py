"""HTML report and PNG charts of metric histories (matplotlib, Agg backend).

The HTML is self-contained (charts embedded as base64 PNG, inline CSS, no scripts), so it
opens from a CI artifact store or a mail attachment.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .render import as_number, fmt_aggregate, fmt_share
from .types import Report, Stage

__all__ = ["AGGREGATE_LABEL", "plot_history", "plot_trend", "write_report"]

#: how a verdict names its aggregate alert (``demo.AGG_THRESHOLD``), by the verdict's ``aggregate`` key
AGGREGATE_LABEL = {"accuracy": "overall accuracy -2 pts", "frechet_distance": "Frechet distance x2"}

_STAGE_COLOR = {Stage.HEALTHY: "#2e7d32", Stage.EARLY_COLLAPSE: "#f9a825", Stage.LATE_COLLAPSE: "#c62828"}


def _marker(points: int, size: float) -> tuple[float, float]:
    """Stage marker size and edge width for ``points`` generations: each marker's edge (the
    chain's colour) covered its neighbour's fill, and at 500 generations the stage colours were
    gone from the chart (an audit); past 60 points the markers shrink and lose the edge."""
    if points <= 60:
        return size, 0.8 if size < 20 else 1.0
    return max(2.0, size * 60 / points), 0.0


def plot_history(
    chains: Mapping[str, Sequence[Report]],
    keys: Sequence[str],
    path: str | Path,
    *,
    aggregates: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
    title: str | None = None,
) -> Path:
    """One panel per metric key, one line per chain with its 95 % interval band; markers
    coloured by stage; a legend when there is more than one chain. Returns the PNG path.

    Drawn on a bare Agg canvas (no pyplot figure registry or backend switch), with fixed margins
    instead of ``tight_layout`` (which draws the whole figure once more to measure it) and at
    most 5 y / 8 x ticks per panel: the MLflow sink renders one of these on every check, and
    text layout is most of matplotlib's cost (about 4x less time per plot than before)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    n = len(keys)
    cols = max(1, min(2, n))  # no keys: one empty panel, not a ZeroDivisionError
    rows = max(1, (n + cols - 1) // cols)
    height = 3.0 * rows + (0.4 if title else 0.0)
    fig = Figure(figsize=(6.0 * cols, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    top = 1.0 - (0.75 if title else 0.35) / height
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.45 / height, top=top, wspace=0.18, hspace=0.75 / 3.0)
    axes = fig.subplots(rows, cols, squeeze=False)
    legend = len(chains) > 1
    for ax, key in zip(axes.flat, keys, strict=False):
        handles: list[Any] = []
        for ci, (name, reports) in enumerate(chains.items()):
            color = f"C{ci}"
            pts = [(r.generation, r.metrics[key], r.stage) for r in reports if key in r.metrics]
            if pts:
                g = [p[0] for p in pts]
                handles.append((ax.plot(g, [p[1].value for p in pts], "-", color=color)[0], name))
                ax.fill_between(g, [p[1].ci_low for p in pts], [p[1].ci_high for p in pts], color=color, alpha=0.15)
                size, edge = _marker(len(g), 28)
                ax.scatter(
                    g,
                    [p[1].value for p in pts],
                    c=[_STAGE_COLOR[p[2]] for p in pts],
                    s=size,
                    zorder=3,
                    edgecolors=color if edge else "none",
                    linewidths=edge,
                )
            elif aggregates and name in aggregates:
                vals = [as_number(a.get(key)) for a in aggregates[name]]
                n = min(len(vals), len(reports))  # more aggregates than reports raised ValueError
                g = [r.generation for r in reports][:n]
                handles.append((ax.plot(g, vals[:n], "-o", color=color, markersize=3)[0], name))
        ax.set_title(key, fontsize=10, pad=3, parse_math=False)  # "class_recall.$x$" is a label
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if legend and handles:  # given explicitly: a chain named "_x" is not hidden
            _legend(ax, handles, fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("generation", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11, parse_math=False)
    path = Path(path)
    fig.savefig(path)
    return path


_DPI = 100


def _legend(ax: Any, handles: Sequence[tuple[Any, str]], **kw: Any) -> None:
    """A legend of user-given names shown literally (no mathtext for ``$``, no hiding of ``_x``)."""
    leg = ax.legend([h for h, _ in handles], [name for _, name in handles], **kw)
    for text in leg.get_texts():
        text.set_parse_math(False)


def plot_trend(reports: Sequence[Report], keys: Sequence[str], path: str | Path, *, title: str | None = None) -> Path:
    """One chain's metric history in a single panel: one line per key with its 95 % interval
    band, markers coloured by stage, the keys in a legend beside it. Returns the PNG path.

    The MLflow sink attaches this to every check run. The keys it shows are ratios and
    proportions on one scale, so a tail metric falling while the head ones hold (early collapse)
    reads off one chart; and one panel is a fraction of :func:`plot_history`'s cost (text
    layout of the ticks of each panel is most of matplotlib's time): about 0.1 s per check."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 4.0), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.07, 0.12, 0.64, 0.78))
    handles: list[Any] = []
    for i, key in enumerate(keys):
        pts = [(r.generation, r.metrics[key], r.stage) for r in reports if key in r.metrics]
        if not pts:
            continue
        color = f"C{i % 10}"
        g = [p[0] for p in pts]
        v = [p[1].value for p in pts]
        handles.append((ax.plot(g, v, "-", color=color, linewidth=1.4)[0], key))
        ax.fill_between(g, [p[1].ci_low for p in pts], [p[1].ci_high for p in pts], color=color, alpha=0.12, lw=0)
        size, edge = _marker(len(g), 16)
        edgecolor = color if edge else "none"
        ax.scatter(g, v, c=[_STAGE_COLOR[p[2]] for p in pts], s=size, zorder=3, edgecolors=edgecolor, linewidths=edge)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.set_xlabel("generation", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10, parse_math=False)
    if handles:
        _legend(ax, handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    path = Path(path)
    fig.savefig(path)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(reports: Sequence[Report], keys: Sequence[str], aggs: Sequence[Mapping[str, float]] | None) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["gen", *keys, "synthetic", "stage", "declines"])
    rows = []
    for i, r in enumerate(reports):
        cells = [str(r.generation)]
        for k in keys:
            mv = r.metrics.get(k)
            if mv is not None:
                sig = any(f.key == k and f.significant for f in r.findings)
                cls = ' class="down"' if sig else ""
                cells.append(f"<span{cls} title='95% CI [{mv.ci_low:.3f}, {mv.ci_high:.3f}]'>{mv.value:.3f}</span>")
            elif aggs and i < len(aggs) and k in aggs[i]:
                cells.append(fmt_aggregate(aggs[i][k]))
            else:
                cells.append("-")
        sf = r.metrics.get("synthetic_fraction")
        cells.append(fmt_share(None if sf is None else sf.value))
        cells.append(f'<b style="color:{_STAGE_COLOR[r.stage]}">{r.stage.value}</b>' + (" (drift)" if r.drift else ""))
        # strongest evidence first (Report.declines' order), each key once, and how many more:
        # sorted by name, six class recalls pushed rare_class_recall and tail_coverage out unsaid
        declines = list(dict.fromkeys(f.key for f in r.declines))
        more = f" (+{len(declines) - 6} more)" if len(declines) > 6 else ""
        cells.append(html.escape(", ".join(declines[:6]) + more))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f"<div class='scroll'>{table}</div>"


def _file_stem(name: str, index: int, used: set[str]) -> str:
    """A chain's PNG name inside the output folder: its name when that is a plain file name
    (``replace``), else ``chain-<index>`` (a "/" crashed the report, "../x" wrote outside it)."""
    import re

    stem = name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}", name) else f"chain-{index}"
    k = 0
    while stem.lower() in used:  # "metrics", "Replace" beside "replace", a user's own "chain-1"
        k += 1
        stem = f"chain-{index}-{k}"
    used.add(stem.lower())
    return stem


def lead_text(lead: int | None) -> str:
    """The verdict's lead in words, as the console and the HTML report say it."""
    if lead is None:
        return ""
    if lead > 0:
        return f"{lead} generation(s) of early warning"
    if lead == 0:
        return "no lead: the same generation"
    return f"{-lead} generation(s) after it"  # said as it is: the aggregate alert was first


def write_report(
    out: str | Path,
    chains: Mapping[str, tuple[Sequence[Report], Sequence[Mapping[str, float]]]],
    *,
    title: str,
    keys: Sequence[str],
    verdicts: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``report.html`` plus ``metrics.png`` and one ``<chain>.png`` per chain into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = {k: v[0] for k, v in chains.items()}
    aggs = {k: v[1] for k, v in chains.items()}
    plot_keys = list(keys)
    for extra in ("tail_coverage", "head_coverage", "rare_class_recall", "vendi_ratio", "variance_ratio"):
        if extra not in plot_keys and any(extra in r.metrics for rs in reports.values() for r in rs):
            plot_keys.append(extra)
    main_png = plot_history(reports, plot_keys, out / "metrics.png", aggregates=aggs, title=title)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}.scroll{overflow-x:auto;max-width:100%}td:last-child{text-align:left;font-size:85%}.down{color:#c62828;font-weight:bold}img{max-width:100%}"
        ".verdict{padding:.6em 1em;background:#f6f8fa;border-left:4px solid #555;margin:.5em 0}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for name, v in (verdicts or {}).items():
        flagged = v.get("flagged_at")
        agg = v.get("aggregate_at")
        alert = AGGREGATE_LABEL.get(v.get("aggregate") or "", "aggregate metric alert")
        txt = (
            f"{name}: collapse flagged at generation {flagged} ({v.get('stage_at_flag')}); "
            if flagged is not None
            else f"{name}: healthy throughout; "
        ) + (f"{alert} never within the run" if agg is None else f"{alert} at generation {agg}")
        if flagged is not None and v.get("lead") is not None:  # the console's lead, said here too
            lead = v["lead"]
            txt += f" ({lead_text(lead)})" if lead == 0 else f" -> {lead_text(lead)}"
        parts.append(f"<div class='verdict'>{html.escape(txt)}</div>")
    parts.append("<h2>Metrics over generations</h2>" + _img(main_png))
    used: set[str] = {"metrics", "report"}
    for i, (name, rs) in enumerate(reports.items()):
        png = plot_history(
            {name: rs},
            plot_keys,
            out / f"{_file_stem(name, i, used)}.png",
            aggregates={name: aggs[name]},
            title=f"{name} loop",
        )
        parts.append(f"<h2>{html.escape(name)} loop</h2>")
        parts.append(_table(rs, plot_keys, aggs[name]))
        parts.append(_img(png))
    parts.append(
        "<p><small>Dots are coloured by stage (green healthy, amber early collapse, red late collapse); "
        "bands are 95% intervals; red values are significant declines vs the baseline generation "
        "(Benjamini-Hochberg q &le; alpha and at least the minimum effect).</small></p></body></html>"
    )
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
