"""Grafana dashboards for collapse-monitor, built in code (no Grafana SDK needed).

Two dashboards read the gauges that :class:`collapse_monitor.sinks.PrometheusSink` exports
(``collapse_monitor_<key>{monitor=...}``, see the README's "Where results go"):

``collapse-monitor-overview``
    one row of stats per monitor (stage, generation, time since the last check, alerts firing,
    synthetic fraction, drift), the stage over time, tail vs head coverage, rare-class recall
    next to the worst class, diversity, the rare classes' current recall and the alert table.
``collapse-monitor-detail``
    one monitor: per-class recall of the rare classes, one panel per canonical metric with its
    95 % interval drawn as a band, text metrics, check duration.

Panel titles, descriptions, units and bounds come from the metric metadata in
``collapse_monitor.metrics._spec`` (metadata on the metric, not in the caller).

The dashboards are provisioning-ready: no ``__inputs``; a ``datasource`` template variable of
type ``prometheus`` and every panel's datasource ``{"type": "prometheus", "uid":
"${datasource}"}``, so they import into any Grafana without editing. The repository's
``dashboards/`` folder holds the committed output of :func:`export_dashboards`; a test checks
that regenerating gives the same bytes.

>>> from collapse_monitor.dashboards import build_dashboards, panel_queries
>>> boards = build_dashboards()
>>> sorted(boards)
['collapse-monitor-detail.json', 'collapse-monitor-overview.json']
>>> any("collapse_monitor_stage" in q for q in panel_queries(boards["collapse-monitor-overview.json"]))
True
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics._spec import MLFLOW_ONLY, SPECS, MetricSpec

__all__ = [
    "DASHBOARDS_PATH",
    "DETAIL_UID",
    "EXCLUDED_KEYS",
    "OVERVIEW_UID",
    "PROMETHEUS_URL",
    "SCHEMA_VERSION",
    "build_dashboards",
    "dashboards_export_command",
    "detail_dashboard",
    "export_dashboards",
    "iter_panels",
    "metric_names",
    "overview_dashboard",
    "panel_queries",
    "prom_name",
    "provisioning_files",
    "render_files",
]

OVERVIEW_UID = "collapse-monitor-overview"
DETAIL_UID = "collapse-monitor-detail"
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x; newer Grafana migrates it on load
#: where the compose stack's Grafana finds the dashboard JSON (docker/compose.yaml mounts it)
DASHBOARDS_PATH = "/etc/grafana/dashboards/collapse-monitor"
#: the Prometheus service of docker/compose.yaml
PROMETHEUS_URL = "http://prometheus:9090"
#: canonical keys that get no panel: embedding_drift_share is an Evidently artifact metric that
#: lives in MLflow, not in the Prometheus export (``PrometheusSink`` leaves them out).
EXCLUDED_KEYS = MLFLOW_ONLY

PREFIX = "collapse_monitor_"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'monitor=~"$monitor"'
#: the detail dashboard's single-valued ``$monitor``: Grafana regex-escapes a variable's value
#: only when it is multi-valued or has "All", so ``=~`` would read a name's ``.`` as any
#: character (``a.b`` also selecting monitor ``axb``); an exact match has no such reading
SEL_ONE = 'monitor="$monitor"'
GRID_WIDTH = 24
TAGS = ["collapse-monitor", "model-collapse", "mlops"]

STAGE_MAPPING: list[dict[str, Any]] = [
    {
        "type": "value",
        "options": {
            "0": {"index": 0, "text": "healthy", "color": "green"},
            "1": {"index": 1, "text": "early collapse", "color": "orange"},
            "2": {"index": 2, "text": "late collapse", "color": "red"},
        },
    }
]
STAGE_THRESHOLDS: list[dict[str, Any]] = [
    {"color": "green", "value": None},
    {"color": "orange", "value": 1},
    {"color": "red", "value": 2},
]

#: data link from a monitor's series on the overview to its detail dashboard
DETAIL_LINK: dict[str, Any] = {
    "targetBlank": False,
    "title": "Detail of ${__field.labels.monitor}",
    "url": f"/d/{DETAIL_UID}?var-monitor=${{__field.labels.monitor}}&${{__url_time_range}}",
}

# families shown on the detail dashboard, in order: (row title, keys)
DETAIL_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Classifier (frozen probe set)",
        (
            "rare_class_recall",
            "worst_class_recall",
            "head_class_recall",
            "accuracy",
            "balanced_accuracy",
            "rare_prediction_ratio",
            "rare_flips",
        ),
    ),
    (
        "Generator: coverage of the reference (embeddings)",
        (
            "tail_coverage",
            "head_coverage",
            "rare_mode_coverage",
            "rare_mode_mass",
            "precision",
            "recall",
            "density",
            "coverage",
            "tail_mass_ratio",
            "frechet_distance",
        ),
    ),
    ("Generator: diversity (embeddings)", ("vendi_ratio", "variance_ratio", "vendi_score", "effective_rank")),
    (
        "Text",
        ("rare_ngram_recall", "vocab_ratio", "ngram_entropy", "distinct_1", "distinct_2", "distinct_3", "distinct_4"),
    ),
    ("Run", ("synthetic_fraction",)),
)


# --- small helpers ------------------------------------------------------------------------------


def prom_name(key: str) -> str:
    """Prometheus name of a canonical key: ``collapse_monitor_`` + key with dots -> underscores."""
    return PREFIX + key.replace(".", "_")


def _by_monitor(name: str, extra: str = "", by: str = "monitor") -> str:
    sel = SEL + (", " + extra if extra else "")
    return f"max by ({by}) ({name}{{{sel}}})"


def _unit(spec: MetricSpec) -> str:
    if spec.unit == "ratio":
        return "percentunit" if spec.upper == 1.0 else "none"
    if spec.unit in ("items", "samples", "dimensions"):
        return "none"
    if spec.unit == "nats":
        return "suffix: nats"
    return "none"


_TITLES = {
    "frechet_distance": "Fréchet distance",
    "rare_ngram_recall": "Rare n-gram recall",
    "ngram_entropy": "N-gram entropy",
    "precision": "Precision (PRDC)",
    "recall": "Recall (PRDC)",
    "density": "Density (PRDC)",
    "coverage": "Coverage (PRDC)",
}


def _title(key: str) -> str:
    if key in _TITLES:
        return _TITLES[key]
    if key.startswith("distinct_"):
        return "Distinct-" + key.rsplit("_", 1)[1]
    return key.replace("_", " ").capitalize()


class _Grid:
    """Flow layout on Grafana's 24-column grid: panels fill a line left to right."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.line_height = 0

    def place(self, w: int, h: int) -> dict[str, int]:
        if w > GRID_WIDTH:
            raise ValueError(f"panel width {w} exceeds the {GRID_WIDTH}-column grid")
        if self.x + w > GRID_WIDTH:
            self.newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.line_height = max(self.line_height, h)
        return pos

    def newline(self) -> None:
        self.y += self.line_height
        self.x = 0
        self.line_height = 0

    def row(self) -> dict[str, int]:
        self.newline()
        pos = {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self.y}
        self.y += 1
        return pos


