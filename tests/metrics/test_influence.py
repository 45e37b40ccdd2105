"""Delta-method (influence-function) intervals of the spectral entropies, used by the generator
panel above ``max_boot_dim``: their standard error against the Monte Carlo sampling spread, and
the panel's switch between them and the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from collapse_monitor.metrics._bootstrap import entropy_influence, gram
from collapse_monitor.metrics.diversity import (
    hill_number,
    normalize_rows,
    spectral_effective_rank,
    sym_eigvalsh,
    vendi_score,
)
from collapse_monitor.metrics.generator import build_generator_state, generator_panel

D = 30
SCALES = np.arange(1, D + 1) ** -0.5  # power-law spectrum


def draw(rng: np.random.Generator, m: int) -> np.ndarray:
    return 0.5 + rng.normal(size=(m, D)) * SCALES


@pytest.mark.parametrize("kind", ["effective_rank", "vendi"])
def test_influence_se_matches_the_sampling_spread(kind: str) -> None:
    """Over 200 independent samples the delta-method standard error of log(statistic) is
    within 20 % of the statistic's Monte Carlo standard deviation."""
    rng = np.random.default_rng(3)
    m = 600
    logs, ses = [], []
    for _ in range(200):
        x = draw(rng, m)
        if kind == "vendi":
            rows, denom = normalize_rows(x), float(m)
        else:
            rows, denom = x - x.mean(axis=0), float(m - 1)
        ent = entropy_influence(rows, gram(rows)[0], denom)
        logs.append(ent.entropy)
        ses.append(ent.se)
    truth = float(np.std(logs, ddof=1))
    assert 0.8 < float(np.mean(ses)) / truth < 1.2


def test_influence_entropy_is_the_statistics_log() -> None:
    x = draw(np.random.default_rng(4), 300)
    zc = x - x.mean(axis=0)
    ent = entropy_influence(zc, gram(zc)[0], 299.0)
    assert np.exp(ent.entropy) == pytest.approx(spectral_effective_rank(sym_eigvalsh(np.cov(x.T))), rel=1e-10)
    unit = normalize_rows(x)
    ent_u = entropy_influence(unit, gram(unit)[0], 300.0)
    assert hill_number(ent_u.eigenvalues) == pytest.approx(vendi_score(x), rel=1e-10)
    assert ent.se > 0 and ent_u.se > 0


def test_influence_blocks_and_threads_do_not_change_the_result() -> None:
    x = draw(np.random.default_rng(5), 1000)
    zc = x - x.mean(axis=0)
    a = entropy_influence(zc, gram(zc)[0], 999.0)
    b = entropy_influence(zc, gram(zc)[0], 999.0, workers=2, block_rows=128)
    assert a.entropy == b.entropy and a.se == pytest.approx(b.se, rel=1e-6)
    c = entropy_influence(zc, gram(zc)[0], 999.0, workers=3)
    assert a.entropy == c.entropy and a.se == c.se  # threads: the same bits


def test_influence_in_float32_matches_a_float64_computation() -> None:
    """The projections run in float32; the standard error equals the float64 influence
    function's (Critchley 1985) to about 1e-6 of itself."""
    x = draw(np.random.default_rng(6), 800)
    zc = x - x.mean(axis=0)
    cov = zc.T @ zc / 799.0
    lam, vecs = np.linalg.eigh(cov)
    total, s = lam.sum(), np.sum(lam * np.log(lam))
    c = (s / total - np.log(lam)) / total
    infl = ((zc @ vecs) ** 2 - lam) @ c
    ent = entropy_influence(zc, gram(zc)[0], 799.0)
    assert ent.se == pytest.approx(np.std(infl, ddof=1) / np.sqrt(800), rel=1e-5)


def test_degenerate_input_has_zero_se() -> None:
    ent = entropy_influence(np.zeros((5, 3)), np.zeros((3, 3)), 4.0)
    assert ent.entropy == 0.0 and ent.se == 0.0


def test_panel_switches_to_the_delta_method_above_max_boot_dim() -> None:
    """Above max_boot_dim, Vendi and effective rank get log-symmetric Wald intervals with the
    exact point values; the Frechet distance keeps its bootstrap; at or below, every interval
    is the bootstrap's."""
    rng = np.random.default_rng(6)
    ref, gen = draw(rng, 800), draw(rng, 700) * 0.9
    st = build_generator_state(ref)
    boot = generator_panel(st, ref, gen, n_boot=60, max_boot_dim=64).metrics
    delta = generator_panel(st, ref, gen, n_boot=60, max_boot_dim=12).metrics
    for key in ("vendi_score", "vendi_ratio", "effective_rank"):
        mv = delta[key]
        assert mv.value == pytest.approx(boot[key].value, rel=1e-9), key
        assert mv.ci_high / mv.value == pytest.approx(mv.value / mv.ci_low, rel=1e-9), key  # log-symmetric
        assert boot[key].ci_high / boot[key].value != pytest.approx(boot[key].value / boot[key].ci_low, rel=1e-6)
        w_boot, w_delta = boot[key].ci_high - boot[key].ci_low, mv.ci_high - mv.ci_low
        assert 0.5 * w_boot < w_delta < 2.0 * w_boot, key
    assert delta["frechet_distance"].value == pytest.approx(boot["frechet_distance"].value, rel=1e-9)
