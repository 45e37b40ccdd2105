"""Self-training: argmax pseudo-labels erase the 1 % class while accuracy barely moves."""

from __future__ import annotations

import numpy as np
import pytest

from collapse_monitor.simulate import make_scenario


def _paths(loop: str, seeds: range, gens: int = 6) -> tuple[np.ndarray, np.ndarray]:
    # n_train=2000: the FACTS.md set-up (rare recall ~.29 -> ~.04 in 5 generations)
    chains = [make_scenario("selftrain", loop=loop, seed=s, n_train=2000).run(gens) for s in seeds]
    rare = np.array([[g.truth["rare_recall"] for g in c] for c in chains]).mean(0)
    acc = np.array([[g.truth["accuracy"] for g in c] for c in chains]).mean(0)
    return rare, acc


def test_argmax_collapses_rare_recall_accuracy_holds() -> None:
    rare, acc = _paths("argmax", range(6))
    assert 0.2 < rare[0] < 0.35
    assert rare[5] < 0.1 and rare[5] < 0.35 * rare[0]
    assert np.all(np.diff(rare) <= 0.02)  # a steady decline
    assert 0.0 < acc[0] - acc[5] < 0.02
    assert acc[0] > 0.9


@pytest.mark.parametrize("loop", ["true_labels", "sampled"])
def test_controls_keep_rare_recall(loop: str) -> None:
    rare, acc = _paths(loop, range(6))
    assert rare[5] > 0.7 * rare[0]
    assert abs(acc[5] - acc[0]) < 0.005


def test_default_size_keeps_controls_steady_and_still_collapses() -> None:
    """The default (10,000 training items) has far less retrain noise on the 1 % class."""
    rare, acc = _paths_default("argmax")
    assert rare[5] < 0.5 * rare[0] and 0.0 <= acc[0] - acc[2] < 0.01 and acc[0] - acc[5] < 0.015
    rare_c, _ = _paths_default("true_labels")
    assert np.all(np.abs(rare_c - rare_c[0]) < 0.08)


def _paths_default(loop: str) -> tuple[np.ndarray, np.ndarray]:
    chains = [make_scenario("selftrain", loop=loop, seed=s).run(6) for s in range(3)]
    rare = np.array([[g.truth["rare_recall"] for g in c] for c in chains]).mean(0)
    acc = np.array([[g.truth["accuracy"] for g in c] for c in chains]).mean(0)
    return rare, acc


def test_probe_and_provenance() -> None:
    sc = make_scenario("selftrain", loop="replace", seed=0)
    ref = sc.reference
    labels = np.asarray(ref.labels, dtype=int)
    assert np.bincount(labels).tolist() == [800, 600, 400, 180, 100]  # rare class oversampled
    assert ref.class_priors[4] == pytest.approx(0.01)
    gens = sc.run(2)
    assert [g.synthetic_fraction for g in gens] == [0.0, 1.0]
    pred = np.asarray(gens[1].observation.predictions, dtype=int)
    recall = [(pred[labels == c] == c).mean() for c in range(5)]
    assert gens[1].aggregate["accuracy"] == pytest.approx(float(np.dot([0.4, 0.3, 0.2, 0.09, 0.01], recall)))
    assert gens[1].aggregate["probe_accuracy"] == pytest.approx((pred == labels).mean())
    fresh = make_scenario("selftrain", loop="fresh", seed=0, fresh_share=0.3).run(2)
    assert fresh[1].synthetic_fraction == pytest.approx(0.7)


def test_logistic_classifier_option_runs() -> None:
    gens = make_scenario("selftrain", loop="argmax", seed=0, classifier="logistic", C=0.5).run(3)
    assert gens[0].truth["rare_recall"] > gens[2].truth["rare_recall"]


@pytest.mark.parametrize(("loop", "classifier"), [("sampled", "lda"), ("replace", "logistic"), ("stable", "logistic")])
def test_a_chain_whose_labels_are_one_class_runs_on(loop: str, classifier: str) -> None:
    """Simulate audit (2026-12-06, second): a small sampled chain drifting to a single class
    crashed LDA's predict_proba (AxisError), and very skewed priors crashed logistic regression
    ("only one class"). The model of one class predicts that class."""
    from collapse_monitor.simulate import make_scenario

    sc = make_scenario(
        "selftrain", loop, 0, n_train=10, priors=(0.996, 0.001, 0.001, 0.001, 0.001), classifier=classifier
    )
    results = list(sc.generations(4))
    assert len(results) == 4
    assert all(r.observation.predictions is not None for r in results)
