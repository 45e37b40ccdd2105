"""The generator panel: same values as the standalone metrics and the reference packages,
cached reference side, intervals, paired items, and the collapse signatures it must show."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import prdc as prdc_ref
import pytest
from vendi_score import vendi

import collapse_monitor as cm
from collapse_monitor.errors import ConfigError, InputError
from collapse_monitor.metrics import prdc
from collapse_monitor.metrics._spec import SPECS
from collapse_monitor.metrics.cache import ReferenceCache
from collapse_monitor.metrics.diversity import (
    effective_rank,
    frechet_distance,
    tail_mass_ratio,
    variance_ratio,
    vendi_score,
)
from collapse_monitor.metrics.generator import (
    GeneratorRefState,
    build_generator_state,
    default_n_clusters,
    generator_panel,
    get_generator_state,
)

ALL_KEYS = {
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
}

CENTRES = np.zeros((4, 6))
CENTRES[1, 0] = CENTRES[2, 1] = 6.0
CENTRES[3, 2] = 11.0
WEIGHTS = np.array([0.45, 0.30, 0.22, 0.03])
SPREAD = np.array([1.0, 1.0, 1.0, 1.6])


def mixture(n: int, rng: np.random.Generator, *, drop_rare: bool = False) -> np.ndarray:
    w = WEIGHTS[:3] / WEIGHTS[:3].sum() if drop_rare else WEIGHTS
    comp = rng.choice(len(w), size=n, p=w)
    return CENTRES[comp] + rng.normal(size=(n, 6)) * SPREAD[comp][:, None]


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return mixture(1000, np.random.default_rng(0))


@pytest.fixture(scope="module")
def state(ref: np.ndarray) -> GeneratorRefState:
    return build_generator_state(ref)


def test_panel_keys_intervals_and_items(state: GeneratorRefState, ref: np.ndarray) -> None:
    gen = mixture(800, np.random.default_rng(1))
    res = generator_panel(state, ref, gen, n_boot=60)
    assert set(res.metrics) == ALL_KEYS | {"rare_mode_coverage", "rare_mode_mass"}
    assert set(res.metrics) <= set(SPECS)
    for key, mv in res.metrics.items():
        assert mv.ci_low <= mv.value <= mv.ci_high, key
        assert mv.ci_low < mv.ci_high or key in ("rare_mode_coverage",), key
        spec = SPECS[key]
        assert spec.lower is None or mv.ci_low >= spec.lower - 1e-12, key
    assert res.metrics["precision"].n == 800 and res.metrics["coverage"].n == 1000
    assert res.metrics["tail_coverage"].n == 100 and res.metrics["head_coverage"].n == 900
    covered = res.items["coverage.covered"]
    assert covered.dtype == bool and covered.shape == (1000,)
    assert res.metrics["coverage"].value == pytest.approx(covered.mean())
    for key, (item, mask) in res.paired.items():
        assert res.metrics[key].value == pytest.approx(res.items[item][mask].mean()), key
    assert res.paired["tail_coverage"][1].sum() == 100
    assert not (res.paired["tail_coverage"][1] & res.paired["head_coverage"][1]).any()
    kept = res.items["rare_modes.kept"]
    assert kept.shape == (int(state.rare_clusters.sum()),)
    assert res.metrics["rare_mode_coverage"].n == kept.size
    # the count metrics carry [events, samples] for the exact rate test against the baseline
    in_rare, m = res.items["rate.rare_mode_mass"].tolist()
    assert m == 800 and 0 < in_rare < m
    ref_rare = state.cluster_mass[state.rare_clusters].sum()
    assert res.metrics["rare_mode_mass"].value == pytest.approx(in_rare / m / ref_rare)
    x, m = res.items["rate.tail_mass_ratio"].tolist()
    assert m == 800 and res.metrics["tail_mass_ratio"].value == pytest.approx(x / m / 0.01)


def test_panel_equals_standalone_metrics(state: GeneratorRefState, ref: np.ndarray) -> None:
    gen = mixture(700, np.random.default_rng(2)) * 0.9
    res = generator_panel(state, ref, gen, n_boot=20)
    for key, value in prdc(ref, gen, 5).items():
        assert res.metrics[key].value == pytest.approx(value, abs=1e-12), key
    m = res.metrics
    assert m["vendi_score"].value == pytest.approx(vendi.score_dual(gen), rel=1e-9)
    assert m["vendi_score"].value == pytest.approx(vendi_score(gen), rel=1e-9)
    sub = ref[state.perm[:700]]
    assert m["vendi_ratio"].value == pytest.approx(vendi_score(gen) / vendi_score(sub), rel=1e-9)
    assert m["effective_rank"].value == pytest.approx(effective_rank(gen), rel=1e-9)
    assert m["variance_ratio"].value == pytest.approx(variance_ratio(ref, gen), rel=1e-9)
    assert m["frechet_distance"].value == pytest.approx(frechet_distance(ref, gen), rel=1e-7)
    assert m["tail_mass_ratio"].value == pytest.approx(tail_mass_ratio(ref, gen), rel=1e-12)


def test_float64_state_equals_prdc_package() -> None:
    rng = np.random.default_rng(3)
    ref, gen = rng.normal(size=(300, 12)), rng.normal(size=(250, 12)) * 1.1
    st64 = build_generator_state(ref, dtype="float64", k=4)
    res = generator_panel(st64, ref, gen, k=4, n_boot=10)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = prdc_ref.compute_prdc(real_features=ref, fake_features=gen, nearest_k=4)
    for key, value in theirs.items():
        assert res.metrics[key].value == pytest.approx(float(value), abs=1e-9), key


def test_chunk_sizes_and_seed_reproducibility() -> None:
    rng = np.random.default_rng(4)
    ref = mixture(300, rng)
    state = build_generator_state(ref, chunk_size=7)
    assert state.to_arrays().keys() == build_generator_state(ref).to_arrays().keys()
    np.testing.assert_allclose(state.radii2, build_generator_state(ref).radii2, rtol=1e-5)
    gen = mixture(60, rng)
    runs = [generator_panel(state, ref, gen, n_boot=15, chunk_size=c) for c in (1, 7, 64, None)]
    for r in runs[1:]:
        assert r.metrics == runs[0].metrics
        np.testing.assert_array_equal(r.items["coverage.covered"], runs[0].items["coverage.covered"])
    other_seed = generator_panel(state, ref, gen, n_boot=15, seed=1)
    assert other_seed.metrics["precision"] == runs[0].metrics["precision"]
    assert other_seed.metrics["vendi_score"].value == runs[0].metrics["vendi_score"].value


def test_deleting_a_rare_mode_shows_in_the_tail_not_the_head(state: GeneratorRefState, ref: np.ndarray) -> None:
    assert state.rare_clusters.any()
    healthy = generator_panel(state, ref, mixture(1000, np.random.default_rng(5)), n_boot=20)
    dropped = generator_panel(state, ref, mixture(1000, np.random.default_rng(5), drop_rare=True), n_boot=20)
    h, d = healthy.metrics, dropped.metrics
    assert h["rare_mode_coverage"].value == 1.0
    assert d["rare_mode_coverage"].value < h["rare_mode_coverage"].value
    assert d["rare_mode_mass"].value < 0.3 * h["rare_mode_mass"].value
    assert h["rare_mode_mass"].value == pytest.approx(1.0, abs=0.3)
    assert d["tail_coverage"].value < h["tail_coverage"].value - 0.15
    assert abs(d["head_coverage"].value - h["head_coverage"].value) < 0.03
    # paired per-item vectors: the lost points are the rare component's
    lost = healthy.items["coverage.covered"] & ~dropped.items["coverage.covered"]
    assert lost.sum() >= 15 and lost[state.tail_mask].sum() > 0.6 * lost.sum()


def test_shrinking_the_spread_lowers_diversity() -> None:
    rng = np.random.default_rng(6)
    centre = np.full(8, 3.0)
    ref = centre + rng.normal(size=(600, 8))
    st = build_generator_state(ref)
    wide = generator_panel(st, ref, centre + rng.normal(size=(500, 8)), n_boot=40)
    narrow = generator_panel(st, ref, centre + 0.3 * rng.normal(size=(500, 8)), n_boot=40)
    w, n = wide.metrics, narrow.metrics
    assert n["vendi_ratio"].value < w["vendi_ratio"].value - 0.1
    assert n["variance_ratio"].value < 0.2 < 0.8 < w["variance_ratio"].value
    assert n["vendi_ratio"].ci_high < w["vendi_ratio"].ci_low
    assert n["variance_ratio"].ci_high < w["variance_ratio"].ci_low
    assert n["tail_mass_ratio"].value < w["tail_mass_ratio"].value
    assert n["recall"].value < w["recall"].value
    assert 0.85 < w["vendi_ratio"].value < 1.15


@pytest.mark.parametrize("kind", ["one", "identical", "zeros"])
def test_degenerate_sample_sets_give_finite_metrics(state: GeneratorRefState, ref: np.ndarray, kind: str) -> None:
    gen = {"one": ref[:1], "identical": np.tile(ref[5], (50, 1)), "zeros": np.zeros((20, 6))}[kind]
    res = generator_panel(state, ref, gen, n_boot=10)
    assert set(res.metrics) >= ALL_KEYS
    for mv in res.metrics.values():
        assert all(np.isfinite([mv.value, mv.ci_low, mv.ci_high]))
    assert res.metrics["vendi_score"].value == pytest.approx(1.0)
    assert res.metrics["effective_rank"].value == 1.0
    assert res.metrics["recall"].value == 0.0  # radius-0 sample balls contain nothing


def test_large_d_bootstrap_projection() -> None:
    """Above max_boot_dim the Frechet replicates live in the top principal subspace, shifted to
    the exact point, and Vendi / effective rank take delta-method intervals; every spread
    stays close to the exact bootstrap's."""
    rng = np.random.default_rng(7)
    d = 24
    scales = np.linspace(0.3, 2.0, d)
    ref = 1.0 + rng.normal(size=(500, d)) * scales
    gen = 1.0 + rng.normal(size=(400, d)) * scales * 0.9
    st = build_generator_state(ref)
    exact = generator_panel(st, ref, gen, n_boot=80, max_boot_dim=64).metrics
    proj = generator_panel(st, ref, gen, n_boot=80, max_boot_dim=12).metrics
    for key in ("vendi_score", "effective_rank", "frechet_distance"):
        assert proj[key].value == pytest.approx(exact[key].value, rel=1e-9), key
        w_exact = exact[key].ci_high - exact[key].ci_low
        w_proj = proj[key].ci_high - proj[key].ci_low
        assert 0.3 * w_exact < w_proj < 3.0 * w_exact, key
    assert proj["variance_ratio"] == exact["variance_ratio"]
    # the Frechet head on its own (fd_head_dim, default 128): Vendi / effective rank untouched
    head = generator_panel(st, ref, gen, n_boot=80, max_boot_dim=64, fd_head_dim=8).metrics
    assert head["frechet_distance"].value == pytest.approx(exact["frechet_distance"].value, rel=1e-9)
    assert head["frechet_distance"] != exact["frechet_distance"]  # approximate replicates
    w_exact = exact["frechet_distance"].ci_high - exact["frechet_distance"].ci_low
    w_head = head["frechet_distance"].ci_high - head["frechet_distance"].ci_low
    assert 0.3 * w_exact < w_head < 3.0 * w_exact
    for key in ("vendi_score", "effective_rank", "variance_ratio"):
        assert head[key] == exact[key], key


