"""benchmarks/speed.py: a k-NN case's wall is split into the seconds inside ``torch.mm`` (the
distance products) and the rest, and the report shows both next to the bound."""

from __future__ import annotations

import pytest
import torch
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("speed")


def test_product_timer_counts_torch_mm_and_restores_it(bench) -> None:
    original = torch.mm
    a = torch.randn(256, 64)
    with bench.ProductTimer() as timer:
        assert torch.mm is not original
        torch.mm(a, a.T)
        after_one = timer.seconds
        torch.mm(a, a.T)
    assert torch.mm is original
    assert 0.0 < after_one < timer.seconds
    total = timer.seconds
    torch.mm(a, a.T)  # not counted once the context is closed
    assert timer.seconds == total


def test_product_timer_restores_torch_mm_on_error(bench) -> None:
    original = torch.mm
    with pytest.raises(RuntimeError), bench.ProductTimer():
        torch.mm(torch.ones(2, 3), torch.ones(2, 3))  # shapes do not match
    assert torch.mm is original


def test_a_knn_case_records_its_product_seconds_and_renders_them(bench) -> None:
    row = bench.run_case("ours_prdc", 400, {})
    # every distance block of the exact engine is one torch.mm: some time, never above the wall
    assert 0.0 < row["product_seconds"] <= row["wall"]
    assert row["bound"] > 0.0
    report = {
        "meta": {
            "started": "now",
            "cpus": 2,
            "python": "3.11",
            "load_before": ["0"] * 3,
            "load_after": ["0"] * 3,
            "total_seconds": 1.0,
        },
        "rows": [row],
        "approx": [],
        "monitor_twice": {},
        "text": {},
        "check_overhead": {},
        "import": {"importtime_cumulative": 0.1, "wall_minus_bare_python": 0.1, "heavy_modules_loaded": "[]"},
    }
    text = bench.render(report)
    line = next(x for x in text.splitlines() if x.startswith("| 400 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[5] == f"{row['product_seconds']:.2f} ({row['product_seconds'] / row['bound']:.2f})"
    assert cells[6] == f"{row['wall'] - row['product_seconds']:.2f}"
