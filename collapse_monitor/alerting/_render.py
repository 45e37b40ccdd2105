"""Message text shared by every channel. Each message says: monitor, stage, severity, what fell
by how much with its interval, the generation, the synthetic share of the training data and
the links (MLflow run, dashboard, runbook)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .base import LINK_LABELS, AlertEvent

__all__ = ["detail_line", "detail_lines", "facts", "headline", "links", "plain_text", "rule_label"]


def rule_label(rule: str) -> str:
    return rule.replace("_", " ").replace(".", " ").strip() or "alert"


def _num(x: Any, spec: str = ".3g") -> str:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x)):
        return format(float(x), spec)
    return "?"


def _pct(x: Any) -> str:
    """A share as a percentage; a share that is neither 0 nor 1 never reads "0%" or "100%"
    (0.996 of a "mixed" origin was shown as 100% synthetic).

    >>> [_pct(v) for v in (0.0, -0.0, 1e-7, 0.004, 0.5, 0.996, 0.9999999, 1.0, None)]
    ['0%', '0%', '<0.01%', '0.4%', '50%', '99.6%', '>99.99%', '100%', 'unknown']
    """
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(float(x)):
        return "unknown"
    pct = float(x) * 100
    if pct == 0.0:  # -0.0 too
        return "0%"
    text = f"{pct:.0f}%"
    if text in ("0%", "100%") and pct != 100.0:
        if 0 < pct < 0.01:
            return "<0.01%"  # 1e-7 read "1e-05%"
        if 99.99 < pct < 100:
            return ">99.99%"
        text = f"{pct:.2g}%" if pct < 1 else f"{pct:.4g}%"
    return text


def headline(event: AlertEvent) -> str:
    a = event.alert
    if event.test:
        return "[TEST] collapse-monitor test event: this channel receives alerts"
    what = rule_label(a.rule)
    if a.status == "resolved":
        return f"[RESOLVED] {a.monitor}: {what} resolved at generation {a.generation}"
    again = " (still firing)" if a.repeat else ""
    return f"[{a.severity.upper()}] {a.monitor}: {what} at generation {a.generation}{again}"


def facts(event: AlertEvent) -> list[tuple[str, str]]:
    a = event.alert
    synth = a.synthetic_fraction
    if synth is None and event.report:
        synth = event.report.get("synthetic_fraction")
    rows = [
        ("Monitor", a.monitor),
        ("Stage", a.stage.value.replace("_", " ")),
        ("Severity", a.severity),
        ("Status", "resolved" if a.status == "resolved" else ("firing (repeat)" if a.repeat else "firing")),
        ("Generation", str(a.generation)),
        ("Synthetic share", _pct(synth)),
        ("Rule", a.rule),
    ]
    if event.report and event.report.get("run_id"):
        rows.append(("Run", str(event.report["run_id"])))
    return rows


def detail_line(d: Mapping[str, Any]) -> str:
    """``tail_coverage 0.41 (95% CI 0.38-0.45) vs baseline 0.61: -32.0%, q=0.0012``."""
    key = str(d.get("key", "?"))
    line = f"{key} {_num(d.get('value'))}"
    if d.get("ci_low") is not None and d.get("ci_high") is not None:
        line += f" (95% CI {_num(d.get('ci_low'))} to {_num(d.get('ci_high'))})"
    if d.get("baseline") is not None:
        line += f" vs baseline {_num(d.get('baseline'))}"
    rc = d.get("relative_change")
    if isinstance(rc, (int, float)) and math.isfinite(float(rc)):
        line += f": {float(rc) * 100:+.1f}%"
    if d.get("q_value") is not None:
        line += f", q={_num(d.get('q_value'), '.2g')}"
    if d.get("kind") == "trend":
        line += " (trend)"
    return line


def detail_lines(event: AlertEvent, limit: int = 8) -> list[str]:
    """What fell (the alert's details, else the report's significant declines)."""
    details: Any = event.alert.details
    if not details and event.report and event.alert.status == "firing":
        details = event.report.get("declines") or ()
    lines = [detail_line(d) for d in list(details)[:limit]]
    if len(details) > limit:
        lines.append(f"... and {len(details) - limit} more")
    return lines


def links(event: AlertEvent) -> list[tuple[str, str]]:
    """(label, url) for every link; http(s) ones first in the order of LINK_LABELS."""
    items = dict(event.alert.links)
    order = [k for k in LINK_LABELS if k in items] + sorted(k for k in items if k not in LINK_LABELS)
    return [(LINK_LABELS.get(k, k.replace("_", " ").title()), str(items[k])) for k in order if items[k]]


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def plain_text(event: AlertEvent, *, with_headline: bool = True) -> str:
    a = event.alert
    out = [headline(event)] if with_headline else []
    if a.summary and not event.test:
        out.append(a.summary)
    elif event.test:
        out.append("If you can read this, collapse-monitor can page you here. No action needed.")
    out.append(" | ".join(f"{k}: {v}" for k, v in facts(event)))
    lines = detail_lines(event)
    if lines:
        out.append("What fell:")
        out.extend(f"- {ln}" for ln in lines)
    lk = links(event)
    if lk:
        out.append("Links: " + ", ".join(f"{k}: {u}" for k, u in lk))
    return "\n".join(out)
