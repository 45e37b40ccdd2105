"""collapse_monitor.metrics.classes against scikit-learn and scipy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

from collapse_monitor.errors import InputError
from collapse_monitor.metrics.classes import (
    ClassifierResult,
    accuracy,
    balanced_accuracy,
    class_recall,
    classifier_panel,
    macro_recall,
)
from collapse_monitor.types import MetricValue


def _wilson(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def _random_probe(rng: np.random.Generator, m: int, n_classes: int, acc: float):
    """Long-tailed labels, predictions right with probability ``acc`` (else a random class)."""
    weights = 1.0 / np.arange(1, n_classes + 1) ** 1.5
    labels = rng.choice(n_classes, size=m, p=weights / weights.sum())
    wrong = rng.integers(0, n_classes, size=m)
    preds = np.where(rng.uniform(size=m) < acc, labels, wrong)
    return labels, preds, weights / weights.sum()


def _sk_recall(labels, preds, classes) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(recall_score(labels, preds, labels=classes, average="macro", zero_division=0))


def _macro_ci(labels, preds, classes) -> tuple[float, float]:
    """The documented interval, written out independently (scipy.stats.beta)."""
    z = stats.norm.ppf(0.975)
    rs, means, variances = [], [], []
    for c in classes:
        n = int((labels == c).sum())
        k = int(((labels == c) & (preds == c)).sum())
        rs.append(k / n)
        post = stats.beta(k + 0.5, n - k + 0.5)  # Jeffreys
        means.append(post.mean())
        variances.append(post.var())
    mean = float(np.mean(rs))
    if len(classes) == 1:  # Wilson
        centre = (k + z * z / 2) / (n + z * z)
        half = z * math.sqrt(n) / (n + z * z) * math.sqrt(k / n * (1 - k / n) + z * z / (4 * n))
        return min(mean, max(0.0, centre - half)), max(mean, min(1.0, centre + half))
    m, v = float(np.mean(means)), float(np.sum(variances)) / len(classes) ** 2
    size = m * (1 - m) / v - 1
    lo, hi = stats.beta(m * size, (1 - m) * size).ppf([0.025, 0.975])
    if all(r == 0 for r in rs):
        lo = 0.0
    if all(r == 1 for r in rs):
        hi = 1.0
    return min(mean, lo), max(mean, hi)


SIZES = [(1, 1), (7, 3), (60, 5), (500, 12), (3000, 40)]


@pytest.mark.parametrize(("m", "n_classes"), SIZES)
def test_accuracy_and_recalls_match_sklearn(m: int, n_classes: int) -> None:
    rng = np.random.default_rng(m + n_classes)
    for acc_level in (0.3, 0.9):
        labels, preds, _ = _random_probe(rng, m, n_classes, acc_level)
        mv = accuracy(labels, preds)
        assert mv.value == pytest.approx(accuracy_score(labels, preds), abs=1e-15)
        k = int((labels == preds).sum())
        assert (mv.ci_low, mv.ci_high) == pytest.approx(_wilson(k, m), abs=1e-12)
        assert mv.n == m

        present = sorted(set(labels.tolist()), key=str)
        rec = class_recall(labels, preds)
        assert list(rec) == present
        sk = recall_score(labels, preds, labels=present, average=None, zero_division=0)
        for c, r in zip(present, sk, strict=True):
            n = int((labels == c).sum())
            assert rec[c].value == pytest.approx(r, abs=1e-15)
            assert rec[c].n == n
            assert (rec[c].ci_low, rec[c].ci_high) == pytest.approx(_wilson(round(r * n), n), abs=1e-12)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns when preds hold classes absent from labels
            ref_bal = balanced_accuracy_score(labels, preds)
        bal = balanced_accuracy(labels, preds)
        assert bal.value == pytest.approx(ref_bal, abs=1e-12)
        assert (bal.ci_low, bal.ci_high) == pytest.approx(_macro_ci(labels, preds, present), abs=1e-12)
        assert bal.n == m


def test_macro_recall_subset() -> None:
    rng = np.random.default_rng(4)
    labels, preds, _ = _random_probe(rng, 400, 8, 0.7)
    present = sorted(set(labels.tolist()))
    subset = [*present[-3:], 99]  # 99 never occurs: ignored
    mv = macro_recall(labels, preds, subset)
    assert mv is not None
    assert mv.value == pytest.approx(_sk_recall(labels, preds, present[-3:]), abs=1e-12)
    assert (mv.ci_low, mv.ci_high) == pytest.approx(_macro_ci(labels, preds, present[-3:]), abs=1e-12)
    assert mv.n == int(np.isin(labels, present[-3:]).sum())
    assert macro_recall(labels, preds, [99, 100]) is None
    assert macro_recall(labels, preds, []) is None


def test_macro_interval_never_zero_width() -> None:
    # every recall 0 or 1: the plain r(1-r)/n variance would give a zero-width interval
    bal = balanced_accuracy([0] * 5 + [1] * 3, [0] * 5 + [1] * 3)
    assert bal.value == 1.0 and bal.ci_low < 0.9 and bal.ci_high == 1.0


def test_string_and_mixed_labels() -> None:
    labels = ["cat", "dog", "dog", "eel", "cat", "dog"]
    preds = ["cat", "dog", "cat", "eel", "dog", "dog"]
    rec = class_recall(labels, preds)
    assert {k: v.value for k, v in rec.items()} == {"cat": 0.5, "dog": pytest.approx(2 / 3), "eel": 1.0}
    # int labels vs str predictions of the same classes: compared by string form
    mv = accuracy([1, 2, 3, 3], ["1", "2", "3", "x"])
    assert mv.value == 0.75
    assert accuracy(np.array([1.0, 2.0]), [1, 2]).value == 1.0


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(InputError) as ei:
        accuracy([0, 1, 2], [0, 1])
    assert ei.value.field == "preds"
    with pytest.raises(InputError) as ei:
        accuracy([], [])
    assert ei.value.field == "labels"
    with pytest.raises(InputError) as ei:
        class_recall([0, 1], [0, float("nan")])
    assert ei.value.field == "preds"
    with pytest.raises(InputError) as ei:
        classifier_panel([0, 1], [0, 1], {0: 0.5})
    assert ei.value.field == "priors"
    with pytest.raises(InputError) as ei:
        classifier_panel([0, 1], [0, 1], {0: 0.5, 1: -0.1})
    assert ei.value.field == "priors"
    with pytest.raises(InputError) as ei:
        classifier_panel([0, 1], [0, 1], {0: 0.5, 1: 0.5}, rare_threshold=0.0)
    assert ei.value.field == "rare_threshold"
    with pytest.raises(InputError) as ei:
        classifier_panel([0, 1], [0, 1], {0: 0.5, 1: 0.5}, min_support=0)
    assert ei.value.field == "min_support"
    with pytest.raises(InputError) as ei:
        classifier_panel([0, 1], [0, 1], {0: 0.5, 1: 0.5}, baseline_preds=[0])
    assert ei.value.field == "baseline_preds"


# --------------------------------------------------------------------------- the panel


def _check_panel(labels, preds, priors, base, *, rare_threshold=0.05, min_support=10) -> ClassifierResult:
    res = classifier_panel(
        labels, preds, priors, rare_threshold=rare_threshold, min_support=min_support, baseline_preds=base
    )
    total = sum(priors.values())
    rare = sorted((c for c, p in priors.items() if 0 < p / total < rare_threshold), key=str)  # prior 0: neither
    head = sorted((c for c, p in priors.items() if p / total >= rare_threshold), key=str)
    assert res.rare_classes == rare and res.head_classes == head
    present = sorted(set(labels.tolist()), key=str)
    rare_present = [c for c in present if c in rare]
    head_present = [c for c in present if c in head]  # a prior-0 label with probe items: neither
    mets = res.metrics
    m = len(labels)

    # accuracy / balanced / per-class, with their paired masks
    assert mets["accuracy"].value == pytest.approx(accuracy_score(labels, preds))
    np.testing.assert_array_equal(res.correct, labels == preds)
    assert res.paired["accuracy"].all() and res.paired["accuracy"].size == m
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mets["balanced_accuracy"].value == pytest.approx(balanced_accuracy_score(labels, preds))
    sk = recall_score(labels, preds, labels=present, average=None, zero_division=0)
    for c, r in zip(present, sk, strict=True):
        assert mets[f"class_recall.{c}"].value == pytest.approx(r)
        np.testing.assert_array_equal(res.paired[f"class_recall.{c}"], labels == c)
    assert {k for k in mets if k.startswith("class_recall.")} == {f"class_recall.{c}" for c in present}

    # rare / head macro recall
    for key, group in (("rare_class_recall", rare_present), ("head_class_recall", head_present)):
        if group:
            assert mets[key].value == pytest.approx(_sk_recall(labels, preds, group))
            assert (mets[key].ci_low, mets[key].ci_high) == pytest.approx(_macro_ci(labels, preds, group))
            np.testing.assert_array_equal(res.paired[key], np.isin(labels, group))
        else:
            assert key not in mets and key not in res.paired

    # worst class
    support = {c: int((labels == c).sum()) for c in present}
    recalls = dict(zip(present, sk, strict=True))
    eligible = [c for c in present if support[c] >= min_support] or present
    worst = min(recalls[c] for c in eligible)
    assert mets["worst_class_recall"].value == pytest.approx(worst)
    assert res.worst_class in eligible and recalls[res.worst_class] == pytest.approx(worst)
    np.testing.assert_array_equal(res.paired["worst_class_recall"], labels == res.worst_class)

    # rare prediction ratio
    rare_mass = sum(priors[c] for c in rare) / total
    if rare and rare_mass > 0:
        k = int(np.isin(preds, rare).sum())
        rpr = mets["rare_prediction_ratio"]
        assert rpr.value == pytest.approx(k / m / rare_mass)
        lo, hi = _wilson(k, m)
        assert (rpr.ci_low, rpr.ci_high) == pytest.approx((lo / rare_mass, hi / rare_mass))
    else:
        assert "rare_prediction_ratio" not in mets

    # rare flips
    if base is not None and rare_present:
        items = np.isin(labels, rare_present)
        b = int((items & (base == labels) & (preds != labels)).sum())
        c = int((items & (base != labels) & (preds == labels)).sum())
        n_bc = int((items & (base == labels)).sum())
        fl = mets["rare_flips"]
        assert fl.value == b and fl.n == n_bc
        ref_p = stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
        assert fl.p_value == pytest.approx(ref_p, rel=1e-9)
        if n_bc:
            ci = stats.binomtest(b, n_bc).proportion_ci(method="exact")
            assert (fl.ci_low, fl.ci_high) == pytest.approx((ci.low * n_bc, ci.high * n_bc), rel=1e-8, abs=1e-8)
    else:
        assert "rare_flips" not in mets

    for key, mv in mets.items():
        assert isinstance(mv, MetricValue)
        assert mv.ci_low <= mv.value <= mv.ci_high
        if key not in ("rare_prediction_ratio", "rare_flips"):
            assert mv.ci_low >= 0.0 and mv.ci_high <= 1.0
    return res


@pytest.mark.parametrize(("m", "n_classes"), [(40, 4), (600, 15), (5000, 60)])
def test_panel_matches_references(m: int, n_classes: int) -> None:
    rng = np.random.default_rng(10 * m + n_classes)
    labels, base, weights = _random_probe(rng, m, n_classes, 0.9)
    priors = {c: float(w) for c, w in enumerate(weights)}
    # the new generation forgets the rare classes: their items are predicted as class 0
    rare = [c for c, p in priors.items() if p < 0.05]
    preds = base.copy()
    forget = np.isin(labels, rare) & (rng.uniform(size=m) < 0.6)
    preds[forget] = 0
    res = _check_panel(labels, preds, priors, base)
    if rare and np.isin(labels, rare).sum() >= 20:
        assert res.metrics["rare_flips"].p_value < 1e-3
        assert res.metrics["rare_class_recall"].value < res.metrics["head_class_recall"].value
    # and without a baseline
    _check_panel(labels, preds, priors, None, min_support=3)


def test_panel_prior_class_without_probe_items_and_string_labels() -> None:
    labels = np.array(["a"] * 30 + ["b"] * 20 + ["c"] * 3, dtype=object)
    preds = labels.copy()
    preds[:5] = "b"
    preds[-1] = "a"
    priors = {"a": 0.55, "b": 0.4, "c": 0.03, "z": 0.02}  # z: rare, never in the probe set
    res = _check_panel(labels, preds, priors, labels.copy())
    assert res.rare_classes == ["c", "z"]
    assert "class_recall.z" not in res.metrics
    assert res.metrics["rare_class_recall"].value == pytest.approx(2 / 3)
    assert res.metrics["rare_flips"].value == 1.0
    # worst over classes with support >= 10 ignores the 3-item class c
    assert res.worst_class == "a"


def test_panel_int_labels_with_string_prior_keys() -> None:
    labels = np.array([0] * 50 + [1] * 45 + [2] * 5)
    preds = labels.copy()
    preds[-3:] = 0
    res = classifier_panel(labels, preds, {"0": 0.5, "1": 0.46, "2": 0.04})
    assert res.rare_classes == ["2"]
    assert res.metrics["class_recall.2"].value == pytest.approx(0.4)
    assert res.metrics["rare_class_recall"].value == pytest.approx(0.4)


def test_panel_single_class_and_no_rare_classes() -> None:
    labels = np.array([3] * 12)
    preds = np.array([3] * 10 + [4] * 2)
    res = _check_panel(labels, preds, {3: 0.9, 4: 0.1}, labels.copy())
    assert res.rare_classes == [] and res.head_classes == [3, 4]
    assert set(res.metrics) == {
        "accuracy",
        "balanced_accuracy",
        "class_recall.3",
        "head_class_recall",
        "worst_class_recall",
    }
    assert res.metrics["worst_class_recall"].value == pytest.approx(10 / 12)
    # a single class that is rare: no head group, rare group present
    res = classifier_panel([7] * 4, [7, 7, 7, 1], {7: 0.01, 1: 0.99}, baseline_preds=[7, 7, 1, 7])
    assert "head_class_recall" not in res.metrics
    assert res.metrics["rare_class_recall"].value == 0.75
    assert res.metrics["worst_class_recall"].value == 0.75  # no class reaches min_support: all count
    assert res.metrics["rare_flips"].value == 1.0


def test_panel_default_priors_are_label_frequencies() -> None:
    labels = np.array([0] * 97 + [1] * 3)
    res = classifier_panel(labels, labels, None)
    assert res.rare_classes == [1] and res.head_classes == [0]
    assert res.metrics["rare_prediction_ratio"].value == pytest.approx(1.0)


def test_panel_results_are_read_only() -> None:
    res = classifier_panel([0, 1, 1], [0, 1, 0], {0: 0.5, 1: 0.5})
    with pytest.raises(ValueError):
        res.correct[0] = False
    with pytest.raises(ValueError):
        res.paired["accuracy"][0] = False


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 60).flatmap(
        lambda m: st.tuples(
            st.lists(st.integers(0, 5), min_size=m, max_size=m),
            st.lists(st.integers(0, 5), min_size=m, max_size=m),
            st.lists(st.integers(0, 5), min_size=m, max_size=m),
        )
    ),
    st.lists(st.one_of(st.just(0.0), st.floats(1e-4, 1.0)), min_size=6, max_size=6).filter(lambda w: sum(w) > 0),
    st.sampled_from([0.05, 0.2, 0.5]),
    st.integers(1, 12),
)
def test_panel_properties(arrays, weights, rare_threshold, min_support) -> None:
    labels, preds, base = (np.array(a) for a in arrays)
    priors = {c: w for c, w in enumerate(weights)}
    _check_panel(labels, preds, priors, base, rare_threshold=rare_threshold, min_support=min_support)


def test_panel_skips_ratio_when_rare_prior_mass_underflows() -> None:
    res = classifier_panel([0, 0, 1], [0, 1, 1], {0: 1.0, 1: 5e-324})
    assert res.rare_classes == [1]
    assert "rare_prediction_ratio" not in res.metrics
    assert res.metrics["rare_class_recall"].value == 1.0


def test_a_prior_zero_label_is_no_rare_class() -> None:
    """Metrics audit (2026-12-06): the InputError for an unknown predicted label says to add it
    with prior 0; such a label then counted as a rare class, so predictions moved from a real
    rare class onto it kept rare_prediction_ratio at 1.0 (0.0 without the label)."""
    labels = np.array([0] * 90 + [1] * 6 + [2] * 4)
    priors = {0: 0.9, 1: 0.06, 2: 0.04, 9: 0.0}
    moved = labels.copy()
    moved[moved == 2] = 9
    res = classifier_panel(labels, moved, priors)
    assert res.rare_classes == [2] and 9 not in res.head_classes
    assert res.metrics["rare_prediction_ratio"].value == 0.0
    assert classifier_panel(labels, labels, priors).metrics["rare_prediction_ratio"].value == 1.0


def test_a_prior_zero_label_with_probe_items_is_in_no_group_recall() -> None:
    """Statistics audit (2026-12-08): a prior-0 label with probe items was left out of
    ``head_classes`` but counted in ``head_class_recall`` (0.667 where the head classes read
    1.0) and in its paired test's items."""
    labels = [0] * 10 + [1] * 10 + [2] * 10
    preds = [0] * 10 + [1] * 10 + [0] * 10  # class 2 (prior 0) never right
    res = classifier_panel(labels, preds, {0: 0.5, 1: 0.5, 2: 0.0})
    assert res.head_classes == [0, 1] and res.rare_classes == []
    assert res.metrics["head_class_recall"].value == 1.0
    assert res.metrics["balanced_accuracy"].value == pytest.approx(2 / 3)  # every probe class
    head_items = res.paired["head_class_recall"]
    assert head_items.sum() == 20 and not head_items[20:].any()


