"""The Grafana dashboards as JSON: what Grafana's provisioning needs, and that the committed files
are exactly what the builder generates (no hand edits drift from the code)."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import collapse_monitor as cm
from collapse_monitor import dashboards as D

REPO = Path(__file__).resolve().parents[2]
BOARDS = D.build_dashboards()


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return list(D.iter_panels(board))


def test_committed_files_are_what_the_builder_generates(tmp_path: Path) -> None:
    written = D.export_dashboards(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == set(D.render_files())
    for path in written:
        rel = path.relative_to(tmp_path)
        committed = REPO / "dashboards" / rel
        assert committed.is_file(), (
            f"dashboards/{rel} is not committed: run `collapse-monitor dashboards export dashboards`"
        )
        assert committed.read_bytes() == path.read_bytes(), (
            f"dashboards/{rel} differs from the builder's output: regenerate it with "
            "`collapse-monitor dashboards export dashboards`"
        )
    # nothing stale: every committed JSON / provisioning file is generated
    committed_files = {
        p.relative_to(REPO / "dashboards").as_posix()
        for p in (REPO / "dashboards").rglob("*")
        if p.is_file() and p.suffix in (".json", ".yaml", ".yml")
    }
    assert committed_files == set(D.render_files())


@pytest.mark.parametrize("hash_seed", ["1", "2"])
def test_generation_is_deterministic(hash_seed: str) -> None:
    """The same bytes from another process with another string-hash seed (set iteration order):
    two calls in this process would agree even when the output followed a set's order."""
    import os
    import subprocess
    import sys

    code = "import json, sys; from collapse_monitor import dashboards as D; json.dump(D.render_files(), sys.stdout)"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert json.loads(out) == D.render_files()


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_has_what_grafana_provisioning_needs(name: str) -> None:
    board = BOARDS[name]
    text = json.dumps(board)
    assert "__inputs" not in board and "${DS_" not in text
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["id"] is None
    assert board["uid"] and len(board["uid"]) <= 40
    assert name == f"{board['uid']}.json"
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    monitor = variables["monitor"]
    assert monitor["type"] == "query"
    assert monitor["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert monitor["definition"] == "label_values(collapse_monitor_stage, monitor)"
    # Grafana regex-escapes only a multi-valued / "All" variable: a single-valued one is matched
    # exactly, or a name's "." would match any character
    scoped = 'monitor=~"$monitor"' if monitor["multi"] or monitor["includeAll"] else 'monitor="$monitor"'
    assert 'monitor=~"$monitor"' not in text if scoped == 'monitor="$monitor"' else True
    for panel in _panels(board):
        assert panel["title"], panel
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert t["expr"].strip()
            # every series selector is scoped to the chosen monitor(s)
            assert scoped in t["expr"], (panel["title"], t["expr"])


def test_overview_variables_and_panels() -> None:
    board = BOARDS["collapse-monitor-overview.json"]
    monitor = next(v for v in board["templating"]["list"] if v["name"] == "monitor")
    assert monitor["multi"] is True and monitor["includeAll"] is True
    titles = [p["title"] for p in _panels(board)]
    for wanted in (
        "Stage",
        "Current generation",
        "Time since last check",
        "Alerts firing",
        "Collapse stage over time",
        "Tail vs head coverage",
        "Rare-class recall vs worst class",
        "Diversity (ratio to the reference)",
        "Synthetic fraction of the training mix",
        "Alert rules",
    ):
        assert wanted in titles
    names = D.metric_names(D.panel_queries(board))
    for name in (
        "tail_coverage",
        "head_coverage",
        "rare_class_recall",
        "worst_class_recall",
        "vendi_ratio",
        "variance_ratio",
        "synthetic_fraction",
        "alert_firing",
        "last_check_timestamp_seconds",
        "stage",
        "generation",
    ):
        assert "collapse_monitor_" + name in names


def test_detail_has_ci_bands_class_recall_text_and_duration() -> None:
    board = BOARDS["collapse-monitor-detail.json"]
    names = D.metric_names(D.panel_queries(board))
    assert "collapse_monitor_class_recall" in names
    assert "collapse_monitor_check_duration_seconds" in names
    for key in ("distinct_1", "distinct_4", "ngram_entropy", "vocab_ratio", "rare_ngram_recall"):
        assert "collapse_monitor_" + key in names
    banded = 0
    for panel in _panels(board):
        overrides = panel.get("fieldConfig", {}).get("overrides", [])
        fills = [p for o in overrides for p in o["properties"] if p["id"] == "custom.fillBelowTo"]
        if not fills:
            continue
        banded += 1
        legends = {t["legendFormat"] for t in panel["targets"]}
        # the band fills from the ci_high series down to the ci_low series, both on the panel
        assert fills[0]["value"] in legends
        exprs = " ".join(t["expr"] for t in panel["targets"])
        assert "_ci_low{" in exprs and "_ci_high{" in exprs
    for key in ("tail_coverage", "rare_class_recall", "vendi_ratio", "variance_ratio", "rare_ngram_recall"):
        assert "collapse_monitor_" + key + "_ci_low" in names
    assert banded >= 20


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_unique_panel_ids_and_non_overlapping_grid(name: str) -> None:
    panels = _panels(BOARDS[name])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        assert g["y"] >= 0 and g["h"] >= 1 and g["w"] >= 1
        boxes.append((g["x"], g["y"], g["w"], g["h"], p["title"]))
    for a, b in itertools.combinations(boxes, 2):
        overlap_x = a[0] < b[0] + b[2] and b[0] < a[0] + a[2]
        overlap_y = a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
        assert not (overlap_x and overlap_y), f"{a[4]!r} overlaps {b[4]!r}"


def test_uids_unique_across_dashboards() -> None:
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(uids) == len(set(uids))
    for board in BOARDS.values():
        for link in board["links"]:
            assert link["url"].removeprefix("/d/") in uids


def test_grid_rejects_too_wide_panels() -> None:
    grid = D._Grid()
    with pytest.raises(ValueError):
        grid.place(25, 4)


def test_provisioning_yaml() -> None:
    files = D.provisioning_files(prometheus_url="http://prom.example:9090", dashboards_path="/var/dash")
    ds = yaml.safe_load(files["provisioning/datasources/collapse-monitor.yaml"])
    (source,) = ds["datasources"]
    assert ds["apiVersion"] == 1
    assert (source["type"], source["url"], source["access"]) == ("prometheus", "http://prom.example:9090", "proxy")
    prov = yaml.safe_load(files["provisioning/dashboards/collapse-monitor.yaml"])
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/dash"


def test_export_command_writes_files_and_returns_zero(tmp_path: Path) -> None:
    from rich.console import Console

    buf = io.StringIO()
    code = D.dashboards_export_command(tmp_path / "out", console=Console(file=buf, width=200))
    assert code == 0
    for rel in D.render_files():
        assert (tmp_path / "out" / rel).is_file()
    assert "collapse-monitor-overview.json" in buf.getvalue()


def test_export_command_reports_unwritable_dir(tmp_path: Path) -> None:
    from rich.console import Console

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    buf = io.StringIO()
    assert D.dashboards_export_command(blocker / "out", console=Console(file=buf, width=200)) == 2
    assert "cannot write dashboards" in buf.getvalue()


def test_export_leaves_an_edited_dashboard_alone_without_force(tmp_path: Path) -> None:
    """CLI audit (2026-12-06): ``dashboards export`` overwrote a dashboard edited in place
    (``integrations export`` refused); it refuses now, naming the file, and ``--force`` replaces."""
    from collapse_monitor.cli import main

    out = tmp_path / "dash"
    assert main(["dashboards", "export", str(out)]) == 0
    edited = out / "collapse-monitor-overview.json"
    edited.write_text('{"edited": true}')
    assert main(["dashboards", "export", str(out)]) == 2
    assert edited.read_text() == '{"edited": true}'
    with pytest.raises(cm.ConfigError) as info:
        D.export_dashboards(out)
    assert str(edited) in str(info.value) and "--force" in str(info.value)
    assert main(["dashboards", "export", str(out), "--force"]) == 0
    assert edited.read_text() == D.render_files()["collapse-monitor-overview.json"]
    assert main(["dashboards", "export", str(out)]) == 0  # unchanged files are fine


def test_cli_dashboards_export(tmp_path: Path) -> None:
    from collapse_monitor.cli import main

    assert main(["dashboards", "export", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "collapse-monitor-overview.json").is_file()


def test_dashboards_module_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, collapse_monitor.dashboards as d; d.build_dashboards(); "
        "heavy = [m for m in ('torch', 'mlflow', 'evidently', 'prometheus_client', 'sklearn') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_an_unknown_synthetic_fraction_reads_unknown() -> None:
    """A check without Provenance exports NaN; the stat panel showed a green "NaN" (an audit)."""
    board = BOARDS["collapse-monitor-overview.json"]
    (panel,) = [p for p in _panels(board) if p["title"] == "Synthetic fraction"]
    special = {
        m["options"]["match"]: m["options"]["result"]["text"] for m in panel["fieldConfig"]["defaults"]["mappings"]
    }
    assert special == {"nan": "unknown", "null": "unknown"}
