"""Fuzzing (hypothesis) of what users hand the monitor: ``Reference``, ``Observation`` and the
YAML config. Whatever comes in - random shapes and dtypes, NaN, inf, huge values, object
arrays, unicode and empty texts, one sample, all-identical samples, labels of mixed types - the
outcome is a valid report (finite metrics, intervals that hold the value, JSON without NaN,
a round trip through ``Report.from_dict``) or ``InputError`` / ``ConfigError``; never another
exception, never a NaN metric.

Example counts are modest (the suite must stay fast); ``derandomize=True`` makes every run
explore the same examples, so a failure here is reproducible, not flaky. For a deeper, random
search set ``COLLAPSE_FUZZ_EXAMPLES`` (e.g. ``=1000``): every test then runs that many examples
with fresh randomness.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import collapse_monitor as cm
from collapse_monitor.errors import ConfigError, InputError

_DEEP = int(os.environ.get("COLLAPSE_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=_DEEP or 60,
    deadline=None,
    derandomize=not _DEEP,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
EXPECTED = (InputError, ConfigError)

# --- strategies ---------------------------------------------------------------------------------

_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.0, 1e-300, 1e14, 1e15, 1.0001e15, 1e38, 3.5e38, 1e300, -1e300]),
)
_LABEL = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["a", "b", "é", "🙂", "", " ", "0", "1", "None", "\u0301"]),
    st.sampled_from([0.0, 1.0, 2.5, float("nan"), float("inf"), True, False, None, b"x", (1, 2), 10**30]),
)
_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\n\t", "a", "a a a a", "🙂 🙂", "ﬁ ﬀ ŉ", "\u200b", "مرحبا بالعالم", "x" * 200]),
)


@st.composite
def _matrix(draw: st.DrawFn, rows: int | None = None, cols: int | None = None) -> Any:
    """A 'numeric' input of any kind: arrays of many dtypes and shapes, lists, ragged lists."""
    n = draw(st.integers(0, 7)) if rows is None else rows
    d = draw(st.integers(0, 4)) if cols is None else cols
    kind = draw(
        st.sampled_from(
            [
                "float",
                "float",
                "float",
                "identical",
                "int",
                "bool",
                "complex",
                "object",
                "str",
                "ragged",
                "vector",
                "cube",
                "scalar",
                "none_in_list",
            ]
        )
    )
    if kind == "float":
        dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
        width = {np.float16: 16, np.float32: 32, np.float64: 64}[dtype]
        elems = st.floats(allow_nan=True, allow_infinity=True, width=width)
        if draw(st.booleans()):  # mostly finite, so many examples reach the metrics
            elems = st.floats(-1e3, 1e3, width=width)
        return draw(hnp.arrays(dtype, (n, d), elements=elems))
    if kind == "identical":
        v = draw(st.floats(-10, 10))
        return np.full((n, d), v)
    if kind == "int":
        return draw(hnp.arrays(draw(st.sampled_from([np.int8, np.int64, np.uint8])), (n, d)))
    if kind == "bool":
        return draw(hnp.arrays(np.bool_, (n, d)))
    if kind == "complex":
        return draw(hnp.arrays(np.complex128, (n, d), elements=st.complex_numbers(max_magnitude=10)))
    if kind == "object":
        return np.array([[draw(st.one_of(_FLOATS, _LABEL)) for _ in range(d)] for _ in range(n)], dtype=object)
    if kind == "str":
        return [[draw(st.text(max_size=3)) for _ in range(d)] for _ in range(n)]
    if kind == "ragged":
        return [[1.0] * draw(st.integers(0, 3)) for _ in range(max(n, 2))]
    if kind == "vector":
        return draw(hnp.arrays(np.float64, (n,), elements=_FLOATS))
    if kind == "cube":
        return np.zeros((n, d, 2))
    if kind == "scalar":
        return draw(_FLOATS)
    return [[None] * d for _ in range(n)]


@st.composite
def _labels(draw: st.DrawFn, length: int | None = None, alphabet: list[Any] | None = None) -> Any:
    n = draw(st.integers(0, 12)) if length is None else length
    pick = st.sampled_from(alphabet) if alphabet else _LABEL
    values = [draw(pick) for _ in range(n)]
    if draw(st.integers(0, 5)) == 0:
        return np.array(values, dtype=object)
    return values


@st.composite
def _texts(draw: st.DrawFn) -> Any:
    shape = draw(st.sampled_from(["list", "list", "list", "tuple", "str", "bytes", "mixed", "empty"]))
    items = draw(st.lists(_TEXT, min_size=1, max_size=8))
    if shape == "tuple":
        return tuple(items)
    if shape == "str":
        return items[0]
    if shape == "bytes":
        return [t.encode() for t in items]
    if shape == "mixed":
        return [*items, draw(_LABEL)]
    if shape == "empty":
        return []
    return items


_CLEAN_LABEL = st.one_of(st.integers(0, 3), st.sampled_from(["a", "b", "é", "🙂", "0", "x y"]))


@st.composite
def _world(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Reference kwargs and two observations' kwargs. Clean and compatible most of the time
    (so the metrics run on odd-but-valid data: one row, identical rows, huge values, unicode),
    with one field replaced by anything at all some of the time."""
    families = draw(st.sets(st.sampled_from(["embeddings", "labels", "texts"]), min_size=1))
    d = draw(st.integers(1, 3))
    huge = draw(st.sampled_from([1.0, 1.0, 1e-8, 1e6, 1e12]))
    finite = st.floats(-1.0, 1.0).map(lambda v: v * huge)

    def emb(rows: int) -> Any:
        if draw(st.integers(0, 4)) == 0:
            return np.full((rows, d), draw(finite))  # all identical
        return draw(hnp.arrays(np.float64, (rows, d), elements=finite))

    ref: dict[str, Any] = {}
    alphabet = draw(st.lists(_CLEAN_LABEL, min_size=1, max_size=4, unique=True))
    if "embeddings" in families:
        ref["embeddings"] = emb(draw(st.integers(2, 12)))
    if "labels" in families:
        ref["labels"] = draw(_labels(draw(st.integers(1, 30)), alphabet))
    if "texts" in families:
        first = draw(st.sampled_from(["the cat sat", "ünïcödé wörds", "a"]))  # at least one token
        ref["texts"] = [first, *draw(st.lists(_TEXT, max_size=5))]
    observations = []
    for _ in range(2):
        obs: dict[str, Any] = {}
        if "embeddings" in ref and draw(st.integers(0, 4)):
            obs["embeddings"] = emb(draw(st.integers(1, 10)))
        if "labels" in ref and draw(st.integers(0, 4)):
            obs["predictions"] = draw(_labels(len(ref["labels"]), alphabet))
        if "texts" in ref and draw(st.integers(0, 4)):
            obs["texts"] = draw(st.lists(_TEXT, min_size=1, max_size=6))
        if not obs:
            obs = {
                k: v
                for k, v in (
                    ("embeddings", ref.get("embeddings")),
                    ("predictions", ref.get("labels")),
                    ("texts", ref.get("texts")),
                )
                if v is not None
            }
        if draw(st.integers(0, 6)) == 0:
            obs["generation"] = draw(st.one_of(st.integers(-2, 5), st.just(True), st.just(2.0), st.just("1")))
        if draw(st.integers(0, 6)) == 0:
            obs["provenance"] = draw(
                st.one_of(
                    st.builds(cm.Provenance, synthetic_fraction=st.floats(0, 1)),
                    st.fixed_dictionaries({"synthetic_fraction": _FLOATS}),
                    st.just("not provenance"),
                )
            )
        observations.append(obs)
    # corruption: one field of the reference or of an observation becomes anything at all
    corrupt = draw(st.integers(0, 9))
    if corrupt < 4:
        target = ref if corrupt < 2 else observations[draw(st.integers(0, 1))]
        field = draw(
            st.sampled_from(
                ["embeddings", "labels", "texts", "class_priors"]
                if target is ref
                else ["embeddings", "predictions", "texts"]
            )
        )
        if field == "embeddings":
            target[field] = draw(_matrix())
        elif field in ("labels", "predictions"):
            target[field] = draw(_labels())
        elif field == "texts":
            target[field] = draw(_texts())
        else:
            target[field] = draw(st.dictionaries(_LABEL, st.one_of(_FLOATS, st.just("x")), max_size=4))
    return ref, observations


