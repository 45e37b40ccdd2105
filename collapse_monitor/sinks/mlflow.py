"""MLflow sink: one run per check, and the monitor's history read back from MLflow.

Layout (experiment ``collapse-monitor/<monitor>`` by default, one run per check):

* metrics ``collapse.<key>`` with ``step=generation`` and the interval as
  ``collapse.<key>.ci_low`` / ``collapse.<key>.ci_high`` (and, for a proportion - accuracy, a
  class's recall, a coverage share - its count ``collapse.<key>.n``, the counts of Fisher's test
  when the history is read back from metrics alone); run-level ``collapse.generation`` (the
  tag's number, for sorting), ``collapse.stage_level``
  (0/1/2), ``collapse.drift`` (0/1), ``collapse.check_duration_seconds`` and, when the Evidently
  report ran, ``collapse.embedding_drift_share``;
* tags ``collapse.monitor``, ``collapse.generation``, ``collapse.stage``, ``collapse.parent_run_id``
  (from the provenance), ``collapse.report_id`` (``<monitor>:<generation>:<created_at>``, the
  idempotency key of spool replays), ``collapse.origin``, ``collapse.synthetic_fraction``, ...;
* dataset inputs (``mlflow.data``): each provenance source as a ``MetaDataset`` in context
  ``training`` with input tags ``collapse.origin`` / ``collapse.synthetic_fraction`` /
  ``collapse.data_digest`` (the full provenance digest: MLflow keeps at most 36 characters as the
  dataset digest, see :func:`dataset_digest`), and the frozen reference (digest = its
  fingerprint) in context ``reference``;
* artifacts under ``collapse/``: ``report.json``, ``history.png`` (metric history; drawn and
  uploaded on a background thread right after the run is logged, see ``history_plot``),
  ``evidently_drift.html`` and, on the run that stored the current baseline,
  ``baseline/baseline.json`` + ``baseline/items.npz`` (numpy, never pickled), and per replicate
  retrain of the baseline generation (``check_replicate``) its metrics in ``baseline.json`` and
  its items in ``baseline/replicate-<i>.npz``: the first check after a replicate was added
  uploads the baseline again, so a monitor rebuilt from MLflow keeps its replicates. The
  baseline's identity (``collapse.baseline_uid``, set when a generation becomes the baseline) and
  the digests of replicates dropped from it travel with it.

Several machines, each with its own history, share one baseline through MLflow: before a check
(and before ``check_replicate``, ``drop_replicates`` and ``baseline()``) the monitor merges the
newest copy on the server into its own (:meth:`MLflowSink.sync_baseline`: one ``search_runs``
without retry, and a download only when that copy differs), and the upload merges once more with
a copy of the same baseline uploaded meanwhile (one MLflow cannot hand over is not uploaded over:
the run goes up without the baseline and the report says so). Replicates another machine added join, those it dropped leave and
stay out (:func:`~collapse_monitor.history.merge_baselines`). Another baseline (the generation
checked again on one machine) is neither merged nor taken over: each machine judges against its
own, notes the other at every check, and uploads its own when it differs from the newest, as
before copies were merged; a monitor rebuilt from MLflow reads the newest upload. A newest copy
whose artifact is missing or cannot be parsed is replaced by the next upload that differs.

When the caller has an active MLflow run on the same tracking server, the check's run is its
child (``mlflow.parentRunId``) - it stays in the monitor's experiment so that the chain of
generations reads as one list - and the caller's run gets tags ``collapse.<monitor>.run_id`` /
``.stage`` / ``.generation`` pointing at it. No global MLflow state is changed: calls go through an
``MlflowClient`` bound to this sink's tracking URI.

Dead servers cost seconds: while the sink talks to MLflow it bounds ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
/ ``MLFLOW_HTTP_REQUEST_TIMEOUT`` / ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` and turns
``MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER`` off (a proxy answering 503 with ``Retry-After: 3600``
would otherwise block the training job for an hour; the spool is our retry) (all read by
``mlflow.utils.rest_utils.http_request`` on every request, also for proxied artifact uploads) to
this sink's bounds, silences MLflow's "View run at <url>" line (the URL may carry credentials) and
its artifact progress bars. The values hold for the sink's own thread (and the workers of its
block) only: MLflow's reads of these settings consult a thread-local first, so the training
job's own MLflow calls in other threads keep their settings (where an MLflow version does not
read them that way, the environment is set and restored under a process-wide lock, as before).
A failing request raises at once (no further calls), so one emit against a dead or
hanging server costs about ``(max_retries + 1) * timeout`` seconds at most. The baseline's sync
before a check is not retried: the first check after the server died waits one ``timeout`` more,
and the monitor tries no sync while reports wait in the spool.

Spool replays are idempotent: a replayed report whose run (tag ``collapse.report_id``) already
FINISHED is skipped; a partial run of a crashed attempt is deleted and logged again, so the number
of active runs equals the number of checks. Replays carry no raw data: no plot, no Evidently
report, no baseline artifact - the next live check uploads a baseline the server does not hold yet
(matched by ``collapse.baseline_digest``). When MLflow refuses a report's content for good
(``INVALID_PARAMETER_VALUE``, see :meth:`MLflowSink.rejected_for_good`) the sink raises
``PermanentSinkError`` and the spool dead-letters that report instead of letting it block the
ones behind it. No exception the sink raises chains MLflow's own (``__cause__`` and
``__context__`` are empty): its message may carry the tracking URI's credentials.

``load_history`` reads every FINISHED check run back (``collapse/report.json``, or metrics + tags
when the artifact is missing) and the newest stored baseline (in upload order: each baseline
upload of a monitor is tagged ``collapse.baseline_seq``, one more than the newest on the server,
so machines with skewed clocks agree which is newest), so a new process with an empty
working directory continues the generation numbering and the paired tests from MLflow alone.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import numpy as np

from .._redact import (
    _HTTP_USERINFO,
    Redactor,
    _db_userinfo,
    basic_auth_values,
    host_port,
    mask_link,
    redact_http_client_logs,
    redact_text,
    redact_url,
)
from ..detection import is_share
from ..errors import CollapseMonitorError, ConfigError, SinkError
from ..history import Baseline, Replicate, core_meta, merge_baselines, state_digest, sync_id
from ..types import MetricValue, Provenance, Report, Stage
from .base import EmitContext, PermanentSinkError

__all__ = ["MLflowSink", "dataset_digest", "default_tracking_uri", "safe_uri"]

_T = TypeVar("_T")

log = logging.getLogger("collapse_monitor.sinks.mlflow")

PREFIX = "collapse."
ARTIFACT_DIR = "collapse"
MAX_SOURCE_INPUTS = 100  # provenance sources logged as dataset inputs per run (the rest counted)
INPUTS_PER_CALL = 50  # dataset inputs per log_inputs request
SUPERSEDED_TAG = "collapse.superseded_by"  # on a run whose generation was checked again later
_RUN_METRICS = (
    "generation",
    "stage_level",
    "drift",
    "check_duration_seconds",
    "embedding_drift_share",
    "evidently_drift_share",
)
_BAD_NAME = re.compile(r"[^\w.\- :]")
#: what the sink appends to a metric's name for its interval and its item count
_SIDECARS = (".ci_low", ".ci_high", ".n")
_ENV_LOCK = threading.RLock()
#: this thread's MLflow request bounds (``MLflowSink.bounded``): {environment variable: value}
_BOUNDS = threading.local()
_BOUND_READS: list[bool] = []  # [installed?] once per process


def _install_bound_reads() -> bool:
    """Make MLflow's reads of its HTTP settings (``MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()`` and
    the others ``bounded`` sets) return this thread's bounds first. The bounds used to be set in
    ``os.environ`` for the whole process: the training job's own MLflow calls in other threads
    (checkpoint uploads) got 1 retry and a 5 s timeout while a check logged, and a transient 503
    could fail them (an audit). False when this MLflow does not read them that way (the
    environment is used then, as before)."""
    if _BOUND_READS:
        return _BOUND_READS[0]
    with _ENV_LOCK:
        if _BOUND_READS:
            return _BOUND_READS[0]
        try:
            import mlflow.environment_variables as env

            variables = [getattr(env, name) for name in _BOUND_NAMES]
            if not all(callable(getattr(v, "get", None)) for v in variables):
                raise AttributeError("get")
        except (ImportError, AttributeError):
            _BOUND_READS.append(False)
            return False
        for name, var in zip(_BOUND_NAMES, variables, strict=True):
            if getattr(var, "_collapse_bounded", False):
                continue
            read = var.get

            def get(_read: Any = read, _name: str = name) -> Any:
                values = getattr(_BOUNDS, "values", None)
                return values[_name] if values is not None and _name in values else _read()

            var.get = get
            var._collapse_bounded = True
        _bound_download_workers()
        _BOUND_READS.append(True)
        return True


def _bound_download_workers() -> None:
    """``download_artifacts`` fetches files in the artifact repository's own thread pool, whose
    threads do not have the caller's bounds: the baseline's sync before a check waited MLflow's
    120 s timeout on a hung server instead of the sink's (a review). The files of one call are
    fetched under the calling thread's bounds."""
    try:
        from mlflow.store.artifact.artifact_repo import ArtifactRepository
    except ImportError:  # pragma: no cover - an MLflow without it downloads in the caller
        return
    if getattr(ArtifactRepository.download_artifacts, "_collapse_bounded", False):
        return
    download = ArtifactRepository.download_artifacts

    def download_artifacts(self: Any, artifact_path: str, dst_path: str | None = None) -> Any:
        values = getattr(_BOUNDS, "values", None)
        if values is None or "_download_file" in self.__dict__:
            return download(self, artifact_path, dst_path)
        fetch = self._download_file  # the subclass's, looked up before the instance override
        self._download_file = lambda *a, **k: _in_bounds(values, lambda: fetch(*a, **k))
        try:
            return download(self, artifact_path, dst_path)
        finally:
            self.__dict__.pop("_download_file", None)

    download_artifacts._collapse_bounded = True  # type: ignore[attr-defined]
    ArtifactRepository.download_artifacts = download_artifacts  # type: ignore[method-assign]


_BOUND_NAMES = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
)


