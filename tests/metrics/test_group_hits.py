"""The k-NN pass's per-group ball tests (the grouped jackknife of the coverage shares) against
brute force, on every path: float32, the float64 patch for unresolved rows, and IVF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from collapse_monitor.errors import InputError
from collapse_monitor.metrics.generator import grouped_design_effect
from collapse_monitor.metrics.knn import prdc_pass


def _brute(ref: np.ndarray, gen: np.ndarray, groups: np.ndarray, p) -> tuple[np.ndarray, np.ndarray]:
    d2 = cdist(ref, gen, "sqeuclidean")
    inside = d2 < p.ref_radii2[:, None]
    in_ball = d2 < p.sample_radii2[None, :]
    g = int(groups.max()) + 1
    cov = np.stack([inside[:, groups == j].any(axis=1) for j in range(g)], axis=1)
    ball = np.stack([in_ball[:, groups == j].any(axis=1) for j in range(g)], axis=1)
    return cov, ball


@pytest.mark.parametrize("knn", ["exact", "ivf"])
def test_group_hits_match_brute_force_and_leave_the_pass_unchanged(knn: str) -> None:
    rng = np.random.default_rng(0)
    ref, gen = rng.normal(size=(500, 8)), rng.normal(size=(400, 8))
    groups = rng.integers(0, 20, 400).astype(np.int32)  # any integer type
    extra = {"nprobe": 10_000} if knn == "ivf" else {}
    plain = prdc_pass(ref, gen, 5, knn=knn, **extra)
    grouped = prdc_pass(ref, gen, 5, knn=knn, groups=groups, **extra)
    assert plain.ref_cover_groups is None
    np.testing.assert_array_equal(grouped.ball_counts, plain.ball_counts)  # back in the input order
    np.testing.assert_array_equal(grouped.covered, plain.covered)
    np.testing.assert_allclose(grouped.sample_radii2, plain.sample_radii2, rtol=1e-6)
    cov, ball = _brute(ref, gen, groups, grouped)
    np.testing.assert_array_equal(grouped.ref_cover_groups, cov)
    np.testing.assert_array_equal(grouped.ref_ball_groups, ball)
    np.testing.assert_array_equal(grouped.ref_cover_groups.any(axis=1), grouped.covered)


def test_group_hits_on_the_float64_patch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tight clusters far from the centre: float32 cannot resolve their balls and those rows
    are recomputed in float64 (their groups too)."""
    from collapse_monitor.metrics import knn as knn_mod

    calls = []
    real = knn_mod._patched_cross
    monkeypatch.setattr(knn_mod, "_patched_cross", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(1)
    far = np.full(8, 1e3)  # float32 cannot resolve 1e-3 there, float64 can
    ref = np.vstack([rng.normal(size=(300, 8)), far + rng.normal(size=(6, 8)) * 1e-3])
    gen = np.vstack([rng.normal(size=(250, 8)), far + rng.normal(size=(5, 8)) * 1e-3])
    groups = rng.integers(0, 7, gen.shape[0])
    grouped = prdc_pass(ref, gen, 2, groups=groups)
    assert calls, "the patch path did not run"
    cov, ball = _brute(ref, gen, groups, grouped)
    np.testing.assert_array_equal(grouped.ref_cover_groups, cov)
    np.testing.assert_array_equal(grouped.ref_ball_groups, ball)
    np.testing.assert_array_equal(grouped.ball_counts, prdc_pass(ref, gen, 2).ball_counts)


def test_groups_must_be_one_non_negative_integer_per_sample() -> None:
    rng = np.random.default_rng(2)
    ref, gen = rng.normal(size=(50, 3)), rng.normal(size=(40, 3))
    for bad in (np.zeros(39, dtype=int), np.full(40, -1), np.zeros(40)):
        with pytest.raises(InputError, match="groups"):
            prdc_pass(ref, gen, 3, groups=bad)


def test_grouped_design_effect_is_the_jackknife_over_the_binomial() -> None:
    hits = np.zeros((10, 4), dtype=bool)
    hits[0:4, 0] = True  # four points only group 0 covers
    hits[4:6, 1] = True  # two only group 1 covers
    hits[6:8, :] = True  # two every group covers; two uncovered
    lost = np.array([4.0, 2.0, 0.0, 0.0])
    jack = 3 / 4 * np.sum((lost - lost.mean()) ** 2)
    binomial = 8 * 2 / 10
    assert grouped_design_effect(hits, np.ones(10, bool)) == pytest.approx(jack / binomial)
    # floor at 1; no variance (all covered), one group or nothing: 1
    assert grouped_design_effect(np.ones((10, 4), bool), np.ones(10, bool)) == 1.0
    assert grouped_design_effect(np.eye(4, dtype=bool), np.ones(4, bool)) == 1.0
    assert grouped_design_effect(hits[:, :1], np.ones(10, bool)) == 1.0
    assert grouped_design_effect(None, np.ones(10, bool)) == 1.0
    assert grouped_design_effect(hits, np.zeros(10, bool)) == 1.0


def test_group_ids_with_gaps_are_renumbered() -> None:
    """An audit: ids {0, 1, 2, 5} made empty groups 3 and 4, which the jackknife counted (a
    design effect of 18.4 where the same partition labelled 0..3 gives 1.6)."""
    from collapse_monitor.metrics.knn import prdc_pass

    rng = np.random.default_rng(3)
    ref, gen = rng.normal(size=(200, 4)), rng.normal(size=(120, 4))
    dense = rng.integers(0, 4, 120)
    gaps = np.array([0, 1, 2, 5])[dense]
    a, b = prdc_pass(ref, gen, groups=dense), prdc_pass(ref, gen, groups=gaps)
    assert b.ref_cover_groups.shape == (200, 4)
    assert np.array_equal(a.ref_cover_groups, b.ref_cover_groups) and np.array_equal(
        a.ref_ball_groups, b.ref_ball_groups
    )
    everyone = np.ones(200, bool)
    assert grouped_design_effect(b.ref_cover_groups, everyone) == grouped_design_effect(a.ref_cover_groups, everyone)
    huge = prdc_pass(ref, gen, groups=np.where(dense == 3, 10**12, dense))  # no column per id up to it
    assert huge.ref_cover_groups.shape == (200, 4)


def test_the_inverted_file_pass_gives_the_same_values_with_groups() -> None:
    """An audit: the samples were sorted by group before the inverted file's k-means, so
    asking for the group hits changed the approximate coverage (0.9033 -> 0.8967) and recall."""
    from collapse_monitor.metrics.knn import prdc_pass

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 8)).astype(np.float32)
    gen = rng.normal(size=(200, 8)).astype(np.float32)
    groups = rng.integers(0, 20, 200)
    kw = {"k": 5, "knn": "ivf", "nlist": 8, "nprobe": 2, "seed": 0}
    plain, grouped = prdc_pass(ref, gen, **kw), prdc_pass(ref, gen, groups=groups, **kw)
    for name in ("ref_covered", "ref_in_sample_ball", "ball_counts", "sample_radii2", "ref_radii2"):
        assert np.array_equal(getattr(plain, name), getattr(grouped, name)), name
    assert np.array_equal(grouped.ref_cover_groups.any(axis=1), grouped.ref_covered)
    assert np.array_equal(grouped.ref_ball_groups.any(axis=1), grouped.ref_in_sample_ball)
