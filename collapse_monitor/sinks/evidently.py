"""Evidently drift report of the reference against a generation - "what users use today".

:func:`build_drift_report` runs one Evidently (0.7) ``Report`` over one table whose columns are

* ``pc_1 .. pc_k``: the embeddings projected on the reference's first ``k`` principal
  components (PCA fitted on the reference only, so both sides share one frame);
* ``label``: the reference probe labels against the current model's predictions on the same
  probe set (prediction distribution vs label distribution);
* ``text_length`` / ``text_tokens`` / ``text_distinct_ratio``: per-text descriptors (characters,
  tokens, distinct/total tokens).

Families have different row counts; shorter columns are padded with NaN, which Evidently's
per-column drift tests drop. ``embedding_drift_share`` is Evidently's own share of drifted
principal components (``DriftedColumnsCount`` over the ``pc_*`` columns, with Evidently's default
per-column tests: K-S p < 0.05 up to 1000 rows, normed Wasserstein >= 0.1 above).

Evidently tests each column on its own (marginals); it does not see a lost tail that keeps the
marginals roughly in place, which is why the collapse metrics exist. Results are memoised per
(reference, observation) so the MLflow sink and :class:`EvidentlySink` share one run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any

import numpy as np

from .._tokenize import tokenize
from ..types import Observation, Reference, Report
from .base import EmitContext

__all__ = ["DriftResult", "EvidentlySink", "build_drift_report"]

log = logging.getLogger("collapse_monitor.sinks.evidently")

_MAX_ROWS = 5000  # per side; Evidently's tests are per column, a bigger sample adds little
# memo key -> (result, observation): holding the observation keeps its id() from being reused
_MEMO: OrderedDict[tuple[Any, ...], tuple[DriftResult, Observation]] = OrderedDict()
_MEMO_LOCK = threading.Lock()


@dataclass(frozen=True)
class DriftResult:
    """What one Evidently run produced. ``html`` is the saved report; ``embedding_drift_share`` is
    ``None`` without embeddings; ``drift_share`` is the share of drifted columns over all families;
    ``columns`` maps each column to (test, statistic, threshold)."""

    html: Path
    embedding_drift_share: float | None
    drift_share: float | None
    columns: Mapping[str, tuple[str, float, float]] = field(default_factory=dict)
    snapshot: Any = None

    def facts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"evidently_html": str(self.html)}
        if self.embedding_drift_share is not None:
            out["embedding_drift_share"] = self.embedding_drift_share
        if self.drift_share is not None:
            out["evidently_drift_share"] = self.drift_share
        return out


def _subsample(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= limit:
        return x
    return x[np.sort(rng.choice(len(x), size=limit, replace=False))]


def principal_components(ref: np.ndarray, cur: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Project both sides on the reference's first principal components (PCA via SVD of the
    centred reference; Pearson 1901 / Jolliffe 2002).

    >>> rng = np.random.default_rng(0)
    >>> a, b = principal_components(rng.normal(size=(50, 4)), rng.normal(size=(20, 4)), 2)
    >>> a.shape, b.shape
    ((50, 2), (20, 2))
    """
    ref = np.asarray(ref, dtype=np.float64)
    cur = np.asarray(cur, dtype=np.float64)
    k = max(1, min(int(n_components), ref.shape[1], ref.shape[0] - 1))
    mean = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    basis = vt[:k].T
    # a deterministic sign per component (SVD signs are arbitrary)
    flip = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(k)])
    basis = basis * np.where(flip == 0, 1.0, flip)
    return (ref - mean) @ basis, (cur - mean) @ basis


def _text_descriptors(texts: tuple[str, ...]) -> dict[str, np.ndarray]:
    lengths, tokens, distinct = [], [], []
    for t in texts:
        toks = tokenize(t)
        lengths.append(float(len(t)))
        tokens.append(float(len(toks)))
        distinct.append(len(set(toks)) / len(toks) if toks else 0.0)
    return {
        "text_length": np.asarray(lengths),
        "text_tokens": np.asarray(tokens),
        "text_distinct_ratio": np.asarray(distinct),
    }


