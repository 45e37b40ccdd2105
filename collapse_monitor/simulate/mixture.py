"""Gaussian mixture refit by EM: rare modes vanish first (Shumailov et al. 2024, Nature
631:755: "discrete states with probability below 1/M vanish first"; Alemohammad et al. 2023,
arXiv 2307.01850, for the sampling-bias variant).

The true distribution has ``K`` well-separated spherical modes in ``d`` dimensions with
long-tailed weights (30 % down to 1 %). Each generation refits a ``K``-component spherical
Gaussian mixture by EM (scikit-learn, warm-started from the previous fit) on ``n_train``
samples of the mix the loop prescribes. Under ``replace`` the weights of the modes do a
Wright-Fisher random walk: a mode with ``n_train * w`` ~ 10 samples per generation is often
lost within 10-20 generations, and once lost it never comes back. ``fresh`` and
``accumulate`` keep nearly every mode, not every one: a component whose weight EM drives to 0
is warm-started at 0 and stays there (fresh seed 8 loses the 1 % mode at generation 4 for
good; accumulate seed 5 holds it near .001). Measured (defaults, 12 chains, generation 15):
median weight of the 1 % mode .0055 under replace (some mode lost in 8 of 12 chains),
.0085 under fresh (2 of 12), .008 under accumulate (2 of 12), .0095 under stable (none).

Spherical (not full) covariances are deliberate: a full 8-D covariance fitted to the ~10
points of a 1 % mode is near-singular, and the degenerate component then rejects the real
points of its own mode, which kills rare modes even with fresh real data.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import ConfigError
from ..types import Reference
from ._stats import frechet_distance
from .base import GenerationResult, Scenario, TrainingSet, check_float, check_positive_int, digest, training_mix

__all__ = ["DEFAULT_WEIGHTS", "MixtureScenario"]

#: long-tailed mode weights (sum 1): the last three modes are rare (< 5 %)
DEFAULT_WEIGHTS: tuple[float, ...] = (0.30, 0.20, 0.14, 0.10, 0.08, 0.06, 0.05, 0.04, 0.02, 0.01)


class MixtureScenario(Scenario):
    """K-mode Gaussian mixture refit by EM on its own samples.

    Options: ``d=8``, ``weights=DEFAULT_WEIGHTS`` (K = len), ``separation=6.0`` (minimum
    distance between true means, in units of the largest mode sd), ``n_train=1000``,
    ``n_obs=1000``, ``n_ref=2000``, ``temperature=1.0`` (component-wise tempering: mode
    weights ``w_k^(1/T)`` and variances ``T sigma_k^2``; < 1 favours heavy modes and their
    cores), ``fresh_share=0.5``.

    Observation: ``n_obs`` samples of the current (tempered) model; reference: ``n_ref``
    samples of the truth. Aggregate: ``frechet_distance``, ``nll`` (mean negative
    log-likelihood of the reference under the fitted model). Truth: ``mode_weight.<k>`` (mass
    of the model on true mode k, components assigned to the mode nearest their mean),
    ``rare_mode_weight`` (the smallest true mode), ``modes_lost`` (modes with less than half
    their true weight).
    """

    name = "mixture"

    def __init__(
        self,
        loop: str = "replace",
        seed: int = 0,
        *,
        d: int = 8,
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        separation: float = 6.0,
        n_train: int = 1000,
        n_obs: int = 1000,
        n_ref: int = 2000,
        temperature: float = 1.0,
        world_seed: int = 0,
        fresh_share: float = 0.5,
    ) -> None:
        super().__init__(loop, seed, world_seed=world_seed, fresh_share=fresh_share)
        self.d = check_positive_int("d", d)
        w = np.asarray(weights, dtype=float)
        if w.ndim != 1 or len(w) < 2 or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ConfigError("weights", "expected at least two positive finite weights")
        self.weights = w / w.sum()
        self.K = len(w)
        self.separation = check_float("separation", separation, 0.0, 1e3, low_open=True)
        self.n_train = check_positive_int("n_train", n_train, self.K)
        self.n_obs = check_positive_int("n_obs", n_obs, 2)
        self.n_ref = check_positive_int("n_ref", n_ref, 2)
        self.temperature = check_float("temperature", temperature, 0.0, 100.0, low_open=True)
        self._opts = {
            "d": self.d,
            "weights": tuple(float(x) for x in self.weights),
            "separation": self.separation,
            "n_train": self.n_train,
            "n_obs": self.n_obs,
            "n_ref": self.n_ref,
            "temperature": self.temperature,
        }
        self.means, self.sds = self._world()

    # -- the true distribution -------------------------------------------------------
    def _world(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng("world")
        sds = rng.uniform(0.7, 1.0, self.K)
        min_dist = self.separation * sds.max()
        means: list[np.ndarray] = []
        scale = min_dist / 2
        tries = 0
        while len(means) < self.K:
            m = rng.standard_normal(self.d) * scale
            if all(np.linalg.norm(m - x) >= min_dist for x in means):
                means.append(m)
            tries += 1
            if tries % 1000 == 0:  # crowded in low d: spread the proposals out
                scale *= 1.5
        return np.array(means), sds

    @staticmethod
    def _sample(rng: np.random.Generator, w: np.ndarray, mu: np.ndarray, var: np.ndarray, n: int) -> np.ndarray:
        counts = rng.multinomial(n, w / w.sum())
        d = mu.shape[1]
        parts = [mu[k] + np.sqrt(var[k]) * rng.standard_normal((c, d)) for k, c in enumerate(counts) if c]
        x = np.concatenate(parts) if parts else np.empty((0, d))
        return x[rng.permutation(len(x))]

    def _truth_sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._sample(rng, self.weights, self.means, self.sds**2, n)

    def _tempered(self, w: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Component-wise tempering: mode weights ``w^(1/T)`` (renormalised), variances ``T var``.

        For equal-variance, separated modes this is exactly ``p^(1/T)``; for unequal variances
        ``p^(1/T)`` would also multiply each weight by ``sigma^(d(1-1/T))``, which under a
        replace loop hands all the mass to whichever component has collapsed to a spike.
        """
        t = self.temperature
        if t == 1.0:
            return w, var
        with np.errstate(divide="ignore"):
            logw = np.log(w) / t
        wt = np.exp(logw - logw.max())
        return wt / wt.sum(), t * var

    def _build_reference(self) -> Reference:
        return Reference(embeddings=self._truth_sample(self._rng("reference"), self.n_ref), name="mixture:truth")

    # -- model -------------------------------------------------------------------------
    def _fit(
        self, x: np.ndarray, w: np.ndarray, mu: np.ndarray, var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        w = np.clip(w, 1e-12, None)
        gm = GaussianMixture(
            self.K,
            covariance_type="spherical",
            weights_init=w / w.sum(),
            means_init=mu,
            precisions_init=1.0 / var,
            reg_covar=1e-3,
            max_iter=100,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(x)
        return gm.weights_.copy(), gm.means_.copy(), gm.covariances_.copy()

    def _log_density(self, x: np.ndarray, w: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
        d2 = ((x[:, None, :] - mu[None]) ** 2).sum(-1)
        with np.errstate(divide="ignore"):
            lp = np.log(w)[None] - 0.5 * d2 / var[None] - 0.5 * self.d * np.log(2 * np.pi * var)[None]
        m = lp.max(1, keepdims=True)
        return (m + np.log(np.exp(lp - m).sum(1, keepdims=True)))[:, 0]

    def _mode_weights(self, w: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """Mass of the model on each true mode: a component belongs to the true mode with the
        highest posterior at the component's mean."""
        d2 = ((mu[:, None, :] - self.means[None]) ** 2).sum(-1)
        lp = np.log(self.weights)[None] - 0.5 * d2 / self.sds[None] ** 2 - self.d * np.log(self.sds)[None]
        return np.bincount(lp.argmax(1), weights=w, minlength=self.K)

    def _chain(self) -> Iterator[GenerationResult]:
        ref = np.asarray(self.reference.embeddings, dtype=np.float64)
        rng = self._rng("chain")
        human0 = self._truth_sample(self._rng("human0"), self.n_train)
        # EM starts from the true parameters at generation 0: a well-fitted human-data model
        w, mu, var = self.weights.copy(), self.means.copy(), self.sds**2
        train = TrainingSet()
        t = 0
        while True:
            mix = training_mix(self.loop, t, self.n_train, self.fresh_share)
            new = TrainingSet()
            if t == 0:
                new.add(human0, self.n_train, False, self._human_source(0))
            else:
                sw, svar = self._tempered(w, var)
                new.add(self._truth_sample(rng, mix.n_real), mix.n_real, False, self._human_source(t))
                new.add(self._sample(rng, sw, mu, svar, mix.n_synthetic), mix.n_synthetic, True, self._source(t - 1))
            train = TrainingSet() if not mix.keep_previous else train
            train.extend(new)
            x = np.concatenate(train.parts())
            w, mu, var = self._fit(x, w, mu, var)
            sw, svar = self._tempered(w, var)
            obs_x = self._sample(self._observation_rng(t), sw, mu, svar, self.n_obs)
            mode_w = self._mode_weights(sw, mu)
            truth = {f"mode_weight.{k}": float(v) for k, v in enumerate(mode_w)}
            rare = int(np.argmin(self.weights))
            truth["rare_mode_weight"] = float(mode_w[rare])
            truth["modes_lost"] = float(np.sum(mode_w < 0.5 * self.weights))
            yield GenerationResult(
                generation=t,
                observation=self._observation(t, train, digest(x), embeddings=obs_x),
                aggregate={
                    "frechet_distance": frechet_distance(ref, obs_x),
                    "nll": float(-self._log_density(ref, w, mu, var).mean()),
                },
                truth=truth,
                train_size=train.size,
            )
            t += 1
