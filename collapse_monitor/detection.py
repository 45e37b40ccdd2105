"""Collapse detection: decline tests against the baseline, trend tests over the generation
series, multiple-testing control and the healthy / early / late / drift classification.

Method (the README's "How it decides"):

* **Paired tests where the data is frozen.** The probe set and the reference are fixed, so a
  probe item (or a covered reference point, a rare cluster, a rare n-gram type) either flipped
  from good to bad since the baseline or not. Declines of such metrics are tested with the
  exact McNemar test on the discordant pairs (McNemar 1947; exact binomial form, Fay 2010),
  which has far more power than two independent proportions on small rare-class samples.
* **Exact rate tests for counts.** Metrics that count samples (the mass on rare reference
  clusters, the samples beyond the reference's 99th-percentile Mahalanobis radius) compare
  ``x`` of ``m`` samples now with ``x0`` of ``m0`` at baseline by the exact conditional test
  for two Poisson rates (Przyborowski & Wilenski 1940): the counts are small, where normal
  approximations are badly calibrated.
* **Interval tests otherwise.** Diversity metrics (Vendi, variance, effective rank) carry
  bootstrap intervals; the decline test is a one-sided z-test on the difference (on the log
  scale for ratio metrics), with the standard errors read back from the two intervals.
* **Trend.** A collapse is usually a drift, not a step: a one-sided Mann-Kendall test
  (Mann 1945, Kendall 1975) on the per-chain series, with the Theil-Sen slope (Sen 1968) as
  the effect size, flags a sustained decline that no single step shows.
* **Multiple testing.** All p-values of one check (every tail, head and diversity metric, every
  rare class, baseline and trend tests) are adjusted together with Benjamini-Hochberg (1995),
  counting tests on the same items, and trend tests on the same series, once;
  ``worst_class_recall``, whose class is picked on the current data, enters with its p
  multiplied by the number of candidate classes (Bonferroni 1936). A finding is significant
  when q <= alpha *and* the relative decline is at least ``min_effect`` (``diversity_min_effect``
  for diversity metrics, which narrow smoothly rather than by lost items). A finding that was
  significant at the chain's last check that measured its metric is re-tested alone
  (``detect``'s ``held``): it
  stays significant while its own p <= alpha, so a family that grows (the trend tests join it
  at ``trend_min_points``) does not clear a loss that is still there.
* **Stages.** Early collapse: a tail metric falls while head metrics hold, or at least
  ``early_diversity_metrics`` distinct diversity metrics fall together while tail and head hold
  (the output narrows before any covered tail point is lost: Alemohammad et al. 2024, "Self-
  Consuming Generative Models Go MAD", see the precision-up / recall-down phase). Late collapse:
  diversity falls too (by at least ``late_min_effect``), head metrics fall with a tail that
  falls clearly harder, or head metrics fall while diversity falls at all (with a diversity
  decline, a head decline counts from ``late_head_min_effect``, 2 %, not ``min_effect``). A global shift that
  drops head and tail alike *while diversity holds* is *drift* (README, "How it decides"): reported
  (``report.drift``), not called collapse. Diversity holds when no diversity metric is
  significantly lower at ``alpha``, however small the decline; with one, head and tail falling
  alike is late collapse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ._env import flag_from_text, number_from_text
from .errors import ConfigError
from .metrics import stats
from .metrics._spec import spec_for
from .types import Finding, MetricValue, Stage

__all__ = ["DEFAULT_DIVERSITY", "DEFAULT_HEAD", "DEFAULT_TAIL", "Detection", "Rules", "detect"]

#: tail metrics that can call early collapse. ``tail_mass_ratio`` and ``rare_mode_mass`` are
#: measured and reported (with exact rate tests) but left out by default: in the detection
#: benchmark (benchmarks/detection.py, 10 seeds) they made no collapsing chain flag earlier and
#: caused 5 of its 20 false alarms on control loops: the share beyond the reference's 1 %
#: Mahalanobis radius moves by -80 % when a refit's covariance narrows by retrain noise, and
#: k-means "rare" cells are often slices of big modes. Add them with ``Rules(tail=...)``.
DEFAULT_TAIL = (
    "tail_coverage",
    "rare_mode_coverage",
    "rare_class_recall",
    "worst_class_recall",
    "rare_ngram_recall",
    "rare_prediction_ratio",
)
DEFAULT_HEAD = ("head_coverage", "head_class_recall", "accuracy", "precision")
DEFAULT_DIVERSITY = (
    "vendi_ratio",
    "variance_ratio",
    "effective_rank",
    "distinct_1",
    "distinct_2",
    "distinct_3",
    "distinct_4",
    "ngram_entropy",
    "vocab_ratio",
)


def _shown(v: Any) -> str:
    """A refused rule value in an error message, scrubbed of anything shaped like a secret (it
    may have come from an environment variable)."""
    from ._redact import redact_text

    return redact_text(repr(v)) if isinstance(v, str) else repr(v)


def _from_text(key: str, v: Any) -> Any:
    """A rule value read as text (``${ALPHA:-0.01}`` from the environment, or ``1e-3``, which
    YAML 1.1 leaves a string) as the number or boolean its field takes; anything else as given,
    for the field's own check to judge."""
    if not isinstance(v, str):
        return v
    if key in _BOOL_FIELDS:
        return flag_from_text(v)
    if key in _NUMBER_FIELDS or key in _INT_FIELDS:
        n = number_from_text(v)
        if isinstance(n, str):
            return v
        x = float(n)
        if key in _INT_FIELDS:
            return int(x) if math.isfinite(x) and x.is_integer() else v
        return x
    return v


