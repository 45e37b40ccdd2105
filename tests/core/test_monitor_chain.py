"""Monitor end to end on synthetic chains built here (not the simulate package), so detection
is tested on data it was not tuned on."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import collapse_monitor as cm

PRIORS = np.array([0.40, 0.30, 0.20, 0.08, 0.02])
K = len(PRIORS)
D = 6


def _reference(seed: int = 123, n_probe: int = 2500, n_ref: int = 1500):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(K, D))
    labels = rng.choice(K, size=n_probe, p=PRIORS)
    comp = rng.choice(K, size=n_ref, p=PRIORS)
    emb = centers[comp] + rng.normal(size=(n_ref, D))
    return cm.Reference(embeddings=emb, labels=labels, class_priors=dict(enumerate(PRIORS))), centers, labels


def _generation(
    rng, centers, labels, *, rare_recall: float, rare_weight: float, spread: float, head_acc: float = 0.9, n: int = 1500
):
    """Predictions with the given recalls; samples from the mixture with the rare mode's weight
    and the spread given."""
    preds = labels.copy()
    for c in range(K):
        idx = np.flatnonzero(labels == c)
        acc = rare_recall if PRIORS[c] < 0.05 else head_acc
        wrong = idx[rng.random(idx.size) > acc]
        preds[wrong] = (c + 1 + rng.integers(0, K - 1, size=wrong.size)) % K
        if PRIORS[c] < 0.05:  # forgotten rare items go to the largest class
            preds[wrong] = 0
    w = PRIORS.copy()
    w[-1] = rare_weight
    w /= w.sum()
    comp = rng.choice(K, size=n, p=w)
    emb = centers[comp] + spread * rng.normal(size=(n, D))
    return emb, preds


def _chain(tmp_path, steps, seed=0, name="chain"):
    ref, centers, labels = _reference()
    mon = cm.CollapseMonitor(name, reference=ref, sinks=[], home=tmp_path / name)
    rng = np.random.default_rng(seed)
    out = []
    for kw in steps:
        emb, preds = _generation(rng, centers, labels, **kw)
        out.append(mon.check(cm.Observation(embeddings=emb, predictions=preds)))
    return mon, out


def test_gradual_forgetting_goes_healthy_early_late(tmp_path) -> None:
    steps = [
        dict(rare_recall=0.9, rare_weight=0.02, spread=1.0),
        dict(rare_recall=0.85, rare_weight=0.018, spread=1.0),
        dict(rare_recall=0.5, rare_weight=0.008, spread=1.0),
        dict(rare_recall=0.3, rare_weight=0.004, spread=0.97),
        dict(rare_recall=0.1, rare_weight=0.001, spread=0.6),
        dict(rare_recall=0.0, rare_weight=0.0, spread=0.4, head_acc=0.8),
    ]
    _, reports = _chain(tmp_path, steps)
    stages = [r.stage for r in reports]
    assert stages[0] is cm.Stage.HEALTHY and stages[1] is cm.Stage.HEALTHY
    levels = [s.level for s in stages]
    assert levels == sorted(levels), stages  # never goes back
    assert cm.Stage.EARLY_COLLAPSE in stages and stages[-1] is cm.Stage.LATE_COLLAPSE
    first_early = stages.index(cm.Stage.EARLY_COLLAPSE)
    assert first_early <= 3
    # the early report says what fell
    early = reports[first_early]
    assert {f.family for f in early.declines} <= {"tail"}
    assert early.alerts and early.alerts[0].status == "firing" and early.alerts[0].severity == "warning"
    # late from the generation the spread shrinks (0.6: effective rank -11 %, head coverage
    # -5 %, with the tail gone), where the late alert fires once
    first_late = stages.index(cm.Stage.LATE_COLLAPSE)
    assert first_late in (4, 5)
    rules = {a.rule: a.status for a in reports[first_late].alerts}
    assert rules.get("late_collapse") == "firing"


@pytest.mark.parametrize("seed", range(5))
def test_stable_chain_stays_healthy(tmp_path, seed) -> None:
    steps = [dict(rare_recall=0.85, rare_weight=0.02, spread=1.0)] * 10
    _, reports = _chain(tmp_path, steps, seed=seed, name=f"stable{seed}")
    assert [r.stage.value for r in reports] == ["healthy"] * 10
    assert not any(r.drift for r in reports)
    assert all(not r.alerts for r in reports)


def test_report_shape_and_intervals(tmp_path) -> None:
    _, reports = _chain(tmp_path, [dict(rare_recall=0.9, rare_weight=0.02, spread=1.0)] * 2)
    r = reports[1]
    assert r.generation == 1 and r.baseline_generation == 0
    for key in (
        "accuracy",
        "balanced_accuracy",
        "rare_class_recall",
        "head_class_recall",
        "worst_class_recall",
        "rare_prediction_ratio",
        "rare_flips",
        "precision",
        "recall",
        "density",
        "coverage",
        "tail_coverage",
        "head_coverage",
        "vendi_score",
        "vendi_ratio",
        "effective_rank",
        "variance_ratio",
        "frechet_distance",
        "tail_mass_ratio",
        "class_recall.4",
    ):
        mv = r.metrics[key]
        assert mv.ci_low <= mv.value <= mv.ci_high, key
        assert np.isfinite([mv.value, mv.ci_low, mv.ci_high]).all(), key
    assert r.metrics["accuracy"].baseline == reports[0].metrics["accuracy"].value
    d = r.to_dict()
    import json

    json.dumps(d, allow_nan=False)
    assert cm.Report.from_dict(d).to_dict() == d


def test_history_survives_a_new_process(tmp_path) -> None:
    """A second process in the same home continues the generation count and the baseline."""
    script = f"""
