"""What a check reads from the chain's stored checks: a detection audit (2026-12-08) found that a
chain re-run from scratch took an earlier run's rows into its trends and held findings, and
that a check which did not measure a held metric dropped its held finding. Each test fails on
the code before the fix."""

from __future__ import annotations

import numpy as np

import collapse_monitor as cm

LABELS = np.array(["a"] * 100 + ["b"] * 90 + ["r"] * 10)
PRIORS = {"a": 0.55, "b": 0.42, "r": 0.03}


def _preds(lost: int) -> np.ndarray:
    """``lost`` of the 10 rare items predicted as "a" (the same items every time)."""
    p = LABELS.copy()
    p[190 : 190 + lost] = "a"
    return p


def _monitor(home, **kw) -> cm.CollapseMonitor:
    ref = cm.Reference(labels=LABELS, class_priors=PRIORS, **kw)
    return cm.CollapseMonitor("m", reference=ref, sinks=[], home=home)


def _recall_finding(report: cm.Report) -> cm.Finding:
    return next(f for f in report.findings if f.key == "class_recall.r" and f.kind == "baseline")


def test_a_rerun_chain_does_not_hold_the_earlier_runs_findings(tmp_path) -> None:
    """Run A loses the rare class at generation 1; the chain is re-run from scratch (generation
    0 checked again) and checks every other generation: its generation 2 (8 of 10 lost, p =
    0.0039, q = 0.0078) read early collapse on run A's held finding. A fresh home reads it
    healthy, and so does the re-run now."""
    mon = _monitor(tmp_path / "a")
    mon.check(cm.Observation(predictions=_preds(0), generation=0))
    assert mon.check(cm.Observation(predictions=_preds(10), generation=1)).stage is cm.Stage.EARLY_COLLAPSE
    mon.check(cm.Observation(predictions=_preds(0), generation=0))  # the re-run's baseline
    rerun = mon.check(cm.Observation(predictions=_preds(8), generation=2))
    fresh = _monitor(tmp_path / "fresh")
    fresh.check(cm.Observation(predictions=_preds(0), generation=0))
    alone = fresh.check(cm.Observation(predictions=_preds(8), generation=2))
    assert alone.stage is cm.Stage.HEALTHY and not _recall_finding(alone).significant
    assert rerun.stage is cm.Stage.HEALTHY, [f for f in rerun.findings if f.significant]
    assert "+held" not in _recall_finding(rerun).test


def test_a_rerun_chains_trend_reads_only_its_own_checks(tmp_path) -> None:
    """Run A loses one rare item a generation over 0-4; the re-run checks 0 and 5 (5 lost): its
    trend series was [B0, A1, A2, A3, A4, B5], a significant trend. Its own series is two
    points: no trend test, and the generation reads healthy, as on a fresh home."""
    mon = _monitor(tmp_path)
    for g in range(5):
        mon.check(cm.Observation(predictions=_preds(g), generation=g))
    mon.check(cm.Observation(predictions=_preds(0), generation=0))
    report = mon.check(cm.Observation(predictions=_preds(5), generation=5))
    assert not [f for f in report.findings if f.kind == "trend"]
    assert report.stage is cm.Stage.HEALTHY