class _Board:
    """Accumulates panels with unique ids and non-overlapping positions."""

    def __init__(self) -> None:
        self.grid = _Grid()
        self.panels: list[dict[str, Any]] = []

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        self.panels.append(
            {
                "collapsed": False,
                "gridPos": self.grid.row(),
                "id": self._next_id(),
                "panels": [],
                "title": title,
                "type": "row",
            }
        )

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        panel = {"id": self._next_id(), "gridPos": self.grid.place(w, h), **panel}
        self.panels.append(panel)


def _target(expr: str, legend: str, ref: str, *, instant: bool = False, table: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
        "refId": ref,
    }
    if table:
        t["format"] = "table"
    return t


def _targets(pairs: Sequence[tuple[str, str]], *, instant: bool = False, table: bool = False) -> list[dict[str, Any]]:
    return [_target(e, leg, chr(ord("A") + i), instant=instant, table=table) for i, (e, leg) in enumerate(pairs)]


def _defaults(
    unit: str = "none",
    *,
    min: float | None = None,
    max: float | None = None,
    mappings: list[dict[str, Any]] | None = None,
    thresholds: list[dict[str, Any]] | None = None,
    custom: dict[str, Any] | None = None,
    color: dict[str, Any] | None = None,
    decimals: int | None = None,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "color": color or {"mode": "palette-classic"},
        "mappings": mappings or [],
        "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
        "unit": unit,
    }
    if min is not None:
        d["min"] = min
    if max is not None:
        d["max"] = max
    if decimals is not None:
        d["decimals"] = decimals
    if custom is not None:
        d["custom"] = custom
    return d