@contextlib.contextmanager
def _thread_bounds(values: Mapping[str, Any] | None) -> Iterator[None]:
    """``values`` as this thread's bounds for the block, the previous ones restored after it."""
    before = getattr(_BOUNDS, "values", None)
    _BOUNDS.values = values
    try:
        yield
    finally:
        _BOUNDS.values = before


def _in_bounds(values: Mapping[str, Any] | None, fn: Callable[[], Any]) -> Any:
    """``fn()`` under ``values`` as this thread's bounds (a worker thread of a bounded block)."""
    with _thread_bounds(values):
        return fn()


_PLOT_MODES = ("background", "sync", "off")
#: ``mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE``: MLflow refuses a longer dataset digest
#: (400 INVALID_PARAMETER_VALUE); pinned by a test against the installed mlflow
MAX_DATASET_DIGEST = 36
#: ``mlflow.utils.validation.MAX_INPUT_TAG_VALUE_SIZE``
MAX_INPUT_TAG_VALUE = 500
#: MLflow error codes that reject the request's content: the same report can only fail again
_REJECTED = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})
#: database errors MLflow's SQL store returns as BAD_REQUEST that a retry can get past: a unique
#: key two writers raced for, a lock, a deadlock, a serialisation failure, a lost connection
_TRANSIENT_DB = re.compile(
    r"(?i)UniqueViolation|IntegrityError|duplicate key|UNIQUE constraint failed|Deadlock|"
    r"database is locked|could not serialize|SerializationFailure|OperationalError|server closed the connection"
)
_HEX = re.compile(r"[0-9a-fA-F]+")
_HISTORY_KEYS = (
    "tail_coverage",
    "rare_mode_coverage",
    "rare_class_recall",
    "worst_class_recall",
    "vendi_ratio",
    "variance_ratio",
    "rare_ngram_recall",
    "distinct_2",
    "accuracy",
    "precision",
    "recall",
    "head_coverage",
)


def default_tracking_uri() -> str:
    """The tracking URI, resolved now: the one set with ``mlflow.set_tracking_uri`` when mlflow
    is already imported, else ``$MLFLOW_TRACKING_URI``, else an absolute
    ``sqlite:///<cwd>/mlflow.db``, whatever was imported first. (MLflow's own default is
    ``./mlruns`` where such a folder exists: read whenever mlflow happened to be imported
    first, it sent every check to a file store MLflow 3 no longer writes to.)"""
    if "mlflow" in sys.modules:
        import mlflow

        try:
            from mlflow.tracking._tracking_service.utils import is_tracking_uri_set
        except ImportError:  # pragma: no cover - another MLflow layout: its resolved URI
            return absolute_sqlite(str(mlflow.get_tracking_uri()))
        if is_tracking_uri_set():
            return absolute_sqlite(str(mlflow.get_tracking_uri()))
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return absolute_sqlite(env)
    return "sqlite:///" + os.path.abspath("mlflow.db")