# --- checks -------------------------------------------------------------------------------------


def assert_valid_report(report: cm.Report) -> None:
    assert isinstance(report, cm.Report) and isinstance(report.stage, cm.Stage)
    for key, mv in report.metrics.items():
        for v in (mv.value, mv.ci_low, mv.ci_high):
            assert isinstance(v, float) and math.isfinite(v), (key, mv)
        assert mv.ci_low <= mv.value + 1e-9 and mv.value <= mv.ci_high + 1e-9, (key, mv)
        for v in (mv.baseline, mv.p_value):
            assert v is None or math.isfinite(v), (key, mv)
        assert mv.p_value is None or 0.0 <= mv.p_value <= 1.0, (key, mv)
    for f in report.findings:
        assert math.isfinite(f.p_value) and math.isfinite(f.q_value), f
    d = report.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert cm.Report.from_dict(json.loads(text)).to_dict() == d


def _run(ref_kw: dict[str, Any], obs_kws: list[dict[str, Any]]) -> list[cm.Report]:
    try:
        ref = cm.Reference(**ref_kw)
    except EXPECTED as exc:
        event(f"reference refused: {getattr(exc, 'field', '?')}")
        return []
    reports = []
    with tempfile.TemporaryDirectory() as home:
        mon = cm.CollapseMonitor("fuzz", reference=ref, sinks=[], home=home)
        for kw in obs_kws:
            try:
                obs = cm.Observation(**kw)
            except EXPECTED as exc:
                event(f"observation refused: {getattr(exc, 'field', '?')}")
                continue
            try:
                reports.append(mon.check(obs))
            except EXPECTED as exc:
                event(f"check refused: {type(exc).__name__}")
    for r in reports:
        assert_valid_report(r)
        event(f"report with {'no' if not r.metrics else 'some'} metrics")
    return reports