def _ts_custom(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "axisBorderShow": False,
        "axisCenteredZero": False,
        "axisColorMode": "text",
        "axisLabel": "",
        "axisPlacement": "auto",
        "barAlignment": 0,
        "drawStyle": "line",
        "fillOpacity": 0,
        "gradientMode": "none",
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "insertNulls": False,
        # a gauge holds its value until the next retrain: draw steps, not slopes
        "lineInterpolation": "stepAfter",
        "lineWidth": 2,
        "pointSize": 5,
        "scaleDistribution": {"type": "linear"},
        "showPoints": "never",
        "spanNulls": True,
        "stacking": {"group": "A", "mode": "none"},
        "thresholdsStyle": {"mode": "off"},
    }
    c.update(over)
    return c


def _timeseries(
    title: str,
    description: str,
    pairs: Sequence[tuple[str, str]],
    *,
    unit: str = "none",
    min: float | None = None,
    max: float | None = None,
    overrides: list[dict[str, Any]] | None = None,
    color: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "datasource": DS,
        "description": description,
        "fieldConfig": {
            "defaults": _defaults(unit, min=min, max=max, custom=custom or _ts_custom(), color=color),
            "overrides": overrides or [],
        },
        "options": {
            "legend": {"calcs": ["lastNotNull"], "displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "targets": _targets(pairs),
        "title": title,
        "type": "timeseries",
    }


def _stat(
    title: str,
    description: str,
    pairs: Sequence[tuple[str, str]],
    *,
    unit: str = "none",
    mappings: list[dict[str, Any]] | None = None,
    thresholds: list[dict[str, Any]] | None = None,
    min: float | None = None,
    max: float | None = None,
    decimals: int | None = None,
) -> dict[str, Any]:
    return {
        "datasource": DS,
        "description": description,
        "fieldConfig": {
            "defaults": _defaults(
                unit,
                min=min,
                max=max,
                mappings=mappings,
                thresholds=thresholds,
                color={"mode": "thresholds"},
                decimals=decimals,
            ),
            "overrides": [],
        },
        "options": {
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": "value_and_name",
            "wideLayout": True,
        },
        "targets": _targets(pairs, instant=True),
        "title": title,
        "type": "stat",
    }


# --- overview -----------------------------------------------------------------------------------


def _datasource_variable() -> dict[str, Any]:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def _query_variable(name: str, label: str, query: str, *, multi: bool, include_all: bool) -> dict[str, Any]:
    return {
        "current": {},
        "datasource": DS,
        "definition": query,
        "hide": 0,
        "includeAll": include_all,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,  # on time range change: new monitors appear without a reload
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }


def _dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    links: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": links,
        "panels": panels,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": list(TAGS),
        "templating": {"list": variables},
        "time": {"from": "now-7d", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def _link(title: str, uid: str, tooltip: str) -> dict[str, Any]:
    return {
        "asDropdown": False,
        "icon": "dashboard",
        "includeVars": True,
        "keepTime": True,
        "tags": [],
        "targetBlank": False,
        "title": title,
        "tooltip": tooltip,
        "type": "link",
        "url": f"/d/{uid}",
    }


def overview_dashboard() -> dict[str, Any]:
    """The fleet view: every monitor's stage, tails, diversity and alerts at a glance."""
    b = _Board()
    b.row("Now")
    b.add(
        _stat(
            "Stage",
            "Collapse stage of the latest generation: 0 healthy, 1 early collapse (tails lost while head "
            "metrics hold), 2 late collapse (diversity lost too).",
            [(_by_monitor(PREFIX + "stage"), "{{monitor}}")],
            mappings=STAGE_MAPPING,
            thresholds=STAGE_THRESHOLDS,
        ),
        6,
        5,
    )
    b.add(
        _stat(
            "Current generation",
            "Generation of the latest check (0 = the baseline trained on human data).",
            [(_by_monitor(PREFIX + "generation"), "{{monitor}}")],
            thresholds=[{"color": "blue", "value": None}],
            decimals=0,
        ),
        3,
        5,
    )
    b.add(
        _stat(
            "Time since last check",
            "Seconds since the monitor last checked a generation. A retrain pipeline that stopped "
            "checking looks healthy forever: set the thresholds to your retrain cadence.",
            [(f"time() - {_by_monitor(PREFIX + 'last_check_timestamp_seconds')}", "{{monitor}}")],
            unit="s",
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 86400},
                {"color": "red", "value": 172800},  # CollapseMonitorStale fires at 2 days
            ],
        ),
        4,
        5,
    )
    b.add(
        _stat(
            "Alerts firing",
            "Alert rules of the monitor that are firing now (collapse_monitor_alert_firing).",
            [
                (
                    # max by rule first: a monitor exported by both paths (Pushgateway and
                    # `serve`) has each rule's series twice, under two job labels
                    f"sum by (monitor) (max by (monitor, rule) ({PREFIX}alert_firing{{{SEL}}})) "
                    f"or {_by_monitor(PREFIX + 'stage')} * 0",
                    "{{monitor}}",
                )
            ],
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
            decimals=0,
        ),
        3,
        5,
    )
    b.add(
        _stat(
            "Synthetic fraction",
            "Share of the latest training mix that a model generated (from the check's Provenance).",
            [(_by_monitor(PREFIX + "synthetic_fraction"), "{{monitor}}")],
            unit="percentunit",
            min=0,
            max=1,
            # a check without Provenance exports NaN: "unknown", not a green "NaN" (an audit)
            mappings=[
                {
                    "type": "special",
                    "options": {"match": "nan", "result": {"index": 0, "text": "unknown", "color": "text"}},
                },
                {
                    "type": "special",
                    "options": {"match": "null", "result": {"index": 1, "text": "unknown", "color": "text"}},
                },
            ],
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 0.5},
                {"color": "red", "value": 0.9},
            ],
        ),
        4,
        5,
    )
    b.add(
        _stat(
            "Global drift",
            "1 when head and tail metrics fell alike while diversity held: a distribution shift, "
            "reported but not called collapse.",
            [(_by_monitor(PREFIX + "drift"), "{{monitor}}")],
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"index": 0, "text": "no drift", "color": "green"},
                        "1": {"index": 1, "text": "drift", "color": "orange"},
                    },
                }
            ],
            thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
        ),
        4,
        5,
    )

    b.row("Over the generations")
    b.add(
        {
            "datasource": DS,
            "description": "Stage of every monitor over time; early collapse shows before the aggregate numbers move.",
            "fieldConfig": {
                "defaults": _defaults(
                    mappings=STAGE_MAPPING,
                    thresholds=STAGE_THRESHOLDS,
                    color={"mode": "thresholds"},
                    custom={
                        "fillOpacity": 80,
                        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                        "insertNulls": False,
                        "lineWidth": 0,
                        "spanNulls": True,
                    },
                ),
                "overrides": [],
            },
            "options": {
                "alignValue": "left",
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "mergeValues": True,
                "rowHeight": 0.9,
                "showValue": "auto",
                "tooltip": {"mode": "single", "sort": "none"},
            },
            "targets": _targets([(_by_monitor(PREFIX + "stage"), "{{monitor}}")]),
            "title": "Collapse stage over time",
            "type": "state-timeline",
        },
        24,
        6,
    )
    b.add(
        _timeseries(
            "Tail vs head coverage",
            "PRDC coverage of the sparse tail of the reference (largest k-NN radii) against the dense head. "
            "Early collapse: the tail line falls while the head line holds (Shumailov et al. 2024).",
            [
                (_by_monitor(prom_name("tail_coverage")), "{{monitor}} tail"),
                (_by_monitor(prom_name("head_coverage")), "{{monitor}} head"),
                (_by_monitor(prom_name("rare_mode_coverage")), "{{monitor}} rare modes"),
            ],
            unit="percentunit",
            min=0,
            max=1,
        ),
        12,
        8,
    )
    b.add(
        _timeseries(
            "Rare-class recall vs worst class",
            "Macro recall over rare classes (prior < rare_threshold) and the worst single class, against "
            "the head classes' recall on the frozen probe set.",
            [
                (_by_monitor(prom_name("rare_class_recall")), "{{monitor}} rare classes"),
                (_by_monitor(prom_name("worst_class_recall")), "{{monitor}} worst class"),
                (_by_monitor(prom_name("head_class_recall")), "{{monitor}} head classes"),
            ],
            unit="percentunit",
            min=0,
            max=1,
        ),
        12,
        8,
    )
    b.add(
        _timeseries(
            "Diversity (ratio to the reference)",
            "Vendi score and total variance of the generated samples relative to the human reference "
            "(1 = as diverse as the reference). Late collapse: both fall.",
            [
                (_by_monitor(prom_name("vendi_ratio")), "{{monitor}} vendi ratio"),
                (_by_monitor(prom_name("variance_ratio")), "{{monitor}} variance ratio"),
            ],
            min=0,
            custom=_ts_custom(thresholdsStyle={"mode": "dashed"}),
            overrides=[],
        ),
        12,
        8,
    )
    b.panels[-1]["fieldConfig"]["defaults"]["thresholds"]["steps"] = [
        {"color": "transparent", "value": None},
        {"color": "text", "value": 1},
    ]
    b.add(
        {
            "datasource": DS,
            "description": "Current recall of each rare class (worst first). Per-class series exist only for "
            "rare classes, capped, to keep label cardinality low.",
            "fieldConfig": {
                "defaults": _defaults(
                    "percentunit",
                    min=0,
                    max=1,
                    color={"mode": "thresholds"},
                    thresholds=[
                        {"color": "red", "value": None},
                        {"color": "orange", "value": 0.5},
                        {"color": "green", "value": 0.8},
                    ],
                ),
                "overrides": [],
            },
            "options": {
                "displayMode": "gradient",
                "maxVizHeight": 300,
                "minVizHeight": 16,
                "minVizWidth": 8,
                "namePlacement": "auto",
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showUnfilled": True,
                "sizing": "auto",
                "valueMode": "color",
            },
            "targets": _targets(
                [(f"sort(min by (monitor, class) ({PREFIX}class_recall{{{SEL}}}))", "{{monitor}} class {{class}}")],
                instant=True,
            ),
            "title": "Rare classes: current recall",
            "type": "bargauge",
        },
        12,
        8,
    )
    b.add(
        _timeseries(
            "Synthetic fraction of the training mix",
            "Share of each generation's training data that a model generated (Provenance). Fully synthetic "
            "loops collapse; accumulating real data does not (Gerstgrasser et al. 2024).",
            [(_by_monitor(prom_name("synthetic_fraction")), "{{monitor}}")],
            unit="percentunit",
            min=0,
            max=1,
        ),
        12,
        8,
    )
    b.add(
        {
            "datasource": DS,
            "description": "Every alert rule the monitor has evaluated: 1 firing, 0 resolved.",
            "fieldConfig": {
                "defaults": _defaults(
                    mappings=[
                        {
                            "type": "value",
                            "options": {
                                "0": {"index": 0, "text": "resolved", "color": "green"},
                                "1": {"index": 1, "text": "FIRING", "color": "red"},
                            },
                        }
                    ],
                    color={"mode": "thresholds"},
                    thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
                    custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
                ),
                "overrides": [
                    {
                        "matcher": {"id": "byName", "options": "state"},
                        "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}}],
                    }
                ],
            },
            "options": {
                "cellHeight": "sm",
                "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
                "showHeader": True,
                "sortBy": [{"desc": True, "displayName": "state"}],
            },
            "targets": _targets(
                [(f"max by (monitor, rule, severity) ({PREFIX}alert_firing{{{SEL}}})", "")],
                instant=True,
                table=True,
            ),
            "transformations": [
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True}, "indexByName": {}, "renameByName": {"Value": "state"}},
                }
            ],
            "title": "Alert rules",
            "type": "table",
        },
        12,
        8,
    )
    for panel in b.panels:
        if any("by (monitor" in t["expr"] for t in panel.get("targets", [])):
            link = DETAIL_LINK
            if panel["type"] == "table":  # table rows carry labels as fields, not as field labels
                link = {
                    k: v.replace("__field.labels.", "__data.fields.") if isinstance(v, str) else v
                    for k, v in link.items()
                }
            panel["fieldConfig"]["defaults"]["links"] = [link]
    return _dashboard(
        OVERVIEW_UID,
        "Collapse monitor: overview",
        "Early warning for model collapse in recursive training: stage, tail coverage, rare-class recall, "
        "diversity and synthetic share per monitor (collapse-monitor).",
        b.panels,
        [
            _datasource_variable(),
            _query_variable(
                "monitor", "Monitor", f"label_values({PREFIX}stage, monitor)", multi=True, include_all=True
            ),
        ],
        [_link("Detail", DETAIL_UID, "Per-metric detail with 95% intervals for one monitor")],
    )