def _tables(
    reference: Reference, observation: Observation, n_components: int, max_rows: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any], list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    ref_cols: dict[str, Any] = {}
    cur_cols: dict[str, Any] = {}
    numerical: list[str] = []
    categorical: list[str] = []
    pcs: list[str] = []
    if observation.embeddings is not None and reference.embeddings is not None:
        r = _subsample(reference.embeddings, max_rows, rng)
        c = _subsample(observation.embeddings, max_rows, rng)
        rp, cp = principal_components(r, c, n_components)
        for j in range(rp.shape[1]):
            name = f"pc_{j + 1}"
            ref_cols[name], cur_cols[name] = rp[:, j], cp[:, j]
            pcs.append(name)
        numerical += pcs
    if observation.predictions is not None and reference.labels is not None:
        ref_cols["label"] = np.asarray([str(v) for v in reference.labels.tolist()], dtype=object)
        cur_cols["label"] = np.asarray([str(v) for v in observation.predictions.tolist()], dtype=object)
        categorical.append("label")
    if observation.texts is not None and reference.texts is not None:
        rt = _text_descriptors(tuple(_subsample(np.asarray(reference.texts, dtype=object), max_rows, rng)))
        ct = _text_descriptors(tuple(_subsample(np.asarray(observation.texts, dtype=object), max_rows, rng)))
        for name in rt:
            ref_cols[name], cur_cols[name] = rt[name], ct[name]
            numerical.append(name)
    return ref_cols, cur_cols, numerical, categorical, pcs


def _frame(cols: Mapping[str, Any]) -> Any:
    import importlib

    pd = importlib.import_module("pandas")  # lazily; untyped without pandas-stubs

    n = max(len(v) for v in cols.values())
    data = {}
    for name, v in cols.items():
        s = pd.Series(v)
        data[name] = s.reindex(range(n)) if len(s) < n else s
    return pd.DataFrame(data)


def _column_results(
    snapshot_dict: Mapping[str, Any], pcs: list[str]
) -> tuple[dict[str, tuple[str, float, float]], dict[str, float]]:
    columns: dict[str, tuple[str, float, float]] = {}
    shares: dict[str, float] = {}
    for m in snapshot_dict.get("metrics", []):
        cfg = m.get("config", {})
        kind = str(cfg.get("type", ""))
        if kind.endswith(":ValueDrift") and isinstance(m.get("value"), (int, float)):
            columns[str(cfg.get("column"))] = (str(cfg.get("method")), float(m["value"]), float(cfg.get("threshold")))
        elif kind.endswith(":DriftedColumnsCount") and isinstance(m.get("value"), Mapping):
            key = "pcs" if pcs and list(cfg.get("columns") or ()) == pcs else "all"
            shares[key] = float(m["value"].get("share", math.nan))
    return columns, shares


def build_drift_report(
    reference: Reference,
    observation: Observation,
    path: str | Path,
    *,
    n_components: int = 10,
    max_rows: int = _MAX_ROWS,
    seed: int = 0,
) -> DriftResult | None:
    """Run the Evidently drift report of ``reference`` (reference side) vs ``observation``
    (current side) and save its HTML at ``path``. ``None`` when no family has both sides.

    Memoised per (reference fingerprint, observation object, options): a second call for the
    same check copies nothing and reruns nothing; it returns the first result.
    """
    memo_key = (reference.fingerprint, id(observation), n_components, max_rows, seed)
    with _MEMO_LOCK:
        hit = _MEMO.get(memo_key)
    if hit is not None and hit[1] is observation:
        found = hit[0]
        if Path(path) == found.html and found.html.exists():
            return found
        if found.snapshot is not None:
            # the same run saved again where this caller wants it: the MLflow sink's copy lives in
            # a temporary folder, and a later EvidentlySink reran the whole report (an audit)
            return _replace(found, html=_save_html(found.snapshot, path))
    ref_cols, cur_cols, numerical, categorical, pcs = _tables(reference, observation, n_components, max_rows, seed)
    if not ref_cols:
        return None
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    metrics: list[Any] = [DataDriftPreset(columns=numerical + categorical)]
    if pcs:
        metrics.append(DriftedColumnsCount(columns=pcs))
    with np.errstate(all="ignore"):
        snapshot = Report(metrics).run(  # positional order: current first, then reference
            Dataset.from_pandas(_frame(cur_cols), data_definition=definition),
            Dataset.from_pandas(_frame(ref_cols), data_definition=definition),
        )
    path = _save_html(snapshot, path)
    columns, shares = _column_results(snapshot.dict(), pcs)
    emb = shares.get("pcs") if pcs else None
    result = DriftResult(
        html=path,
        embedding_drift_share=None if emb is None or math.isnan(emb) else emb,
        drift_share=shares.get("all", shares.get("pcs")),
        columns=columns,
        snapshot=snapshot,
    )
    with _MEMO_LOCK:
        _MEMO[memo_key] = (result, observation)
        while len(_MEMO) > 4:  # a few monitors checking at once; release() empties it after each check
            _MEMO.popitem(last=False)
    return result


