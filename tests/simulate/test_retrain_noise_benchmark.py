"""benchmarks/retrain_noise.py: discordant pairs and their dispersion, checked against an
independent computation (scipy's exact binomial test, the scenario's own predictions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from benchmark_scripts import load_benchmark
from scipy import stats


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("retrain_noise")


@pytest.fixture(scope="module")
def selftrain_row(bench):
    return bench.run_chain(("selftrain", 0, 4))


def test_discordant_counts_each_direction() -> None:
    from collapse_monitor.detection import discordant

    base = np.array([1, 1, 1, 0, 0, 1, 0])
    cur = np.array([0, 1, 0, 1, 0, 0, 0])
    assert discordant(cur, base, np.ones(7, bool)) == (3, 1)
    mask = np.array([True, True, False, True, False, False, False])
    assert discordant(cur, base, mask) == (1, 1)


def test_dispersion_matches_scipy(bench) -> None:
    rng = np.random.default_rng(3)
    pairs = [(int(b), int(c)) for b, c in rng.integers(0, 30, size=(40, 2))] + [(0, 0), (12, 0), (0, 9)]
    d = bench.dispersion(pairs)
    used = [(b - c) ** 2 / (b + c) for b, c in pairs if b + c]
    assert d["phi"] == pytest.approx(sum(used) / len(used), abs=1e-3)
    below = sum(stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue < bench.LEVEL for b, c in pairs if b + c)
    assert d["share_p_below_level"] == pytest.approx(below / len(pairs), abs=1e-4)
    assert d["comparisons"] == len(pairs)
    assert math.isnan(bench.dispersion([(0, 0)])["phi"])


def test_stable_chain_pairs_equal_the_scenarios_own_predictions(bench, selftrain_row) -> None:
    from collapse_monitor.simulate import make_scenario

    sc = make_scenario("selftrain", loop="stable", seed=0)
    labels = np.asarray(sc.reference.labels)
    gens = sc.run(4)
    right = [np.asarray(g.observation.predictions) == labels for g in gens]
    rare = labels == 4  # the 1 % class
    # counted here without the library: (right at gen 0, wrong now), (wrong at gen 0, right now)
    expected = [(int(np.sum(right[0][rare] & ~r[rare])), int(np.sum(~right[0][rare] & r[rare]))) for r in right[1:]]
    assert [tuple(p) for p in selftrain_row["pairs"]["rare_class_recall"]] == expected
    assert len(selftrain_row["stages"]) == 4
    assert selftrain_row["stages"][0] == "healthy"  # generation 0 is the baseline
    # the monitor's own test on these items: probe items are independent, so it is the exact
    # McNemar test on the same counts (the coverage shares' would be scaled by design effects)
    from collapse_monitor.metrics.stats import mcnemar_exact

    want = [mcnemar_exact(b, c) for b, c in expected]
    assert selftrain_row["monitor_p"]["rare_class_recall"] == pytest.approx(want)


def test_summary_tables(bench, selftrain_row) -> None:
    table, summary = bench.summarise([selftrain_row])
    assert "| selftrain | " in table
    assert "rare_class_recall" in table
    assert "class_recall.4" not in table  # per-class rows are summarised by rare / worst
    s = summary["selftrain"]
    assert s["checks"] == 3 and s["chains"] == 1
    assert s["false_alarm_checks"] == sum(st != "healthy" for st in selftrain_row["stages"])
    assert s["dispersion"]["rare_class_recall"]["comparisons"] == 3
    assert "the monitor's paired test p < 0.005" in table
    assert s["dispersion"]["rare_class_recall"]["monitor_share_p_below_level"] >= 0.0


def test_replicate_baselines_remove_the_lucky_baseline_false_alarm(bench) -> None:
    """The one false alarm of the committed run (digits seed 5, generation 2: the rare digit's
    recall 0.714 against a lucky 0.886) is retrain noise; with two replicate retrains of
    generation 0 in the baseline (0.686 and 0.714) it is gone, and the flips counted against
    generation 0 are the same."""
    lone = bench.run_chain(("digits", 5, 3))
    assert lone["stages"][2] == "early_collapse"
    assert lone["fired"][0]["findings"][0][2:4] == [pytest.approx(0.714, abs=1e-3), pytest.approx(0.886, abs=1e-3)]
    rep = bench.run_chain(("digits", 5, 3, 2))
    assert rep["stages"] == ["healthy"] * 3 and rep["replicates"] == 2
    assert rep["pairs"] == lone["pairs"]