# --- detail -------------------------------------------------------------------------------------


def _ci_panel(key: str) -> dict[str, Any]:
    """A metric with its 95 % interval drawn as a band (fill from ci_high down to ci_low)."""
    spec = SPECS[key]
    name = prom_name(key)
    low, high = "95% CI low", "95% CI high"
    band = [
        {"id": "custom.lineWidth", "value": 0},
        {"id": "custom.hideFrom", "value": {"legend": True, "tooltip": False, "viz": False}},
        {"id": "color", "value": {"fixedColor": "blue", "mode": "fixed"}},
    ]
    overrides = [
        {"matcher": {"id": "byName", "options": low}, "properties": band},
        {
            "matcher": {"id": "byName", "options": high},
            "properties": [
                *band,
                {"id": "custom.fillBelowTo", "value": low},
                {"id": "custom.fillOpacity", "value": 20},
            ],
        },
    ]
    direction = {True: "Higher is better.", False: "Lower is better.", None: ""}[spec.higher_is_better]
    return _timeseries(
        _title(key),
        f"{spec.help} {direction} Band: 95% interval. Metric {name}.".replace("  ", " "),
        [
            (_by_monitor(name), key),
            (_by_monitor(name + "_ci_low"), low),
            (_by_monitor(name + "_ci_high"), high),
        ],
        unit=_unit(spec),
        min=spec.lower,
        max=spec.upper,
        overrides=overrides,
        color={"fixedColor": "blue", "mode": "fixed"},
    )


