"""Recursive-training scenarios that need no downloads: the demo, the tests and the
detection benchmark run on them.

>>> from collapse_monitor.simulate import make_scenario
>>> sc = make_scenario("gaussian", loop="replace", seed=0, d=2)
>>> [g.synthetic_fraction for g in sc.generations(3)]
[0.0, 1.0, 1.0]

Scenarios (``SCENARIOS``): ``gaussian`` (Shumailov et al. 2024's Gaussian refit),
``mixture`` (EM on a long-tailed Gaussian mixture: rare modes vanish), ``digits``
(scikit-learn digits, PCA-Gaussian generator + MLP classifier), ``selftrain`` (classifier on
its own pseudo-labels), ``zipf_text`` (bigram LM on a Zipf vocabulary with top-p decoding).
Loops (``LOOPS``): ``replace``, ``accumulate``, ``fresh``, ``stable``; see ``base``.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import LOOPS, GenerationResult, Scenario, training_mix
from .digits import DigitsScenario
from .gaussian import GaussianScenario, gaussian_variance_paths
from .mixture import MixtureScenario
from .selftrain import SelfTrainScenario
from .zipf_text import ZipfTextScenario

__all__ = [
    "LOOPS",
    "SCENARIOS",
    "DigitsScenario",
    "GaussianScenario",
    "GenerationResult",
    "MixtureScenario",
    "Scenario",
    "SelfTrainScenario",
    "ZipfTextScenario",
    "gaussian_variance_paths",
    "make_scenario",
    "training_mix",
]

#: scenario name -> class
SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls for cls in (GaussianScenario, MixtureScenario, DigitsScenario, SelfTrainScenario, ZipfTextScenario)
}


def make_scenario(name: str, loop: str = "replace", seed: int = 0, **options: Any) -> Scenario:
    """Build scenario ``name`` (a key of ``SCENARIOS``) with ``loop``, ``seed`` and its options.

    Unknown names raise ``ConfigError("scenario", ...)``, unknown loops
    ``ConfigError("loop", ...)``, unknown options ``ConfigError("options", ...)``.
    """
    cls = SCENARIOS.get(name)
    if cls is None:
        raise ConfigError("scenario", f"unknown scenario {name!r}; expected one of {sorted(SCENARIOS)}")
    try:
        return cls(loop, seed, **options)
    except TypeError as exc:
        raise ConfigError("options", f"{name}: {exc}") from None
