"""Classifier metrics on the frozen probe set: accuracy, per-class / rare / head / worst-class
recall, the rare-prediction ratio and rare-class flips against the baseline.

Early model collapse shows first in the tails: rare classes stop being predicted while the
aggregate accuracy barely moves (Shumailov et al., Nature 631:755, 2024). Every function is
pure (labels in, :class:`~collapse_monitor.types.MetricValue` out) and works on per-class
counts (support, true positives), which add up exactly across shards.

Intervals (95 % by default):

* a single proportion (accuracy, one class's recall, the rare-prediction share): Wilson
  (1927) score interval;
* a mean of per-class recalls (balanced accuracy, rare/head macro recall): the posterior of
  the mean recall, each class's recall with its Jeffreys posterior ``Beta(tp_c + 1/2,
  n_c - tp_c + 1/2)`` (Brown, Cai & DasGupta 2001), approximated by the Beta distribution with
  the same mean and variance; its equal-tailed quantiles (Brodersen et al. 2010, "The balanced
  accuracy and its posterior distribution", ICPR: the same posterior, by convolution). The end
  at 0 or 1 is exact when every recall is 0 or 1, and the interval is widened to hold the mean
  recall itself. The normal interval on Agresti-Coull adjusted recalls used before (to
  2026-12-07) covered 0.82 for two classes of 50 items at recalls .95 and .99, and 0.53 for
  three classes of 2 items at .9 (exact enumeration, an audit); this one covers 0.97 and 0.89
  there. Over a single class it is that class's Wilson interval;
* rare flips: Clopper & Pearson (1934) interval of the flip rate among baseline-correct rare
  items, scaled to a count; p-value from the exact McNemar (1947) test.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validate import as_labels
from ..errors import InputError
from ..types import MetricValue
from .stats import clopper_pearson, mcnemar_exact, wilson_interval

__all__ = [
    "ClassifierResult",
    "accuracy",
    "balanced_accuracy",
    "class_recall",
    "classifier_panel",
    "macro_recall",
]

_CONF = 0.95


# --------------------------------------------------------------------------- encoding


def _labels(x: Any, field: str, length: int | None = None) -> np.ndarray:
    arr = as_labels(x, field)
    if length is not None and arr.size != length:
        raise InputError(field, f"has {arr.size} entries but labels has {length}: they must align item by item")
    return arr


def _unify(arrays: list[np.ndarray], keys: list[Hashable]) -> tuple[list[np.ndarray], list[Hashable]]:
    """If str and int labels meet across arrays / prior keys, compare everything by str form
    (as metric keys and ``_validate.as_labels`` do)."""
    kinds = {isinstance(v, str) for a in arrays for v in set(a.tolist())} | {isinstance(k, str) for k in keys}
    if len(kinds) <= 1:
        return arrays, keys
    return [np.array([str(v) for v in a], dtype=object) for a in arrays], [str(k) for k in keys]


def _sort_key(v: Hashable) -> str:
    return str(v)


def _encode(vocab: list[Hashable], arr: np.ndarray) -> np.ndarray:
    index = {v: i for i, v in enumerate(vocab)}
    return np.fromiter((index.get(v, -1) for v in arr.tolist()), dtype=np.int64, count=arr.size)


@dataclass(frozen=True)
class _Counts:
    """Per-class sufficient statistics: ``support[i]`` probe items of ``classes[i]``, ``tp[i]``
    of them predicted correctly. Sums across shards merge exactly."""

    classes: list[Hashable]
    support: np.ndarray
    tp: np.ndarray


def _prepare(labels: Any, preds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Counts]:
    """Validated (label codes, pred codes, correct mask, counts) over the labels' classes."""
    lab = _labels(labels, "labels")
    prd = _labels(preds, "preds", len(lab))
    (lab, prd), _ = _unify([lab, prd], [])
    classes = sorted(set(lab.tolist()), key=_sort_key)
    yc = _encode(classes, lab)
    pc = _encode(classes, prd)
    correct = yc == pc
    support = np.bincount(yc, minlength=len(classes)).astype(np.int64)
    tp = np.bincount(yc[correct], minlength=len(classes)).astype(np.int64)
    return yc, pc, correct, _Counts(classes, support, tp)