def _class_table(selector: str) -> dict[str, Any]:
    """Rare classes now: recall with its 95 % interval, one row per class, worst first."""
    name = PREFIX + "class_recall"
    return {
        "datasource": DS,
        "description": "Current recall of each rare class with its Wilson 95% interval, worst first.",
        "fieldConfig": {
            "defaults": _defaults(
                "percentunit",
                min=0,
                max=1,
                custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
            ),
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": "recall"},
                    "properties": [
                        {"id": "custom.cellOptions", "value": {"mode": "gradient", "type": "gauge"}},
                        {"id": "color", "value": {"mode": "continuous-RdYlGr"}},
                    ],
                }
            ],
        },
        "options": {
            "cellHeight": "sm",
            "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
            "showHeader": True,
            "sortBy": [{"desc": False, "displayName": "recall"}],
        },
        "targets": _targets(
            [
                (f"max by (class) ({name}{{{selector}}})", ""),
                (f"max by (class) ({name}_ci_low{{{selector}}})", ""),
                (f"max by (class) ({name}_ci_high{{{selector}}})", ""),
            ],
            instant=True,
            table=True,
        ),
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {"class": 0, "Value #A": 1, "Value #B": 2, "Value #C": 3},
                    "renameByName": {"Value #A": "recall", "Value #B": "95% CI low", "Value #C": "95% CI high"},
                },
            },
        ],
        "title": "Rare classes: recall with 95% interval",
        "type": "table",
    }


