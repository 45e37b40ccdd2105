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

from .types import Report, Stage

__all__ = ["plot_history", "write_report"]

_STAGE_COLOR = {Stage.HEALTHY: "#2e7d32", Stage.EARLY_COLLAPSE: "#f9a825", Stage.LATE_COLLAPSE: "#c62828"}


def plot_history(
    chains: Mapping[str, Sequence[Report]],
    keys: Sequence[str],
    path: str | Path,
    *,
    aggregates: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
    title: str | None = None,
) -> Path:
    """One panel per metric key, one line per chain with its 95 % interval band; markers
    coloured by stage. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(keys)
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for ci, (name, reports) in enumerate(chains.items()):
            color = f"C{ci}"
            pts = [(r.generation, r.metrics[key], r.stage) for r in reports if key in r.metrics]
            if pts:
                g = [p[0] for p in pts]
                ax.plot(g, [p[1].value for p in pts], "-", color=color, label=name)
                ax.fill_between(g, [p[1].ci_low for p in pts], [p[1].ci_high for p in pts], color=color, alpha=0.15)
                ax.scatter(
                    g, [p[1].value for p in pts], c=[_STAGE_COLOR[p[2]] for p in pts], s=28, zorder=3, edgecolors=color
                )
            elif aggregates and name in aggregates:
                vals = [a.get(key) for a in aggregates[name]]
                g = [r.generation for r in reports][: len(vals)]
                ax.plot(g, vals, "-o", color=color, label=name, markersize=3)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
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
                cells.append(f"{aggs[i][k]:.3f}")
            else:
                cells.append("-")
        sf = r.metrics.get("synthetic_fraction")
        cells.append("-" if sf is None else f"{sf.value:.2f}")
        cells.append(f'<b style="color:{_STAGE_COLOR[r.stage]}">{r.stage.value}</b>' + (" (drift)" if r.drift else ""))
        declines = sorted({f.key for f in r.findings if f.significant})
        cells.append(html.escape(", ".join(declines[:6])))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f"<div class='scroll'>{table}</div>"


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
        txt = (
            f"{name}: collapse flagged at generation {flagged} ({v.get('stage_at_flag')}); "
            if flagged is not None
            else f"{name}: healthy throughout; "
        ) + ("aggregate metric alert never fired" if agg is None else f"aggregate metric alert at generation {agg}")
        parts.append(f"<div class='verdict'>{html.escape(txt)}</div>")
    parts.append("<h2>Metrics over generations</h2>" + _img(main_png))
    for name, rs in reports.items():
        png = plot_history(
            {name: rs}, plot_keys, out / f"{name}.png", aggregates={name: aggs[name]}, title=f"{name} loop"
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