def absolute_sqlite(uri: str, base_dir: str | os.PathLike[str] | None = None) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/relative.db``, relative to ``base_dir``
    (a config's folder) or else the working directory (a later chdir must not move the store);
    other URIs unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        return "sqlite:///" + os.path.abspath(os.path.join(base_dir, rel) if base_dir is not None and rel else rel)
    return uri


def local_store_path(tracking_uri: str) -> Path | None:
    """The file or directory a local tracking URI points at (``None`` for a server or a
    database server URI).

    >>> local_store_path("sqlite:////tmp/x/mlflow.db"), local_store_path("file:///tmp/mlruns")
    (PosixPath('/tmp/x/mlflow.db'), PosixPath('/tmp/mlruns'))
    >>> local_store_path("http://127.0.0.1:5000") is None
    True
    """
    if tracking_uri.startswith("sqlite:///"):
        return Path(unquote(tracking_uri[len("sqlite:///") :].split("?", 1)[0]))
    if tracking_uri.startswith("file:"):
        return Path(unquote(urlsplit(tracking_uri).path))
    if "://" not in tracking_uri and tracking_uri.strip():
        return Path(tracking_uri)
    return None


def safe_uri(uri: str) -> str:
    """``uri`` without user info, query or fragment (where tokens live); path kept.

    >>> safe_uri("https://user:token@mlflow.example.com/prefix?x=1")
    'https://mlflow.example.com/prefix'
    >>> safe_uri("sqlite:////tmp/mlflow.db")
    'sqlite:////tmp/mlflow.db'
    >>> safe_uri("postgresql://bob:hun/ter2@db.example.com:5432/mlflow")
    'postgresql://db.example.com:5432/mlflow'
    """
    uri = _HTTP_USERINFO.sub(r"\1***@", _db_userinfo(uri))
    try:
        parts = urlsplit(uri)
        if "@" not in parts.netloc and not parts.query and not parts.fragment:
            return uri
        return urlunsplit((parts.scheme, host_port(parts), parts.path, "", ""))
    except ValueError:  # a malformed port (its text may quote a password): nothing to show
        return "***"


def _check_scheme(uri: str) -> None:
    """A ConfigError for a tracking URI whose scheme no MLflow tracking store takes (``sqllite:``,
    ``htp:``): it failed only when the checks ran, as an unreachable server ("make sure the
    server is up"). The schemes are MLflow's own registry's (plugins included); when it cannot
    be read, nothing is refused."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry
        from mlflow.utils.uri import get_uri_scheme

        known = set(_tracking_store_registry._registry)
        scheme = get_uri_scheme(uri)
    except Exception:  # another MLflow layout, or a URI MLflow's parser refuses: MLflow says so later
        return
    if known and len(scheme) > 1 and scheme not in known:
        raise ConfigError(
            "MLflowSink.tracking_uri",
            f"scheme {scheme!r} is not one MLflow can track to (it takes {', '.join(sorted(k for k in known if k))}, "
            "or a local path): check its spelling, e.g. sqlite:///mlflow.db or http://127.0.0.1:5000",
        )


def shown_uri(uri: str) -> str:
    """``uri`` as messages and reprs show it: an http(s) server's as :func:`redact_url` does
    (a token-like path segment, a proxy's secret prefix, masked too), a store's (sqlite, file,
    a database) as :func:`safe_uri` does, its path kept.

    >>> shown_uri("https://mlflow.example.com/Tok3nPrefix9/")
    'https://mlflow.example.com/***/'
    >>> shown_uri("sqlite:////tmp/mlflow.db")
    'sqlite:////tmp/mlflow.db'
    """
    return redact_url(uri) if _is_http(uri) else safe_uri(uri)


def _is_http(uri: object) -> bool:
    return isinstance(uri, str) and uri.strip().lower().startswith(("http://", "https://"))


def uri_secrets(uri: str) -> list[str]:
    """The credential parts of a URI: user info, password, query string and its values."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return [uri]
    out = []
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        out += [userinfo, parts.username or "", parts.password or ""]
    if parts.query:
        out += [parts.query, *(v for kv in parts.query.split("&") for v in kv.split("=")[1:])]
    return [s for s in out if s]


#: the environment variables MLflow's client reads credentials from (its documented
#: authentication variables, and Databricks' token)
CREDENTIAL_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET")


def env_credentials() -> list[str]:
    """The credentials MLflow's client sends from its environment, and the headers it builds from
    them (``Bearer <token>``, Basic from ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD``): masked in
    everything this sink reports, should a server or proxy echo its request back."""
    out: list[str] = []
    for var in CREDENTIAL_ENV:
        v = os.environ.get(var, "")
        if v:
            out += [v, f"Bearer {v}"]
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if password:
        out += basic_auth_values(os.environ.get("MLFLOW_TRACKING_USERNAME", ""), password)
    return out


def dataset_digest(digest: str | None) -> str | None:
    """A dataset digest MLflow accepts (at most :data:`MAX_DATASET_DIGEST` = 36 characters).

    ``digest`` itself when it fits. A longer hex digest (``sha256`` hexdigest, optionally with an
    ``algo:`` prefix) becomes its first 36 hex digits - a prefix of the same hash, like a short
    git hash; any other long string the first 36 hex digits of its sha256. The sink keeps the
    full digest in the run tag and the input tag ``collapse.data_digest``.

    >>> dataset_digest("d0001")
    'd0001'
    >>> dataset_digest("sha256:" + "ab" * 32)
    'abababababababababababababababababab'
    >>> len(dataset_digest("s3://bucket/" + "x" * 100))
    36
    """
    if digest is None or len(digest) <= MAX_DATASET_DIGEST:
        return digest
    hexpart = digest.rpartition(":")[2]
    if len(hexpart) >= MAX_DATASET_DIGEST and _HEX.fullmatch(hexpart):
        return hexpart[:MAX_DATASET_DIGEST].lower()
    return hashlib.sha256(digest.encode()).hexdigest()[:MAX_DATASET_DIGEST]


def ready_versions(client: Any, model_name: str) -> list[Any]:
    """The registered model's versions whose registration finished (status READY). MLflow's
    filter takes no escaped quote (``name='o\\'brien'`` matches nothing, unescaped it is an
    "Invalid clause" error): a name with ``'`` is quoted with ``"``, one with both kinds is
    matched here."""
    if "'" not in model_name:
        found = client.search_model_versions(f"name='{model_name}'")
    elif '"' not in model_name:
        found = client.search_model_versions(f'name="{model_name}"')
    else:
        found = [v for v in client.search_model_versions() if v.name == model_name]
    return [v for v in found if getattr(v, "status", "READY") == "READY"]


_HASHED_END = re.compile(r"-[0-9a-f]{8}$")


def metric_name(key: str) -> str:
    """MLflow-safe metric name for a report key (``collapse.<key>``). A key MLflow takes as it
    is keeps its name; one with characters MLflow refuses (they become ``_``) or longer than
    MLflow allows gets ``-`` and 8 hex digits of its hash, so two labels such as ``a|b`` and
    ``a_b`` (or two long labels with one prefix) never share a series: one overwrote the other.
    So does a label that ends like another metric's interval bound or count (class ``a.n``,
    ``a.ci_low``): its plain name is the sidecar of class ``a`` (``collapse.class_recall.a.n``,
    the count of a's recall), and the two overwrote each other. A label that is only the
    suffix (class ``n``) keeps its name: ``collapse.class_recall`` is no metric.

    >>> metric_name("class_recall.cat")
    'collapse.class_recall.cat'
    >>> metric_name("class_recall.cat|dog")
    'collapse.class_recall.cat_dog-e6c9584b'
    >>> metric_name("class_recall.n"), metric_name("class_recall.a.n")[:-8]
    ('collapse.class_recall.n', 'collapse.class_recall.a.n-')
    >>> metric_name("class_recall.cat_dog-e6c9584b")[:-9]
    'collapse.class_recall.cat_dog-e6c9584b'
    """
    clean = PREFIX + _BAD_NAME.sub("_", key.replace("/", "_"))
    sidecar_like = any(key.endswith(sfx) and "." in key[: -len(sfx)] for sfx in _SIDECARS)
    # a key that already ends like a hashed name (class "cat_dog-e6c9584b") is hashed too: kept
    # as it is, it was the name of class "cat|dog", and the two shared one series (an audit)
    if clean == PREFIX + key and len(clean) <= 240 and not sidecar_like and not _HASHED_END.search(key):
        return clean
    tag = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{clean[:231]}-{tag}"


def batches(metrics: Sequence[Any], tags: Sequence[Any]) -> Iterator[tuple[list[Any], list[Any]]]:
    """Split for ``log_batch``: <= 100 tags and <= 1000 entities in all per call.

    >>> [(len(m), len(t)) for m, t in batches(list(range(2500)), list(range(150)))]
    [(900, 100), (950, 50), (650, 0)]
    """
    mi = ti = 0
    while mi < len(metrics) or ti < len(tags):
        t = list(tags[ti : ti + 100])
        ti += len(t)
        m = list(metrics[mi : mi + 1000 - len(t)])
        mi += len(m)
        yield m, t


def report_id(report: Report) -> str:
    """Idempotency key of a check: ``<monitor>:<generation>:<created_at>``."""
    return f"{report.monitor}:{report.generation}:{report.created_at!r}"


#: the newest baseline upload of a monitor first: by ``collapse.baseline_seq`` (zero-padded, so
#: the string order is the number order; runs of versions before it have none and sort last), then
#: by start time. The start time alone is the uploading process's clock: a machine whose clock was
#: behind made its newer baseline read as older, so a rebuilt monitor read a stale one
BASELINE_ORDER = ("tags.`collapse.baseline_seq` DESC", "attributes.start_time DESC")
_SEQ_WIDTH = 12


def _baseline_seq(run: Any) -> int:
    """The run's place in its monitor's baseline uploads; 0 for a run without one (or garbage)."""
    raw = run.data.tags.get("collapse.baseline_seq", "")
    return int(raw) if raw.isascii() and raw.isdigit() else 0


def _baseline_digest(b: Baseline) -> str:
    """The ``collapse.baseline_digest`` tag: :func:`~collapse_monitor.history.state_digest`."""
    return state_digest(b)


def _baseline_meta(b: Baseline) -> dict[str, Any]:
    meta: dict[str, Any] = {**core_meta(b), "uid": sync_id(b)}
    if b.replicates:
        meta["replicates"] = [{"metrics": {k: v.to_dict() for k, v in sorted(r.metrics.items())}} for r in b.replicates]
    if b.dropped:
        meta["dropped"] = sorted(b.dropped)
    return meta


def _write_items(items: Mapping[str, Any], path: Path) -> None:
    arrays = {}
    for k, v in items.items():
        arr = np.asarray(v)
        if arr.dtype == object:
            log.warning("baseline item %r has dtype object; not stored (no pickling)", k)
            continue
        arrays[k] = arr
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # object arrays were filtered out: no pickle
    path.write_bytes(buf.getvalue())


def _read_items(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write_baseline(b: Baseline, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "baseline.json").write_text(json.dumps(_baseline_meta(b), allow_nan=False))
    _write_items(b.items, directory / "items.npz")
    for i, r in enumerate(b.replicates):  # other retrains of the baseline generation (check_replicate)
        _write_items(r.items, directory / f"replicate-{i}.npz")


def _read_baseline(directory: Path) -> Baseline:
    meta = json.loads((directory / "baseline.json").read_text())
    return Baseline(
        generation=int(meta["generation"]),
        fingerprint=str(meta["fingerprint"]),
        metrics={k: MetricValue.from_dict(v) for k, v in meta.get("metrics", {}).items()},
        items=_read_items(directory / "items.npz"),
        predictions=meta.get("predictions"),
        replicates=[
            Replicate(
                {k: MetricValue.from_dict(v) for k, v in r.get("metrics", {}).items()},
                _read_items(directory / f"replicate-{i}.npz"),
            )
            for i, r in enumerate(meta.get("replicates") or [])
        ],
        uid=str(meta.get("uid") or ""),  # absent in an older version's upload: sync_id derives it
        dropped={str(d) for d in meta.get("dropped") or []},
    )


class _BaselineUnread(Exception):
    """The newest baseline copy on MLflow could not be listed or downloaded: this check's run
    is logged without the baseline (its message is the report's warning, already scrubbed)."""


class MLflowSink:
    """Logs every check to MLflow and reads a monitor's history back from it.

    ``tracking_uri`` defaults to MLflow's default (``$MLFLOW_TRACKING_URI`` or
    ``sqlite:///mlflow.db``), resolved at construction. ``experiment`` is a template with
    ``{monitor}``. ``evidently``: attach the Evidently drift report (``None`` = when the check has
    raw data and evidently is installed). ``nest``: make the run a child of the caller's active
    run. ``timeout`` (seconds per request) and ``max_retries`` bound every MLflow request.
    ``history_plot``: ``"background"`` (default) draws and uploads each run's ``history.png`` on
    one worker thread after the run is logged, so the check does not wait for matplotlib
    (:meth:`flush` waits for it; the interpreter waits for it at exit); ``"sync"`` draws it
    inside the check; ``"off"`` draws none.

    >>> sink = MLflowSink("https://user:s3cret@mlflow.example.com")
    >>> sink
    MLflowSink('https://***@mlflow.example.com', experiment='collapse-monitor/{monitor}')
    """

    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        experiment: str = "collapse-monitor/{monitor}",
        evidently: bool | None = None,
        nest: bool = True,
        artifacts: bool = True,
        timeout: float = 5.0,
        max_retries: int = 1,
        registry_uri: str | None = None,
        evidently_components: int = 10,
        history_plot: str = "background",
    ) -> None:
        if tracking_uri is not None and (not isinstance(tracking_uri, str) or not tracking_uri.strip()):
            raise ConfigError(
                "MLflowSink.tracking_uri", f"expected a non-empty str or None, got {type(tracking_uri).__name__}"
            )
        if not isinstance(experiment, str) or not experiment:
            raise ConfigError("MLflowSink.experiment", "expected a non-empty str (may contain {monitor})")
        if isinstance(timeout, bool) or not (
            isinstance(timeout, (int, float)) and timeout > 0 and math.isfinite(timeout)
        ):
            raise ConfigError("MLflowSink.timeout", f"expected seconds > 0, got {timeout!r}")
        for flag, value in (("nest", nest), ("artifacts", artifacts), ("evidently", evidently)):
            if not isinstance(value, bool) and not (flag == "evidently" and value is None):
                # a string "false" from ${VAR} is truthy: it turned on what it meant to turn off
                raise ConfigError(f"MLflowSink.{flag}", f"expected true or false, got {type(value).__name__}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= 10:
            raise ConfigError("MLflowSink.max_retries", f"expected an int in 0..10, got {max_retries!r}")
        if history_plot not in _PLOT_MODES:
            raise ConfigError(
                "MLflowSink.history_plot", f"expected one of {', '.join(_PLOT_MODES)}, got {history_plot!r}"
            )
        self.tracking_uri = absolute_sqlite(tracking_uri.strip()) if tracking_uri else default_tracking_uri()
        _check_scheme(self.tracking_uri)
        self.registry_uri = registry_uri
        self.experiment = experiment
        self.evidently = evidently
        self.nest = nest
        self.artifacts = artifacts
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.evidently_components = evidently_components
        self.history_plot = history_plot
        self._plotter: ThreadPoolExecutor | None = None
        self._plots: list[Future[None]] = []
        self._plot_lock = threading.Lock()
        # keyed by the server, not its credentials: reports spooled while a password was wrong
        # (a 401) are replayed once it is rotated
        server_key = "mlflow-" + hashlib.sha256(safe_uri(self.tracking_uri).encode()).hexdigest()[:10]
        # and by where and how the sink logs, when that is not the default: two sinks on one
        # server with other experiments (monitors sharing a home, a mirror sink) replayed each
        # other's reports into their own experiment, or skipped them as delivered
        settings = (experiment, artifacts, nest)
        if settings == ("collapse-monitor/{monitor}", True, True):
            self.spool_key = server_key
        else:
            digest = hashlib.sha256(json.dumps([safe_uri(self.tracking_uri), *settings]).encode()).hexdigest()[:10]
            self.spool_key = f"mlflow-{digest}"
        legacy = "mlflow-" + hashlib.sha256(self.tracking_uri.encode()).hexdigest()[:10]
        #: the keys of older versions (the whole URI, credentials included; the server alone),
        #: replayed too, so an upgrade strands nothing they spooled
        self.legacy_spool_keys: tuple[str, ...] = tuple(
            dict.fromkeys(k for k in (legacy, server_key) if k != self.spool_key)
        )
        # the servers' URLs, whose token-like path segments requests and urllib3 print as bare
        # request paths ("url: /<token>/api/2.0/..."); a store's path (sqlite) is no secret
        servers = [
            u for u in (self.tracking_uri, self.registry_uri, os.environ.get("MLFLOW_REGISTRY_URI")) if _is_http(u)
        ]
        secrets = [x for u in (self.tracking_uri, self.registry_uri) if isinstance(u, str) for x in uri_secrets(u)]
        secrets += env_credentials()
        self._redactor = Redactor(secrets, urls=servers)
        redact_http_client_logs(servers)  # urllib3's retry warnings print the request URL, token included
        self._client_obj: Any = None
        self._experiments: dict[str, str] = {}
        #: per (experiment, monitor), the digest of the newest baseline artifact this sink knows is on
        #: the server
        self._baselines_seen: dict[tuple[str, str], str] = {}
        #: the last stored baseline read back, by run id (_read_stored_baseline)
        self._fetched: tuple[str, Baseline] | None = None
        self.last_drift_share: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (Lightning's ddp_spawn): the settings travel; the plot thread, its lock and
        the client are made anew on the other side."""
        state = dict(self.__dict__)
        for k in ("_plotter", "_plot_lock", "_client_obj"):
            state.pop(k, None)
        state["_plots"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._plotter = None
        self._plot_lock = threading.Lock()
        self._client_obj = None

    def __repr__(self) -> str:
        return f"MLflowSink({shown_uri(self.tracking_uri)!r}, experiment={self.experiment!r})"

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def is_http(self) -> bool:
        return self.tracking_uri.lower().startswith(("http://", "https://"))

    @contextlib.contextmanager
    def bounded(self, *, retries: int | None = None) -> Iterator[None]:
        """Bound MLflow's HTTP retries/timeouts (and silence its URL printing) for this block;
        ``retries`` instead of ``max_retries`` (the baseline's sync before a check: no retry)."""
        typed: dict[str, Any] = {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": self.max_retries if retries is None else retries,
            "MLFLOW_HTTP_REQUEST_TIMEOUT": max(1, math.ceil(self.timeout)),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
            # a 429/503 with "Retry-After: 3600" would otherwise make urllib3 sleep an hour
            "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": False,
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": True,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": False,
        }
        if _install_bound_reads():  # this thread only (and the workers it hands them to)
            with _thread_bounds({**(getattr(_BOUNDS, "values", None) or {}), **typed}):
                yield
            return
        values = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in typed.items()}
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in values}
            os.environ.update(values)
            try:
                yield
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    def client(self) -> Any:
        if self._client_obj is None:
            from mlflow import MlflowClient

            db = local_store_path(self.tracking_uri) if self.tracking_uri.startswith("sqlite:") else None
            if db is None:
                client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
            else:
                from .._dbfiles import exclusive_file_lock

                # MLflow creates (and migrates) a new sqlite store's tables when a client first
                # opens it, with no lock between processes: of several jobs starting on one fresh
                # mlflow.db, the losers failed every check, and a leftover migration table could
                # break the store for good (an audit). Opened here one process at a time (the
                # registry's store too); a failure leaves no client cached, so the next call
                # tries again.
                with exclusive_file_lock(db.with_name(db.name + ".init-lock")):
                    client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
                    client.search_experiments(max_results=1)
                    if (self.registry_uri or self.tracking_uri) == self.tracking_uri:
                        client.search_registered_models(max_results=1)
            self._client_obj = client
        return self._client_obj

    def _fail(self, what: str, exc: BaseException, *, content: bool = False) -> SinkError:
        """The SinkError for ``exc`` (scrubbed); a :class:`PermanentSinkError` when ``content`` (the
        step sent the report itself) and :meth:`rejected_for_good` says MLflow refused it."""
        cls = PermanentSinkError if content and self.rejected_for_good(exc) else SinkError
        return cls(self.scrub(f"MLflow at {shown_uri(self.tracking_uri)}: {what} failed: {type(exc).__name__}: {exc}"))

    def rejected_for_good(self, exc: BaseException) -> bool:
        """Did MLflow refuse the request's *content* - so the same report can only fail again?

        Yes for ``INVALID_PARAMETER_VALUE`` / ``BAD_REQUEST`` in MLflow's own JSON error answer
        (``RestException``, e.g. a dataset digest over 36 characters) and for
        ``INVALID_PARAMETER_VALUE`` raised by MLflow's client-side validation or a local store.
        No for everything else: connection errors and timeouts, 5xx, 429, 401/403 (credentials
        can be fixed), 404, and a bare 4xx without MLflow's JSON body (a proxy's answer, not
        MLflow's verdict on the report). The spool dead-letters only the first kind."""
        try:
            from mlflow.exceptions import MlflowException, RestException
        except ImportError:  # pragma: no cover - mlflow is there whenever the sink talked to it
            return False
        if not isinstance(exc, MlflowException):
            return False
        code = getattr(exc, "error_code", None)
        if isinstance(exc, RestException):
            if code == "BAD_REQUEST" and _TRANSIENT_DB.search(str(exc)):
                # the SQL store reports any database error as BAD_REQUEST, among them the unique-key
                # race of parallel jobs logging one dataset first (log_inputs): a retry succeeds
                return False
            return code in _REJECTED
        return code == "INVALID_PARAMETER_VALUE"

    def _guarded(self, what: str, fn: Callable[[], _T], *, content: bool = False) -> _T:
        """``fn()``; a failure becomes this sink's SinkError, raised *outside* the except block:
        ``raise ... from None`` only hides the chain from printed tracebacks, ``__context__``
        would still hold MLflow's exception, whose message may carry the tracking URI's
        password. So neither ``__cause__`` nor ``__context__`` of what we raise holds it."""
        try:
            return fn()
        except SinkError as exc:
            failure = exc
        except Exception as exc:
            failure = self._fail(what, exc, content=content)
        failure.__cause__ = failure.__context__ = None
        failure.__suppress_context__ = True
        raise failure

    def scrub(self, text: str) -> str:
        """``text`` without this sink's credentials or anything shaped like a secret."""
        return redact_text(self._redactor(text))

    def experiment_name(self, monitor: str) -> str:
        return self.experiment.replace("{monitor}", monitor)

    def _local_artifacts(self, experiment: str) -> str | None:
        """For a sqlite store: the experiment's artifacts beside the database (``mlruns/`` next
        to it), not in the working directory of whichever process created the experiment
        (MLflow's default, ``./mlruns``). None (MLflow's choice) for any other store."""
        if not self.tracking_uri.startswith("sqlite:////"):
            return None
        db = local_store_path(self.tracking_uri)
        assert db is not None
        return (db.parent / "mlruns" / quote(experiment, safe="")).as_uri()

    def _experiment_id(self, client: Any, monitor: str, *, create: bool = True) -> str | None:
        name = self.experiment_name(monitor)
        if name in self._experiments:
            return self._experiments[name]
        exp = client.get_experiment_by_name(name)
        if exp is None:
            if not create:
                return None
            try:
                exp_id = client.create_experiment(
                    name, artifact_location=self._local_artifacts(name), tags={"collapse.monitor": monitor}
                )
            except Exception:
                exp = client.get_experiment_by_name(name)  # created concurrently
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                if not create:
                    return None
                client.restore_experiment(exp.experiment_id)
            exp_id = exp.experiment_id
        self._experiments[name] = str(exp_id)
        return str(exp_id)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The run's page in the MLflow UI (http(s) URIs), else ``<tracking uri>#/experiments/...``.

        The link goes to alert receivers and into reports, so a server's token-like path segment
        (a proxy's secret prefix) is masked in it as everywhere else: the link then names the
        server and the run, and opening it needs the real prefix."""
        base = shown_uri(safe_uri(self.tracking_uri)).rstrip("/")
        if self.is_http:
            return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"{base}#/experiments/{experiment_id}/runs/{run_id}"

    def _search(
        self,
        client: Any,
        experiment_ids: list[str],
        filter_string: str,
        *,
        max_results: int = 1000,
        order_by: list[str] | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        out: list[Any] = []
        token = None
        while True:
            page = client.search_runs(
                experiment_ids,
                filter_string,
                max_results=max_results,
                order_by=order_by or ["attributes.start_time ASC"],
                page_token=token,
            )
            out.extend(page)
            token = page.token
            if not token or (limit is not None and len(out) >= limit):
                return out if limit is None else out[:limit]

    # -- emit ----------------------------------------------------------------------------------
    #: a spool replay of the baseline generation's report comes with the stored baseline
    #: (``CollapseMonitor`` hands it over), so the artifact is uploaded after an outage too
    keeps_baseline = True

    def emit(self, report: Report, context: EmitContext | None = None) -> dict[str, Any]:
        """Log ``report`` as one run; returns ``{"run_id", "mlflow_run"}``. Raises SinkError."""
        live = context is not None and context.observation is not None
        # a replay goes without raw data, but with the stored baseline where the monitor hands it
        # over: a job whose whole run fell in an outage never uploaded its baseline (an audit)
        stored = context if not live and context is not None and "baseline" in context.extra else None
        with self.bounded():
            client, exp_id = self._guarded("opening the experiment", lambda: self._open(report.monitor))
            rid = report_id(report)
            if not live:  # a spool replay: the report may have reached MLflow before a crash
                done = self._guarded("looking up an earlier delivery", lambda: self._delivered(client, exp_id, rid))
                if done is not None:
                    return done
            # only this step sends the report itself: only its rejection can be permanent
            return self._guarded(
                f"logging generation {report.generation}",
                lambda: self._log_run(client, exp_id, report, context if live else stored, rid),
                content=True,
            )

    def _open(self, monitor: str) -> tuple[Any, str]:
        client = self.client()
        exp_id = self._experiment_id(client, monitor)
        assert exp_id is not None
        return client, exp_id

    def _delivered(self, client: Any, exp_id: str, rid: str) -> dict[str, Any] | None:
        """The FINISHED run of an earlier delivery of report ``rid``, if any; partial runs of
        failed attempts are deleted."""
        for run in self._search(client, [exp_id], f"tags.`collapse.report_id` = '{rid}'", max_results=10, limit=10):
            if run.info.status == "FINISHED":
                return {"run_id": run.info.run_id, "mlflow_run": self.run_url(exp_id, run.info.run_id)}
            client.delete_run(run.info.run_id)  # partial run of a failed attempt
        return None

    def _parent(self) -> Any:
        if not self.nest or "mlflow" not in sys.modules:
            return None
        import mlflow

        active = mlflow.active_run()
        if active is None:
            return None
        # both absolute: MLFLOW_TRACKING_URI=sqlite:///mlflow.db (relative) is the same store as
        # the sink's absolute form, and the check used to stay unnested with no parent tags
        theirs = absolute_sqlite(str(mlflow.get_tracking_uri()))
        if safe_uri(theirs).rstrip("/") != safe_uri(absolute_sqlite(self.tracking_uri)).rstrip("/"):
            return None
        return active

    def _tags(self, report: Report, rid: str) -> dict[str, str]:
        tags = {
            "collapse.monitor": report.monitor,
            "collapse.generation": str(report.generation),
            "collapse.stage": report.stage.value,
            "collapse.report_id": rid,
            "collapse.created_at": repr(report.created_at),
            "collapse.baseline_generation": str(report.baseline_generation),
            "collapse.reference_fingerprint": report.reference_fingerprint,
            "collapse.drift": str(report.drift).lower(),
            # the rules that define the metrics: a history rebuilt without report.json still
            # knows what its baseline measured (CollapseMonitor compares it with the rules now)
            **({"collapse.measure": json.dumps(report.measure, sort_keys=True)} if report.measure else {}),
            "mlflow.runName": f"{report.monitor}-gen{report.generation}",
        }
        firing = sorted({a.rule for a in report.alerts if a.status == "firing"})
        if firing:
            tags["collapse.alerts_firing"] = ",".join(firing)
        renamed = _renamed_keys(report.metrics)
        if renamed:
            tags["collapse.metric_keys"] = renamed
        prov = report.provenance
        if prov is not None:
            tags["collapse.origin"] = prov.origin
            if prov.parent_run_id:
                tags["collapse.parent_run_id"] = prov.parent_run_id
            if prov.synthetic_fraction is not None:
                tags["collapse.synthetic_fraction"] = repr(prov.synthetic_fraction)
            if prov.digest:
                tags["collapse.data_digest"] = prov.digest
        lines = [
            f"**{report.monitor}** generation {report.generation}: **{report.stage.value}**"
            + (" (drift)" if report.drift else "")
        ]
        for f in report.declines[:5]:
            lines.append(
                f"- {f.key}: {f.value:.4g} vs baseline {f.baseline:.4g} ({f.relative_change:+.0%}, q={f.q_value:.2g})"
            )
        tags["mlflow.note.content"] = "\n".join(lines)
        return tags

    def _metrics(self, report: Report, extra: Mapping[str, float]) -> list[Any]:
        from mlflow.entities import Metric

        ts = int(report.created_at * 1000)
        step = report.generation
        out: list[Any] = []
        for key, mv in sorted(report.metrics.items()):
            name = metric_name(key)
            out += [
                Metric(name, mv.value, ts, step),
                Metric(name + ".ci_low", mv.ci_low, ts, step),
                Metric(name + ".ci_high", mv.ci_high, ts, step),
            ]
            if mv.n is not None and is_share(key):  # the counts of Fisher's test, for a read-back baseline
                out.append(Metric(name + ".n", float(mv.n), ts, step))
        prov = report.provenance
        if "synthetic_fraction" not in report.metrics and prov is not None and prov.synthetic_fraction is not None:
            out.append(Metric(PREFIX + "synthetic_fraction", prov.synthetic_fraction, ts, step))
        out += [
            # the generation as a number too (the tag is a string): runs sort by it in the UI and
            # in search_runs(order_by=["metrics.`collapse.generation`"]), 10 after 9
            Metric(PREFIX + "generation", float(report.generation), ts, step),
            Metric(PREFIX + "stage_level", float(report.stage.level), ts, step),
            Metric(PREFIX + "drift", float(report.drift), ts, step),
            Metric(PREFIX + "check_duration_seconds", float(report.duration_seconds), ts, step),
        ]
        for k, v in extra.items():
            if k not in report.metrics and v is not None and math.isfinite(v):
                out.append(Metric(PREFIX + k, float(v), ts, step))
        return out

    def _datasets(self, report: Report) -> list[Any]:
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset as DatasetEntity
        from mlflow.entities import DatasetInput, InputTag

        def entity(ds: Any, profile: Mapping[str, Any]) -> Any:
            e = ds._to_mlflow_entity()
            return DatasetEntity(
                name=e.name,
                digest=e.digest,
                source_type=e.source_type,
                source=e.source,
                schema=e.schema,
                profile=json.dumps(dict(profile)),
            )

        def source_of(uri: str) -> Any:
            clean = safe_uri(uri)
            if "://" in clean or clean.startswith("/"):
                with contextlib.suppress(Exception):
                    return resolve_dataset_source(clean)
            return CodeDatasetSource({"collapse.source": clean})

        out = []
        prov = report.provenance or Provenance()
        # MLflow keeps one dataset entity per (name, digest) in an experiment and reuses it for
        # every later run: what changes from run to run (generation, share, mix digest) goes in
        # the input's tags, which are per run. (In the profile, a source logged again kept
        # generation 0's "synthetic_fraction 0.0" in MLflow's Datasets view for good.)
        profile = {"role": "training data source"}
        tags = [
            InputTag("mlflow.data.context", "training"),
            InputTag("collapse.origin", prov.origin),
            InputTag("collapse.generation", str(report.generation)),
        ]
        if prov.synthetic_fraction is not None:
            tags.append(InputTag("collapse.synthetic_fraction", repr(prov.synthetic_fraction)))
        if prov.digest:  # the dataset digest holds at most 36 characters: the full one goes here
            tags.append(InputTag("collapse.data_digest", prov.digest[:MAX_INPUT_TAG_VALUE]))
        digest = dataset_digest(prov.digest)
        sources = list(prov.sources)
        if sources:
            # thousands of inputs in one call timed out on a real server, and every replay did
            # again: at most MAX_SOURCE_INPUTS are logged, the rest counted on one more input
            # (report.json keeps the whole list)
            for s in sources[:MAX_SOURCE_INPUTS]:
                clean = safe_uri(s)
                name = (clean.rstrip("/").rsplit("/", 1)[-1] or clean)[:200]
                ds = MetaDataset(source_of(s), name=name, digest=digest if len(sources) == 1 else None)  # type: ignore[abstract]
                out.append(DatasetInput(entity(ds, profile), tags=list(tags)))
            if len(sources) > MAX_SOURCE_INPUTS:
                rest = len(sources) - MAX_SOURCE_INPUTS
                src = CodeDatasetSource({"collapse.monitor": report.monitor, "collapse.more_sources": str(rest)})
                ds = MetaDataset(src, name=f"{report.monitor}-gen{report.generation}-{rest}-more-sources", digest=None)  # type: ignore[abstract]
                more = [*tags, InputTag("collapse.sources_total", str(len(sources)))]
                out.append(DatasetInput(entity(ds, {"role": "training data sources not listed"}), tags=more))
        elif report.provenance is not None:
            src = CodeDatasetSource({"collapse.monitor": report.monitor, "collapse.generation": str(report.generation)})
            ds = MetaDataset(src, name=f"{report.monitor}-gen{report.generation}-training", digest=digest)  # type: ignore[abstract]
            out.append(DatasetInput(entity(ds, profile), tags=list(tags)))
        if report.reference_fingerprint:
            src = CodeDatasetSource({"collapse.monitor": report.monitor})
            ref_digest = dataset_digest(report.reference_fingerprint)
            ds = MetaDataset(src, name=f"{report.monitor}-reference", digest=ref_digest)  # type: ignore[abstract]
            out.append(
                DatasetInput(
                    entity(ds, {"origin": "human", "frozen": True}),
                    tags=[InputTag("mlflow.data.context", "reference"), InputTag("collapse.origin", "human")],
                )
            )
        return out

    def _want_evidently(self, context: EmitContext | None) -> bool:
        if context is None or context.reference is None or context.observation is None:
            return False
        if self.evidently is False:
            return False
        if self.evidently is None:
            import importlib.util

            return importlib.util.find_spec("evidently") is not None
        return True

    def _artifacts(
        self,
        report: Report,
        context: EmitContext | None,
        directory: Path,
        run_id: str,
        extra_metrics: dict[str, float],
        tags: dict[str, str],
        url: str = "",
    ) -> tuple[list[Report], list[str], str] | None:
        """Writes the run's artifacts into ``directory``; returns the history chart's job
        (reports, keys, title) when it is to be drawn in the background, else ``None``."""
        if context is None:
            self._write_report_json(report, directory, run_id, extra_metrics, url)
            return None
        job: tuple[list[Report], list[str], str] | None = None
        history = list(context.history)
        if not any(r.generation == report.generation for r in history):
            history.append(report)
        history.sort(key=lambda r: r.generation)
        keys = [k for k in _HISTORY_KEYS if any(k in r.metrics for r in history)][:6]
        title = f"{report.monitor}: generation history"
        if keys and self.history_plot == "background":
            job = (history, keys, title)
        elif keys and self.history_plot == "sync":
            try:  # one panel, not one per key: a fifth of the time, on every check (see plot_trend)
                from ..report_html import plot_trend

                plot_trend(history, keys, directory / "history.png", title=title)
            except Exception as exc:  # a plot is decoration: never lose the run over it
                log.warning("history plot failed: %s", self.scrub(f"{type(exc).__name__}: {exc}"))
                tags["collapse.plot_error"] = type(exc).__name__
        if self._want_evidently(context):
            try:
                from .evidently import build_drift_report

                assert context.reference is not None and context.observation is not None
                result = build_drift_report(
                    context.reference,
                    context.observation,
                    directory / "_evidently" / "evidently_drift.html",
                    n_components=self.evidently_components,
                )
                if result is not None:
                    shutil.copyfile(result.html, directory / "evidently_drift.html")
                    shutil.rmtree(directory / "_evidently", ignore_errors=True)
                    self.last_drift_share = result.embedding_drift_share
                    if result.embedding_drift_share is not None:
                        extra_metrics["embedding_drift_share"] = result.embedding_drift_share
                    if result.drift_share is not None:
                        extra_metrics["evidently_drift_share"] = result.drift_share
            except Exception as exc:
                log.warning("evidently report failed: %s", self.scrub(f"{type(exc).__name__}: {exc}"))
                tags["collapse.evidently_error"] = type(exc).__name__
                shutil.rmtree(directory / "_evidently", ignore_errors=True)
        self._write_report_json(report, directory, run_id, extra_metrics, url)
        return job

    def _write_report_json(
        self, report: Report, directory: Path, run_id: str, extra_metrics: Mapping[str, float], url: str
    ) -> None:
        """``report.json`` as the caller will hold it: with the facts this sink hands back, which
        the monitor merges after ``emit`` (Evidently's ``embedding_drift_share``, and this run's
        link on the alerts). Written before them, a history re-seeded from MLflow lacked both."""
        share = extra_metrics.get("embedding_drift_share")
        final = dataclasses.replace(report, run_id=run_id)
        if isinstance(share, (int, float)) and math.isfinite(share) and "embedding_drift_share" not in report.metrics:
            v = float(share)
            final = dataclasses.replace(
                final, metrics={**report.metrics, "embedding_drift_share": MetricValue(v, v, v)}
            )
        if final.alerts:
            # the caller's links (dashboards, runbooks) may carry tokens (?auth_token=): masked
            # here, where anyone who can read the run reads them; this run's own link as made
            def links(a: Any) -> dict[str, str]:
                out = {k: mask_link(v) for k, v in dict(a.links).items()}
                if url:
                    out["mlflow_run"] = url
                return out

            final = dataclasses.replace(
                final, alerts=tuple(dataclasses.replace(a, links=links(a)) for a in final.alerts)
            )
        (directory / "report.json").write_text(json.dumps(final.to_dict(), indent=1, allow_nan=False))

    # -- the history chart, off the check's path -------------------------------------------------
    def _submit_plot(self, run_id: str, job: tuple[list[Report], list[str], str]) -> None:
        """Queue the history chart of ``run_id`` on this sink's one plotting thread. matplotlib
        needs 0.1-0.3 s per chart on a laptop-class CPU, most of the check's own overhead; the
        training job does not wait for it. The thread is joined when the interpreter exits
        (``concurrent.futures`` does that), so a finished script still gets its chart;
        :meth:`flush` waits for it explicitly."""
        with self._plot_lock:
            if self._plotter is None:
                self._plotter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collapse-mlflow-plot")
            self._plots = [f for f in self._plots if not f.done()]
            self._plots.append(self._plotter.submit(self._plot_and_upload, run_id, *job))

    def _plot_and_upload(self, run_id: str, history: list[Report], keys: list[str], title: str) -> None:
        try:
            from ..report_html import plot_trend

            with tempfile.TemporaryDirectory(prefix="collapse-plot-") as tmp:
                path = plot_trend(history, keys, Path(tmp) / "history.png", title=title)
                with self.bounded():
                    self.client().log_artifact(run_id, str(path), ARTIFACT_DIR)
        except Exception as exc:  # a plot is decoration: record it on the run, never raise
            log.warning("history plot failed: %s", self.scrub(f"{type(exc).__name__}: {exc}"))
            with contextlib.suppress(Exception), self.bounded():
                self.client().set_tag(run_id, "collapse.plot_error", type(exc).__name__)

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait (at most ``timeout`` seconds) until every queued history chart is uploaded.
        Returns ``True`` when none is left pending. ``CollapseMonitor.flush`` calls it."""
        with self._plot_lock:
            pending = [f for f in self._plots if not f.done()]
        if pending:
            wait_futures(pending, timeout=timeout)
        with self._plot_lock:
            self._plots = [f for f in self._plots if not f.done()]
            return not self._plots

    def close(self) -> None:
        """Upload what is queued and stop the plotting thread (a later emit starts a new one)."""
        self.flush(timeout=None)
        with self._plot_lock:
            plotter, self._plotter = self._plotter, None
        if plotter is not None:
            plotter.shutdown(wait=True)

    def _baseline_to_store(
        self, client: Any, exp_id: str, report: Report, context: EmitContext | None
    ) -> tuple[Baseline, str, int] | None:
        """The baseline this check's run stores, with its digest and its place in the monitor's
        sequence of baseline uploads (``collapse.baseline_seq``: one more than the newest on the
        server); None when the newest baseline on the server is this one already."""
        if context is None or not self.artifacts:
            # the baseline is an artifact: without artifacts the run must not claim to hold it
            # (the tag made later processes believe it stored and never upload it)
            return None
        b = context.extra.get("baseline")
        if not isinstance(b, Baseline):
            return None
        digest = _baseline_digest(b)
        seen = (exp_id, report.monitor)
        if self._baselines_seen.get(seen) == digest and not context.extra.get("baseline_changed"):
            return None
        # the newest baseline on the server, in upload order (not by the uploaders' clocks): is it
        # this exact one already (a new process; its upload may have failed; replicates added or
        # dropped since change it: the newest artifact is the one a monitor rebuilt from MLflow reads)
        kind, newest, other = self._against_newest(client, exp_id, report.monitor, b, digest)  # _BaselineUnread
        if kind == "same":
            self._baselines_seen[seen] = digest
            return None
        if kind == "merge":
            assert newest is not None and other is not None
            merged_digest = _baseline_digest(other)
            if merged_digest == newest.data.tags.get("collapse.baseline_digest"):
                self._baselines_seen[seen] = digest  # this copy adds nothing to the one there
                return None
            b, digest = other, merged_digest
        return b, digest, (0 if newest is None else _baseline_seq(newest)) + 1

    def _newest_baseline(self, client: Any, exp_id: str, monitor: str) -> Any | None:
        found = self._search(
            client,
            [exp_id],
            f"tags.`collapse.baseline` = 'true' and tags.`collapse.monitor` = '{monitor}' "
            "and attributes.status = 'FINISHED'",
            max_results=1,
            order_by=list(BASELINE_ORDER),
            limit=1,
        )
        return found[0] if found else None

    def _against_newest(
        self, client: Any, exp_id: str, monitor: str, local: Baseline, digest: str
    ) -> tuple[str, Any | None, Baseline | None]:
        """How ``local`` (whose :func:`_baseline_digest` is ``digest``) stands against the newest
        baseline upload of ``monitor``, with that run:

        - ``("none", None, None)``: there is none;
        - ``("same", run, None)``: it holds this copy;
        - ``("merge", run, merged)``: another copy of this baseline (another machine's
          replicates and drops), merged with this one (:func:`merge_baselines`);
        - ``("other", run, None)``: another baseline (the generation checked again on one of the
          two machines), or an artifact that cannot be read: this copy goes up over it, as
          before copies were merged. Another baseline is never taken over: which of two is
          right is not something an upload order can tell (a machine whose history could not
          be read back starts a baseline of its own too)."""
        newest = self._newest_baseline(client, exp_id, monitor)
        if newest is None:
            return "none", None, None
        tags = newest.data.tags
        if tags.get("collapse.baseline_digest") == digest:
            return "same", newest, None
        uid, mine = tags.get("collapse.baseline_uid"), sync_id(local)
        if uid is not None and uid != mine:
            return "other", newest, None
        run_id = newest.info.run_id
        remote, why = self._read_stored_baseline(client, run_id)  # _BaselineUnread
        if remote is None:
            log.warning(
                "%s: the newest baseline artifact of %s on MLflow (run %s) cannot be read (%s): this machine's copy "
                "is uploaded over it",
                self.name,
                monitor,
                run_id,
                why,
            )
            return "other", newest, None
        if sync_id(remote) != mine:  # an older version's upload of another baseline
            return "other", newest, None
        return "merge", newest, merge_baselines(local, remote)

    def _read_stored_baseline(self, client: Any, run_id: str) -> tuple[Baseline | None, str]:
        """The baseline artifact of run ``run_id``, or None with why it counts as lost (not there,
        or cannot be parsed: another copy may go up over it). Listing or downloading that fails
        is MLflow not answering this once: ``_BaselineUnread`` (a copy there may hold the only
        record of a replicate whose machine is gone). A FINISHED run's artifact does not change,
        so the last one read is kept: a check's upload does not download what its sync just did."""
        fetched = self._fetched
        if fetched is not None and fetched[0] == run_id:
            return fetched[1], ""
        with tempfile.TemporaryDirectory(prefix="collapse-baseline-") as tmp:
            try:
                names = {f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(run_id, f"{ARTIFACT_DIR}/baseline")}
                if "baseline.json" not in names:
                    return None, "it is not there"
                where = client.download_artifacts(run_id, f"{ARTIFACT_DIR}/baseline", tmp)
            except Exception as exc:
                raise _BaselineUnread(
                    f"the newest baseline on MLflow (run {run_id}) could not be read "
                    f"({self.scrub(f'{type(exc).__name__}: {exc}')}): this check's run is logged without the "
                    "baseline, the next check uploads it"
                ) from None
            try:
                remote = _read_baseline(Path(where))
            except Exception as exc:
                return None, self.scrub(f"{type(exc).__name__}: {exc}")
        self._fetched = (run_id, remote)
        return remote, ""

    def sync_baseline(self, monitor: str, local: Baseline) -> tuple[Baseline | None, str | None]:
        """This machine's copy of ``monitor``'s baseline merged with the newest copy of it on
        MLflow (another machine's replicates and drops:
        :func:`~collapse_monitor.history.merge_baselines`), or None when there is nothing to
        take: no copy there, the same state, or another baseline (never taken over); with a
        notice for the report when the newest upload is another baseline. One
        ``search_runs`` per call, and a download only when the newest upload is a copy of this
        baseline that differs from this one. Raises SinkError when MLflow cannot be read."""
        if not self.artifacts:  # nothing to read back: the baseline was never uploaded
            return None, None

        def pull() -> tuple[Baseline | None, str | None]:
            client = self.client()
            exp_id = self._experiment_id(client, monitor, create=False)
            if exp_id is None:
                return None, None
            digest = _baseline_digest(local)
            kind, newest, merged = self._against_newest(client, exp_id, monitor, local, digest)
            if kind == "other" and newest is not None and newest.data.tags.get("collapse.baseline_uid"):
                # two baselines (one machine checked the baseline generation again, or could not
                # read the history back and started its own): said at every check, as it lasts
                tags = newest.data.tags
                return None, (
                    f"the newest baseline on {self.name} is another one (generation "
                    f"{tags.get('collapse.baseline_generation', '?')}, run {newest.info.run_id}): this machine judges against "
                    "its own and uploads it, so the two go up in turn; if that one is right, take it here with "
                    "collapse-monitor check --take-baseline (monitor.take_baseline()) right after a check on the "
                    "machine that uploaded it (README, replicate baselines)"
                )
            if kind != "merge" or merged is None or _baseline_digest(merged) == digest:
                return None, None
            return merged, None

        with self.bounded(retries=0):  # a dead server then costs one timeout more per check, not retries
            return self._guarded(f"reading the baseline of {monitor!r}", pull)

    def newest_baseline(self, monitor: str) -> Baseline | None:
        """The newest baseline upload of ``monitor`` (by ``collapse.baseline_seq``), with its
        replicates and drops; None when there is none. Raises SinkError when MLflow cannot be
        read or its artifact cannot be read back."""

        def read() -> Baseline | None:
            client = self.client()
            exp_id = self._experiment_id(client, monitor, create=False)
            newest = None if exp_id is None else self._newest_baseline(client, exp_id, monitor)
            if newest is None:
                return None
            remote, why = self._read_stored_baseline(client, newest.info.run_id)
            if remote is None:
                raise SinkError(f"the artifact of run {newest.info.run_id} cannot be read ({why})")
            return copy.deepcopy(remote)  # the caller's to change: the one kept for the next sync stays as read

        with self.bounded():
            return self._guarded(f"reading the newest baseline of {monitor!r}", read)

    def _log_run(
        self, client: Any, exp_id: str, report: Report, context: EmitContext | None, rid: str
    ) -> dict[str, Any]:
        from mlflow.entities import RunTag

        tags = self._tags(report, rid)
        # a replay is not nested under whatever run is active when the spool is flushed
        parent = self._parent() if context is not None and context.observation is not None else None
        if parent is not None:
            tags["mlflow.parentRunId"] = parent.info.run_id
        unread: str | None = None
        try:
            to_store = self._baseline_to_store(client, exp_id, report, context)
        except _BaselineUnread as exc:
            to_store, unread = None, str(exc)
            log.warning("%s: %s: %s", self.name, report.monitor, unread)
        baseline, digest, seq = to_store if to_store is not None else (None, "", 0)
        if baseline is not None:
            tags["collapse.baseline"] = "true"
            tags["collapse.baseline_digest"] = digest
            tags["collapse.baseline_uid"] = sync_id(baseline)
            tags["collapse.baseline_seq"] = f"{seq:0{_SEQ_WIDTH}d}"
            # how many replicate retrains the artifact carries (check_replicate), readable in the UI
            tags["collapse.baseline_replicates"] = str(len(baseline.replicates))
        first = {k: v for k, v in tags.items() if k in ("collapse.report_id", "collapse.monitor")}
        try:
            run = client.create_run(
                exp_id, start_time=int(report.created_at * 1000), tags=first, run_name=tags["mlflow.runName"]
            )
        except Exception as exc:
            # the experiment was deleted (or replaced) after this process cached its id: "must be
            # in the 'active' state" is not a verdict on the report (it was dead-lettered for good);
            # look the experiment up again, restoring it, and create the run once more
            if "active" not in str(exc) and "does not exist" not in str(exc).lower():
                raise
            self._experiments.pop(self.experiment_name(report.monitor), None)
            exp_id = self._experiment_id(client, report.monitor) or exp_id
            run = client.create_run(
                exp_id, start_time=int(report.created_at * 1000), tags=first, run_name=tags["mlflow.runName"]
            )
        run_id = run.info.run_id
        extra_metrics: dict[str, float] = {}
        plot_job: tuple[list[Report], list[str], str] | None = None
        try:
            with tempfile.TemporaryDirectory(prefix="collapse-mlflow-") as tmp:
                art = Path(tmp)
                if self.artifacts:
                    plot_job = self._artifacts(
                        report, context, art, run_id, extra_metrics, tags, url=self.run_url(exp_id, run_id)
                    )
                    if baseline is not None:
                        _write_baseline(baseline, art / "baseline")
                metrics = self._metrics(report, extra_metrics)
                tag_list = [RunTag(k, v[:8000]) for k, v in tags.items()]
                for m, t in batches(metrics, tag_list):
                    client.log_batch(run_id, metrics=m, tags=t)
                datasets = self._datasets(report)
                for i in range(0, len(datasets), INPUTS_PER_CALL):
                    client.log_inputs(run_id, datasets=datasets[i : i + INPUTS_PER_CALL])
                if self.artifacts:
                    client.log_artifacts(run_id, str(art), ARTIFACT_DIR)
            if parent is not None:
                mon = report.monitor
                client.log_batch(
                    parent.info.run_id,
                    tags=[
                        RunTag(f"collapse.{mon}.run_id", run_id),
                        RunTag(f"collapse.{mon}.stage", report.stage.value),
                        RunTag(f"collapse.{mon}.generation", str(report.generation)),
                    ],
                )
            client.set_terminated(
                run_id, "FINISHED", end_time=int(max(report.created_at + report.duration_seconds, 0) * 1000) or None
            )
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise
        if baseline is not None:
            self._baselines_seen[(exp_id, report.monitor)] = digest
        try:
            self._mark_superseded(client, exp_id, report)
        except Exception as exc:  # a label for the UI: the check itself is logged
            log.info(
                "could not mark earlier runs of generation %s superseded: %s", report.generation, self.scrub(str(exc))
            )
        if plot_job is not None:
            self._submit_plot(run_id, plot_job)
        facts: dict[str, Any] = {"run_id": run_id, "mlflow_run": self.run_url(exp_id, run_id)}
        if "embedding_drift_share" in extra_metrics:
            facts["embedding_drift_share"] = extra_metrics["embedding_drift_share"]
        problems = [f"{k.removeprefix('collapse.').replace('_error', '')} failed ({v})" for k, v in tags.items()
                    if k in ("collapse.evidently_error", "collapse.plot_error")]  # fmt: skip
        warnings = [f"{self.name}: {p}; the run is logged without it" for p in problems]
        if unread is not None:
            warnings.append(f"{self.name}: {unread}")
        if warnings:  # the run is logged; what it lacks is recorded in the report, not only a tag
            facts["warnings"] = warnings
        return facts

    _supersede_window = 100  # runs of one generation read per check when marking superseded ones

    def _mark_superseded(self, client: Any, exp_id: str, report: Report) -> None:
        """A generation checked again leaves a run per check: tag every run of it but the newest
        check (by the report's time, so a late spool replay of an older check does not win)
        ``collapse.superseded_by`` = the newest run's id, the one ``load_history``, ``latest`` and
        ``gate`` read. One search per check; nothing to tag in the usual case."""
        flt = (
            f"tags.`collapse.monitor` = '{report.monitor}' and tags.`collapse.generation` = '{report.generation}'"
            " and attributes.status = 'FINISHED'"
        )
        # the newest runs first: the check just logged must be among those read, however many
        # times the generation was checked (oldest first, the 101st check tagged itself stale)
        window = self._supersede_window
        runs = self._search(
            client, [exp_id], flt, max_results=window, order_by=["attributes.start_time DESC"], limit=window
        )
        if len(runs) < 2:
            return

        def when(run: Any) -> tuple[float, int]:
            try:
                created = float(run.data.tags.get("collapse.created_at", ""))
            except ValueError:
                created = float("-inf")
            return created, run.info.start_time or 0

        newest = max(runs, key=when).info.run_id
        for run in runs:
            if run.info.run_id != newest and run.data.tags.get(SUPERSEDED_TAG) != newest:
                client.set_tag(run.info.run_id, SUPERSEDED_TAG, newest)

    # -- reading back --------------------------------------------------------------------------
    def runs(
        self, monitor: str, *, latest_only: bool = False, finished_only: bool = False, highest_only: bool = False
    ) -> list[Any]:
        """The monitor's check runs (oldest first; only the newest with ``latest_only``; only
        the newest of the highest generation with ``highest_only``, by the numeric
        ``collapse.generation`` metric; only finished ones with ``finished_only``: a run still
        logging, or left by a killed check, is not a check yet)."""

        def search() -> list[Any]:
            client = self.client()
            exp_id = self._experiment_id(client, monitor, create=False)
            if exp_id is None:
                return []
            flt = f"tags.`collapse.monitor` = '{monitor}' and tags.`collapse.report_id` != ''"
            if finished_only:
                flt += " and attributes.status = 'FINISHED'"
            if latest_only or highest_only:
                order = ["attributes.start_time DESC"]
                if highest_only:
                    order.insert(0, f"metrics.`{PREFIX}generation` DESC")
                return self._search(client, [exp_id], flt, max_results=1, limit=1, order_by=order)
            return self._search(client, [exp_id], flt)

        with self.bounded():
            return self._guarded(f"searching the runs of {monitor!r}", search)

    def _report_of(self, client: Any, run: Any, tmp: Path) -> Report:
        try:
            local = client.download_artifacts(
                run.info.run_id, f"{ARTIFACT_DIR}/report.json", str(tmp / run.info.run_id)
            )
            report = Report.from_dict(json.loads(Path(local).read_text()))
            return dataclasses.replace(report, run_id=run.info.run_id)
        except Exception as exc:
            log.info(
                "report.json of run %s unreadable (%s); rebuilding from metrics and tags",
                run.info.run_id,
                type(exc).__name__,
            )
            return report_from_run(run)

    def load_history(self, monitor: str) -> tuple[list[Report], Baseline | None] | None:
        """Reports (one per generation, oldest first) and the stored baseline, or ``None`` when
        MLflow has no check of ``monitor``. Raises SinkError when MLflow cannot be read."""
        runs = self.runs(monitor, finished_only=True)
        if not runs:
            return None

        def read(tmp: Path) -> tuple[list[Report], Baseline | None]:
            client = self.client()
            bounds = getattr(_BOUNDS, "values", None)  # the workers read MLflow under this block's bounds
            with ThreadPoolExecutor(max_workers=8) as pool:
                reports = list(pool.map(lambda r: _in_bounds(bounds, lambda: self._report_of(client, r, tmp)), runs))
            stored = [r for r in runs if r.data.tags.get("collapse.baseline") == "true"]
            for run in sorted(stored, key=lambda r: (_baseline_seq(r), r.info.start_time or 0), reverse=True):
                try:
                    local = client.download_artifacts(run.info.run_id, f"{ARTIFACT_DIR}/baseline", str(tmp / "b"))
                    return reports, _read_baseline(Path(local))
                except Exception as exc:
                    log.warning("baseline of run %s unreadable: %s", run.info.run_id, type(exc).__name__)
            return reports, None

        with self.bounded(), tempfile.TemporaryDirectory(prefix="collapse-history-") as tmp:
            reports, baseline = self._guarded(f"reading the history of {monitor!r}", lambda: read(Path(tmp)))
        by_gen: dict[int, Report] = {}
        for r in reports:
            if r.monitor != monitor:
                continue
            old = by_gen.get(r.generation)
            if old is None or r.created_at >= old.created_at:
                by_gen[r.generation] = r
        ordered = [by_gen[g] for g in sorted(by_gen)]
        if baseline is None and ordered:
            base = next((r for r in ordered if r.is_baseline), None)
            if base is not None:  # metrics only: paired tests need the per-item vectors
                baseline = Baseline(base.generation, base.reference_fingerprint, dict(base.metrics))
        return ordered, baseline

    def known_monitors(self, limit: int = 50) -> list[str]:
        """Names of the monitors this store holds checks of (their experiments' ``collapse.monitor``
        tag), sorted; for error messages, so only the ``limit`` most recently updated."""

        def search() -> list[str]:
            exps = self.client().search_experiments(
                filter_string="tags.`collapse.monitor` != ''",
                max_results=limit,
                order_by=["last_update_time DESC"],
            )
            return sorted({e.tags["collapse.monitor"] for e in exps if e.tags.get("collapse.monitor")})

        with self.bounded():
            return self._guarded("listing the monitors", search)

    def where_runs_are(self, monitor: str, limit: int = 200) -> dict[str, set[str]]:
        """``{experiment name: statuses}`` of ``monitor``'s active runs in this store's ``limit``
        most recently updated experiments (deleted runs are not listed), for the message of a
        command that found no finished check of it where it looked."""

        def search() -> dict[str, set[str]]:
            client = self.client()
            exps = client.search_experiments(max_results=limit, order_by=["last_update_time DESC"])
            names = {e.experiment_id: e.name for e in exps}
            if not names:
                return {}
            flt = f"tags.`collapse.monitor` = '{monitor}'"
            out: dict[str, set[str]] = {}
            for run in self._search(client, list(names), flt, max_results=200, limit=200):
                out.setdefault(names.get(run.info.experiment_id, run.info.experiment_id), set()).add(run.info.status)
            return out

        with self.bounded():
            return self._guarded(f"finding the runs of {monitor!r}", search)

    def latest(self, monitor: str, *, by: str = "generation") -> Report | None:
        """The check of ``monitor``'s highest generation (its newest run when a generation was
        checked again; ``by="time"``: the newest run, for the dead-man's switch, one row from
        the server), among finished runs: a run still logging, or left by a killed check, is not
        a check yet (one search and one download)."""

        def generation(run: Any) -> int:
            try:
                return int(run.data.tags.get("collapse.generation", ""))
            except ValueError:
                return -1

        runs: list[Any] = []
        if by != "time":
            # one run from the server, not every run with every metric (a run of 5,000 classes
            # holds 20k metrics: `gate` took 0.5 s and 39 MB a run); runs logged before the
            # generation metric existed lack it and sort below, so a chain of them is scanned
            top = self.runs(monitor, highest_only=True, finished_only=True)
            if top and f"{PREFIX}generation" in top[0].data.metrics and generation(top[0]) >= 0:
                runs = top
        if not runs:
            runs = [r for r in self.runs(monitor, latest_only=by == "time", finished_only=True) if generation(r) >= 0]
        if not runs:
            return None
        best = max(runs, key=lambda r: (generation(r), r.info.start_time or 0)) if by != "time" else runs[0]
        with self.bounded(), tempfile.TemporaryDirectory(prefix="collapse-latest-") as tmp:
            return self._guarded(
                f"reading the latest check of {monitor!r}", lambda: self._report_of(self.client(), best, Path(tmp))
            )


def fraction_tag(value: str | None, where: str) -> float | None:
    """A ``collapse.synthetic_fraction`` tag (an MLflow run's, or a registered model version's),
    or None with a warning naming ``where`` when it is not a share in [0, 1]: a tag set by hand
    must neither stop the history from loading nor fail a check."""
    if value is None:
        return None
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:  # NaN too
        log.warning("%s: ignoring collapse.synthetic_fraction tag %r (not a share in [0, 1])", where, value)
        return None
    return share


#: the longest ``collapse.metric_keys`` tag written (MLflow servers before 2.x cap a tag at 5000)
_KEYS_TAG_CHARS = 5000


def _renamed_keys(metrics: Mapping[str, Any]) -> str | None:
    """The ``collapse.metric_keys`` tag: JSON ``{metric name without the prefix: report key}``
    for the keys :func:`metric_name` renamed (hashed), so a report rebuilt from the run's
    metrics alone reads them back under their own keys (a baseline for class ``a|b`` or ``a.n``
    then still meets the same key in later checks). Entries past the tag's size are left out
    (those come back hashed). None when no key was renamed.

    >>> _renamed_keys({"accuracy": 1, "class_recall.a.n": 1})
    '{"class_recall.a.n-a6e8f611": "class_recall.a.n"}'
    """
    out: dict[str, str] = {}
    for key in sorted(metrics):
        name = metric_name(key)[len(PREFIX) :]
        if name == key:
            continue
        if len(json.dumps({**out, name: key})) > _KEYS_TAG_CHARS:  # at most ~100 entries fit
            break
        out[name] = key
    return json.dumps(out) if out else None


def _keys_from_tag(value: str | None) -> dict[str, str]:
    """The ``collapse.metric_keys`` tag read back (empty when absent or not a JSON object of strings)."""
    try:
        got = json.loads(value) if value else {}
    except ValueError:
        return {}
    if not isinstance(got, dict):
        return {}
    return {k: v for k, v in got.items() if isinstance(k, str) and isinstance(v, str)}


def _is_sidecar(name: str, metrics: Mapping[str, float]) -> bool:
    """Whether ``name`` is another metric's interval bound or count (``<metric>.ci_low``,
    ``.ci_high``, ``.n``) rather than a metric: only when ``<metric>`` itself is logged, so a
    class named ``n`` or ``ci_low`` (``collapse.class_recall.n``) still reads as its recall."""
    return any(name.endswith(sfx) and name[: -len(sfx)] in metrics for sfx in _SIDECARS)


def report_from_run(run: Any) -> Report:
    """Rebuild a Report from a run's metrics and tags (when its report.json is missing).
    Findings and alerts are not recoverable this way; keys whose metric names were hashed come
    back under their own keys from the ``collapse.metric_keys`` tag (sanitised and hashed, as
    logged, for a run logged without it or past its size)."""
    tags = run.data.tags
    metrics = run.data.metrics
    renamed = _keys_from_tag(tags.get("collapse.metric_keys"))
    values: dict[str, MetricValue] = {}
    for name, v in metrics.items():
        if not name.startswith(PREFIX) or _is_sidecar(name, metrics):
            continue
        key = name[len(PREFIX) :]
        key = renamed.get(key, key)
        if key in _RUN_METRICS:
            continue
        lo = metrics.get(name + ".ci_low", v)
        hi = metrics.get(name + ".ci_high", v)
        count = metrics.get(name + ".n")
        n = int(count) if count is not None and math.isfinite(count) and count >= 1 and count == int(count) else None
        with contextlib.suppress(ValueError):
            values[key] = MetricValue(v, min(lo, v), max(hi, v), n=n)
    sf = fraction_tag(tags.get("collapse.synthetic_fraction"), f"run {run.info.run_id}")
    prov = None
    if "collapse.origin" in tags:
        # from_dict: a stored provenance, whose sources may predate the checks Provenance makes
        prov = Provenance.from_dict(
            {
                "synthetic_fraction": sf,
                "parent_run_id": tags.get("collapse.parent_run_id"),
                "digest": tags.get("collapse.data_digest"),
                "sources": _training_sources(run),
            }
        )
    return Report(
        monitor=tags["collapse.monitor"],
        generation=int(tags["collapse.generation"]),
        stage=_stage_of_run(run),
        metrics=values,
        drift=tags.get("collapse.drift") == "true",
        baseline_generation=int(tags.get("collapse.baseline_generation", 0)),
        provenance=prov,
        reference_fingerprint=tags.get("collapse.reference_fingerprint", ""),
        created_at=float(tags.get("collapse.created_at", run.info.start_time / 1000)),
        run_id=run.info.run_id,
        measure=_measure_from_tag(tags.get("collapse.measure")),
    )


def _stage_of_run(run: Any) -> Stage:
    """A run's stage without its report.json: the ``collapse.stage`` tag, else the
    ``collapse.stage_level`` metric every check logs. A run with neither cannot be judged, and
    says so (it read as healthy: ``gate`` passed a collapsed generation whose tag was removed;
    an MLflow audit, 2026-12-08)."""
    tag = run.data.tags.get("collapse.stage")
    if tag is not None:
        return Stage(tag)
    level = run.data.metrics.get(PREFIX + "stage_level")
    for stage in Stage:
        if level is not None and level == stage.level:
            return stage
    raise CollapseMonitorError(
        f"run {run.info.run_id} has no stage: no report.json, no collapse.stage tag and no collapse.stage_level "
        "metric; it cannot be judged"
    )


def _measure_from_tag(value: str | None) -> dict[str, Any] | None:
    """The ``collapse.measure`` tag read back (None when absent or not a JSON object)."""
    try:
        got = json.loads(value) if value else None
    except ValueError:
        return None
    return got if isinstance(got, dict) else None


def _training_sources(run: Any) -> tuple[str, ...]:
    """The provenance sources a run logged as training dataset inputs (as logged: a URI without
    its query), for a history rebuilt without report.json; the input that only counts the
    sources past :data:`MAX_SOURCE_INPUTS` is not one."""
    out: list[str] = []
    for d in getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []:
        tags = {t.key: t.value for t in d.tags}
        if tags.get("mlflow.data.context") != "training" or "collapse.sources_total" in tags:
            continue
        try:
            src = json.loads(d.dataset.source)
        except (TypeError, ValueError):
            continue
        if not isinstance(src, dict):
            continue
        tagged = src.get("tags")
        named: dict[str, Any] = tagged if isinstance(tagged, dict) else {}  # a CodeDatasetSource: a name
        uri = src.get("uri") or src.get("url") or named.get("collapse.source")
        if isinstance(uri, str) and uri:
            out.append(uri)
    return tuple(out)
