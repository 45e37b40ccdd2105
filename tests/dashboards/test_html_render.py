"""The HTML report renders in a real browser (headless Chromium): charts present and drawn, no
console errors, a non-trivial screenshot.

Two sources: ``collapse_monitor.report_html.write_report`` on reports of a real monitor chain,
and the full ``collapse-monitor demo --generations 3 --out DIR`` CLI (the demo's report.html).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WIDTH, HEIGHT = 1280, 2000


def _chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(tmp)},
    )


def assert_renders(chromium: str, html: Path, tmp: Path) -> None:
    """Screenshot ``html`` and dump its DOM; fail on console errors, missing or undrawn charts."""
    from PIL import Image

    url = html.resolve().as_uri()
    png = tmp / "screenshot.png"
    shot = _chromium(
        chromium, tmp, "--enable-logging=stderr", "--v=0", f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", url
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    console = [line for line in shot.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, "console messages while rendering the report:\n" + "\n".join(console)
    failed = [line for line in shot.stderr.splitlines() if "Failed to load resource" in line or "net::ERR_" in line]
    assert not failed, "resources failed to load:\n" + "\n".join(failed)

    dom = _chromium(chromium, tmp, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-3000:]
    charts = re.findall(r'<img[^>]+src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', dom.stdout)
    assert len(charts) >= 2, "expected the embedded PNG charts in the rendered DOM"
    assert "<table" in dom.stdout

    import numpy as np

    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int32)
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    non_white = float((pixels.min(axis=2) < 235).mean())
    assert non_white > 0.03, f"the screenshot is almost blank ({non_white:.1%} non-white)"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 100, f"the screenshot has {colours} colours: too few to hold charts"
    # matplotlib's first series colour (C0 #1f77b4) is painted: the charts decoded and drew
    c0 = int((np.abs(pixels - np.array([31, 119, 180])).max(axis=2) < 40).sum())
    assert c0 > 500, f"no chart lines in the screenshot ({c0} pixels of the series colour)"


def test_report_html_renders(chromium: str, chain_reports: list[Any], tmp_path: Path) -> None:
    from collapse_monitor.report_html import write_report

    html = write_report(
        tmp_path / "out",
        {"replace": (chain_reports, [{} for _ in chain_reports])},
        title="collapse-monitor report <test & render>",
        keys=["tail_coverage", "rare_class_recall", "vendi_ratio", "distinct_2"],
    )
    assert html.name == "report.html"
    assert_renders(chromium, html, tmp_path)


# Depends on `collapse-monitor demo` (the lead's demo: scenarios in collapse_monitor/simulate and
# the HTML report in the output folder). Runs the real CLI in a subprocess, without MLflow.
def test_demo_report_renders(chromium: str, tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    cli = Path(sys.executable).parent / "collapse-monitor"
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "collapse_monitor.cli"]
    result = subprocess.run(
        [*cmd, "demo", "--generations", "3", "--out", str(out), "--no-mlflow"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "160", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        check=False,
    )
    assert result.returncode == 0, f"collapse-monitor demo failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    html = out / "report.html"
    assert html.is_file(), f"the demo wrote no report.html into {out}: {sorted(p.name for p in out.iterdir())}"
    assert_renders(chromium, html, tmp_path)


@pytest.mark.parametrize("body", ["<script>console.error('boom')</script>", "<script>missing()</script>"])
def test_console_errors_are_caught(chromium: str, tmp_path: Path, body: str) -> None:
    """The checker itself fails on a page with console errors (it is not vacuous)."""
    page = tmp_path / "bad.html"
    page.write_text(f"<!doctype html><html><body><h1>x</h1>{body}</body></html>")
    with pytest.raises(AssertionError, match="console messages"):
        assert_renders(chromium, page, tmp_path)