# --------------------------------------------------------------------------- reductions


def _proportion(k: int, n: int, *, confidence: float = _CONF) -> MetricValue:
    lo, hi = wilson_interval(int(k), int(n), confidence)
    v = k / n
    return MetricValue(v, min(lo, v), max(hi, v), n=int(n))


def _macro(support: np.ndarray, tp: np.ndarray, *, confidence: float = _CONF) -> MetricValue | None:
    """Mean recall over the given classes that have support; see the module docstring."""
    keep = support > 0
    if not keep.any():
        return None
    n = support[keep].astype(np.float64)
    k = tp[keep].astype(np.float64)
    value = float(np.mean(k / n))
    if n.size == 1:  # one class: its own Wilson interval, as class_recall.<c> reports it
        lo, hi = wilson_interval(int(k[0]), int(n[0]), confidence)
        return MetricValue(value, min(lo, value), max(hi, value), n=int(n[0]))
    a, b = k + 0.5, n - k + 0.5  # each class's Jeffreys posterior
    mean = float(np.mean(a / (a + b)))
    var = float(np.sum(a * b / ((a + b) ** 2 * (a + b + 1.0)))) / n.size**2
    size = mean * (1.0 - mean) / var - 1.0  # > 0: the mean of Betas varies less than one Beta
    from scipy.special import betaincinv  # lazy, as in clopper_pearson

    tail = (1.0 - confidence) / 2.0
    lo = 0.0 if not k.any() else float(betaincinv(mean * size, (1.0 - mean) * size, tail))
    hi = 1.0 if bool(np.all(k == n)) else float(betaincinv(mean * size, (1.0 - mean) * size, 1.0 - tail))
    return MetricValue(value, min(lo, value), max(hi, value), n=int(n.sum()))


# --------------------------------------------------------------------------- public metrics


def accuracy(labels: Any, preds: Any) -> MetricValue:
    """Share of probe items predicted correctly, with a Wilson (1927) 95 % interval (n = m).

    >>> mv = accuracy([0, 0, 1, 1, 2], [0, 1, 1, 1, 2])
    >>> mv.value, round(mv.ci_low, 3), round(mv.ci_high, 3), mv.n
    (0.8, 0.376, 0.964, 5)
    """
    _, _, correct, _ = _prepare(labels, preds)
    return _proportion(int(correct.sum()), correct.size)


def class_recall(labels: Any, preds: Any) -> dict[Any, MetricValue]:
    """Recall of every class present in ``labels`` (TP / support), each with a Wilson (1927)
    interval (n = support). Classes with no probe items are omitted. Keys are the labels,
    ordered by their string form.

    >>> {k: v.value for k, v in class_recall(["a", "a", "b", "b"], ["a", "b", "b", "b"]).items()}
    {'a': 0.5, 'b': 1.0}
    """
    _, _, _, counts = _prepare(labels, preds)
    return {c: _proportion(int(t), int(s)) for c, s, t in zip(counts.classes, counts.support, counts.tp, strict=True)}


def balanced_accuracy(labels: Any, preds: Any) -> MetricValue:
    """Mean of per-class recalls over the classes present in ``labels`` (Brodersen et al.
    2010; equals scikit-learn's ``balanced_accuracy_score``). Interval: equal-tailed quantiles
    of the mean recall's posterior, each class's recall with its Jeffreys posterior, as a
    moment-matched Beta (module docstring). ``n`` = number of probe items.

    >>> mv = balanced_accuracy([0, 0, 0, 0, 1], [0, 0, 0, 0, 0])
    >>> mv.value, round(mv.ci_low, 3), round(mv.ci_high, 3)
    (0.5, 0.296, 0.83)
    """
    _, _, _, counts = _prepare(labels, preds)
    mv = _macro(counts.support, counts.tp)
    assert mv is not None  # labels is non-empty, so some class has support
    return mv


