"""Gaussian refit reproduces Shumailov et al. 2024's variance collapse."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from collapse_monitor.simulate import gaussian_variance_paths, make_scenario


def test_median_variance_matches_shumailov() -> None:
    v = gaussian_variance_paths(M=100, generations=50, chains=2000, seed=0)
    assert v.shape == (2000, 51)
    assert np.all(v[:, 0] == 1.0)
    # the issue quotes "about 0.91 after 10 and about 0.57 after 50"; the exact law (a product
    # of chi2(M-1)/(M-1) factors) puts the median at about 0.90 and 0.60: exp of the summed
    # mean log factor, from scipy (the sum of 50 logs is close to symmetric). 2,000 chains give
    # the median within about 3 % (sd of log v after 50 refits ~ 1.0)
    step = special.digamma(99 / 2) + np.log(2 / 99)
    assert abs(np.median(v[:, 10]) - np.exp(10 * step)) <= 0.03  # 0.904
    assert abs(np.median(v[:, 50]) - np.exp(50 * step)) <= 0.045  # 0.602
    assert abs(np.median(v[:, 50]) - 0.57) <= 0.05  # and the figure


def test_log_variance_follows_the_chi_square_law() -> None:
    # each refit multiplies the variance by an independent chi2(M-1)/(M-1): E[log] and Var[log]
    # per step come from scipy (digamma / polygamma), not from our sampler
    m, gens, chains = 20, 30, 4000
    v = gaussian_variance_paths(M=m, generations=gens, chains=chains, seed=1)
    k = m - 1
    step_mean = special.digamma(k / 2) + np.log(2 / k)
    step_var = special.polygamma(1, k / 2)
    logv = np.log(v[:, gens])
    se = np.sqrt(gens * step_var / chains)
    assert abs(logv.mean() - gens * step_mean) < 4 * se
    assert logv.var() == pytest.approx(gens * step_var, rel=0.1)
    # one step is exactly a scaled chi-square: KS test against scipy's distribution
    one = gaussian_variance_paths(M=m, generations=1, chains=3000, seed=2)[:, 1]
    assert stats.kstest(one * k, stats.chi2(k).cdf).pvalue > 0.001


def test_mle_collapses_faster_than_unbiased() -> None:
    unbiased = gaussian_variance_paths(M=50, generations=20, chains=2000, seed=3)
    mle = gaussian_variance_paths(M=50, generations=20, chains=2000, seed=3, ddof=0)
    assert np.median(mle[:, 20]) < np.median(unbiased[:, 20]) - 0.2


def test_scenario_collapses_under_replace_not_stable() -> None:
    def last(loop: str, seed: int) -> dict:
        return make_scenario("gaussian", loop=loop, seed=seed, d=1, M=20).run(30)[-1].truth

    rep = [last("replace", s) for s in range(12)]
    stab = [last("stable", s) for s in range(12)]
    assert np.median([t["variance"] for t in rep]) < 0.6 < np.median([t["variance"] for t in stab])
    assert np.median([t["w2"] for t in rep]) > 3 * np.median([t["w2"] for t in stab])


def test_scenario_observation_and_temperature() -> None:
    sc = make_scenario("gaussian", loop="replace", seed=0)
    g0 = sc.run(1)[0]
    assert g0.observation.embeddings.shape == (1000, 8)
    assert sc.reference.embeddings.shape == (1000, 8)
    assert g0.aggregate["frechet_distance"] < 0.5
    cold = make_scenario("gaussian", loop="replace", seed=0, temperature=0.5).run(1)[0]
    ratio = cold.observation.embeddings.var(0).mean() / g0.observation.embeddings.var(0).mean()
    assert ratio == pytest.approx(0.5, rel=0.15)