def detail_dashboard() -> dict[str, Any]:
    """One monitor in depth: every canonical metric with its interval, per-class recall, run facts."""
    b = _Board()
    b.row("Rare classes and run")
    cls = f'{SEL}, class=~"$class"'
    b.add(
        _timeseries(
            "Per-class recall (rare classes)",
            "Recall of each rare class on the frozen probe set. Only rare classes are exported, capped, so "
            "label cardinality stays small.",
            [(f"max by (class) ({PREFIX}class_recall{{{cls}}})", "class {{class}}")],
            unit="percentunit",
            min=0,
            max=1,
        ),
        12,
        8,
    )
    b.add(_class_table(cls), 12, 8)
    b.add(
        _timeseries(
            "Collapse stage and generation",
            "Stage: 0 healthy, 1 early collapse, 2 late collapse. Right axis: the generation of the latest "
            "check and the baseline generation it is compared against.",
            [
                (_by_monitor(PREFIX + "stage"), "stage"),
                (_by_monitor(PREFIX + "generation"), "generation"),
                (_by_monitor(PREFIX + "baseline_generation"), "baseline generation"),
            ],
            min=0,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": "generation|baseline generation"},
                    "properties": [
                        {"id": "custom.axisPlacement", "value": "right"},
                        {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
                        {"id": "decimals", "value": 0},
                    ],
                },
                {
                    "matcher": {"id": "byName", "options": "stage"},
                    "properties": [{"id": "max", "value": 2}, {"id": "mappings", "value": STAGE_MAPPING}],
                },
            ],
        ),
        12,
        7,
    )
    b.add(
        _timeseries(
            "Check duration",
            "Wall time of one check (metrics, detection, sinks), in seconds.",
            [(_by_monitor(PREFIX + "check_duration_seconds"), "check duration")],
            unit="s",
            min=0,
        ),
        12,
        7,
    )
    for title, keys in DETAIL_SECTIONS:
        b.row(title)
        if title == "Text":
            b.add(
                _timeseries(
                    "Distinct-n",
                    "Unique / total n-grams at a fixed token budget (Li et al. 2016); falls as text homogenises.",
                    [(_by_monitor(prom_name(f"distinct_{n}")), f"distinct-{n}") for n in (1, 2, 3, 4)],
                    unit="percentunit",
                    min=0,
                    max=1,
                ),
                8,
                8,
            )
        for key in keys:
            if key in EXCLUDED_KEYS:
                continue
            b.add(_ci_panel(key), 8, 8)
    board = _dashboard(
        DETAIL_UID,
        "Collapse monitor: detail",
        "Every canonical collapse-monitor metric of one monitor with its 95% interval (collapse-monitor).",
        b.panels,
        [
            _datasource_variable(),
            _query_variable(
                "monitor", "Monitor", f"label_values({PREFIX}stage, monitor)", multi=False, include_all=False
            ),
            _query_variable(
                "class",
                "Rare class",
                f"label_values({PREFIX}class_recall{{{SEL}}}, class)",
                multi=True,
                include_all=True,
            ),
        ],
        [_link("Overview", OVERVIEW_UID, "All monitors at a glance")],
    )
    return _single_monitor(board)


