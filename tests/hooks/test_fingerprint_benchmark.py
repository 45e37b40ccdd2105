"""benchmarks/fingerprint.py runs end to end on a small model, and its reference (the sampled
fingerprint before stop 37) is what the row says: blind to one element it does not read."""

from __future__ import annotations

from benchmark_scripts import load_benchmark


def test_the_benchmark_compares_both_fingerprints_on_one_small_model() -> None:
    bench = load_benchmark("fingerprint")
    rows = bench.run([0.05], repeat=1)
    (row,) = rows
    assert row["params"] == 1024 * 1024 + 1024  # one square layer
    assert row["full"]["sees"] and not row["sampled"]["sees"]  # the defect the full pass fixes
    assert row["full"]["stable"] and row["sampled"]["stable"]
    assert row["full"]["seconds"] > 0 and row["sampled"]["seconds"] > 0
    table = bench.markdown(rows, {"machine": "test", "torch": "x", "threads": 1, "repeat": 1})
    assert "| 1.0 M |" in table and "| no / yes |" in table
