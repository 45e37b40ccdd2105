"""Digits: the rare digit drifts away under replace and is kept under fresh."""

from __future__ import annotations

import numpy as np
import pytest

from collapse_monitor.simulate import make_scenario


@pytest.fixture(scope="module")
def cold_chains() -> dict[str, list]:
    # temperature 0.9: the quality-favouring sampler makes the loss fast enough for 9 generations
    return {loop: make_scenario("digits", loop=loop, seed=0, temperature=0.9).run(9) for loop in ("replace", "fresh")}


def test_rare_share_falls_under_replace_not_fresh(cold_chains: dict[str, list]) -> None:
    rep = [g.truth["rare_share"] for g in cold_chains["replace"]]
    fresh = [g.truth["rare_share"] for g in cold_chains["fresh"]]
    assert rep[0] == pytest.approx(fresh[0])
    assert rep[-1] < 0.25 * rep[0]
    assert min(fresh) > 0.4 * fresh[0]
    # the share in the next training set is the generated share (replace) or mixed with 2.5 % real
    assert cold_chains["replace"][-1].truth["rare_share_train"] < 0.01
    assert cold_chains["fresh"][-1].truth["rare_share_train"] > 0.008


def test_rare_recall_falls_under_replace_head_holds(cold_chains: dict[str, list]) -> None:
    rep, fresh = cold_chains["replace"], cold_chains["fresh"]
    assert rep[-1].truth["rare_recall"] < 0.5 * rep[0].truth["rare_recall"]
    assert fresh[-1].truth["rare_recall"] > 0.6 * fresh[0].truth["rare_recall"]
    assert rep[-1].truth["head_recall"] > 0.85
    # observed predictions agree with the truth figures (probe recall of the rare digit 8)
    ref_labels = np.asarray(make_scenario("digits", seed=0).reference.labels, dtype=int)
    pred = np.asarray(rep[-1].observation.predictions, dtype=int)
    assert (pred[ref_labels == 8] == 8).mean() == pytest.approx(rep[-1].truth["rare_recall"])


def test_ppca_generator_keeps_each_class_total_variance() -> None:
    sc = make_scenario("digits", loop="replace", seed=0)
    x, y = sc._human(np.random.default_rng(1), 1000)
    gen = sc._fit_generator(x, y)
    xs, ys = sc._sample(np.random.default_rng(2), gen, 20_000)
    for c in (0, 3, 8):  # 8 is the rare digit (25 training items)
        want = x[y == c].var(0, ddof=1).sum()
        got = xs[ys == c].var(0, ddof=1).sum()
        assert got == pytest.approx(want, rel=0.08), c
    # class weights follow the training shares
    assert (ys == 8).mean() == pytest.approx((y == 8).mean(), abs=0.004)


def test_accumulate_is_a_control_replace_loses_the_rare_digit() -> None:
    acc = make_scenario("digits", loop="accumulate", seed=1).run(6)
    # an unbiased refit anchored by the human data: the generator's spread and the rare digit hold
    var = [float(g.observation.embeddings.var(0).sum()) for g in acc]
    assert max(abs(v / var[0] - 1) for v in var) < 0.06
    assert min(g.truth["rare_recall"] for g in acc) > 0.75 * acc[0].truth["rare_recall"]
    # the aggregate is accuracy at the natural class mix (prior-weighted), the probe's plain
    # accuracy is kept beside it
    g0 = acc[0]
    assert g0.aggregate["accuracy"] > g0.aggregate["probe_accuracy"] - 0.05
    assert g0.aggregate["accuracy"] != g0.aggregate["probe_accuracy"]


def test_reference_and_observation_shapes() -> None:
    sc = make_scenario("digits", loop="replace", seed=0)
    ref = sc.reference
    assert ref.embeddings.shape == (1000, 20)
    assert ref.class_priors[8] == pytest.approx(0.025)
    assert sum(ref.class_priors.values()) == pytest.approx(1.0)
    labels = np.asarray(ref.labels, dtype=int)
    assert 700 <= len(labels) <= 740 and np.bincount(labels).min() >= 65  # balanced, real probe set
    g0 = sc.run(1)[0]
    assert g0.observation.embeddings.shape == (1000, 20)
    assert g0.aggregate["accuracy"] > 0.9
    assert g0.truth["rare_share_train"] == pytest.approx(0.025)
    # the feature map is whitened on real digits: the human reference has about unit variance
    assert ref.embeddings.var(0).mean() == pytest.approx(1.0, rel=0.2)


@pytest.mark.parametrize("feature_dim", [61, 64])
def test_a_feature_map_wider_than_the_pool_is_a_config_error(feature_dim: int) -> None:
    """Simulate audit (2026-12-06, second): the pool's pixels span 60 directions; 64 gave an
    all-NaN reference, 61-63 whitened empty directions by 1e8 (generation 0's Frechet 1e14)."""
    from collapse_monitor.errors import ConfigError
    from collapse_monitor.simulate import make_scenario

    with pytest.raises(ConfigError) as info:
        _ = make_scenario("digits", loop="replace", seed=0, feature_dim=feature_dim).reference
    assert info.value.key == "feature_dim" and "at most 60" in str(info.value)