def test_bad_calls(state: GeneratorRefState, ref: np.ndarray) -> None:
    gen = mixture(50, np.random.default_rng(8))
    with pytest.raises(ConfigError):
        generator_panel(state, ref, gen, k=3)
    with pytest.raises(InputError) as e:
        generator_panel(state, ref[:-1], gen)
    assert e.value.field == "reference.embeddings"
    with pytest.raises(InputError) as e:
        generator_panel(state, ref, gen[:, :4])
    assert e.value.field == "samples"
    with pytest.raises(ConfigError):
        generator_panel(state, ref, gen, n_boot=0)
    with pytest.raises(ConfigError, match="fd_head_dim"):
        generator_panel(state, ref, gen, fd_head_dim=0)
    with pytest.raises(ConfigError):
        build_generator_state(ref, tail_quantile=1.5)
    with pytest.raises(ConfigError):
        build_generator_state(ref, n_clusters=0)
    with pytest.raises(InputError):
        build_generator_state(ref[:1])


def test_state_round_trips_through_the_disk_cache(tmp_path, ref: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    reference = cm.Reference(embeddings=ref)
    cache = ReferenceCache(tmp_path)
    s1 = get_generator_state(reference, cache, k=5, seed=0, device=None, chunk_size=64)
    assert cache.misses == 1 and len(list(tmp_path.glob("*.npz"))) == 1
    assert get_generator_state(reference, cache, k=5, seed=0, device="cpu", chunk_size=None) is s1
    fresh = ReferenceCache(tmp_path)  # a new process: loads the .npz (no pickle)
    s2 = get_generator_state(reference, fresh, k=5, seed=0)
    assert fresh.hits == 1 and fresh.misses == 0 and s2 is not s1
    for name, arr in s1.to_arrays().items():
        np.testing.assert_array_equal(arr, s2.to_arrays()[name], err_msg=name)
        assert arr.dtype != object, name
    gen = mixture(200, np.random.default_rng(9))
    assert generator_panel(s1, reference.embeddings, gen, n_boot=10).metrics == (
        generator_panel(s2, reference.embeddings, gen, n_boot=10).metrics
    )
    other = get_generator_state(reference, fresh, k=3, seed=0)
    assert other.k == 3 and fresh.misses == 1
    with pytest.raises(InputError):
        get_generator_state(cm.Reference(labels=[0, 1]), cache)


def test_state_contents(state: GeneratorRefState, ref: np.ndarray) -> None:
    n = ref.shape[0]
    assert state.n == n and state.d == 6 and state.k == 5
    assert state.tail_mask.sum() == 100
    assert state.radii[state.tail_mask].min() >= state.radii[~state.tail_mask].max()
    assert state.centroids.shape == (default_n_clusters(n), 6)
    assert state.cluster_mass.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(state.rare_clusters, (state.cluster_mass > 0) & (state.cluster_mass < 0.05))
    np.testing.assert_allclose(state.cov, np.cov(ref, rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(state.sqrt_cov @ state.sqrt_cov, state.cov, atol=1e-10)
    assert state.vendi == pytest.approx(vendi.score_dual(ref), rel=1e-9)
    assert sorted(state.perm.tolist()) == list(range(n))
    # the far-away 3 % component is a rare cluster of its own
    rare_centres = state.centroids[state.rare_clusters]
    assert np.linalg.norm(rare_centres - CENTRES[3], axis=1).min() < 1.5


@pytest.mark.parametrize("scale", [1.0, 5e-7, 3e-7])
def test_variance_ratio_of_a_small_scale_reference(scale: float) -> None:
    """The reference's variance was floored at an absolute 1e-12: at scale 5e-7 (trace 5e-13,
    accepted by the spread check) a healthy sample read variance_ratio 0.49 (an audit)."""
    from collapse_monitor.metrics.cache import ReferenceCache
    from collapse_monitor.metrics.generator import generator_panel, get_generator_state

    rng = np.random.default_rng(0)
    ref = cm.Reference(embeddings=scale * rng.normal(size=(2000, 2)))
    gen = scale * rng.normal(size=(1000, 2))
    res = generator_panel(get_generator_state(ref, ReferenceCache(None)), ref.embeddings, gen, n_boot=20)
    truth = np.var(gen, axis=0, ddof=1).sum() / np.var(ref.embeddings.astype(float), axis=0, ddof=1).sum()
    assert res.metrics["variance_ratio"].value == pytest.approx(truth, rel=1e-3)


def test_the_same_size_reference_vendi_is_computed_once_per_size(monkeypatch) -> None:
    """vendi_ratio's reference subsample was scored again on every check (4 s a check at
    d = 4,096 and 5,000 samples); a check at the baseline's sample count now reuses it."""
    import collapse_monitor.metrics.generator as gen_mod

    rng = np.random.default_rng(4)
    ref = rng.normal(size=(500, 6))
    state = gen_mod.build_generator_state(ref, n_clusters=4)
    calls: list[int] = []
    real = gen_mod.vendi_score

    def counting(x, *a, **kw):
        calls.append(len(x))
        return real(x, *a, **kw)

    monkeypatch.setattr(gen_mod, "vendi_score", counting)
    first = gen_mod.generator_panel(state, ref, rng.normal(size=(200, 6)), n_boot=20)
    second = gen_mod.generator_panel(state, ref, rng.normal(size=(200, 6)), n_boot=20)
    assert calls.count(200) == 1  # the reference's 200-row subsample, once
    expected = real(ref[state.perm[:200]])
    for res in (first, second):
        assert res.metrics["vendi_ratio"].value == pytest.approx(res.metrics["vendi_score"].value / expected, rel=1e-12)
    gen_mod.generator_panel(state, ref, rng.normal(size=(300, 6)), n_boot=20)  # another size: its own
    assert calls.count(300) == 1
    full = gen_mod.generator_panel(state, ref, rng.normal(size=(600, 6)), n_boot=20)  # the whole reference's
    assert full.metrics["vendi_ratio"].value == pytest.approx(full.metrics["vendi_score"].value / state.vendi)
    # a state read back from the disk cache starts with an empty memo (nothing extra is stored)
    again = gen_mod.GeneratorRefState.from_arrays(state.to_arrays())
    assert again._vendi_at == {} and set(state.to_arrays()) == set(again.to_arrays())
