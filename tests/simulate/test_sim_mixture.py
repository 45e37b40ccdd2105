"""Gaussian mixture refit by EM: the rarest mode vanishes under replace, not under fresh."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from collapse_monitor.simulate import make_scenario
from collapse_monitor.simulate.mixture import DEFAULT_WEIGHTS, MixtureScenario


def _rare_weights(loop: str, gens: int, seeds: range) -> np.ndarray:
    return np.array(
        [make_scenario("mixture", loop=loop, seed=s).run(gens)[-1].truth["rare_mode_weight"] for s in seeds]
    )


def test_rare_mode_vanishes_under_replace_not_fresh() -> None:
    """Lost (weight < 0.2 % of the model) far more often under replace than under fresh.

    The rare mode's weight under replace is close to a martingale (its mean stays near the
    truth while single chains hit 0 and stay there), so the share of chains that lost it is
    the statistic, not the median. Under fresh the warm-started EM can also lose it now and
    then, when its component drifts onto another mode (3 of these 48 chains); 8 seeds, as this
    test had, were too few to tell the loops apart reliably.
    """
    seeds = range(48)
    replace = _rare_weights("replace", 16, seeds)
    fresh = _rare_weights("fresh", 16, seeds)
    lost_replace, lost_fresh = int((replace < 0.002).sum()), int((fresh < 0.002).sum())
    assert lost_replace >= 10 and lost_fresh <= 5, (lost_replace, lost_fresh)
    table = [[lost_replace, len(seeds) - lost_replace], [lost_fresh, len(seeds) - lost_fresh]]
    assert stats.fisher_exact(table, alternative="greater")[1] < 0.01
    assert np.median(fresh) > 0.5 * DEFAULT_WEIGHTS[-1]


def test_generation_zero_fits_the_truth() -> None:
    sc = make_scenario("mixture", loop="replace", seed=0)
    g0 = sc.run(1)[0]
    w = np.array([g0.truth[f"mode_weight.{k}"] for k in range(len(DEFAULT_WEIGHTS))])
    assert w.sum() == pytest.approx(1.0)
    assert np.abs(w - np.array(DEFAULT_WEIGHTS)).max() < 0.03
    assert g0.truth["modes_lost"] == 0.0
    assert g0.observation.embeddings.shape == (1000, 8)
    assert sc.reference.embeddings.shape == (2000, 8)


def test_true_modes_are_separated() -> None:
    sc = MixtureScenario()
    dist = np.linalg.norm(sc.means[:, None] - sc.means[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert dist.min() >= sc.separation * sc.sds.max() - 1e-9


def test_tempered_weights_match_numeric_power_density() -> None:
    # equal-variance, far-apart modes: component-wise tempering is exactly p(x)^(1/T), normalised
    sc = MixtureScenario(d=1, weights=(0.6, 0.3, 0.1), temperature=0.7)
    mu = np.array([-20.0, 0.0, 20.0])
    var = np.full(3, 0.5)
    w = np.array([0.6, 0.3, 0.1])
    wt, vt = sc._tempered(w, var)

    def power(x: float) -> float:
        return sum(wk * stats.norm(m, np.sqrt(v)).pdf(x) for wk, m, v in zip(w, mu, var, strict=True)) ** (1 / 0.7)

    masses = np.array([integrate.quad(power, m - 10, m + 10, points=[m])[0] for m in mu])
    np.testing.assert_allclose(wt, masses / masses.sum(), rtol=1e-6)
    np.testing.assert_allclose(vt, 0.7 * var)


def test_low_temperature_drops_the_rare_mode_faster() -> None:
    cold = [make_scenario("mixture", loop="replace", seed=s, temperature=0.8).run(6)[-1] for s in range(3)]
    assert max(g.truth["rare_mode_weight"] for g in cold) < 0.002