def _single_monitor(board: dict[str, Any]) -> dict[str, Any]:
    """Match the single-valued ``$monitor`` exactly in every query (``SEL_ONE``)."""
    for panel in iter_panels(board):
        for t in panel.get("targets", []):
            t["expr"] = t["expr"].replace(SEL, SEL_ONE)
    for var in board["templating"]["list"]:
        if var.get("type") == "query":
            var["definition"] = var["definition"].replace(SEL, SEL_ONE)
            var["query"]["query"] = var["query"]["query"].replace(SEL, SEL_ONE)
    return board


# --- files --------------------------------------------------------------------------------------


def build_dashboards() -> dict[str, dict[str, Any]]:
    """``{file name: dashboard JSON model}`` of every dashboard."""
    return {f"{OVERVIEW_UID}.json": overview_dashboard(), f"{DETAIL_UID}.json": detail_dashboard()}


def provisioning_files(
    *, prometheus_url: str = PROMETHEUS_URL, dashboards_path: str = DASHBOARDS_PATH
) -> dict[str, str]:
    """Grafana provisioning YAML: ``{relative path: text}``.

    ``prometheus_url`` is where Grafana's server reaches Prometheus; ``dashboards_path`` the
    folder *inside Grafana* that holds the dashboard JSON files.
    """
    datasource = f"""\
# Grafana datasource provisioning (generated by `collapse-monitor dashboards export`).
# The dashboards pick any Prometheus datasource through their `datasource` variable.
apiVersion: 1
datasources:
  - name: Prometheus
    type: prometheus
    uid: prometheus
    access: proxy
    url: {prometheus_url}
    isDefault: true
    editable: false
    jsonData:
      timeInterval: 15s
"""
    dashboards = f"""\
# Grafana dashboard provisioning (generated by `collapse-monitor dashboards export`).
apiVersion: 1
providers:
  - name: collapse-monitor
    orgId: 1
    folder: Collapse monitor
    type: file
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: {dashboards_path}
      foldersFromFilesStructure: false
"""
    return {
        "provisioning/datasources/collapse-monitor.yaml": datasource,
        "provisioning/dashboards/collapse-monitor.yaml": dashboards,
    }