# --- tests --------------------------------------------------------------------------------------


@SETTINGS
@given(_world())
def test_fuzz_reference_and_observation(world: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    ref_kw, obs_kws = world
    _run(ref_kw, obs_kws)


@settings(SETTINGS, max_examples=_DEEP or 40)
@given(
    n=st.integers(1, 6),
    d=st.integers(1, 3),
    value=st.floats(-1e6, 1e6),
    k=st.integers(1, 8),
    noise=st.sampled_from([0.0, 1e-12, 1e-3, 1.0]),
)
def test_fuzz_tiny_and_degenerate_embeddings(n: int, d: int, value: float, k: int, noise: float) -> None:
    """One sample, two samples, all-identical samples, k larger than the data: the generator
    metrics must stay finite (or the input is refused with InputError)."""
    rng = np.random.default_rng(n * 31 + d)
    ref = np.full((max(n, 2), d), value) + noise * rng.normal(size=(max(n, 2), d))
    gen = np.full((n, d), value) + noise * rng.normal(size=(n, d))
    reports = _run({"embeddings": ref}, [{"embeddings": gen}, {"embeddings": gen[:1]}])
    assume(reports)


@settings(SETTINGS, max_examples=_DEEP or 40)
@given(
    ref=st.lists(st.one_of(st.integers(0, 3), st.sampled_from(["a", "b", "é"])), min_size=1, max_size=40),
    flip=st.floats(0, 1),
    seed=st.integers(0, 100),
)
def test_fuzz_mixed_type_labels(ref: list[Any], flip: float, seed: int) -> None:
    """Labels that mix ints and strings (``1`` vs ``"1"``), one class, one item."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(ref), key=str)
    preds = [rng.choice(classes) if rng.random() < flip else y for y in ref]
    preds = [p.item() if hasattr(p, "item") else p for p in preds]
    _run({"labels": ref}, [{"predictions": ref}, {"predictions": preds}])


@settings(SETTINGS, max_examples=_DEEP or 40)
@given(ref=st.lists(_TEXT, min_size=1, max_size=6), gen=st.lists(_TEXT, min_size=1, max_size=6))
def test_fuzz_texts(ref: list[str], gen: list[str]) -> None:
    """Unicode, empty and whitespace-only texts, single tokens, zero-width characters."""
    _run({"texts": ref}, [{"texts": gen}, {"texts": ref}])


# --- YAML config --------------------------------------------------------------------------------

_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), _FLOATS, st.text(max_size=12))
_VALUE = st.recursive(
    _SCALAR, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8
)
_RULE_KEYS = [
    "alpha",
    "min_effect",
    "diversity_min_effect",
    "late_min_effect",
    "late_head_min_effect",
    "drift_ratio",
    "early_diversity_metrics",
    "trend",
    "trend_min_points",
    "rare_threshold",
    "min_support",
    "tail_quantile",
    "k",
    "n_boot",
    "text_budget",
    "rare_class_tests",
    "tail",
    "head",
    "diversity",
    "repeat_interval_seconds",
    "repeat_every_generations",
    "resolve_after",
    "alert_on_drift",
    "baseline_generation",
    "seed",
    "bogus",
]
_SMALL = st.one_of(_SCALAR, st.integers(1, 50), st.floats(0.001, 0.999), st.lists(st.text(max_size=8), max_size=3))


_VALID_RULES = {
    "alpha": st.floats(0.001, 0.5),
    "min_effect": st.floats(0.01, 0.9),
    "diversity_min_effect": st.floats(0.01, 0.9),
    "late_min_effect": st.floats(0.01, 0.9),
    "late_head_min_effect": st.floats(0.0, 0.9),
    "drift_ratio": st.floats(1.0, 10.0),
    "early_diversity_metrics": st.integers(0, 4),
    "trend": st.booleans(),
    "trend_min_points": st.integers(3, 8),
    "rare_threshold": st.floats(0.001, 0.5),
    "min_support": st.integers(1, 60),
    "tail_quantile": st.floats(0.01, 0.9),
    "k": st.integers(1, 60),
    "n_boot": st.integers(10, 60),
    "text_budget": st.integers(10, 500),
    "rare_class_tests": st.booleans(),
    "repeat_interval_seconds": st.floats(0, 1e9),
    "repeat_every_generations": st.one_of(st.none(), st.integers(1, 5)),
    "resolve_after": st.integers(1, 4),
    "alert_on_drift": st.booleans(),
    "baseline_generation": st.one_of(st.none(), st.integers(0, 2)),
    "seed": st.integers(0, 10**9),
    "tail": st.lists(st.sampled_from(["tail_coverage", "rare_class_recall", "nope", ""]), max_size=3),
}


@st.composite
def _config(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(_VALUE)  # not even a mapping
    valid = draw(st.booleans())
    cfg: dict[str, Any] = {}
    if valid or draw(st.integers(0, 5)):
        cfg["name"] = draw(st.sampled_from(["fuzz", "a.b-c_1"])) if valid else draw(_SCALAR)
    if draw(st.booleans()):
        if valid:
            keys = draw(st.lists(st.sampled_from(sorted(_VALID_RULES)), max_size=5, unique=True))
            cfg["rules"] = {k: draw(_VALID_RULES[k]) for k in keys}
        else:
            rules = {draw(st.sampled_from(_RULE_KEYS)): draw(_SMALL) for _ in range(draw(st.integers(0, 4)))}
            cfg["rules"] = rules if draw(st.integers(0, 5)) else draw(_VALUE)
    if draw(st.booleans()):
        sink_types = ["mlflow", "prometheus", "evidently"] + ([] if valid else ["nope"])
        options = (
            {}
            if valid
            else {
                "tracking_uri": _SCALAR,
                "timeout": _SCALAR,
                "pushgateway": _SCALAR,
                "textfile": _SCALAR,
                "job": _SCALAR,
                "max_retries": _SCALAR,
                "extra": _SCALAR,
            }
        )
        cfg["sinks"] = draw(
            st.one_of(
                st.lists(st.fixed_dictionaries({"type": st.sampled_from(sink_types)}, optional=options), max_size=3),
                *([] if valid else [_VALUE]),
            )
        )
    if draw(st.booleans()):
        types = ["webhook", "slack", "alertmanager", "teams"] + ([] if valid else ["pagerduty", "nope"])
        options = {
            "severities": st.lists(st.sampled_from(["info", "warning", "critical"]), min_size=1, unique=True),
            "timeout": st.floats(0.1, 30),
        }
        if not valid:
            options = {
                "url": _SCALAR,
                "secret": _SCALAR,
                "routing_key": _SCALAR,
                "severities": _VALUE,
                "timeout": _SCALAR,
                "verify_tls": _SCALAR,
                "headers": _VALUE,
                "name": _SCALAR,
            }
        items = draw(st.lists(st.fixed_dictionaries({"type": st.sampled_from(types)}, optional=options), max_size=3))
        for i, item in enumerate(items):
            if valid:
                item["url"] = f"http://127.0.0.1:9/hook-{i}"
                item["name"] = f"ch{i}"
        cfg["alerts"] = items if valid or draw(st.integers(0, 4)) else draw(_VALUE)
    for key in ("strict", "links", "routing", "mutes", "home", "device", "reference"):
        if not valid and draw(st.integers(0, 5)) == 0:
            cfg[key] = draw(_VALUE)
    if not valid and draw(st.integers(0, 5)) == 0:
        cfg[draw(st.text(min_size=1, max_size=8))] = draw(_VALUE)
    return cfg


_REF = cm.Reference(labels=[0] * 45 + [1] * 5)


@SETTINGS
@given(cfg=_config(), raw=st.one_of(st.none(), st.none(), st.none(), st.text(max_size=80)))
def test_fuzz_yaml_config(cfg: Any, raw: str | None) -> None:
    """A config mapping (or garbage text) -> a monitor that checks, or ConfigError/InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "collapse.yaml"
        if raw is not None and raw.strip():
            path.write_text(raw)
        else:
            if isinstance(cfg, dict) and "home" not in cfg:
                cfg["home"] = str(Path(tmp) / "home")
            path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        try:
            mon = cm.CollapseMonitor.from_config(path, reference=_REF, sinks=[])
        except EXPECTED as exc:
            event(f"config refused: {type(exc).__name__}")
            return
        mon.home = Path(tmp) / "home2"  # never write outside the temp dir, whatever `home` said
        from collapse_monitor.history import HistoryStore
        from collapse_monitor.sinks.base import Spool

        mon.history, mon.spool = HistoryStore(mon.home), Spool(mon.home / "spool")
        mon.channels = []  # no network from fuzzed URLs
        try:
            report = mon.check(cm.Observation(predictions=[0] * 45 + [1] * 5))
        except EXPECTED as exc:
            event(f"check refused: {type(exc).__name__}")
            return
        assert_valid_report(report)
        event("config accepted, report valid")


@pytest.mark.parametrize("text", ["a: [1, 2", "\t- x", "key: value\n  bad indent: 1", "%YAML 9.9\n---\nx: 1", "\x00"])
def test_broken_yaml_is_a_config_error(tmp_path, text) -> None:
    path = tmp_path / "collapse.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        cm.CollapseMonitor.from_config(path, reference=_REF, sinks=[])
