"""Gaussian refit: the textbook model collapse of Shumailov et al. 2024 (Nature 631:755,
arXiv 2305.17493, section 3 / supplementary "Gaussian approximation").

Generation ``t`` fits a mean and an (unbiased) covariance to ``M`` samples of generation
``t-1``'s fit. The fitted variance is a product of independent ``chi2(M-1)/(M-1)`` factors:
its mean stays 1 but it goes to 0 almost surely; with ``M = 100`` the median over chains is
about 0.90 after 10 refits and about 0.60 after 50 (exact law; the issue's "about 0.57"
is a little low), and E[W2^2] to the truth grows like ``(d + d(d+1)/4) sigma^2 sum 1/M_i``
(``(3/2) sigma^2 sum 1/M_i`` in 1-D; 2.5 after 10 refits at the default ``d = 8``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError
from ..types import Reference
from ._stats import frechet_distance, gaussian_frechet, gaussian_nll
from .base import GenerationResult, Scenario, TrainingSet, check_float, check_positive_int, digest, training_mix

__all__ = ["GaussianScenario", "gaussian_variance_paths"]


def gaussian_variance_paths(
    M: int = 100, generations: int = 50, chains: int = 2000, seed: int = 0, *, ddof: int = 1
) -> np.ndarray:
    """Fitted variances of ``chains`` independent 1-D Gaussian refit chains (replace loop).

    Returns an array of shape ``(chains, generations + 1)``: column 0 is the true variance
    (1.0) and column ``t`` the variance fitted at the ``t``-th refit, each refit on ``M``
    samples drawn from the previous fit (Shumailov et al. 2024's indexing: the ``t``-th fit is
    their generation ``t``; the :class:`GaussianScenario`'s generation ``g`` is fit ``g + 1``).
    ``ddof=1`` is the unbiased estimator the paper uses; ``ddof=0`` the MLE (collapses
    faster).

    >>> v = gaussian_variance_paths(M=100, generations=10, chains=4000, seed=1)
    >>> v.shape, bool(abs(np.median(v[:, 10]) - 0.91) < 0.03)
    ((4000, 11), True)
    """
    M = check_positive_int("M", M, 2)
    generations = check_positive_int("generations", generations, 0)
    chains = check_positive_int("chains", chains)
    rng = np.random.default_rng(seed)
    mu = np.zeros(chains)
    sd = np.ones(chains)
    out = np.empty((chains, generations + 1))
    out[:, 0] = 1.0
    for t in range(1, generations + 1):
        x = mu[:, None] + sd[:, None] * rng.standard_normal((chains, M))
        mu = x.mean(axis=1)
        var = x.var(axis=1, ddof=ddof)
        out[:, t] = var
        sd = np.sqrt(var)
    return out


class GaussianScenario(Scenario):
    """d-dimensional Gaussian refit on ``M`` samples per generation.

    The true distribution is N(0, I_d). Observation: ``n_obs`` samples of the current fit
    (drawn with ``temperature``: covariance scaled by it, < 1 favours high-density "quality"
    samples as in Alemohammad et al. 2023); reference: ``n_ref`` samples of the truth.
    ``temperature`` also applies to the samples that become the next training set.

    Options: ``d=8``, ``M=100``, ``n_obs=1000``, ``n_ref=1000``, ``temperature=1.0``,
    ``fresh_share=0.5``. Aggregate: ``frechet_distance`` (reference vs observation) and
    ``nll`` (mean negative log-likelihood of the reference under the fit). Truth:
    ``variance`` (mean fitted variance per dimension), ``w2`` (exact squared W2 of the fit to
    the truth), ``mean_shift``.
    """

    name = "gaussian"

    def __init__(
        self,
        loop: str = "replace",
        seed: int = 0,
        *,
        d: int = 8,
        M: int = 100,
        n_obs: int = 1000,
        n_ref: int = 1000,
        temperature: float = 1.0,
        world_seed: int = 0,
        fresh_share: float = 0.5,
    ) -> None:
        super().__init__(loop, seed, world_seed=world_seed, fresh_share=fresh_share)
        self.d = check_positive_int("d", d)
        self.M = check_positive_int("M", M, 2)
        if self.d >= self.M:
            raise ConfigError("M", f"needs more samples than dimensions (M > d={self.d}), got {M}")
        self.n_obs = check_positive_int("n_obs", n_obs, 2)
        self.n_ref = check_positive_int("n_ref", n_ref, 2)
        self.temperature = check_float("temperature", temperature, 0.0, 100.0, low_open=True)
        self._opts = {
            "d": self.d,
            "M": self.M,
            "n_obs": self.n_obs,
            "n_ref": self.n_ref,
            "temperature": self.temperature,
        }

    def _truth_sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal((n, self.d))

    def _build_reference(self) -> Reference:
        return Reference(embeddings=self._truth_sample(self._rng("reference"), self.n_ref), name="gaussian:truth")

    def _sample(self, rng: np.random.Generator, mu: np.ndarray, cov: np.ndarray, n: int) -> np.ndarray:
        chol = np.linalg.cholesky(self.temperature * cov + 1e-12 * np.eye(self.d))
        return mu + rng.standard_normal((n, self.d)) @ chol.T

    def _chain(self) -> Iterator[GenerationResult]:
        ref = np.asarray(self.reference.embeddings, dtype=np.float64)
        rng = self._rng("chain")
        human0 = self._truth_sample(self._rng("human0"), self.M)
        eye = np.eye(self.d)
        train = TrainingSet()
        mu, cov = np.zeros(self.d), eye  # replaced by the generation-0 fit
        t = 0
        while True:
            mix = training_mix(self.loop, t, self.M, self.fresh_share)
            new = TrainingSet()
            if t == 0:
                new.add(human0, self.M, False, self._human_source(0))
            else:
                new.add(self._truth_sample(rng, mix.n_real), mix.n_real, False, self._human_source(t))
                new.add(self._sample(rng, mu, cov, mix.n_synthetic), mix.n_synthetic, True, self._source(t - 1))
            if mix.keep_previous:
                train.extend(new)
            else:
                train = new
            x = np.concatenate(train.parts())
            mu = x.mean(0)
            cov = np.atleast_2d(np.cov(x, rowvar=False))
            obs_x = self._sample(self._observation_rng(t), mu, cov, self.n_obs)
            obs = self._observation(t, train, digest(x), embeddings=obs_x)
            yield GenerationResult(
                generation=t,
                observation=obs,
                aggregate={"frechet_distance": frechet_distance(ref, obs_x), "nll": gaussian_nll(ref, mu, cov)},
                truth={
                    "variance": float(np.trace(cov) / self.d),
                    "w2": gaussian_frechet(mu, self.temperature * cov, np.zeros(self.d), eye),
                    "mean_shift": float(np.linalg.norm(mu)),
                },
                train_size=train.size,
            )
            t += 1