def render_files(*, prometheus_url: str = PROMETHEUS_URL, dashboards_path: str = DASHBOARDS_PATH) -> dict[str, str]:
    """Everything :func:`export_dashboards` writes, as ``{relative path: text}`` (deterministic)."""
    files = {name: json.dumps(board, indent=2, ensure_ascii=False) + "\n" for name, board in build_dashboards().items()}
    files.update(provisioning_files(prometheus_url=prometheus_url, dashboards_path=dashboards_path))
    return files


def export_dashboards(
    out_dir: str | os.PathLike[str],
    *,
    prometheus_url: str = PROMETHEUS_URL,
    dashboards_path: str = DASHBOARDS_PATH,
    force: bool = False,
) -> list[Path]:
    """Write the dashboards (``*.json``) and ``provisioning/`` YAML into ``out_dir``.

    Returns the paths. Generated at runtime from this module, never read from the repository,
    so an installed package exports the same files as the committed ``dashboards/``. A file
    that exists with other content (a dashboard edited in place) is not overwritten without
    ``force``: :class:`ConfigError` names every such file and nothing is written.
    """
    return [path for path, _ in _export(out_dir, prometheus_url, dashboards_path, force)]


def _export(out_dir: Any, prometheus_url: str, dashboards_path: str, force: bool) -> list[tuple[Path, str]]:
    from .deploy import write_guarded

    files = render_files(prometheus_url=prometheus_url, dashboards_path=dashboards_path)
    return write_guarded(Path(out_dir), {rel: text.encode("utf-8") for rel, text in files.items()}, force=force)


def dashboards_export_command(out_dir: str | os.PathLike[str], console: Any = None, *, force: bool = False) -> int:
    """``collapse-monitor dashboards export DIR [--force]``: write the files and say how to use them."""
    from .render import error_console

    err = error_console(console)
    if console is None:
        from rich.console import Console

        console = Console()
    try:
        done = _export(out_dir, PROMETHEUS_URL, DASHBOARDS_PATH, force)
    except OSError as exc:
        err.print(f"[red]collapse-monitor: cannot write dashboards to {out_dir}: {exc}[/]")
        return 2  # a usage error, as everywhere else in the CLI
    for path, state in done:
        console.print(f"{state} {path}")
    console.print(
        f"Grafana: mount {Path(out_dir) / 'provisioning'} subfolders under /etc/grafana/provisioning/ and the "
        f"JSON files at {DASHBOARDS_PATH} (see docker/compose.yaml), or import the JSON files in the UI "
        "(Dashboards > New > Import) and pick your Prometheus datasource."
    )
    return 0


# --- introspection (tests, docs) ------------------------------------------------------------------

_NAME_RE = re.compile(r"\bcollapse_monitor_[a-zA-Z0-9_]+")


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including panels nested in collapsed rows."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


def panel_queries(dashboard: Mapping[str, Any]) -> list[str]:
    """PromQL of every panel target, in panel order."""
    return [t["expr"] for p in iter_panels(dashboard) for t in p.get("targets", []) if t.get("expr")]


def metric_names(exprs: Iterable[str] | str) -> set[str]:
    """``collapse_monitor_*`` metric names used in PromQL expression(s)."""
    if isinstance(exprs, str):
        exprs = [exprs]
    return {m for e in exprs for m in _NAME_RE.findall(e)}