import numpy as np, collapse_monitor as cm
rng = np.random.default_rng(0)
ref = cm.Reference(labels=[0] * 90 + [1] * 10)
mon = cm.CollapseMonitor("proc", reference=ref, sinks=[], home={str(tmp_path)!r})
r = mon.check(cm.Observation(predictions=[0] * 90 + [1] * 10))
print(r.generation, r.baseline_generation)
"""
    gens = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, env={**os.environ}
        )
        gens.append(out.stdout.split())
    assert gens == [["0", "0"], ["1", "0"], ["2", "0"]]


def test_explicit_generation_and_pinned_baseline(tmp_path) -> None:
    ref = cm.Reference(labels=[0] * 96 + [1] * 4)  # class 1 is rare (prior 0.04)
    mon = cm.CollapseMonitor("pin", reference=ref, sinks=[], home=tmp_path, rules={"baseline_generation": 1})
    r0 = mon.check(cm.Observation(predictions=[0] * 100, generation=0))
    assert r0.stage is cm.Stage.HEALTHY and any("pinned" in n for n in r0.notes)
    r1 = mon.check(cm.Observation(predictions=[0] * 96 + [1] * 4))
    assert r1.generation == 1 and r1.is_baseline
    r2 = mon.check(cm.Observation(predictions=[0] * 100))
    assert r2.baseline_generation == 1
    assert r2.metrics["rare_flips"].value == 4


def test_watch_passes_return_value_and_contains_failures(tmp_path) -> None:
    ref = cm.Reference(labels=[0] * 90 + [1] * 10)
    mon = cm.CollapseMonitor("watch", reference=ref, sinks=[], home=tmp_path)
    sentinel = object()

    @mon.watch(
        evaluate=lambda model: cm.Observation(predictions=[0] * 90 + [1] * 10),
        provenance=cm.Provenance(synthetic_fraction=0.25),
    )
    def retrain():
        return sentinel

    assert retrain() is sentinel
    assert mon.last_report is not None and mon.last_report.metrics["synthetic_fraction"].value == 0.25

    @mon.watch(evaluate=lambda model: cm.Observation(predictions=[0] * 5))  # wrong length -> InputError
    def retrain_bad():
        return sentinel

    assert retrain_bad() is sentinel
    assert isinstance(mon.last_error, cm.InputError)

    @mon.watch(evaluate=lambda model: cm.Observation(predictions=[0] * 5), strict=True)
    def retrain_strict():
        return sentinel

    with pytest.raises(cm.InputError):
        retrain_strict()


class _Broken:
    name = "broken"

    def __init__(self):
        self.calls = 0
        self.fail = True
        self.got = []

    def emit(self, report, context=None):
        self.calls += 1
        if self.fail:
            raise ConnectionError("down: https://user:hunter2@example.invalid/x?token=abc")
        self.got.append(report.generation)


def test_failing_sink_is_recorded_spooled_and_replayed(tmp_path) -> None:
    sink = _Broken()
    ref = cm.Reference(labels=[0] * 90 + [1] * 10)
    mon = cm.CollapseMonitor("spool", reference=ref, sinks=[sink], home=tmp_path)
    r0 = mon.check(cm.Observation(predictions=[0] * 90 + [1] * 10))
    assert r0.errors and "broken" in r0.errors[0]
    assert "hunter2" not in r0.errors[0] and "abc" not in r0.errors[0]
    assert mon.spool.count("broken") == 1
    sink.fail = False
    r1 = mon.check(cm.Observation(predictions=[0] * 90 + [1] * 10))
    assert not r1.errors
    assert sink.got == [0, 1]  # spooled report replayed first, then the new one
    assert mon.spool.count("broken") == 0

    strict = cm.CollapseMonitor("spool2", reference=ref, sinks=[_Broken()], home=tmp_path, strict=True)
    with pytest.raises(cm.SinkError):
        strict.check(cm.Observation(predictions=[0] * 90 + [1] * 10))


def test_checking_the_baseline_generation_again_replaces_the_baseline(tmp_path) -> None:
    """A chain re-run from scratch (the examples and callbacks pass generation= explicitly) on a
    new probe set: generation 0 again is the baseline, not a check against the old one (it was
    judged 0.29 vs 0.97 on the old chain's items and paged)."""
    import numpy as np

    old = cm.Reference(labels=[0] * 60 + [1] * 30 + [2] * 10)
    mon = cm.CollapseMonitor("rerun", reference=old, sinks=[], home=tmp_path)
    for g in range(3):
        mon.check(cm.Observation(predictions=[0] * 60 + [1] * 30 + [2] * 10, generation=g))
    new_labels = np.array([2] * 10 + [0] * 60 + [1] * 30)
    mon2 = cm.CollapseMonitor("rerun", reference=cm.Reference(labels=new_labels), sinks=[], home=tmp_path)
    weak = new_labels.copy()
    weak[10:40] = 1  # a weaker model on the new probe set
    r0 = mon2.check(cm.Observation(predictions=weak, generation=0))
    assert r0.is_baseline and r0.stage is cm.Stage.HEALTHY and not r0.alerts
    assert any("replaces the stored baseline" in n for n in r0.notes)
    r1 = mon2.check(cm.Observation(predictions=weak, generation=1))
    assert r1.stage is cm.Stage.HEALTHY and r1.baseline_generation == 0
    assert not any("reference changed" in n for n in r1.notes)  # paired against the new baseline
    assert r1.metrics["accuracy"].baseline == pytest.approx(r0.metrics["accuracy"].value)


def test_declines_list_the_largest_decline_first_among_equal_q(tmp_path) -> None:
    import dataclasses

    mon = cm.CollapseMonitor("order", reference=cm.Reference(labels=[0] * 90 + [1] * 10), sinks=[], home=tmp_path)
    report = mon.check(cm.Observation(predictions=[0] * 90 + [1] * 10))

    def f(key: str, rel: float, q: float) -> cm.Finding:
        return cm.Finding(key, "tail", "baseline", 0.0, 1.0, rel, q, q, True, "mcnemar-exact")

    findings = (f("a_small", -0.10, 0.0), f("rare_class_recall", -1.0, 0.0), f("b_mid", -0.5, 0.0), f("c", -0.9, 1e-3))
    got = [d.key for d in dataclasses.replace(report, findings=findings).declines]
    assert got == ["rare_class_recall", "b_mid", "a_small", "c"]


def test_keys_first_seen_later_do_not_invent_a_baseline(tmp_path) -> None:
    """Generation 0 declared no provenance; generation 1 declares 60 % synthetic data and has
    baseline predictions to count ``rare_flips`` against. Neither value is generation 0's, so
    neither may be shown (or stored) as its baseline. A family that is measured for the first
    time later (here the embeddings) still joins the baseline."""
    ref, centers, labels = _reference()
    mon = cm.CollapseMonitor("late-keys", reference=ref, sinks=[], home=tmp_path / "late")
    rng = np.random.default_rng(5)
    _, preds0 = _generation(rng, centers, labels, rare_recall=0.9, rare_weight=0.02, spread=1.0)
    mon.check(cm.Observation(predictions=preds0))
    emb1, preds1 = _generation(rng, centers, labels, rare_recall=0.5, rare_weight=0.02, spread=1.0)
    r1 = mon.check(
        cm.Observation(embeddings=emb1, predictions=preds1, provenance=cm.Provenance(synthetic_fraction=0.6))
    )
    assert r1.metrics["rare_flips"].value > 0
    assert r1.metrics["rare_flips"].baseline is None
    assert r1.metrics["synthetic_fraction"].baseline is None
    assert r1.metrics["precision"].baseline == r1.metrics["precision"].value  # joined the baseline
    assert not any("rare_flips" in n or "synthetic_fraction" in n for n in r1.notes)
    emb2, preds2 = _generation(rng, centers, labels, rare_recall=0.5, rare_weight=0.02, spread=1.0)
    r2 = mon.check(
        cm.Observation(embeddings=emb2, predictions=preds2, provenance=cm.Provenance(synthetic_fraction=0.8))
    )
    assert r2.metrics["synthetic_fraction"].baseline is None
    assert r2.metrics["rare_flips"].baseline is None
    assert r2.metrics["precision"].baseline == r1.metrics["precision"].value


def test_the_history_sinks_get_is_the_stored_history(tmp_path) -> None:
    """A check hands the sinks the history right after its commit. It is now built from the rows
    the check read before its commit (each row was parsed twice a check, stop 41's scale audit);
    it must equal what the store reads back: new generations, a generation checked again and an
    older one checked after a newer one."""
    ref, centers, labels = _reference()
    rng = np.random.default_rng(0)
    seen: list[list[dict]] = []

    class Recorder:
        name = "recorder"

        def emit(self, report, ctx=None):
            if ctx is not None:
                seen.append([r.to_dict() for r in ctx.history])

    mon = cm.CollapseMonitor("hist", reference=ref, sinks=[Recorder()], home=tmp_path)

    def gen(**kw):
        emb, preds = _generation(rng, centers, labels, rare_recall=0.9, rare_weight=0.02, spread=1.0)
        return cm.Observation(predictions=preds, embeddings=emb, **kw)

    for obs in (gen(), gen(), gen(), gen(generation=2), gen(generation=1), gen()):
        mon.check(obs)
        assert seen[-1] == [r.to_dict() for r in mon.history.reports("hist")]
    assert [[r["generation"] for r in h] for h in seen] == [[0], [0, 1], [0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2, 3]]
