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


def _recall_without(ref: np.ndarray, gen: np.ndarray, groups: np.ndarray, g: int, k: int) -> int:
    """Brute force: the points inside some k-NN ball of the samples outside group ``g``, the
    radii recomputed among those samples alone."""
    kept = gen[groups != g]
    d_ss = cdist(kept, kept, "sqeuclidean")
    np.fill_diagonal(d_ss, np.inf)
    radii2 = np.sort(d_ss, axis=1)[:, k - 1]
    return int((cdist(ref, kept, "sqeuclidean") < radii2[None, :]).any(axis=1).sum())


def _leave_out_counts(p, g: int) -> tuple[int, int]:
    """(radii held fixed, regrown balls) leave-group-``g``-out recall counts from a pass."""
    hits, per_point = p.ref_ball_groups, p.ref_ball_groups.sum(axis=1)
    held = (per_point - hits[:, g]) > 0
    return int(held.sum()), int((held | p.ref_ball_gains[:, g]).sum())


@pytest.mark.parametrize(
    ("case", "dtype"),
    [("plain", "float64"), ("plain", "float32"), ("patch", "float32"), ("all64", "float32"), ("two_groups", "float32")],
)
def test_recall_leave_out_counts_match_brute_force_with_regrown_balls(
    case: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recall's jackknife held the samples' k-NN radii at their full-sample values; removing a
    group grows the remaining samples' balls. The leave-one-group-out recall counts from the
    pass (group hits and ``ref_ball_gains``) equal a brute-force recomputation for every group,
    on the float32 and float64 passes, with unresolved samples patched in float64, with the
    whole pass in float64 and with two groups (the neighbour lists run short and are recomputed)
    (they do not with the radii held fixed: the gains matter)."""
    from collapse_monitor.metrics import knn as knn_mod

    rng = np.random.default_rng(3)
    d, k, n_groups = 8, 4, 2 if case == "two_groups" else 6
    ref, gen = rng.normal(size=(400, d)), rng.normal(size=(300, d))
    if case == "patch":  # a tight cluster far out: float32 cannot resolve its samples' balls
        far = np.full(d, 1e3)
        ref = np.vstack([ref, far + rng.normal(size=(8, d)) * 1e-3])
        gen = np.vstack([gen, far + rng.normal(size=(12, d)) * 1e-3])
    if case == "all64":
        monkeypatch.setattr(knn_mod, "_patch_pays", lambda *a, **kw: False)
    groups = rng.integers(0, n_groups, gen.shape[0])
    calls: list[int] = []
    real = knn_mod._patched_cross
    monkeypatch.setattr(knn_mod, "_patched_cross", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    refills: list[int] = []
    real_rows = knn_mod.rows_knn_ids
    monkeypatch.setattr(knn_mod, "rows_knn_ids", lambda *a, **kw: refills.append(1) or real_rows(*a, **kw))
    p = prdc_pass(ref, gen, k, groups=groups, dtype=dtype)
    assert bool(calls) == (case == "patch")
    # two groups: more than k of a sample's 2k nearest often share one, and those lists are
    # recomputed longer (else the regrown radius would only be a lower bound)
    assert refills or case != "two_groups"
    assert p.ref_ball_gains is not None and p.ref_ball_gains.shape == (ref.shape[0], n_groups)
    fixed_differs = False
    for g in range(n_groups):
        held, regrown = _leave_out_counts(p, g)
        truth = _recall_without(ref, gen, groups, g, k)
        assert regrown == truth, (g, regrown, truth, held)
        fixed_differs |= held != truth
    assert fixed_differs
    assert not p.ref_ball_gains[p.ref_ball_groups.sum(axis=1) > 1].any()  # two groups hold these
    # the regrown pass leaves everything else as the plain one gives it
    plain = prdc_pass(ref, gen, k, dtype=dtype)
    np.testing.assert_array_equal(p.ball_counts, plain.ball_counts)
    np.testing.assert_array_equal(p.ref_in_sample_ball, plain.ref_in_sample_ball)
    np.testing.assert_array_equal(p.sample_radii2, plain.sample_radii2)


def test_without_groups_or_on_the_inverted_file_recall_keeps_fixed_radii() -> None:
    rng = np.random.default_rng(4)
    ref, gen = rng.normal(size=(200, 4)), rng.normal(size=(100, 4))
    assert prdc_pass(ref, gen, 3).ref_ball_gains is None
    assert prdc_pass(ref, gen, 3, groups=np.arange(100) % 4, knn="ivf").ref_ball_gains is None
    assert prdc_pass(ref, gen[:6], 3, groups=np.arange(6) % 3).ref_ball_gains is None  # fewer than 2k + 1


def test_too_many_shell_entries_keep_recalls_radii_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples so spread out that their regrown balls would hold much of the reference: past
    :data:`SHELL_LIMIT` entries the pass stops collecting and recall keeps the fixed radii,
    whatever the block sizes."""
    from collapse_monitor.metrics import _knn_blocks

    rng = np.random.default_rng(5)
    ref, gen = rng.normal(size=(300, 4)), rng.normal(size=(80, 4))
    groups = np.arange(80) % 5
    full = prdc_pass(ref, gen, 4, groups=groups)
    assert full.ref_ball_gains is not None and full.ref_ball_gains.any()
    totals: list[int] = []
    real = _knn_blocks.Shells.entries
    monkeypatch.setattr(_knn_blocks.Shells, "entries", lambda self: totals.append(self.count) or real(self))
    prdc_pass(ref, gen, 4, groups=groups)
    total = totals[-1]
    assert total > 50
    # the limit is on the pass's total of shell entries (an audit: each thread's share of the
    # block was compared with it, counting the points inside the balls too, so the outcome
    # depended on the block sizes and the thread count)
    monkeypatch.setattr(_knn_blocks, "SHELL_LIMIT", total)
    for chunk in (None, 7, 50):
        got = prdc_pass(ref, gen, 4, groups=groups, chunk_size=chunk).ref_ball_gains
        assert got is not None and np.array_equal(got, full.ref_ball_gains), chunk
    monkeypatch.setattr(_knn_blocks, "SHELL_LIMIT", total - 1)
    for chunk in (None, 7, 50):
        capped = prdc_pass(ref, gen, 4, groups=groups, chunk_size=chunk)
        assert capped.ref_ball_gains is None
        np.testing.assert_array_equal(capped.ref_ball_groups, full.ref_ball_groups)


def test_a_copied_sample_lets_its_reference_twin_in_when_its_copies_go() -> None:
    """Memorisation: a sample with k exact copies has radius 0 (an empty ball). Remove the
    group holding its copies and its ball grows, so a reference point equal to it (distance 0,
    which the expansion can round to -1e-13) comes inside. The shell's lower bound was the
    radius (0), which dropped such entries; it is now -inf for radius-0 balls, as the pass's
    own test. Float32, where copies are exact (float64 keeps the expansion's round-off for
    copies, as ``prdc`` does)."""
    rng = np.random.default_rng(7)
    k, d = 2, 8
    twins = rng.normal(size=(6, d)) * 0.3 + 9.0  # isolated points: no other sample is near them
    gen = np.vstack([rng.normal(size=(240, d)), twins, twins, twins])
    groups = np.concatenate([np.arange(240) % 6, np.zeros(6, int), np.ones(6, int), np.ones(6, int)])
    ref = np.vstack([rng.normal(size=(300, d)), twins])
    p = prdc_pass(ref, gen, k, groups=groups)
    assert (p.sample_radii2[240:] == 0).all()
    for g in range(6):
        assert _leave_out_counts(p, g)[1] == _recall_without(ref, gen, groups, g, k), g
    # leaving group 1 (the copies) out puts every reference twin inside its grown twin ball
    assert p.ref_ball_gains[300:, 1].all() and not p.ref_ball_groups[300:].any()


def test_groups_that_leave_at_most_k_samples_keep_recalls_radii_fixed() -> None:
    """With k or fewer samples left, prdc's radius reaches the farthest remaining sample, and a
    ball can shrink instead of growing; such designs (a direct caller's unbalanced groups; the
    panel's groups are equal-sized) keep the fixed radii."""
    rng = np.random.default_rng(0)
    ref, gen = rng.normal(size=(400, 2)), rng.normal(size=(10, 2))
    assert prdc_pass(ref, gen, 3, groups=np.array([0] * 8 + [1] * 2)).ref_ball_gains is None
    assert prdc_pass(ref, gen, 3, groups=np.arange(10) % 2).ref_ball_gains is not None
