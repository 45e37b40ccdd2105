"""benchmarks/detection.py --rejudge: a saved run judged again under other rules, through the
real ``classify``, must reproduce the monitor's own stages under the rules it ran with."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_benchmark

from collapse_monitor import ConfigError, Rules


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("detection")


@pytest.fixture(scope="module")
def real_row(bench):
    # a short real chain (the rare mode vanishing under tempered sampling), every check kept
    return bench.run_one(("mixture", "replace", {"temperature": 0.8}, True, 0, 6, False, True))


def _row(checks, *, collapsing=False, stages=None):
    return {
        "scenario": "synthetic",
        "label": "synthetic/loop",
        "seed": 0,
        "collapsing": collapsing,
        "stages": stages or ["healthy"] * len(checks),
        "aggregates": [{"frechet": 1.0}] * len(checks),
        "aggregate": None,
        "evidently": None,
        "all_findings": checks,
    }


def test_rejudge_reproduces_the_monitor_under_its_own_rules(bench, real_row) -> None:
    assert real_row["ours"] is not None, real_row["stages"]
    assert len(real_row["all_findings"]) == len(real_row["stages"]) == 6
    assert real_row["sweep_matches_monitor"]  # the alpha sweep holds findings as the monitor does
    new, changed = bench.rejudge([real_row], Rules())
    assert changed == []
    assert new[0]["stages"] == real_row["stages"]
    assert new[0]["ours"] == real_row["ours"]
    # the alpha sweep recomputed from the findings agrees with the one the run made on panels
    assert new[0]["alpha_stages"] == real_row["alpha_stages"]


def test_rejudge_changes_stages_when_the_rules_change(bench, real_row) -> None:
    strict = bench.rejudge_rules({"alpha": 1e-300, "min_effect": 0.99})
    new, changed = bench.rejudge([real_row], strict)
    assert set(new[0]["stages"]) == {"healthy"}
    assert changed == ["mixture/replace (temperature=0.8) seed 0"]


def test_diversity_rule_and_families_from_findings(bench) -> None:
    div2 = [
        ["vendi_ratio", "baseline", "diversity", -0.15, 0.001, True],
        ["variance_ratio", "baseline", "diversity", -0.12, 0.002, True],
    ]
    row = _row([[], div2])
    (d,), _ = bench.rejudge([row], Rules())
    assert d["stages"] == ["healthy", "early_collapse"] and d["false_alarms"] == 1
    assert d["fired"][0]["generation"] == 1
    assert {f["key"] for f in d["fired"][0]["findings"]} == {"vendi_ratio", "variance_ratio"}
    (d,), _ = bench.rejudge([row], bench.rejudge_rules({"early_diversity_metrics": 0}))
    assert d["stages"] == ["healthy", "healthy"] and d["ours"] is None
    # significance is recomputed: the second finding is above a tighter alpha
    (d,), _ = bench.rejudge([row], bench.rejudge_rules({"alpha": 0.0015}))
    assert d["stages"][1] == "healthy"
    # moving a key to the head family: head with diversity is late collapse, not drift
    (d,), _ = bench.rejudge(
        [row],
        bench.rejudge_rules({"head": ["variance_ratio"], "diversity": ["vendi_ratio"]}),
    )
    assert d["stages"][1] == "late_collapse"
    # a rare class's recall keeps its tail family (tested as tail in the run)
    rare = [["class_recall.9", "baseline", "tail", -0.5, 1e-4, True]]
    (d,), _ = bench.rejudge([_row([[], rare])], Rules())
    assert d["stages"][1] == "early_collapse"


def test_rejudge_refuses_what_it_cannot_honour(bench, tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match=r"rules\.trend .*rerun the chains"):
        bench.rejudge_rules({"trend": False})
    with pytest.raises(ValueError, match="mapping of rule settings"):
        bench.rejudge_rules(["alpha", 0.01])
    with pytest.raises(ConfigError, match=r"rules\.alpha"):
        bench.rejudge_rules({"rules": {"alpha": 2}})
    row = _row([[]])
    del row["all_findings"]
    with pytest.raises(ValueError, match="--all-findings"):
        bench.rejudge([row], Rules())
    # the command line: a clear error and exit status 2, no traceback
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"rows": [row]}))
    assert bench.main(["--rejudge", str(saved)]) == 2
    assert "--all-findings" in capsys.readouterr().err


def test_rejudge_command_prints_the_table(bench, real_row, tmp_path, capsys) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"rows": [real_row]}, default=str))
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  early_diversity_metrics: 3\n")
    assert bench.main(["--rejudge", str(saved), "--rules", str(rules)]) == 0
    out = capsys.readouterr().out
    assert "early_diversity_metrics=3" in out
    assert "| mixture/replace (temperature=0.8) | collapsing | 1/1 |" in out


def test_a_run_under_other_rules(bench, real_row, tmp_path) -> None:
    """``--rules`` for a run: the monitor and the alpha sweep both use them (the sweep's
    self-check holds at the file's alpha, which joins the sweep), and a strict file silences
    the chain the default rules flag; a bad key is a ConfigError before any chain starts."""
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  alpha: 1.0e-300\n  min_effect: 0.99\n  diversity_min_effect: 0.99\n  paired_test: mid_p\n")
    rules_d = bench.run_rules(str(f))
    assert rules_d["paired_test"] == "mid_p" and rules_d["alpha"] == 1e-300
    assert "min_effect=0.99" in bench._rules_line(rules_d) and bench._rules_line(None) == "default `Rules()`"
    row = bench.run_one(("mixture", "replace", {"temperature": 0.8}, True, 0, 6, False, True, rules_d))
    assert row["sweep_matches_monitor"] is True
    assert row["alpha_stages"]["1e-300"] == row["stages"]
    assert set(row["stages"]) == {"healthy"} != set(real_row["stages"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("paired_tset: mid_p\n")
    with pytest.raises(ConfigError) as ei:
        bench.run_rules(str(bad))
    assert ei.value.key == "rules.paired_tset"


def test_a_run_in_another_world(bench, real_row, tmp_path) -> None:
    """``--world-seed`` / ``--set``: the chain runs in that world (another true distribution,
    another rare digit), keeps its label and role, and records the world in its row; a bad
    setting is a ConfigError naming scenario and key before any chain starts."""
    world = bench.world_options(1, ["digits.rare_digits=[3]", "mixture.separation=7"])
    assert world["digits"] == {"world_seed": 1, "rare_digits": (3,)}
    assert world["mixture"] == {"world_seed": 1, "separation": 7}
    assert bench.world_options(0, None) == {}
    assert "digits.rare_digits=(3,)" in bench._world_line(world)
    row = bench.run_one(("mixture", "replace", {"temperature": 0.8}, True, 0, 6, False, False, None, world["mixture"]))
    assert row["label"] == real_row["label"] and row["world"] == {"world_seed": 1, "separation": 7}
    assert row["sweep_matches_monitor"] is True
    assert row["aggregates"] != real_row["aggregates"]  # another reference, another chain
    for bad, key in (
        (["digits.rare_digits=[12]"], "--set digits.rare_digits"),
        (["digits.no_such_option=1"], "--set digits.options"),
        (["text.vocab_size=10"], "--set"),
        (["digits"], "--set"),
        # set by the chains themselves: shown in the results and silently not used, or a crash
        (["zipf_text.top_p=0.5"], "--set"),
        (["mixture.temperature=0.7"], "--set"),
        (["gaussian.seed=3"], "--set"),
    ):
        with pytest.raises(ConfigError) as ei:
            bench.world_options(0, bad)
        assert ei.value.key == key, bad
    out = tmp_path / "res"
    args = "--only gaussian/fresh --seeds 1 --generations 3 --no-evidently --jobs 1 --world-seed 2 --set gaussian.d=4"
    rc = bench.main([*args.split(), "--out", str(out)])
    assert rc == 0
    md = (out / "detection-world2.md").read_text()
    assert "gaussian.d=4" in md and "gaussian.world_seed=2" in md and "no Evidently" in md
    assert json.loads((out / "detection-world2.json").read_text())["rows"][0]["world"] == {"world_seed": 2, "d": 4}
    assert bench.main(["--set", "gaussian.d=0", "--out", str(out)]) == 2


def test_incidents_counts_first_firings_under_the_real_lifecycle(bench, tmp_path, capsys) -> None:
    flapping = ["healthy", "early_collapse", "healthy", "early_collapse", "healthy", "healthy"]
    assert [bench.incidents(flapping, k) for k in (1, 2, 3)] == [2, 1, 1]
    escalating = ["healthy", "early_collapse", "late_collapse", "late_collapse", "healthy"]
    assert [bench.incidents(escalating, k) for k in (1, 2)] == [2, 2]  # early, then late: two rules
    path = tmp_path / "run.json"
    rows = [{"stages": flapping, "collapsing": False}, {"stages": escalating, "collapsing": True}]
    path.write_text(json.dumps({"rows": rows}))
    assert bench.main(["--incidents", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| 1 | 2 | 2 |" in out and "| 2 | 1 | 2 |" in out
    assert bench.main(["--incidents", str(tmp_path / "missing.json")]) == 2


def test_the_aggregate_alert_counts_a_drop_of_exactly_two_points(bench) -> None:
    """Baseline (a) fires at 2 accuracy points *or more*: 0.95 -> 0.93 is 2 points though
    100 * (0.95 - 0.93) is 1.9999999999999907 (an external chain hit exactly this), and the
    Frechet distance at exactly twice generation 0's fires too. The benchmark uses the demo
    verdict's definition, not a copy of it."""
    from collapse_monitor import demo

    assert bench.aggregate_flags is demo.aggregate_flags and bench.aggregate_score is demo.aggregate_score
    acc = [{"accuracy": 0.95}, {"accuracy": 0.9301}, {"accuracy": 0.93}]
    assert 100 * (0.95 - 0.93) < 2.0  # the rounding the threshold has to survive
    assert bench.aggregate_flags(acc) == [False, False, True]
    fd = [{"frechet_distance": 0.3}, {"frechet_distance": 0.59}, {"frechet_distance": 0.6}]
    assert bench.aggregate_flags(fd) == [False, False, True]


@pytest.mark.parametrize(
    ("text", "words"),
    [("alpha: [0.01\nmin_effect: 0.1\n", "not valid YAML at line"), ("- alpha\n- 0.01\n", "must hold a mapping")],
)
def test_a_malformed_rules_file_is_a_config_error_not_a_traceback(bench, tmp_path, capsys, text, words) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    with pytest.raises(ConfigError) as err:
        bench.run_rules(str(rules))
    assert err.value.key == "rules" and words in str(err.value)
    saved = tmp_path / "empty.json"
    saved.write_text(json.dumps({"rows": []}))
    assert bench.main(["--rejudge", str(saved), "--rules", str(rules)]) == 2
    assert words in capsys.readouterr().err


def test_baselines_start_at_generation_1_and_a_is_also_read_literally(bench) -> None:
    """Generation 0 is every chain's baseline: Evidently's flag there used to count as (b)'s
    detection at generation 0 (the gaussian chains), and "(a) at zero false alarms" fired at
    generation 0 when the controls' largest accuracy drop was negative. (a) read literally
    (accuracy *or* Frechet) is reported beside it for scenarios that have both."""

    def row(collapsing, acc, fd, shares, seed=0):
        aggs = [{"accuracy": a, "frechet_distance": f} for a, f in zip(acc, fd, strict=True)]
        return {
            "scenario": "digits",
            "loop": "replace" if collapsing else "fresh",
            "options": {},
            "label": "digits/replace" if collapsing else "digits/fresh",
            "seed": seed,
            "collapsing": collapsing,
            "stages": ["healthy", "early_collapse", "early_collapse"] if collapsing else ["healthy"] * 3,
            "ours": 1 if collapsing else None,
            "aggregate": bench._first(bench.aggregate_flags(aggs)),
            "evidently": 0,  # as run_one recorded it: the first share >= 0.5, generation 0 included
            "evidently_share": shares,
            "aggregates": aggs,
            "false_alarms": 0,
            "fired": [],
        }

    rows = [
        # accuracy never drops 2 points; the Frechet distance doubles at generation 2
        row(True, [0.95, 0.95, 0.94], [0.1, 0.15, 0.25], [0.6, 0.2, 0.7]),
        # a control whose accuracy only rose: its largest "drop" is negative
        row(False, [0.90, 0.91, 0.92], [0.1, 0.3, 0.1], [0.6, 0.1, 0.1]),
    ]
    table, summary = bench.summarise(rows, 3)
    coll, ctrl = summary["chains"]["digits/replace"], summary["chains"]["digits/fresh"]
    assert coll["evidently"] == [2] and ctrl["evidently"] == [None]  # not generation 0
    # the controls never dropped: threshold 0 points, so the 1-point drop at generation 2 (was [0])
    assert coll["aggregate_calibrated"] == [2] and coll["aggregate"] == [None]
    assert [r["aggregate_either"] for r in rows] == [2, 1]  # Frechet x2: generation 2; control: 1
    t = summary["totals"]
    assert t["evidently_at_generation_0"] == 2 and t["evidently_false_alarm_chains"] == 1
    assert t["either_false_alarm_chains"] == 1 and t["aggregate_false_alarm_chains"] == 0
    assert t["either_flagged_after"] == 0 and t["either_median_lead"] == 1
    assert "fired at generation 0 on 2 of the 2 chains" in table
    assert "(a) read literally" in table and "it fired on 1 of the 1 control chains" in table
    # without a control chain of the scenario there is no threshold: "n/a", not "never"
    alone, alone_summary = bench.summarise(rows[:1], 3)
    assert alone_summary["chains"]["digits/replace"]["aggregate_calibrated"] is None
    assert "| digits/replace | collapsing | 1/1 | 1 | never | n/a |" in alone


def test_false_alarms_are_judged_against_the_simulators_truth(bench, real_row, tmp_path) -> None:
    """A control loop can really collapse (mixture/fresh: the warm-started EM's rare component
    drifts onto another mode and the fresh data does not pull it back); the benchmark counted
    every flag there as false with nothing to tell the two apart. Rows now carry the
    simulator's truth, and a saved run without it gets it back with ``--add-truth``."""
    assert len(real_row["truth"]) == len(real_row["stages"]) and "modes_lost" in real_row["truth"][0]

    def control(stages, lost):
        return {
            "scenario": "mixture",
            "loop": "fresh",
            "options": {},
            "label": "mixture/fresh",
            "seed": 0,
            "collapsing": False,
            "stages": stages,
            "ours": None,
            "aggregate": None,
            "evidently": None,
            "aggregates": [{"frechet_distance": 1.0}] * len(stages),
            "truth": [{"modes_lost": float(x)} for x in lost],
            "false_alarms": sum(s != "healthy" for s in stages),
            "fired": [],
        }

    rows = [
        control(["healthy", "early_collapse", "healthy", "early_collapse"], [0, 0, 1, 1]),
        control(["healthy", "early_collapse", "healthy", "healthy"], [0, 0, 0, 0]),
    ]
    table, summary = bench.summarise(rows, 4)
    assert summary["totals"]["false_alarms_with_mode_truth"] == 3
    assert summary["totals"]["false_alarms_model_lost_a_mode"] == 1
    assert "1 of 3 are at a check where the model had really lost a mode" in table
    assert "really lost a mode" not in bench.summarise([dict(r, truth=None) for r in rows], 4)[0]

    # a saved run from before truth was recorded: --add-truth re-runs the flagged control chain
    small = {"n_train": 400, "n_obs": 200, "n_ref": 300}
    row = bench.run_one(("mixture", "fresh", small, False, 3, 3, False, False))
    truth = row.pop("truth")
    row["stages"][2], row["false_alarms"] = "early_collapse", 1  # as if it had fired
    path = tmp_path / "detection.json"
    path.write_text(json.dumps({"summary": {}, "rows": [row]}))
    (tmp_path / "detection.md").write_text("# Detection benchmark\n\nheader kept\n\n| chain | old table |\n")
    assert bench.main(["--add-truth", str(path)]) == 0
    saved = json.loads(path.read_text())["rows"][0]
    assert saved["truth"] == truth  # the chain is deterministic: exactly what the run recorded
    md = (tmp_path / "detection.md").read_text()
    assert md.startswith("# Detection benchmark\n\nheader kept\n\n| chain |") and "old table" not in md
    assert "are at a check where the model had really lost a mode" in md


def test_rejudge_holds_a_finding_of_the_previous_check_on_its_own_p(bench) -> None:
    """As the monitor does (detect's ``held``): a run saved with p-values re-judges a finding
    that was significant at the previous check on its own p; one saved without them cannot."""
    lost = ["rare_class_recall", "baseline", "tail", -1.0, 0.0049, True, 2.0**-10]
    diluted = ["rare_class_recall", "baseline", "tail", -1.0, 0.0098, False, 2.0**-10]
    (d,), _ = bench.rejudge([_row([[], [lost], [diluted], [diluted]])], Rules())
    assert d["stages"] == ["healthy", "early_collapse", "early_collapse", "early_collapse"]
    # not held without a significant previous check, nor from a run saved without p
    (d,), _ = bench.rejudge([_row([[], [diluted], [diluted]])], Rules())
    assert d["stages"] == ["healthy"] * 3
    (d,), _ = bench.rejudge([_row([[], [lost[:6]], [diluted[:6]]])], Rules())
    assert d["stages"] == ["healthy", "early_collapse", "healthy"]


def test_the_alpha_sweep_holds_findings_as_the_monitor_does(bench, tmp_path) -> None:
    """The operating curve re-runs ``detect`` on the monitor's panels; without the held
    findings it read healthy where the monitor (holding a lost class) read early collapse, and
    the results file warned that the sweep differed from the monitor."""
    import numpy as np

    import collapse_monitor as cm

    labels = np.repeat(np.arange(5), [400, 300, 200, 90, 10])
    lost = np.where(labels == 4, 0, labels)
    emb = np.random.default_rng(1).normal(size=(300, 8))
    ref = cm.Reference(embeddings=np.random.default_rng(0).normal(size=(500, 8)), labels=labels)
    mon = cm.CollapseMonitor("sweep", reference=ref, sinks=[], home=tmp_path)
    sweep = bench._AlphaSweep(Rules())
    stages = []
    for preds in [labels] + [lost] * 5:
        stages.append(mon.check(cm.Observation(embeddings=emb, predictions=preds)).stage.value)
        sweep.step(mon.last_panel)
    assert stages[4:] == ["early_collapse"] * 2  # held: the family doubled at generation 4
    assert sweep.stages[Rules().alpha] == stages


def test_a_run_with_replicate_baselines(bench, tmp_path) -> None:
    """``--replicates 2``: generation 0 retrained twice more and added to the baseline; the alpha
    sweep judges against the same replicates as the monitor (its stages match), the row records
    them, and the file's name and header say so. The seed-5 digits/fresh chain has a lucky
    generation-0 retrain (rare-digit recall 0.886, replicates 0.686 and 0.714): alone it reads
    early collapse from generation 2 on; against the replicates, healthy."""
    fast = {"n_obs": 300}
    lone = bench.run_one(("digits", "fresh", fast, False, 5, 4, False, False))
    assert lone["stages"][2:] == ["early_collapse"] * 2 and "replicates" not in lone
    row = bench.run_one(("digits", "fresh", fast, False, 5, 4, False, False, None, {}, 2))
    assert row["replicates"] == 2 and row["sweep_matches_monitor"]
    assert row["stages"] == ["healthy"] * 4
    assert row["aggregates"] == lone["aggregates"]  # the chain itself is the same
    assert (
        bench.main(
            [
                "--seeds",
                "1",
                "--generations",
                "2",
                "--only",
                "gaussian/fresh",
                "--no-evidently",
                "--replicates",
                "1",
                "--out",
                str(tmp_path),
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    text = (tmp_path / "detection-rep1.md").read_text()
    assert "1 replicate retrain(s)" in text
    assert json.loads((tmp_path / "detection-rep1.json").read_text())["rows"][0]["replicates"] == 1


def test_a_large_results_json_is_written_in_blocks_of_five_seeds(bench, tmp_path, monkeypatch) -> None:
    """Every check's findings make a 15-seed run 5.3 MB, too large for git: above the bound the
    rows go to one file per block of 5 seeds, each with its own summary, and together they
    hold every row."""
    import json

    rows = [{"label": "x/replace", "seed": s, "pad": "y" * 50} for s in range(12)]
    monkeypatch.setattr(bench, "summarise", lambda r, g: ("", {"n": len(r), "g": g}))
    assert bench.write_rows_json(tmp_path, "run", {"n": 12}, rows, 10, compact=True) == ["run.json"]
    monkeypatch.setattr(bench, "MAX_JSON_BYTES", 100)
    names = bench.write_rows_json(tmp_path, "big", {"n": 12}, rows, 10, compact=True)
    assert names == ["big-seeds0-4.json", "big-seeds5-9.json", "big-seeds10-11.json"]
    parts = [json.loads((tmp_path / n).read_text()) for n in names]
    assert [p["summary"] for p in parts] == [{"n": 5, "g": 10}, {"n": 5, "g": 10}, {"n": 2, "g": 10}]
    assert [r["seed"] for p in parts for r in p["rows"]] == list(range(12))
    assert not (tmp_path / "big.json").exists()