def macro_recall(labels: Any, preds: Any, classes: Any) -> MetricValue | None:
    """Macro recall over the subset ``classes`` (only those with probe items count), with the
    same interval as :func:`balanced_accuracy`; ``None`` when no class of the subset has
    probe items.

    >>> macro_recall([0, 0, 1, 1, 2], [0, 1, 1, 1, 2], classes=[1, 2]).value
    1.0
    >>> macro_recall([0, 0, 1], [0, 0, 1], classes=[7]) is None
    True
    """
    lab = _labels(labels, "labels")
    prd = _labels(preds, "preds", len(lab))
    if classes is None or isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise InputError("classes", f"expected a list of class labels, got {type(classes).__name__}")
    wanted_list = list(classes)
    subset = _labels(wanted_list, "classes").tolist() if wanted_list else []
    (lab, prd), subset = _unify([lab, prd], subset)
    _, _, _, counts = _prepare(lab, prd)
    wanted = set(subset)
    idx = [i for i, c in enumerate(counts.classes) if c in wanted]
    return _macro(counts.support[idx], counts.tp[idx])


class ItemMasks(Mapping[str, np.ndarray]):
    """Metric key -> read-only boolean mask of the probe items it rests on, made on access.

    One mask per class held at once would be classes x items booleans (16,000 classes x
    100,000 probe items: 1.6 GB); each mask here is built when it is read and dropped by the
    caller after its test.
    """

    def __init__(self, codes: np.ndarray) -> None:
        self._codes = codes
        self._groups: dict[str, np.ndarray | None] = {}  # None: every item
        self._n_codes = int(codes.max(initial=-1)) + 1
        #: per (current, baseline) vector pair: items lost and gained, counted per class
        self._per_class: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _set(self, key: str, group: np.ndarray | None) -> None:
        self._groups[key] = group

    def __getitem__(self, key: str) -> np.ndarray:
        group = self._groups[key]
        if group is None:
            mask = np.ones(self._codes.size, dtype=bool)
        elif group.size == 1:
            mask = self._codes == group[0]
        else:
            mask = np.isin(self._codes, group)
        mask.setflags(write=False)
        return mask

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)

    def __repr__(self) -> str:
        return f"ItemMasks({len(self)} keys over {self._codes.size} items)"

    def discordant(self, key: str, cur: np.ndarray, base: np.ndarray) -> tuple[int, int] | None:
        """McNemar's ``(b, c)`` over the items of ``key`` (see ``detection.discordant``), from
        per-class counts made once per (current, baseline) pair: a check of C classes against
        R replicates counted every class's items again, C x (1 + R) passes over all items (9 s a
        check at 5,000 classes, 100k items and 20 replicates). None when the vectors are not
        one value per item."""
        if cur.shape != self._codes.shape or base.shape != self._codes.shape:
            return None
        pair = (id(cur), id(base))
        hit = self._per_class.get(pair)
        if hit is None or hit[0] is not cur or hit[1] is not base:
            c_b, b_b = np.asarray(cur, dtype=bool), np.asarray(base, dtype=bool)
            lost = np.bincount(self._codes[b_b & ~c_b], minlength=self._n_codes)
            gained = np.bincount(self._codes[~b_b & c_b], minlength=self._n_codes)
            if len(self._per_class) >= 64:  # the baseline and its replicates, for one check
                self._per_class.clear()
            hit = self._per_class[pair] = (cur, base, lost, gained)
        lost, gained = hit[2], hit[3]
        group = self._groups[key]
        if group is None:
            return int(lost.sum()), int(gained.sum())
        return int(lost[group].sum()), int(gained[group].sum())


@dataclass(frozen=True)
class ClassifierResult:
    """All classifier metrics of one check, plus what detection needs for paired tests.

    ``metrics``: canonical keys (``metrics/_spec.py``) -> MetricValue. ``correct``: per probe
    item, predicted right. ``rare_classes`` / ``head_classes``: every class of the priors
    split at ``rare_threshold`` (whether or not it has probe items; a prior-0 label is in
    neither), sorted by string form.
    ``paired``: metric key -> boolean mask of the probe items the metric rests on, for exact
    McNemar tests against the baseline's ``correct`` (an :class:`ItemMasks`: each mask is
    made when read). ``worst_class``: the class behind
    ``worst_class_recall``.
    """

    metrics: dict[str, MetricValue]
    correct: np.ndarray
    rare_classes: list[Any]
    head_classes: list[Any]
    paired: Mapping[str, np.ndarray] = field(default_factory=dict)
    worst_class: Any = None