def test_a_check_that_did_not_measure_a_held_metric_does_not_drop_its_finding(tmp_path) -> None:
    """Generation 1 loses the rare class (early collapse); generation 2 is checked on embeddings
    only; generation 3 (8 of 10 still lost, p = 0.0039 <= alpha, q = 0.0195) read healthy and
    resolved the incident, where without the embeddings-only check it is held (early
    collapse). The finding is now held from the last check that measured the recall."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 8))
    gen = rng.normal(size=(300, 8))
    mon = _monitor(tmp_path, embeddings=emb)
    mon.check(cm.Observation(embeddings=gen, predictions=_preds(0), generation=0))
    first = mon.check(cm.Observation(embeddings=gen, predictions=_preds(10), generation=1))
    assert [(a.rule, a.status) for a in first.alerts] == [("early_collapse", "firing")]
    blind = mon.check(cm.Observation(embeddings=gen, generation=2))
    assert blind.open_alerts == {"early_collapse": "warning"}
    third = mon.check(cm.Observation(embeddings=gen, predictions=_preds(8), generation=3))
    finding = _recall_finding(third)
    assert finding.significant and finding.test.endswith("+held"), finding
    assert third.stage is cm.Stage.EARLY_COLLAPSE and third.alerts == ()
    assert third.open_alerts == {"early_collapse": "warning"}


def _ratio_check(tmp_path, baseline_rare: int, now_rare: int) -> cm.Report:
    """Probe set 2,500 a / 2,350 b / 150 r (prior 0.03): the baseline predicts ``r`` for
    ``baseline_rare`` items (the 150 r first, then b items), generation 1 for ``now_rare``."""
    y = np.array(["a"] * 2500 + ["b"] * 2350 + ["r"] * 150)
    ref = cm.Reference(labels=y, class_priors={"a": 0.5, "b": 0.47, "r": 0.03})
    mon = cm.CollapseMonitor("ratio", reference=ref, sinks=[], home=tmp_path)

    def preds(n_rare: int) -> np.ndarray:
        p = y.copy()
        if n_rare >= 150:
            p[2500 : 2500 + n_rare - 150] = "r"
        else:
            p[4850 + n_rare :] = "a"
        return p

    mon.check(cm.Observation(predictions=preds(baseline_rare), generation=0))
    return mon.check(cm.Observation(predictions=preds(now_rare), generation=1))


def test_a_rare_prediction_ratio_falling_to_calibration_is_no_decline(tmp_path) -> None:
    """A detection audit (2026-12-08): a baseline that over-predicted the rare class (ratio
    1.67) and a model that became calibrated (1.0, every item right) read as a 40 % decline of
    ``rare_prediction_ratio`` and paged early collapse. It is judged on min(ratio, 1) now."""
    report = _ratio_check(tmp_path, 250, 150)
    assert report.metrics["rare_prediction_ratio"].value == 1.0
    assert report.metrics["rare_prediction_ratio"].baseline == 250 / 150  # reported as measured
    finding = next(f for f in report.findings if f.key == "rare_prediction_ratio" and f.kind == "baseline")
    assert not finding.significant and finding.relative_change == 0.0 and finding.test.endswith("+capped-at-1")
    assert report.stage is cm.Stage.HEALTHY


def test_a_rare_prediction_ratio_falling_below_calibration_still_counts_from_one(tmp_path) -> None:
    """From the same over-predicting baseline, a model that predicts the rare class for half
    its items (ratio 0.5) has lost the rare predictions collapse takes: a decline of 50 % from
    calibration (not 70 % from 1.67)."""
    report = _ratio_check(tmp_path, 250, 75)
    finding = next(f for f in report.findings if f.key == "rare_prediction_ratio" and f.kind == "baseline")
    assert finding.significant and abs(finding.relative_change + 0.5) < 1e-9 and finding.baseline == 1.0
    assert report.stage is not cm.Stage.HEALTHY


def test_an_early_diversity_count_that_can_never_be_reached_is_noted(tmp_path, caplog) -> None:
    """A detection audit (2026-12-08): ``early_diversity_metrics: 10`` with 9 diversity metrics
    (or the default 2 with a one-metric list) was accepted, and diversity narrowing alone could
    then never call early collapse, without a word. The monitor now warns and every report
    notes it, counting the diversity metrics its reference can measure (a one-metric list stays
    a valid way to keep diversity alone from paging, so it is not refused)."""
    emb = np.random.default_rng(0).normal(size=(200, 4))
    obs = cm.Observation(embeddings=np.random.default_rng(1).normal(size=(200, 4)))
    for rules, said in (
        (cm.Rules.from_dict({"early_diversity_metrics": 10}), "rules.early_diversity_metrics=10 but this reference"),
        (
            cm.Rules(diversity=("vendi_ratio", "distinct_2")),
            "rules.early_diversity_metrics=2 but this reference measures 1",
        ),
    ):
        mon = cm.CollapseMonitor("div", reference=cm.Reference(embeddings=emb), sinks=[], home=tmp_path, rules=rules)
        with caplog.at_level("WARNING", logger="collapse_monitor"):
            report = mon.check(obs)
        assert any(said in n and "never calls early collapse" in n for n in report.notes), report.notes
    default = cm.CollapseMonitor("ok", reference=cm.Reference(embeddings=emb), sinks=[], home=tmp_path)
    assert not any("early_diversity_metrics" in n for n in default.check(obs).notes)
