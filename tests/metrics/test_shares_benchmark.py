"""benchmarks/shares.py: its case runner and page, on a small case."""

from __future__ import annotations

import json

import numpy as np
from benchmark_scripts import load_benchmark


def test_shares_benchmark_reports_both_intervals_and_tests(tmp_path, monkeypatch) -> None:
    bench = load_benchmark("shares")
    monkeypatch.setattr(bench, "CASES", (("tiny", "mixture", 8, 200, 400, 12),))
    assert bench.main(["--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "shares.json").read_text())
    assert row["samples"] == 12 and row["d"] == 8
    for key in bench.SHARES:
        assert 0.0 <= row[key]["plain"] <= 1.0 and 0.0 <= row[key]["scaled"] <= 1.0
        assert row[key]["deff_median"] >= 1.0
        # the panel's interval is never narrower than the plain Wilson on the same count
        assert row[key]["scaled"] >= row[key]["plain"]
    for key in bench.PAIRED:
        assert row[key]["null_pairs"] == 6
        assert all(s <= p for s, p in zip(row[key]["scaled_rejects"], row[key]["plain_rejects"], strict=True))
    page = (tmp_path / "shares.md").read_text()
    assert "| tiny (m=200, n=400, 12 samples) | `tail_coverage` |" in page


def test_rows_are_the_documented_distributions() -> None:
    bench = load_benchmark("shares")
    x = bench.rows("power", 4, 20_000, 1).astype(np.float64)
    np.testing.assert_allclose(x.var(axis=0), np.arange(1, 5) ** -1.0, rtol=0.05)
    y = bench.rows("mixture", 3, 20_000, 1)
    assert 0.03 < np.mean(y.mean(axis=1) > 3.0) < 0.05