def _save_html(snapshot: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    snapshot.save_html(str(tmp))
    tmp.replace(path)
    return path


def release(observation: Observation) -> None:
    """Forget the runs of ``observation`` once its check handed off: the memo kept the last four
    observations (their embeddings) and Evidently snapshots alive in the training process."""
    with _MEMO_LOCK:
        for key in [k for k, (_, obs) in _MEMO.items() if obs is observation]:
            del _MEMO[key]


def report_filename(report: Report) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in report.monitor)
    return f"{safe}-gen{report.generation:04d}-evidently-drift.html"


class EvidentlySink:
    """Saves an Evidently drift report (HTML) per check and computes ``embedding_drift_share``.

    ``output_dir`` defaults to ``<monitor home>/evidently`` (the home the monitor passes as
    ``context.extra["home"]``, else ``$COLLAPSE_MONITOR_HOME`` or ``./.collapse_monitor``). ``emit`` returns ``{"evidently_html": path,
    "embedding_drift_share": share}``; ``last_drift_share`` / ``last_html`` keep the latest.
    A replay from the spool has no raw data and produces nothing (not an error).

    >>> import numpy as np, tempfile, collapse_monitor as cm
    >>> sink = cm.EvidentlySink(tempfile.mkdtemp(), n_components=3)
    >>> sink.name
    'evidently'
    """

    name = "evidently"

    def __init__(
        self, output_dir: str | Path | None = None, *, n_components: int = 10, max_rows: int = _MAX_ROWS, seed: int = 0
    ) -> None:
        from ..errors import ConfigError

        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ConfigError("EvidentlySink.n_components", f"expected an int >= 1, got {n_components!r}")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.n_components = n_components
        self.max_rows = max_rows
        self.seed = seed
        self.last_drift_share: float | None = None
        self.last_html: Path | None = None
        self.last_result: DriftResult | None = None

    def __repr__(self) -> str:
        return f"EvidentlySink(output_dir={str(self.output_dir) if self.output_dir else None!r}, n_components={self.n_components})"

    def _dir(self) -> Path:
        if self.output_dir is not None:
            return self.output_dir
        from ..history import default_home

        return default_home() / "evidently"

    def build(
        self, report: Report, context: EmitContext | None, directory: str | Path | None = None
    ) -> DriftResult | None:
        """Build (or reuse) the drift report for this check; ``None`` without raw data."""
        if context is None or context.reference is None or context.observation is None:
            return None
        home = context.extra.get("home") if context.extra else None
        if directory is not None:
            target = Path(directory)
        elif self.output_dir is None and home:
            target = Path(home) / "evidently"  # the monitor's own home, when the monitor passes it
        else:
            target = self._dir()
        return build_drift_report(
            context.reference,
            context.observation,
            target / report_filename(report),
            n_components=self.n_components,
            max_rows=self.max_rows,
            seed=self.seed,
        )

    def emit(self, report: Report, context: EmitContext | None = None) -> dict[str, Any] | None:
        result = self.build(report, context)
        if result is None:
            return None
        self.last_result = result
        self.last_html = result.html
        self.last_drift_share = result.embedding_drift_share
        with contextlib.suppress(Exception):
            log.info("evidently drift report for %s generation %d: %s", report.monitor, report.generation, result.html)
        return result.facts()