def test_many_classes_check_does_not_hold_one_mask_per_class(tmp_path) -> None:
    """A check over C classes x N probe items held C boolean masks of N items at once
    (16,000 x 100,000: 3.4 GB peak); the masks are made one at a time now. The detection
    result is the same as with eagerly built masks (per-class McNemar tests included)."""
    import tracemalloc

    import collapse_monitor as cm

    c, n = 2000, 20_000
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.arange(n) % c)
    preds = np.where(rng.random(n) < 0.8, labels, rng.integers(0, c, n))
    preds[labels == 7] = 8  # one class forgotten: its paired test must still find it
    mon = cm.CollapseMonitor("many", reference=cm.Reference(labels=labels), sinks=[], home=tmp_path)
    mon.check(cm.Observation(predictions=labels, generation=0))
    tracemalloc.start()
    try:
        report = mon.check(cm.Observation(predictions=preds, generation=1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < c * n / 2, f"peak {peak / 1e6:.0f} MB for {c * n / 1e6:.0f} MB of per-class masks"
    tested = {f.key: f for f in report.findings if f.kind == "baseline"}
    assert tested["class_recall.7"].test.startswith("mcnemar")
    assert tested["class_recall.7"].p_value == pytest.approx(stats.binomtest(10, 10, 0.5, "greater").pvalue)


@pytest.mark.parametrize(
    ("sizes", "recalls"),
    [
        ((30, 2), (0.8, 0.5)),
        ((40, 40, 3), (0.9, 0.9, 0.67)),
        ((5,), (0.6,)),
        ((10, 10), (0.5, 0.9)),
        # the normal interval on adjusted recalls covered 0.82, 0.66 and 0.65 here (an audit)
        ((50, 50), (0.95, 0.99)),
        ((3, 5), (0.95, 0.95)),
        ((6, 6), (0.02, 0.05)),
    ],
)
def test_macro_recall_interval_covers_by_exact_enumeration(sizes, recalls) -> None:
    """Exact coverage of the 95 % macro-recall interval over every outcome of the classes'
    binomials. Centred on the raw mean with the adjusted variance it covered 0.54 for classes
    of 30 and 2 items and 0.84 for (40, 40, 3); see the module docstring for the Beta
    posterior that replaced the adjusted normal interval."""
    from itertools import product

    from collapse_monitor.metrics.classes import _macro

    truth = float(np.mean(recalls))
    covered = 0.0
    for ks in product(*(range(n + 1) for n in sizes)):
        prob = math.prod(stats.binom.pmf(k, n, r) for k, n, r in zip(ks, sizes, recalls, strict=True))
        mv = _macro(np.array(sizes), np.array(ks))
        assert mv is not None and mv.ci_low <= mv.value <= mv.ci_high
        covered += prob * (mv.ci_low <= truth <= mv.ci_high)
    assert covered >= 0.92, covered


def test_a_numpy_threshold_is_a_number() -> None:
    """Metrics audit (stop 36): rare_threshold=np.float32(0.1) was refused as "expected a number"."""
    from collapse_monitor.metrics.classes import classifier_panel

    labels = np.array([0] * 95 + [1] * 5)
    a = classifier_panel(labels, labels, None, rare_threshold=np.float32(0.1))
    b = classifier_panel(labels, labels, None, rare_threshold=0.1)
    assert list(a.rare_classes) == list(b.rare_classes) and len(a.rare_classes) == 1
    with pytest.raises(InputError, match="rare_threshold"):
        classifier_panel(labels, labels, None, rare_threshold=np.True_)


def test_a_prior_at_the_threshold_is_not_rare_whatever_the_rounding() -> None:
    """A class with exactly 5 % of the probe items (3 of 60): the reference's normalised prior,
    normalised again, became 0.04999999999999999 and the class rare, but only when the priors
    came from the reference (an audit)."""
    import collapse_monitor as cm
    from collapse_monitor.metrics.classes import classifier_panel

    labels = ["r"] * 3 + ["x"] * 24 + ["y"] * 31 + ["z"] * 2
    ref = cm.Reference(labels=labels)
    for priors in (ref.class_priors, None):
        assert classifier_panel(ref.labels, ref.labels, priors, rare_threshold=0.05).rare_classes == ["z"]
    pri = {"a": 0.05, "b": 0.15, "c": 0.7, "d": 0.1}  # sums to 0.9999999999999999
    lab = [k for k in pri for _ in range(3)]
    ref = cm.Reference(labels=lab, class_priors=pri)
    assert classifier_panel(ref.labels, ref.labels, ref.class_priors, rare_threshold=0.05).rare_classes == []
    assert classifier_panel(lab, lab, pri, rare_threshold=0.05).rare_classes == []