def _priors(priors: Mapping[Hashable, Any], classes: list[Hashable]) -> dict[Hashable, float]:
    out: dict[Hashable, float] = {}
    for k, v in priors.items():
        if isinstance(v, bool):
            raise InputError("priors", f"prior of {k!r} is not a number (got {v!r})")
        try:
            p = float(v)
        except (TypeError, ValueError):
            raise InputError("priors", f"prior of {k!r} is not a number") from None
        if not math.isfinite(p) or p < 0:
            raise InputError("priors", f"prior of {k!r} must be finite and >= 0, got {v!r}")
        out[k] = out.get(k, 0.0) + p
    total = sum(out.values())
    if total <= 0:
        raise InputError("priors", "priors sum to 0")
    missing = [c for c in classes if c not in out]
    if missing:
        raise InputError("priors", f"has no prior for label(s) {sorted(map(str, missing))[:5]} found in labels")
    return {k: p / total for k, p in out.items()}


def classifier_panel(
    labels: Any,
    preds: Any,
    priors: Mapping[Any, float] | None,
    *,
    rare_threshold: float = 0.05,
    min_support: int = 10,
    baseline_preds: Any = None,
) -> ClassifierResult:
    """Every classifier metric (README, "What it measures") on the probe set.

    ``priors`` ({label: prior}, normalised here; ``None`` = label frequencies of ``labels``)
    decides which classes are rare (prior < ``rare_threshold``). Keys produced:
    ``accuracy``, ``balanced_accuracy``, ``class_recall.<label>`` (classes with probe items),
    ``rare_class_recall`` / ``head_class_recall`` (when that group has probe items),
    ``worst_class_recall`` (min over classes with support >= ``min_support``, or over all
    classes with probe items when none has that much), ``rare_prediction_ratio`` (share of
    predictions in rare classes / sum of rare priors; when rare classes have prior mass) and,
    given ``baseline_preds``, ``rare_flips``: rare probe items right at baseline and wrong
    now, with the one-sided exact McNemar p-value (b = right->wrong, c = wrong->right) and
    ``n`` = baseline-correct rare items.

    >>> labels = [0] * 8 + [1] * 8 + [2] * 2
    >>> preds = [0] * 8 + [1] * 7 + [0] + [0, 2]
    >>> res = classifier_panel(labels, preds, {0: 0.48, 1: 0.48, 2: 0.04}, min_support=5)
    >>> res.rare_classes, round(res.metrics["rare_class_recall"].value, 3)
    ([2], 0.5)
    >>> res.metrics["worst_class_recall"].value, res.worst_class
    (0.875, 1)
    >>> flips = classifier_panel(labels, preds, {0: 0.48, 1: 0.48, 2: 0.04},
    ...                          baseline_preds=labels).metrics["rare_flips"]
    >>> flips.value, flips.p_value
    (1.0, 0.5)
    """
    lab = _labels(labels, "labels")
    prd = _labels(preds, "preds", len(lab))
    base = None if baseline_preds is None else _labels(baseline_preds, "baseline_preds", len(lab))
    if (
        isinstance(rare_threshold, (bool, np.bool_))
        or not isinstance(rare_threshold, (int, float, np.integer, np.floating))
        or not (0.0 < float(rare_threshold) <= 1.0)
    ):
        raise InputError("rare_threshold", f"expected a number in (0, 1], got {rare_threshold!r}")
    if isinstance(min_support, bool) or not isinstance(min_support, (int, np.integer)) or min_support < 1:
        raise InputError("min_support", f"expected an int >= 1, got {min_support!r}")

    if priors is not None and (not isinstance(priors, Mapping) or not priors):
        raise InputError("priors", "expected a non-empty mapping {label: prior}")
    prior_keys: list[Hashable] = [] if priors is None else as_labels(list(priors.keys()), "priors").tolist()
    arrays = [lab, prd] if base is None else [lab, prd, base]
    arrays, prior_keys = _unify(arrays, prior_keys)
    lab, prd = arrays[0], arrays[1]
    base = arrays[2] if base is not None else None
    if priors is None:
        pri = {c: k / lab.size for c, k in Counter(lab.tolist()).items()}
    else:
        pri = _priors(dict(zip(prior_keys, priors.values(), strict=True)), sorted(set(lab.tolist()), key=_sort_key))

    yc, _, correct, counts = _prepare(lab, prd)
    classes, support, tp = counts.classes, counts.support, counts.tp
    # a prior-0 label (one the reference never has, added so predictions of it are not unknown)
    # is no rare class: predictions moved onto it counted as rare predictions
    # a prior at the threshold is not rare, whatever the rounding of its normalisations: 3/60
    # renormalised became 0.04999999999999999 and rare, as the priors came (an audit)
    cut = rare_threshold * (1.0 - 1e-9)
    rare = sorted((c for c, p in pri.items() if 0 < p < cut), key=_sort_key)
    head = sorted((c for c, p in pri.items() if p >= cut), key=_sort_key)
    rare_set, head_set = set(rare), set(head)
    is_rare_cls = np.array([c in rare_set for c in classes], dtype=bool)
    # a prior-0 label with probe items is in neither group's recall, as in neither list (it
    # counted in head_class_recall and its paired test: an audit)
    is_head_cls = np.array([c in head_set for c in classes], dtype=bool)

    metrics: dict[str, MetricValue] = {}
    yc.setflags(write=False)
    paired = ItemMasks(yc)
    m = lab.size
    metrics["accuracy"] = _proportion(int(correct.sum()), m)
    paired._set("accuracy", None)
    bal = _macro(support, tp)
    assert bal is not None
    metrics["balanced_accuracy"] = bal
    for i, c in enumerate(classes):
        key = f"class_recall.{c}"
        metrics[key] = _proportion(int(tp[i]), int(support[i]))
        paired._set(key, np.array([i]))

    for name, sel in (("rare_class_recall", is_rare_cls), ("head_class_recall", is_head_cls)):
        mv = _macro(support[sel], tp[sel])
        if mv is not None:
            metrics[name] = mv
            paired._set(name, np.flatnonzero(sel))

    eligible = np.flatnonzero(support >= min_support)
    if eligible.size == 0:
        eligible = np.arange(len(classes))
    recalls = tp[eligible] / support[eligible]
    worst_i = int(eligible[int(np.argmin(recalls))])  # ties: first in string order
    metrics["worst_class_recall"] = _proportion(int(tp[worst_i]), int(support[worst_i]))
    paired._set("worst_class_recall", np.array([worst_i]))

    rare_mass = float(sum(pri[c] for c in rare))
    if rare and rare_mass > 0:
        in_rare = int(sum(1 for v in prd.tolist() if v in rare_set))
        lo, hi = wilson_interval(in_rare, m)
        share = in_rare / m
        upper = max(hi, share) / rare_mass
        if math.isfinite(upper):  # skipped when the rare prior mass underflows
            metrics["rare_prediction_ratio"] = MetricValue(share / rare_mass, min(lo, share) / rare_mass, upper, n=m)

    rare_items = np.isin(yc, np.flatnonzero(is_rare_cls))
    if base is not None and rare_items.any():
        base_correct = np.asarray(base == lab, dtype=bool)
        b = int((rare_items & base_correct & ~correct).sum())
        c = int((rare_items & ~base_correct & correct).sum())
        n_bc = int((rare_items & base_correct).sum())
        lo, hi = clopper_pearson(b, n_bc) if n_bc else (0.0, 0.0)
        metrics["rare_flips"] = MetricValue(
            float(b), min(lo * n_bc, b), max(hi * n_bc, b), p_value=mcnemar_exact(b, c, "greater"), n=n_bc
        )

    correct.setflags(write=False)
    return ClassifierResult(
        metrics=metrics,
        correct=correct,
        rare_classes=rare,
        head_classes=head,
        paired=paired,
        worst_class=classes[worst_i],
    )