@dataclass(frozen=True)
class Rules:
    """Detection settings. Every field can come from Python or from the ``rules:`` block of
    a YAML config (``Rules.from_dict``); unknown keys and bad values raise ConfigError."""

    # 0.005, not the design's first 0.01: the paired tests condition on the two models, so
    # between-retrain variation is not in their null; on the detection benchmark's control loops
    # 0.005 gave half the false alarms of 0.01 (8 vs 16 of 1,000 checks over 10 seeds; 11 vs 16
    # after the statistics corrections of 2026-12-06) for one or two of 100 collapsing chains
    # flagged a generation later (README, "operating curve")
    alpha: float = 0.005
    min_effect: float = 0.10
    # the smallest decline that counts for diversity metrics (min_effect is for tail and head).
    # Spectral diversity narrows smoothly, a few % a generation (Shumailov et al. 2024: a refit
    # on M samples loses about 1/M of its variance each time), where a tail point or a probe item
    # is lost or kept. Chosen on the detection benchmark's seeds 0-4 (re-judged offline) as the
    # smallest value with no false alarm on their control loops (0.075 gave 1, 0.06 gave 2);
    # on the held-out seeds 5-9 it flagged one more collapsing chain (39/40) and two fewer only
    # after the aggregate alert (10 vs 12), with the same 8/500 false alarms (README)
    diversity_min_effect: float = 0.08
    late_min_effect: float = 0.20
    # the smallest head decline (significant at alpha) that, with a diversity metric that fell
    # by diversity_min_effect, makes late collapse: a global shift keeps diversity, so head and
    # diversity falling *together* need not each clear the 10 % a head-only decline must (that
    # one is drift). 0.02 is the aggregate alert's own scale (2 points of accuracy). On the
    # detection benchmark's seeds 0-9 (re-judged offline) it left 15 rather than 18 of the 80
    # collapsing chains flagged only after the aggregate alert, with the same 8 false alarms in
    # 1,000 control checks (any value in 0-0.03 gave the same; 0.04-0.05: 17); the held-out seeds 10-14 and
    # the two other worlds: README, "Head and diversity falling together"
    late_head_min_effect: float = 0.02
    drift_ratio: float = 1.5
    # diversity-only declines (tail and head held) call early collapse when at least this many
    # distinct diversity metrics are significant together; 0 keeps them a note. One alone is too
    # easily a retrain's noise: on the detection benchmark (10 seeds, re-judged offline from every
    # check's findings, diversity_min_effect 0.08) a single metric gave 27 false alarms on the
    # control loops against 8; two together added none and left 7 fewer of the 80 collapsing
    # chains flagged only after the aggregate alert than a note would (19 vs 26; three together:
    # 25). Reproduce with benchmarks/detection.py --rejudge on the committed results and --rules
    # setting early_diversity_metrics
    early_diversity_metrics: int = 2
    # the p of the exact conditional tests (McNemar on paired items, the rate test on counts):
    # "exact" = P(X >= observed); "mid_p" = P(X > observed) + P(X = observed) / 2 (Lancaster 1961;
    # Fagerland, Lydersen & Laake 2013), less conservative where few items are discordant.
    # Exact by default: on the detection benchmark's 15 seeds mid-p moved along the same
    # operating curve (mid-p at alpha 0.0025 ~ exact at 0.005: 9 vs 10 false alarms in 1,500
    # control checks; mid-p at 0.005 flags all 15 selftrain chains by generation 2, not 12, for
    # 17 false alarms); README, "The mid-p McNemar test"
    paired_test: str = "exact"
    trend: bool = True
    trend_min_points: int = 5
    rare_threshold: float = 0.05
    min_support: int = 10
    tail_quantile: float = 0.1
    k: int = 5
    n_boot: int = 200
    text_budget: int = 20_000
    rare_class_tests: bool = True
    tail: tuple[str, ...] = DEFAULT_TAIL
    head: tuple[str, ...] = DEFAULT_HEAD
    diversity: tuple[str, ...] = DEFAULT_DIVERSITY
    repeat_interval_seconds: float = 6 * 3600.0
    repeat_every_generations: int | None = None
    #: checks in a row without a stage before its alert resolves (1: the first healthy check);
    #: 2 or more keeps a flapping stage one open incident (Prometheus's ``keep_firing_for``)
    resolve_after: int = 1
    alert_on_drift: bool = True
    baseline_generation: int | None = None
    seed: int = 0
    knn: str = "exact"  # "exact" | "ivf" (approximate k-NN for references of ~1M rows)
    nlist: int | None = None  # IVF cells; default round(sqrt(n))
    nprobe: int | None = None  # IVF cells scanned per query; default 8

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"rules.{key}", msg)

        # numpy scalars (np.int64 from an array, np.float64 from a computation) as Python
        # numbers: np.int64 k was refused while np.int64 nlist was kept, and to_dict() then
        # failed to serialise
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.generic):
                object.__setattr__(self, f.name, v.item())

        for key in (
            "alpha",
            "min_effect",
            "diversity_min_effect",
            "late_min_effect",
            "rare_threshold",
            "tail_quantile",
        ):
            v = getattr(self, key)
            need(isinstance(v, (int, float)) and not isinstance(v, bool), key, f"expected a number, got {_shown(v)}")
            need(0.0 < float(v) < 1.0, key, f"expected a number in (0, 1), got {_shown(v)}")
        v = self.late_head_min_effect
        need(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) < 1.0,
            "late_head_min_effect",
            f"expected a number in [0, 1), got {_shown(v)}",
        )
        need(
            isinstance(self.drift_ratio, (int, float))
            and not isinstance(self.drift_ratio, bool)
            and math.isfinite(self.drift_ratio)
            and self.drift_ratio >= 1.0,
            "drift_ratio",
            f"expected a number >= 1, got {_shown(self.drift_ratio)}",
        )
        for key, lo in (
            ("early_diversity_metrics", 0),
            ("trend_min_points", 3),
            ("min_support", 1),
            ("k", 1),
            ("n_boot", 10),
            ("text_budget", 10),
            ("resolve_after", 1),
        ):
            v = getattr(self, key)
            need(
                isinstance(v, int) and not isinstance(v, bool) and v >= lo,
                key,
                f"expected an int >= {lo}, got {_shown(v)}",
            )
        # a bootstrap holds n_boot replicates in memory: 10**12 was a MemoryError at the first check
        need(self.n_boot <= 100_000, "n_boot", f"expected at most 100000 replicates, got {_shown(self.n_boot)}")
        need(
            isinstance(self.repeat_interval_seconds, (int, float))
            and not isinstance(self.repeat_interval_seconds, bool)
            and self.repeat_interval_seconds >= 0,
            "repeat_interval_seconds",
            f"expected seconds >= 0, got {_shown(self.repeat_interval_seconds)}",
        )
        rg = self.repeat_every_generations
        need(
            rg is None or (isinstance(rg, int) and not isinstance(rg, bool) and rg >= 1),
            "repeat_every_generations",
            f"expected an int >= 1 or null, got {_shown(rg)}",
        )
        bg = self.baseline_generation
        need(
            bg is None or (isinstance(bg, int) and not isinstance(bg, bool) and bg >= 0),
            "baseline_generation",
            f"expected an int >= 0, got {_shown(bg)}",
        )
        need(
            self.paired_test in ("exact", "mid_p"),
            "paired_test",
            f"expected 'exact' or 'mid_p', got {_shown(self.paired_test)}",
        )
        from .metrics.approx import check_knn

        try:
            check_knn(self.knn, self.nlist, self.nprobe)
        except ConfigError as exc:
            raise exc.under("rules") from None
        for key in ("trend", "rare_class_tests", "alert_on_drift"):
            v = getattr(self, key)
            need(isinstance(v, bool), key, f"expected true or false (unquoted), got {_shown(v)}")
        need(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**32,
            "seed",
            f"expected an int in [0, 2**32), got {_shown(self.seed)}",
        )
        from .metrics._spec import SPECS

        for key in ("tail", "head", "diversity"):
            v = getattr(self, key)
            if isinstance(v, str) or not isinstance(v, Sequence) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"rules.{key}", f"expected a list of metric keys, got {_shown(v)}")
            for i, metric in enumerate(v):
                # a typo would silently drop a metric from its family (and a tail decline from
                # detection): only the metrics collapse-monitor computes, and class_recall.<label>
                need(
                    metric in SPECS or (metric.startswith("class_recall.") and len(metric) > len("class_recall.")),
                    f"{key}[{i}]",
                    f"unknown metric {metric!r}; known: {', '.join(sorted(SPECS))}, class_recall.<label>",
                )
                # every test here is one-sided for a *decline* (McNemar on good -> bad items, the
                # rate test's P(X <= x), the z-test's Phi(value - baseline), Mann-Kendall
                # "decreasing"): a metric that grows in collapse (frechet_distance) or has no
                # quality direction would have its improvement paged as collapse and its rise
                # never tested
                hib = SPECS[metric].higher_is_better if metric in SPECS else True
                need(
                    hib is True,
                    f"{key}[{i}]",
                    f"{metric!r} is not a higher-is-better metric, but detection tests every "
                    "tail / head / diversity metric for a decline",
                )
            object.__setattr__(self, key, tuple(v))
        need(bool(self.tail), "tail", "expected at least one tail metric: early collapse is a tail decline")
        defaults = {"tail": DEFAULT_TAIL, "head": DEFAULT_HEAD, "diversity": DEFAULT_DIVERSITY}
        for a, b in (("tail", "head"), ("tail", "diversity"), ("head", "diversity")):
            both = sorted(set(getattr(self, a)) & set(getattr(self, b)))
            if both:
                # name the list the user set, and say when the other one is a default list
                mine, other = (b, a) if getattr(self, a) == defaults[a] else (a, b)
                dflt = (
                    " (its default list: set it too, without them)" if getattr(self, other) == defaults[other] else ""
                )
                need(False, mine, f"metric(s) {both} are also in {other}{dflt}; a metric counts in one family")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Rules:
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ConfigError("rules", f"expected a mapping, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        for key in d:
            if key not in names:
                raise ConfigError(f"rules.{key}", f"unknown rule setting; known: {', '.join(sorted(names))}")
        kw = dict(d)
        for key in ("tail", "head", "diversity"):
            if key in kw and isinstance(kw[key], list):
                kw[key] = tuple(kw[key])
        for key, v in kw.items():
            kw[key] = _from_text(key, v)
        try:
            return cls(**kw)
        except TypeError as exc:  # pragma: no cover - guarded by the key check
            raise ConfigError("rules", str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("tail", "head", "diversity"):
            out[key] = list(out[key])
        return out

    @property
    def measure(self) -> dict[str, Any]:
        """The settings that define the metrics' values (not how they are judged): a baseline
        measured under other ones is not comparable on the metrics they define
        (:func:`remeasured`)."""
        return {key: getattr(self, key) for key in sorted(MEASURED_BY)}

    def is_significant(self, q_value: float, relative_change: float, family: str | None = None) -> bool:
        """A finding counts when its BH-adjusted q <= ``alpha`` *and* it declined by at least
        ``min_effect`` (``diversity_min_effect`` for a metric of the diversity family)."""
        least = self.diversity_min_effect if family == "diversity" else self.min_effect
        return bool(q_value <= self.alpha and at_least(-relative_change, least))

    def family_of(self, key: str, *, rare_classes: Sequence[str] = ()) -> str | None:
        if key in self.tail:
            return "tail"
        if key in self.head:
            return "head"
        if key in self.diversity:
            return "diversity"
        if self.rare_class_tests and key.startswith("class_recall.") and key[len("class_recall.") :] in rare_classes:
            return "tail"
        return None


@dataclass(frozen=True)
class Detection:
    stage: Stage
    drift: bool
    findings: tuple[Finding, ...]
    metrics: dict[str, MetricValue]  # with baseline and p_value filled
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------


def at_least(x: float, threshold: float) -> bool:
    """``x >= threshold`` up to floating-point rounding: a coverage of 0.9 against 1.0 is a
    decline of exactly 10 %, though ``(0.9 - 1.0) / 1.0`` is -0.09999999999999998, and must
    count for a ``min_effect`` of 0.10."""
    return x >= threshold - 1e-9 * max(1.0, abs(threshold))


def _relative(value: float, baseline: float) -> float:
    if baseline == 0:
        return 0.0 if value == 0 else math.copysign(1.0, value)
    return (value - baseline) / abs(baseline)


def discordant(cur: np.ndarray, base: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """Discordant pairs of a paired 0/1 metric over the items ``mask`` selects: ``(b, c)`` =
    (good at baseline and bad now, bad at baseline and good now), the counts McNemar's test
    (McNemar 1947) compares.

    >>> discordant(np.array([0, 1, 1, 0, 0]), np.array([1, 1, 0, 0, 1]), np.ones(5, bool))
    (2, 1)
    """
    cur_b = np.asarray(cur)[mask].astype(bool)
    base_b = np.asarray(base)[mask].astype(bool)
    return int(np.sum(base_b & ~cur_b)), int(np.sum(~base_b & cur_b))


def _paired_p(*args: Any, **kwargs: Any) -> float | None:
    """Exact one-sided McNemar p for 'good at baseline, bad now' on the metric's items (its
    mid-p with ``mid_p``); on correlated items (a ``design.<key>`` item: the coverage
    metrics) the discordant counts are first divided by the design effect of the difference
    (:func:`_paired_design_effect`). The arguments are :func:`_paired_test`'s."""
    return _paired_test(*args, **kwargs)[0]


def _paired_test(
    key: str,
    paired: Mapping[str, tuple[str, np.ndarray]],
    items: Mapping[str, np.ndarray],
    base_items: Mapping[str, np.ndarray],
    mid_p: bool = False,
) -> tuple[float | None, float]:
    """:func:`_paired_p` and the design effect its counts were divided by (1: none)."""
    if key not in paired:  # (PairedSpecs answers without building the mask)
        return None, 1.0
    item_key = paired.item_key(key) if hasattr(paired, "item_key") else paired[key][0]
    cur = items.get(item_key)
    base = base_items.get(item_key)
    if cur is None or base is None or cur.shape != base.shape:
        return None, 1.0
    fast = paired.discordant(key, cur, base) if hasattr(paired, "discordant") else None
    if fast is not None:
        b, c = fast  # per-class counts, made once per comparison (classes x replicates passes before)
    else:
        mask = paired[key][1]
        if mask.shape != cur.shape:
            return None, 1.0
        b, c = discordant(cur, base, mask)
        deff = _paired_design_effect(key, cur[mask], base[mask], b, c, items, base_items)
        if deff > 1.0:
            return stats.mcnemar_scaled(b, c, deff, mid_p=mid_p), deff
    test = stats.mcnemar_mid_p if mid_p else stats.mcnemar_exact
    return float(test(b, c, alternative="greater")), 1.0


def _design_entries(items: Mapping[str, np.ndarray], key: str) -> np.ndarray | None:
    """The finite numbers ``design.<key>`` holds (``[deff]`` before 2026-12-07's second change,
    ``[deff, jackknife variance]`` since): None when absent, empty or not finite numbers (an
    item vector read back from elsewhere is not trusted to be one)."""
    arr = items.get(f"design.{key}")
    if arr is None:
        return None
    try:
        flat = np.asarray(arr, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if flat.size == 0 or not math.isfinite(float(flat[0])):
        return None
    return flat


def _design_value(items: Mapping[str, np.ndarray], key: str) -> float | None:
    """The design effect ``design.<key>`` holds (its first entry), or None."""
    flat = _design_entries(items, key)
    return None if flat is None else float(flat[0])


def _share_variance(items: Mapping[str, np.ndarray], key: str, share: float, n: int) -> float | None:
    """The variance of one side's share: the jackknife's as stored (``design.<key>``'s second
    entry), or, for an item stored with the design effect alone, that effect times the
    binomial ``p (1 - p) / n``; None without a design item."""
    flat = _design_entries(items, key)
    if flat is None:
        return None
    if flat.size >= 2 and math.isfinite(float(flat[1])) and float(flat[1]) >= 0.0:
        return float(flat[1])
    return max(float(flat[0]), 1.0) * share * (1.0 - share) / n


def _paired_design_effect(
    key: str,
    cur: np.ndarray,
    base: np.ndarray,
    b: int,
    c: int,
    items: Mapping[str, np.ndarray],
    base_items: Mapping[str, np.ndarray],
) -> float:
    """How much the variance of the change in a share of correlated items exceeds what
    McNemar's test assumes: ``(v1 + v0) n^2 / ((b + c) - (b - c)^2 / n)``, at least 1.

    ``v1`` / ``v0``: each side's variance of its share, the grouped jackknife's
    (:func:`~.metrics.stats.grouped_jackknife_variance`, ``design.<key>``); the two sides
    come from independent samples against the same frozen items, so their variances add. The
    denominator is the variance of ``b - c`` McNemar's test rests on for independent items.
    Both leave out the points whose chance of being covered is near 0 or 1. Until 2026-12-07
    (an audit) the numerator was each side's design effect, floored at 1, times the binomial
    ``n p q``, which counts those points: on independent items, half of them covered 97 % of
    the time and half 10 %, the test rejected 0 % under the null (4 % plain) and 0.3 % of true
    declines (19 % plain); b = c = 1 of 1,000 points at p = 0.5 gave a design effect of 250.
    A side stored without a design item borrows the other's ratio of variance to binomial; a
    side stored with the design effect alone (before its variance was kept) gives that effect
    times its binomial. 1 (the plain test) when neither side has one."""
    n = int(cur.size)
    mcnemar_var = (b + c) - (b - c) ** 2 / n if n else 0.0
    if mcnemar_var <= 0:
        return 1.0
    p1, p0 = float(np.mean(cur.astype(bool))), float(np.mean(base.astype(bool)))
    v1, v0 = _share_variance(items, key, p1, n), _share_variance(base_items, key, p0, n)
    if v1 is None and v0 is None:
        return 1.0

    def borrowed(v: float, p_from: float, p_to: float) -> float:
        binom_from = p_from * (1.0 - p_from) / n
        ratio = v / binom_from if binom_from > 0 else 1.0
        return ratio * p_to * (1.0 - p_to) / n

    if v1 is None:
        assert v0 is not None
        v1 = borrowed(v0, p0, p1)
    if v0 is None:
        v0 = borrowed(v1, p1, p0)
    return max(1.0, (v1 + v0) * n * n / mcnemar_var)


def _rate_p(
    key: str, items: Mapping[str, np.ndarray], base_items: Mapping[str, np.ndarray], mid_p: bool = False
) -> float | None:
    """Exact one-sided test that a count rate fell: ``x`` events in ``m`` samples now against
    ``x0`` in ``m0`` at baseline. Conditional on ``t = x + x0``, ``x ~ Binomial(t, m / (m + m0))``
    when the rates are equal (Przyborowski & Wilenski 1940; Lehmann & Romano, *Testing
    Statistical Hypotheses*, 4.6), so ``p = P(X <= x)``: exact for the small counts of rare
    modes and of the 1 % Mahalanobis tail, where interval z-tests are badly calibrated. With
    ``mid_p``: ``P(X < x) + P(X = x) / 2`` (Lancaster 1961)."""
    cur = items.get(f"rate.{key}")
    base = base_items.get(f"rate.{key}")
    if cur is None or base is None or cur.shape != (2,) or base.shape != (2,):
        return None
    x, m = int(cur[0]), int(cur[1])
    x0, m0 = int(base[0]), int(base[1])
    if m <= 0 or m0 <= 0:
        return None
    t, share = x + x0, m / (m + m0)
    if t == 0:  # no event on either side: no evidence, as the paired tests' b + c = 0
        return 1.0
    p = stats.binom_cdf(x, t, share)
    if mid_p:
        from scipy.stats import binom

        p -= 0.5 * float(binom.pmf(x, t, share))
    return float(p)


def is_proportion(key: str) -> bool:
    """Whether ``key`` can be one proportion of probe items (accuracy, a class's recall, the
    worst class's, the rare-class recall), so that its value and ``n`` give the counts that
    Fisher's test needs; the MLflow sink logs ``n`` for these keys (``collapse.<key>.n``)."""
    return key in ("accuracy", "worst_class_recall", "rare_class_recall") or key.startswith("class_recall.")


#: generator metrics that are one plain share ``x / n`` (``MetricValue.n`` = n): of the sample
#: points (precision), of the reference points (recall, coverage and its tail / head parts), of
#: the reference's rare modes
GENERATOR_SHARES = ("precision", "recall", "coverage", "tail_coverage", "head_coverage", "rare_mode_coverage")


def is_share(key: str) -> bool:
    """Whether ``key``'s value and ``n`` give the counts of an exact test: a proportion of probe
    items (:func:`is_proportion`) or one of :data:`GENERATOR_SHARES`; the MLflow sink logs ``n``
    for these keys (``collapse.<key>.n``)."""
    return is_proportion(key) or key in GENERATOR_SHARES


def _proportion_counts(key: str, mv: MetricValue, rare_classes: Sequence[str]) -> tuple[int, int] | None:
    """(successes, trials) of a metric that is one proportion: accuracy, a class's recall, the
    worst class's, the rare-class recall over a single rare class, and the generator's shares
    (:data:`GENERATOR_SHARES`)."""
    if not is_share(key) or (key == "rare_class_recall" and len(rare_classes) != 1):
        return None
    if mv.n is None or mv.n <= 0 or not math.isfinite(mv.value):
        return None
    return round(mv.value * mv.n), int(mv.n)


def _fisher_p(
    key: str,
    mv: MetricValue,
    base: MetricValue,
    rare_classes: Sequence[str],
    mid_p: bool = False,
    design_effects: tuple[float, float] = (1.0, 1.0),
) -> float | None:
    """One-sided Fisher (1935) exact test that a proportion fell, for when the paired test
    cannot run (the reference changed, or the baseline has no per-item vectors): ``x`` of
    ``m`` now against ``x0`` of ``m0`` at baseline, ``P(X <= x)`` for the hypergeometric
    ``X`` given both margins (its mid-p with ``mid_p``). The z-test on the two Wilson
    intervals it replaces flagged a 5-item class going from 5/5 to 2/5 at p = 0.001
    (Fisher: 0.083), up to 10x ``alpha`` under the null for small classes; for the generator's
    shares (a statistics audit, 2026-12-07) ``tail_coverage`` 15/15 -> 10/15 at p = 0.003
    (Fisher: 0.021), and 4.4x ``alpha`` under the null for five rare modes.

    Correlated items (the coverage shares: ``design_effects``, each side's ``design.<key>``,
    now and at baseline) enter with each side's count of items divided by its own design
    effect and its successes at the same share, both rounded (Rao & Scott 1992, for two
    independent clustered samples); the p is never below the unscaled test's. (Until an audit
    of 2026-12-07 both sides were divided by the current check's effect alone, and rounding
    the two counts apart could shift a share: 31/33 became 30/31 at an effect of 1.05, and the
    p fell from 0.057 to 0.030.)"""
    now = _proportion_counts(key, mv, rare_classes)
    then = _proportion_counts(key, base, rare_classes)
    if now is None or then is None:
        return None
    p = _hypergeom_p(now, then, mid_p)
    d_now, d_then = design_effects
    if max(d_now, d_then) > 1.0:

        def shrunk(pair: tuple[int, int], deff: float) -> tuple[int, int]:
            if deff <= 1.0:
                return pair
            n_eff = round(pair[1] / deff)
            return round(pair[0] / pair[1] * n_eff) if pair[1] else 0, n_eff

        now, then = shrunk(now, d_now), shrunk(then, d_then)
        if now[1] == 0 or then[1] == 0:
            return 1.0
        p = max(p, _hypergeom_p(now, then, mid_p))
    return p


def _hypergeom_p(now: tuple[int, int], then: tuple[int, int], mid_p: bool) -> float:
    """Fisher's one-sided p that ``x / m`` (now) is below ``x0 / m0`` (then)."""
    from scipy.stats import hypergeom

    (x, m), (x0, m0) = now, then
    dist = hypergeom(m + m0, x + x0, m)
    p = float(dist.cdf(x))
    if mid_p:
        p -= 0.5 * float(dist.pmf(x))
    return min(1.0, max(0.0, p))


def _interval_p(mv: MetricValue, base: MetricValue, log_scale: bool) -> float:
    """One-sided z-test that ``mv`` < ``base`` with SEs read from both intervals."""
    if log_scale and min(mv.value, base.value, mv.ci_low, base.ci_low) > 0:
        v, lo, hi = math.log(mv.value), math.log(mv.ci_low), math.log(mv.ci_high)
        bv, blo, bhi = math.log(base.value), math.log(base.ci_low), math.log(base.ci_high)
    else:
        v, lo, hi = mv.value, mv.ci_low, mv.ci_high
        bv, blo, bhi = base.value, base.ci_low, base.ci_high
    se = stats.se_from_interval(lo, hi)
    bse = stats.se_from_interval(blo, bhi)
    return float(stats.normal_decline_p(v, se, bv, bse))


def _trend(
    series: Sequence[float], log_scale: bool, bounds: tuple[float | None, float | None] = (None, None)
) -> tuple[float, float] | None:
    """(one-sided Mann-Kendall p for a decrease, relative change over the span by Theil-Sen).

    On the linear scale the line's ends are held within the metric's ``bounds``: a recall
    falling from 0.93 to 0.03 fits a line that ends below 0, which read as a -122 % change."""
    y = np.asarray(series, dtype=float)
    if y.size < 3 or not np.all(np.isfinite(y)):
        return None
    use_log = log_scale and np.all(y > 0)
    z = np.log(y) if use_log else y
    mk = stats.mann_kendall(z, alternative="decreasing")
    slope, intercept = stats.theil_sen(z)
    span = y.size - 1
    if use_log:
        rel = math.expm1(slope * span)
    else:
        lower, upper = bounds
        ends = np.array([intercept, intercept + slope * span])
        if lower is not None or upper is not None:
            ends = np.clip(ends, lower, upper)
        start, end = float(ends[0]), float(ends[1])
        rel = _relative(end, start) if start != 0 else 0.0
    return float(mk.p_value), float(rel)


def _decline_p(
    key: str,
    mv: MetricValue,
    base: MetricValue,
    metrics: Mapping[str, MetricValue],
    items: Mapping[str, np.ndarray],
    base_items: Mapping[str, np.ndarray],
    paired: Mapping[str, tuple[str, np.ndarray]],
    rare_classes: Sequence[str],
    rules: Rules,
    signed: bool = True,
) -> tuple[float, str, Any]:
    """One-sided p that ``key`` fell from ``base`` to ``mv``, by the first test that applies:
    exact McNemar on paired items, the exact rate test on counts, Fisher on proportions, the
    interval z-test; with the test's name and, for a paired test, the items it rests on
    (``signed=False``: not needed, as for a replicate's test, and not computed: it hashes the
    whole mask)."""
    mid_p = rules.paired_test == "mid_p"
    p, deff = _paired_test(key, paired, items, base_items, mid_p)
    # "+design-effect": the counts were divided by the correlated items' design effect
    test = ("mcnemar-mid-p" if mid_p else "mcnemar-exact") + ("+design-effect" if deff > 1.0 else "")
    signature = _paired_signature(key, paired) if p is not None and signed else None
    if p is None:
        p = _rate_p(key, items, base_items, mid_p)
        test = "rate-mid-p" if mid_p else "rate-exact"
    if p is None:
        d_now, d_then = _design_value(items, key), _design_value(base_items, key)
        # a side stored without one borrows the other's (a baseline from before them)
        effects = (d_now or d_then or 1.0, d_then or d_now or 1.0)
        p = _fisher_p(key, mv, base, rare_classes, mid_p, effects)
        test = ("fisher-mid-p" if mid_p else "fisher-exact") + (
            "+design-effect" if max(effects) > 1.0 and p is not None else ""
        )
    if p is None:
        p = _interval_p(mv, base, spec_for(key).log_scale)
        test = "interval-z"
    if key == "worst_class_recall":
        candidates = _worst_class_candidates(metrics, rules.min_support)
        if candidates > 1:
            p = min(1.0, p * candidates)
            test += f"+bonferroni-{candidates}"
    return p, test, signature


_KNN_METRICS = frozenset(
    {
        "precision",
        "recall",
        "density",
        "coverage",
        "tail_coverage",
        "head_coverage",
        "rare_mode_coverage",
        "rare_mode_mass",
        "tail_mass_ratio",
    }
)
_TEXT_METRICS = frozenset(
    {"distinct_1", "distinct_2", "distinct_3", "distinct_4", "ngram_entropy", "vocab_ratio", "rare_ngram_recall"}
)
_RARE_CLASS_METRICS = frozenset(
    {"rare_class_recall", "head_class_recall", "rare_prediction_ratio", "rare_flips", "worst_class_recall"}
)
#: the metrics each kind of reference data gives (a class's own ``class_recall.<label>`` aside)
METRICS_OF: dict[str, frozenset[str]] = {
    "labels": _RARE_CLASS_METRICS | {"accuracy", "balanced_accuracy"},
    "embeddings": _KNN_METRICS
    | {"vendi_score", "vendi_ratio", "effective_rank", "variance_ratio", "frechet_distance", "embedding_drift_share"},
    "texts": _TEXT_METRICS,
}
#: which metrics each measurement setting of :class:`Rules` defines: the reference's k-NN
#: radii, its tail and clusters; which classes are rare; the text budget
MEASURED_BY: dict[str, frozenset[str]] = {
    "k": _KNN_METRICS,
    "tail_quantile": _KNN_METRICS,
    "knn": _KNN_METRICS,
    "nlist": _KNN_METRICS,
    "nprobe": _KNN_METRICS,
    "rare_threshold": _RARE_CLASS_METRICS,
    "min_support": frozenset({"worst_class_recall"}),
    "text_budget": _TEXT_METRICS,
}


def remeasured(then: Mapping[str, Any] | None, now: Mapping[str, Any]) -> tuple[dict[str, tuple[Any, Any]], set[str]]:
    """The measurement settings that differ between ``then`` (a stored report's
    ``Report.measure``; None: unknown, nothing differs) and ``now``, as ``{setting: (then, now)}``,
    and the metric keys they define. A setting ``then`` does not record (an older version) is
    taken as unchanged.

    >>> changed, keys = remeasured({"k": 5, "text_budget": 20000}, Rules(k=2).measure)
    >>> changed, sorted(keys)[:3]
    ({'k': (5, 2)}, ['coverage', 'density', 'head_coverage'])
    """
    if not then:
        return {}, set()
    changed = {k: (then[k], now[k]) for k in now if k in then and then[k] != now[k]}
    if then.get("knn", "exact") == "exact" and now.get("knn", "exact") == "exact":
        # the IVF settings do nothing for exact k-NN
        changed = {k: v for k, v in changed.items() if k not in ("nlist", "nprobe")}
    budget = changed.get("text_budget")
    if budget is not None and _raised(budget):
        # text is measured at the smaller of the two budgets (the baseline's, when it is raised):
        # a raise compares as before (a review: it dropped every text metric from the comparison)
        del changed["text_budget"]
    return changed, {m for k in changed for m in MEASURED_BY.get(k, ())}


def _raised(pair: tuple[Any, Any]) -> bool:
    then, now = pair
    return isinstance(then, (int, float)) and isinstance(now, (int, float)) and now > then


def detect(
    metrics: Mapping[str, MetricValue],
    *,
    rules: Rules,
    baseline: Mapping[str, MetricValue] | None,
    items: Mapping[str, np.ndarray] | None = None,
    base_items: Mapping[str, np.ndarray] | None = None,
    paired: Mapping[str, tuple[str, np.ndarray]] | None = None,
    series: Mapping[str, Sequence[float]] | None = None,
    rare_classes: Sequence[str] = (),
    held: Collection[tuple[str, str]] = (),
    replicates: Sequence[tuple[Mapping[str, MetricValue], Mapping[str, np.ndarray]]] = (),
) -> Detection:
    """Test every tail / head / diversity metric against the baseline (and its trend), adjust
    all p-values together (Benjamini-Hochberg) and classify the stage.

    ``series`` maps a metric key to its per-generation values *including* the baseline and the
    current value (oldest first); trend tests need ``rules.trend_min_points`` of them.

    ``held``: the (key, kind) of the findings significant at the chain's newest check that
    measured the metric (its checks since the baseline was last checked). Each
    is re-tested on its own: it stays significant while its unadjusted p <= ``alpha`` (and its
    decline >= the min effect), as a single hypothesis chosen before this check's data (a
    confirmatory test needs no multiplicity correction; Bauer 1991, Hsu 1996 ch. 1). Without
    it a lost class read healthy, and its alert resolved, as soon as the family grew: the trend
    tests join Benjamini-Hochberg at ``trend_min_points`` generations and double the family,
    so the 10-item class lost at p = 2^-10 went from q = 0.0049 to q = 0.0098.

    ``replicates``: the (metrics, items) of other retrains of the baseline generation on human
    data (``CollapseMonitor.check_replicate``). A decline is then tested against the baseline
    and against each replicate that has the metric, and counts only if it holds against all of
    them: an intersection-union test (Berger 1982; Berger & Hsu 1996, "Bioequivalence trials,
    intersection-union tests and equivalence confidence sets", Statistical Science 11:283), whose
    p is the largest of the single tests' and whose effect is the smallest decline. It is a
    level-alpha test with no multiplicity cost, and it puts retrain noise into the comparison:
    a paired test conditions on the two models, so against one lucky baseline retrain a merely
    average retrain reads as a significant decline (``benchmarks/retrain_noise.py``).
    """
    items = items or {}
    base_items = base_items or {}
    paired = paired or {}
    series = series or {}
    out = dict(metrics)
    if baseline is None:
        return Detection(Stage.HEALTHY, False, (), out, ())  # the monitor says why there is no baseline

    raw: list[dict[str, Any]] = []
    for key, raw_mv in sorted(metrics.items()):
        family = rules.family_of(key, rare_classes=rare_classes)
        raw_base = baseline.get(key)
        if family is None or raw_base is None:
            if raw_base is not None:
                out[key] = raw_mv.with_baseline(raw_base.value)
            continue
        spec = spec_for(key)
        best = spec.best
        capped = "" if best is None else f"+capped-at-{best:g}"
        mv, base = _capped(raw_mv, best), _capped(raw_base, best)
        p, test, signature = _decline_p(key, mv, base, metrics, items, base_items, paired, rare_classes, rules)
        test += capped
        rel = _relative(mv.value, base.value)
        shown = base.value
        # intersection-union over the baseline and its replicates (Berger 1982): the decline
        # must hold against every healthy retrain, so its p is the largest of theirs and its
        # effect the smallest; a lucky baseline retrain no longer sets the bar alone
        against = [(_capped(r_metrics[key], best), r_items) for r_metrics, r_items in replicates if key in r_metrics]
        other_tests: set[str] = set()
        for r_base, r_items in against:
            rp, r_test, _ = _decline_p(
                key, mv, r_base, metrics, items, r_items, paired, rare_classes, rules, signed=False
            )
            r_test += capped
            r_rel = _relative(mv.value, r_base.value)
            p = max(p, rp)
            if r_rel > rel:
                rel, shown = r_rel, r_base.value
            if r_test != test:  # a replicate without the items falls back to Fisher / the interval test
                other_tests.add(r_test)
        if against:
            test += f"+iut-{len(against) + 1}" + (f"({','.join(sorted(other_tests))})" if other_tests else "")
        out[key] = raw_mv.with_baseline(raw_base.value, p)
        raw.append(
            dict(
                key=key,
                family=family,
                kind="baseline",
                value=raw_mv.value,
                baseline=shown,
                relative_change=rel,
                p_value=p,
                test=test,
                ci_low=raw_mv.ci_low,
                ci_high=raw_mv.ci_high,
                _sig=signature,
            )
        )
        s = series.get(key)
        if best is not None and s is not None:
            s = [min(v, best) for v in s]
        if rules.trend and s is not None and len(s) >= rules.trend_min_points:
            tr = _trend(s, spec.log_scale, (spec.lower, spec.upper))
            if tr is not None:
                raw.append(
                    dict(
                        key=key,
                        family=family,
                        kind="trend",
                        value=raw_mv.value,
                        baseline=base.value,
                        relative_change=tr[1],
                        p_value=tr[0],
                        test="mann-kendall/theil-sen" + capped,
                        ci_low=raw_mv.ci_low,
                        ci_high=raw_mv.ci_high,
                        _sig=("trend", np.asarray(s, dtype=np.float64).tobytes()),
                    )
                )

    findings: list[Finding] = []
    kept: list[str] = []
    if raw:
        q = _bh_deduplicated(raw)
        for r, qv in zip(raw, q, strict=True):
            r.pop("_sig")
            significant = rules.is_significant(qv, r["relative_change"], r["family"])
            if not significant and (r["key"], r["kind"]) in held:
                significant = rules.is_significant(r["p_value"], r["relative_change"], r["family"])
                if significant:
                    r["test"] += "+held"
                    kept.append(f"{r['key']} ({r['kind']}, p={r['p_value']:.2g}, q={qv:.2g})")
            findings.append(Finding(q_value=float(qv), significant=significant, **r))

    stage, drift, notes, judged = judge(findings, rules)
    if kept:
        notes = (
            *notes,
            "still significant on their own, as at the previous check (re-tested alone, not in this check's "
            f"Benjamini-Hochberg family): {', '.join(kept[:5])}{' ...' if len(kept) > 5 else ''}",
        )
    return Detection(stage, drift, judged, out, notes)


def _capped(mv: MetricValue, best: float | None) -> MetricValue:
    """``mv`` judged up to its spec's ``best`` (``MetricSpec.best``; None: as it is): a value
    above it becomes ``best`` and its interval is scaled with it, which keeps its width on the
    log scale such ratios are tested on (clipping the interval as well would shrink its standard
    error). Without it a baseline that over-predicted the rare classes (``rare_prediction_ratio``
    1.67) and a model that became calibrated (1.0) read as a 40 % decline and paged early
    collapse (a detection audit, 2026-12-08); a fall below ``best`` still counts, from ``best``."""
    if best is None or not mv.value > best:
        return mv
    f = best / mv.value
    return dataclasses.replace(mv, value=best, ci_low=mv.ci_low * f, ci_high=mv.ci_high * f)


def _worst_class_candidates(metrics: Mapping[str, MetricValue], min_support: int) -> int:
    """How many classes ``worst_class_recall`` was picked from (those with support >=
    ``min_support``, or all when none has): the class is chosen as the lowest *now*, so its
    decline test is a selected one, and its p is multiplied by this count (Bonferroni 1936;
    it holds for any dependence between the classes). Without it, in 300 null checks of 10
    equal classes (tests/core/test_detection.py) the selected class's p was <= 0.05 in 15 % of
    them, three times the nominal rate; with it, in 1 %. When
    the worst class is a rare class, the rare class's own unadjusted test is the same
    hypothesis and speaks for both (:func:`_bh_deduplicated`)."""
    support = [mv.n for k, mv in metrics.items() if k.startswith("class_recall.") and mv.n is not None]
    return sum(n >= min_support for n in support) or len(support) or 1


def _paired_signature(key: str, paired: Mapping[str, tuple[str, np.ndarray]]) -> tuple[str, str, bytes]:
    """Which items a paired test rests on, as a 32-byte digest of the mask (the packed mask
    itself, kept for every class until the BH step, was classes x items / 8 bytes)."""
    item_key, mask = paired[key]
    packed = np.packbits(np.asarray(mask, dtype=bool))
    return (
        "paired",
        item_key,
        hashlib.blake2b(packed.tobytes() + mask.size.to_bytes(8, "little"), digest_size=32).digest(),
    )


def _bh_deduplicated(raw: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Benjamini-Hochberg over *distinct* hypotheses: paired tests on the same items (e.g.
    ``rare_class_recall``, ``worst_class_recall`` and ``class_recall.<c>`` when one class is
    rare), and trend tests on identical series (the same metrics' generation series), are
    one hypothesis, counted once with its smallest p, and share its q-value."""
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(raw):
        sig = r.get("_sig")
        groups.setdefault(sig if sig is not None else ("single", i), []).append(i)
    members = list(groups.values())
    q_unique = stats.benjamini_hochberg([min(raw[i]["p_value"] for i in m) for m in members])
    q = np.empty(len(raw))
    for m, qv in zip(members, q_unique, strict=True):
        q[m] = qv
    return q


_HEAD_WITH_DIVERSITY = "head metrics fell"


def _head_dip(f: Finding, rules: Rules) -> bool:
    """A head decline significant at ``alpha`` and at least ``late_head_min_effect``: it counts
    (as late collapse) only together with a diversity decline, see ``classify``."""
    return (
        f.family == "head"
        and f.q_value <= rules.alpha
        and f.relative_change < 0
        and at_least(-f.relative_change, rules.late_head_min_effect)
    )


def _narrowed(f: Finding, rules: Rules) -> bool:
    """A diversity decline significant at ``alpha``, of any size: diversity was not kept, so a
    decline of head and tail alike is not drift (README, "How it decides"), see ``classify``."""
    return f.family == "diversity" and f.q_value <= rules.alpha and f.relative_change < 0


_NOT_DRIFT = "head and tail fell while diversity narrowed"
_HEAD_NARROWED = "head metrics fell while diversity narrowed"

#: the late-collapse rules that count findings below their min effect, by the start of the note
#: ``classify`` gives, with the findings each one counted (``judge`` marks them significant)
_COUNTED_BELOW_MIN_EFFECT = ((_HEAD_WITH_DIVERSITY, _head_dip), (_NOT_DRIFT, _narrowed), (_HEAD_NARROWED, _narrowed))


def judge(findings: Sequence[Finding], rules: Rules) -> tuple[Stage, bool, tuple[str, ...], tuple[Finding, ...]]:
    """``classify``, and the findings as reported: the declines under their min effect that made
    a check late (a head decline from ``late_head_min_effect`` with diversity falling; a small
    significant narrowing with head and tail falling alike) are marked significant, so reports
    and alerts say what fell. ``detect`` and the benchmark's offline re-judge both use it."""
    stage, drift, notes = classify(findings, rules)
    if stage is Stage.LATE_COLLAPSE and notes:
        for prefix, counted in _COUNTED_BELOW_MIN_EFFECT:
            if notes[0].startswith(f"{prefix} ("):
                findings = [replace(f, significant=True) if counted(f, rules) else f for f in findings]
    return stage, drift, notes, tuple(findings)


def classify(findings: Sequence[Finding], rules: Rules) -> tuple[Stage, bool, tuple[str, ...]]:
    """Stage from the significant findings (see the module docstring): returns the stage,
    whether the check is *drift* (head, or head and tail alike, fell while diversity held:
    README, "How it decides") and the notes that say which rule decided."""
    sig = [f for f in findings if f.significant]
    if not sig:
        return Stage.HEALTHY, False, ()

    def worst(family: str) -> float:
        drops = [-f.relative_change for f in sig if f.family == family]
        return max(drops) if drops else 0.0

    tail, head, div = worst("tail"), worst("head"), worst("diversity")
    if at_least(div, rules.late_min_effect) and (tail > 0 or head > 0):
        # said by what fell with it (head -20 % and diversity -30 % read "with the tail")
        with_ = " and ".join(name for name, fell in (("head", head > 0), ("tail", tail > 0)) if fell)
        return Stage.LATE_COLLAPSE, False, (f"diversity fell with the {with_}",)
    if div > 0 and head == 0:
        # a head decline under min_effect still counts when diversity fell with it, whatever
        # the tail did: drift keeps diversity, so the two together are a narrowing shift, i.e.
        # late collapse (with a significant head decline: the rule below)
        fell = sorted({f.key for f in sig if f.family == "diversity"})
        dipped = sorted({f.key for f in findings if _head_dip(f, rules)})
        if dipped:
            return (
                Stage.LATE_COLLAPSE,
                False,
                (f"{_HEAD_WITH_DIVERSITY} ({', '.join(dipped)}) while diversity fell ({', '.join(fell)})",),
            )
    if tail > 0 and head == 0:
        return Stage.EARLY_COLLAPSE, False, ("tail fell while head metrics held",)
    if head > 0 and div > 0:
        # drift keeps diversity; a shift that also narrows the output is collapse
        return Stage.LATE_COLLAPSE, False, ("head metrics fell and diversity fell with them",)
    if tail > 0 and head > 0:
        if at_least(tail, rules.drift_ratio * head):
            return Stage.LATE_COLLAPSE, False, ("head metrics fell with a tail that fell harder",)
        # drift is a shift that *keeps* diversity: a diversity metric significantly lower, even
        # by less than diversity_min_effect, means it was not kept
        narrowed = sorted({f.key for f in findings if _narrowed(f, rules)})
        if narrowed:
            return Stage.LATE_COLLAPSE, False, (f"{_NOT_DRIFT} ({', '.join(narrowed)}): not drift",)
        return Stage.HEALTHY, True, ("head and tail fell alike while diversity held: drift, not collapse",)
    if div > 0:  # tail and head held here (a head decline with diversity returned above)
        fell = sorted({f.key for f in sig if f.family == "diversity"})
        if rules.early_diversity_metrics and len(fell) >= rules.early_diversity_metrics:
            return Stage.EARLY_COLLAPSE, False, (f"diversity narrowed ({', '.join(fell)}) while tail and head held",)
        return Stage.HEALTHY, False, ("diversity narrowed while the tail and head held",)
    # head alone fell: drift keeps diversity, so a diversity metric significantly lower (by less
    # than diversity_min_effect) makes it late collapse, as with head and tail alike above (the
    # module docstring's rule; this branch called it drift, a config audit)
    narrowed = sorted({f.key for f in findings if _narrowed(f, rules)})
    if narrowed:
        return Stage.LATE_COLLAPSE, False, (f"{_HEAD_NARROWED} ({', '.join(narrowed)}): not drift",)
    return Stage.HEALTHY, True, ("head metrics fell while the tail held: drift, not collapse",)


# the rule fields a config may spell as text (``_from_text``), by the type of their default
_BOOL_FIELDS = frozenset(f.name for f in fields(Rules) if isinstance(f.default, bool))
_NUMBER_FIELDS = frozenset(f.name for f in fields(Rules) if isinstance(f.default, float))
_INT_FIELDS = frozenset(f.name for f in fields(Rules) if type(f.default) is int) | {
    "repeat_every_generations",
    "baseline_generation",
    "nlist",
    "nprobe",
}
