"""User strings reach the terminal tables, the charts and the HTML report as they are: class
labels with brackets (``[unk]``, ``[/s]``), ``$`` or a leading ``_``, chain names that are not
file names, and aggregates that are missing. Each of these used to drop the label, raise after
the check had been logged, or write outside the output folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import collapse_monitor as cm
from collapse_monitor.render import history_table, report_table
from collapse_monitor.report_html import plot_history, plot_trend, write_report

LABELS = np.array(["a", "[unk]", "[/s]", "b", "$x_$", "_pad"] * 30)


@pytest.fixture()
def reports(tmp_path: Path) -> list[cm.Report]:
    mon = cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path / "home")
    first = mon.check(cm.Observation(predictions=LABELS))
    pred = LABELS.copy()
    pred[1::6] = "a"  # every "[unk]" item lost
    return [first, mon.check(cm.Observation(predictions=pred))]


def test_bracketed_labels_print_literally(reports: list[cm.Report]) -> None:
    con = Console(record=True, width=200, color_system=None)
    con.print(report_table(reports[-1]))  # MarkupError: closing tag '[/s]' ...
    keys = ["class_recall.[unk]", "class_recall.[/s]", "class_recall.$x_$"]
    con.print(history_table(reports, keys, title="[chain]"))
    text = con.export_text()
    for label in ("class_recall.[unk]", "class_recall.[/s]", "class_recall.$x_$", "class_recall._pad", "[chain]"):
        assert label in text, (label, text)  # "[unk]" used to vanish: "class_recall."
    assert "0.000↓" in text  # the lost class is still shown as a significant decline


def test_charts_and_report_take_odd_names_and_missing_aggregates(reports: list[cm.Report], tmp_path: Path) -> None:
    out = tmp_path / "out"
    aggs = [{"loss": 0.9}, {"loss": None}]  # None: an aggregate the job did not compute
    chains = {"replace": (reports, aggs), "../escape": (reports, aggs), "a/b": (reports, aggs), "_x": (reports, aggs)}
    keys = ["loss", "class_recall.$x_$", "class_recall.[unk]"]
    html = write_report(out, chains, title="odd $names$", keys=keys).read_text()
    assert not (tmp_path / "escape.png").exists() and not list(tmp_path.glob("*.png"))  # nothing outside out/
    names = sorted(p.name for p in out.iterdir())
    assert names == ["chain-1.png", "chain-2.png", "chain-3.png", "metrics.png", "replace.png", "report.html"], names
    assert "../escape loop" in html and "a/b loop" in html  # shown under their own names
    assert "<td>0.900</td>" in html and "<td>-</td>" in html
    con = Console(record=True, width=200, color_system=None)
    con.print(history_table(reports, ["loss"], aggregates=aggs))
    assert "0.900" in con.export_text()
    # no keys at all: an empty chart, not a ZeroDivisionError
    assert plot_history({"replace": reports}, [], tmp_path / "empty.png").stat().st_size > 0
    assert plot_trend(reports, ["class_recall.$x_$", "class_recall._pad"], tmp_path / "t.png").stat().st_size > 0


def test_control_characters_in_labels_are_shown_as_escapes(tmp_path: Path) -> None:
    """A class label with an ESC sequence (from a labels file) reached the terminal raw:
    colour changes, a clear-screen, an unterminated hyperlink (an audit)."""
    labels = np.array(["a", "x\x1b[41mEVIL\x1b[0m", "b\u202eRTL", "c"] * 30)
    mon = cm.CollapseMonitor("ctl", reference=cm.Reference(labels=labels), sinks=[], home=tmp_path)
    report = mon.check(cm.Observation(predictions=labels))
    con = Console(record=True, width=200, color_system=None, force_terminal=False)
    con.print(report_table(report))
    text = con.export_text()
    assert "\x1b" not in text and "\u202e" not in text
    assert "class_recall.x\\x1b[41mEVIL\\x1b[0m" in text and "class_recall.b\\u202eRTL" in text


def test_the_html_declines_put_the_strongest_first_and_say_how_many_more(tmp_path: Path) -> None:
    """Sorted by name and cut at six, class recalls pushed rare_class_recall out of the cell
    without a word (an audit)."""
    labels = np.array([f"c{i}" for i in range(8)] * 14 + ["big"] * 2000)
    mon = cm.CollapseMonitor("many", reference=cm.Reference(labels=labels), sinks=[], home=tmp_path / "h")
    first = mon.check(cm.Observation(predictions=labels))
    lost = mon.check(cm.Observation(predictions=np.array(["big"] * labels.size)))
    assert len({f.key for f in lost.declines}) > 6
    html = write_report(tmp_path / "out", {"replace": ([first, lost], [])}, title="t", keys=["accuracy"]).read_text()
    (cell,) = re.findall(r"<td>((?:class_recall|rare_class_recall)[^<]*)</td>", html)
    shown = cell.split(" (+")[0].split(", ")
    assert shown[0] == lost.declines[0].key and len(shown) == 6
    assert cell.endswith(f"(+{len({f.key for f in lost.declines}) - 6} more)")


def test_more_aggregates_than_reports_do_not_break_the_chart(reports: list[cm.Report], tmp_path: Path) -> None:
    aggs = [{"loss": 0.9}] * 5  # more aggregate rows than checks (ValueError before)
    assert plot_history({"replace": reports}, ["loss"], tmp_path / "a.png", aggregates={"replace": aggs}).is_file()
