"""``collapse-monitor serve``: scheduled checks, redelivery, a dead-man's switch and ``/metrics``.

One long-running process (APScheduler 3 ``BackgroundScheduler``) next to the training jobs:

* **scheduled checks** of the newest version of a model in the MLflow Model Registry: resolve
  the version (``latest``, a stage or an alias), load it (``mlflow.pyfunc`` or
  ``mlflow.pytorch``), predict the probe inputs (argmax of a 2-D output) and/or call a
  ``module:function`` that samples embeddings / texts, then ``monitor.check``. A version is
  checked once (``only_new_versions``, remembered across restarts in ``<home>/serve_state.json``):
  a generation is a retrain, not a clock tick. Provenance comes from the registry (parent run,
  ``models:/name/version``, the version tag ``collapse.synthetic_fraction``).
* **redelivery**: every ``flush_interval_seconds`` each monitor's sink spool is replayed and its
  alert outbox redelivered (``monitor.flush()``).
* **dead-man's switch**: a monitor with ``expected_interval_seconds`` whose latest check (from
  its local history, or read back from its MLflow sink when the training jobs run elsewhere)
  is older than that fires rule ``stale_monitor``
  (severity warning) through its alert channels, once per staleness episode, and resolves it
  when a check arrives. A monitor that never reported counts from when serve first saw it, and
  so does a check dated in the future (the wall clock stepped back, a training host's clock
  ahead), with a warning: its negative age kept the switch from firing until the clock caught up.
* **/metrics** on ``host:port`` (default 127.0.0.1:9108) from a dedicated ``CollectorRegistry``:
  the latest check of every monitor (``PrometheusSink(registry=...)``: the same series as the
  Pushgateway path; the latest by generation, then time) and the service's own
  ``collapse_monitor_serve_*`` series.

Damaged files in a home: a ``serve_state.json`` of the wrong shape is validated and repaired
(moved aside as ``.corrupt-<unix time>``, or its bad entries dropped; a warning each) instead of
failing every tick; a corrupt ``outbox.db`` is moved aside the same way and a new one started
(:mod:`collapse_monitor.alerting.outbox`). An ``outbox.db`` that cannot be opened at all (a
read-only home) stops ``serve`` at start with one line on stderr and exit status 2 (a
:class:`~collapse_monitor.errors.ConfigError` for ``home``): a service that cannot queue a page
would watch the models without telling anyone, its own dead-man's switch included.

Job defaults: ``coalesce=True``, ``max_instances=1``, ``misfire_grace_time`` 300 s (a check
that missed its slot while the machine slept still runs, once). A model version whose check
fails (load, predictions, check) is tried again after 30 s, doubling up to an hour (counted as
``skipped`` in between; ``CollapseMonitorServeChecksFailing`` in the shipped Prometheus rules
pages on the errors); a new version is tried at once (a backoff that ends more than its own
length ahead, after the clock stepped back, is over). Each load downloads the version into a
temporary folder in the monitor's home (``models-tmp/``) that is removed once the probe ran,
when a shutdown abandons the check, or at the next start after a kill. ``cron`` schedules are crontab
expressions with crontab's days of the week (0 or 7 = Sunday), not APScheduler's. SIGTERM / SIGINT / SIGHUP stop the
scheduler and the HTTP server; a check still running after ``shutdown_timeout_seconds`` (3 s)
is abandoned and the process exits (history, spool and outbox writes are transactional).

Configuration (YAML, on top of :mod:`collapse_monitor.config`; every error names its key)::

    serve:
      port: 9108                              # /metrics (CLI --port overrides)
      host: 127.0.0.1                         # CLI --host overrides
      flush_interval_seconds: 60              # spool replay + alert outbox redelivery
      staleness_check_interval_seconds: 60    # dead-man's switch and /metrics refresh
      misfire_grace_time_seconds: 300
      max_workers: 4                          # checks of different monitors run in parallel
      shutdown_timeout_seconds: 3
      alert_budget_seconds: 10                # time a delivery round may take
    sinks: [{type: mlflow, tracking_uri: "http://127.0.0.1:5000"}]   # shared by every monitor
    alerts: [{type: webhook, url: "${ONCALL_WEBHOOK}"}]                # (as are home, rules, ...)
    monitors:
      - name: digits-classifier
        reference: {labels: probe_labels.npy}            # or inherited from the top level
        model:
          registered_name: digits
          stage_or_alias: latest        # latest | Production/Staging/... | an alias (champion)
          # version: 3                  # or pin one
          tracking_uri: http://127.0.0.1:5000            # default: MLflow's default
          flavor: pyfunc                # pyfunc (default) | pytorch
          only_new_versions: true
        probe:
          inputs: probe_inputs.npy      # one row per probe item (aligned with reference.labels)
          classes: [cat, dog]           # optional: output column -> label
          predict: mymod:predict        # optional: (model, inputs) -> predictions
          sample: mymod:sample          # optional: model -> Observation | {embeddings, texts} | array
        schedule: {cron: "0 * * * *", timezone: UTC}     # or {interval_seconds: 300}; run_at_start
        expected_interval_seconds: 86400

Each ``monitors`` entry may override ``home``, ``strict``, ``reference``, ``rules``, ``sinks``,
``alerts``, ``links``, ``routing``, ``mutes`` and ``device``. The single-monitor form of
:mod:`collapse_monitor.config` (top-level ``name`` + ``reference``) is served too: redelivery,
``/metrics`` and, with ``expected_interval_seconds``, the dead-man's switch. ``module:function``
paths are imported at start-up with the config's folder on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._redact import redact_text, secret_fragments
from ._service_config import MonitorSpec, ServeConfig, load_serve_config
from .errors import CollapseMonitorError, ConfigError
from .types import Alert, Report, Stage

__all__ = ["STALE_RULE", "Service", "serve_command"]

# a model version whose check failed is tried again after 30 s, then 60 s, ... at most an hour
# (each try downloads and loads it again); a new version is tried at once
_RETRY_FIRST_SECONDS = 30.0
_RETRY_MAX_SECONDS = 3600.0
_REGISTRY = "<registry>"  # the _failures key of a registry that could not be asked
_MODELS_TMP = "models-tmp"  # in a monitor's home: the model copies of checks in flight
_REGISTRY_RETRY_MAX_SECONDS = 600.0  # a registry back from an outage is asked within 10 min

log = logging.getLogger("collapse_monitor.service")

STALE_RULE = "stale_monitor"


def _span(seconds: float) -> str:
    s = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{s} s"


def _when(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # beyond what a date can say: the number itself
        return f"{t!r} (unix seconds)"


#: the last second of the year 9999: later "unix seconds" are no time (milliseconds written as
#: seconds, a corrupt file), and datetime cannot show them
_MAX_UNIX_SECONDS = 253_402_300_799


def _finite_number(v: Any) -> bool:
    """Unix seconds a state file may hold: a finite number within the years 1970-9999 (an
    integer with 400 digits raised OverflowError in ``math.isfinite`` on every tick)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v) and 0 <= v <= _MAX_UNIX_SECONDS
    except OverflowError:
        return False


#: what each key of a monitor's entry in serve_state.json must hold (others are kept as they are)
_STATE_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "last_version": ("a model version URI", lambda v: isinstance(v, str)),
    "last_checked_at": ("unix seconds", _finite_number),
    "watching_since": ("unix seconds", _finite_number),
    "stale_alerted_at": ("unix seconds", _finite_number),
    "stale_episode": ("an episode id or null", lambda v: v is None or isinstance(v, str)),
}


class _StateFile:
    """``<home>/serve_state.json``: per monitor, the last checked model version and the
    dead-man's switch episode. Written atomically.

    Validated when read: a file that is not JSON, or whose top level is not an object of
    objects, is moved aside (``serve_state.json.corrupt-<unix time>``) and the state starts
    empty; a monitor entry that is not an object, or a known key with a value of the wrong type
    (``watching_since: "oops"``, an infinite timestamp), is dropped. Each is logged as a warning.
    A wrong-shaped file used to fail every tick of the dead-man's switch and every scheduled
    check for good (``set()`` rewrote the same bad data). What is lost is a cache: the history
    says which versions were checked, and the switch starts counting again."""

    def __init__(self, home: Path) -> None:
        self.path = home / "serve_state.json"
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("%s could not be read (%s): starting from an empty state", self.path, exc.strerror or exc)
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:  # not JSON, not UTF-8
            self._move_aside(f"not JSON ({type(exc).__name__}: {exc})")
            return {}
        if not isinstance(data, dict):
            self._move_aside(f"expected an object of monitors, got {type(data).__name__}")
            return {}
        out: dict[str, dict[str, Any]] = {}
        for monitor, entry in data.items():
            if not isinstance(entry, dict):
                log.warning(
                    "%s: entry %r dropped (expected an object, got %s): its state starts again",
                    self.path,
                    monitor,
                    type(entry).__name__,
                )
                continue
            kept = dict(entry)
            for key, (what, ok) in _STATE_KEYS.items():
                if key in kept and not ok(kept[key]):
                    bad = repr(kept.pop(key))
                    log.warning("%s: %s.%s dropped (expected %s, got %s)", self.path, monitor, key, what, bad[:80])
            out[monitor] = kept
        return out

    def _move_aside(self, why: str) -> None:
        target = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(self.path, target)
        except OSError as exc:
            log.warning("%s is unusable (%s) and could not be moved aside (%s): it is rewritten", self.path, why, exc)
        else:
            log.warning("%s is unusable (%s): moved to %s, starting from an empty state", self.path, why, target.name)

    def get(self, monitor: str, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._data.get(monitor, {}).get(key, default)

    def set(self, monitor: str, **values: Any) -> None:
        with self._lock:
            self._data.setdefault(monitor, {}).update(values)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(self._data, fh)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


class _HomeLock:
    """An exclusive ``flock`` on ``<home>/serve.lock`` for as long as a service runs: two
    ``serve`` processes on one home would both see a new model version as unchecked and check
    it twice, as two generations (the state file is read once and rewritten whole). The lock
    goes with the process, so a killed service never leaves a stale one. Where ``fcntl`` does
    not exist (Windows) it is not taken."""

    def __init__(self, home: Path) -> None:
        self.path = home / "serve.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise ConfigError(
                "home",
                f"another collapse-monitor serve (pid {holder}) runs on {self.path.parent}: two would check "
                "the same model versions twice; stop it, or give each service its own home",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _stale_id(monitor: str, episode: str, status: str) -> str:
    """The dead-man's switch alert's idempotency key: one per monitor, episode and status."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"collapse-monitor/{monitor}/{STALE_RULE}/{episode}/{status}"))


def _remote_readers(spec: MonitorSpec) -> list[Any]:
    """The monitor's sinks that can read its checks back (MLflow's ``latest(monitor)``)."""
    return [s for s in spec.monitor.sinks if callable(getattr(s, "latest", None))]


class _SkippedTickFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


class Service:
    """The scheduler, its jobs and the ``/metrics`` endpoint. ``serve_command`` runs one until
    SIGTERM; tests and embedders may call ``run_check`` / ``flush`` / ``check_staleness`` directly.
    """

    def __init__(self, config: ServeConfig, *, clock: Callable[[], float] = time.time, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        from .sinks.prometheus import PrometheusSink

        self.config = config
        self.settings = config.settings
        self.specs = {s.name: s for s in config.monitors}
        self.clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        self.prometheus = PrometheusSink(registry=self.registry)
        self._locks = {name: threading.Lock() for name in self.specs}
        #: monitors whose scheduled check runs now (their report is exported by the check)
        self._checking: set[str] = set()
        #: per monitor: (what failed, failures in a row, when to try again, the backoff's length)
        self._failures: dict[str, tuple[str, int, float, float]] = {}
        self._states: dict[Path, _StateFile] = {}
        #: (monitor, sink) -> the newest check that sink gave (stands in when it cannot be read)
        self._remote_seen: dict[tuple[str, str], Report] = {}
        self._read_failing_since: dict[tuple[str, str], float] = {}
        #: monitor -> its latest-check read not yet judged (a hung tracking server's read goes on
        #: past the run that started it; a later run judges it when it is done), in a pool that
        #: outlives the runs (``check_staleness``)
        self._reads: dict[str, Any] = {}
        self._read_pool: Any = None
        #: monitor -> (created_at, first seen at) of a latest check dated in the future
        self._future_checks: dict[str, tuple[float, float]] = {}
        self._running = 0
        self._idle = threading.Condition()
        self._scheduler: Any = None
        self._http: Any = None
        self._home_locks: list[_HomeLock] = []
        #: the model copies of checks in flight (``<home>/models-tmp/...``), removed at a hard exit
        self._model_dirs: set[str] = set()
        self.started_at = clock()
        for spec in config.monitors:
            try:
                _ = spec.monitor.dispatcher  # created once here, not lazily from two job threads
            except ConfigError:
                raise
            except Exception as exc:
                # a corrupt outbox.db was moved aside and replaced by the outbox itself; one that
                # cannot be opened at all (a read-only home, a folder in its place) stops serve
                # here, in one line: a service that cannot queue a page would run on, watching
                # the models and telling no one (the dead-man's switch included)
                why = redact_text(f"{exc}" if isinstance(exc, CollapseMonitorError) else f"{type(exc).__name__}: {exc}")
                raise ConfigError(
                    "home",
                    f"monitor {spec.name!r}: {why}; serve does not start without its alert outbox",
                ) from exc

        r = self.registry
        self.g_up = Gauge("collapse_monitor_serve_up", "1 while collapse-monitor serve runs", registry=r)
        self.g_start = Gauge(
            "collapse_monitor_serve_start_time_seconds", "When serve started (unix seconds)", registry=r
        )
        self.c_checks = Counter(
            "collapse_monitor_serve_checks",
            "Scheduled checks by outcome (ok, skipped, error)",
            ["monitor", "outcome"],
            registry=r,
        )
        self.c_skipped = Counter(
            "collapse_monitor_serve_skipped_ticks",
            "Ticks of the flush and staleness jobs skipped because their previous run still ran",
            ["task"],  # not "job": Prometheus's own target label
            registry=r,
        )
        self.g_last = Gauge(
            "collapse_monitor_serve_last_success_timestamp_seconds",
            "Last successful run of a task (check, flush, staleness) per monitor",
            ["monitor", "task"],  # not "job": a scrape without honor_labels renames it exported_job
            registry=r,
        )
        self.g_stale = Gauge(
            "collapse_monitor_serve_stale",
            "1 while the monitor's latest check is older than expected_interval_seconds",
            ["monitor"],
            registry=r,
        )
        self.g_expected = Gauge(
            "collapse_monitor_serve_expected_interval_seconds",
            "Configured maximum time between checks",
            ["monitor"],
            registry=r,
        )
        self.g_version = Gauge(
            "collapse_monitor_serve_model_version",
            "Registry version of the last checked model",
            ["monitor"],
            registry=r,
        )
        self.g_failing = Gauge(
            "collapse_monitor_serve_consecutive_failures",
            "Scheduled checks of the monitor that failed in a row (0 after a check that worked)",
            ["monitor"],
            registry=r,
        )
        self.g_spool = Gauge(
            "collapse_monitor_serve_spool_pending", "Reports waiting in the sink spool", ["monitor"], registry=r
        )
        self.g_outbox = Gauge(
            "collapse_monitor_serve_outbox_pending", "Alert deliveries waiting in the outbox", ["monitor"], registry=r
        )
        self.g_up.set(1)
        self.g_start.set(self.started_at)
        for task in ("flush", "staleness"):
            self.c_skipped.labels(task)
        for spec in config.monitors:
            # every outcome's series exists from the start at 0: increase() cannot count the step
            # from "no series" to 1, so the first of three errors went uncounted after each start
            # and CollapseMonitorServeChecksFailing needed four
            for outcome in ("ok", "skipped", "error"):
                self.c_checks.labels(spec.name, outcome)
            self.g_failing.labels(spec.name).set(0)
            if spec.expected_interval_seconds is not None:
                self.g_expected.labels(spec.name).set(spec.expected_interval_seconds)
                self.g_stale.labels(spec.name).set(0)
        # what /metrics said before a restart, from serve_state.json: with only_new_versions the
        # version and last-check gauges came back only with the next new version
        for name, spec in self.specs.items():
            with contextlib.suppress(Exception):
                state = self._state(spec)
                uri, at = state.get(name, "last_version"), state.get(name, "last_checked_at")
                if isinstance(uri, str):
                    with contextlib.suppress(ValueError):
                        self.g_version.labels(name).set(float(uri.rstrip("/").rpartition("/")[2]))
                if isinstance(at, (int, float)):
                    self.g_last.labels(name, "check").set(float(at))

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str], *, port: int | None = None, host: str | None = None, **kw: Any
    ) -> Service:
        return cls(load_serve_config(path, port=port, host=host), **kw)

    # -- state ---------------------------------------------------------------------------------
    def _state(self, spec: MonitorSpec) -> _StateFile:
        home = Path(spec.monitor.home).resolve()
        if home not in self._states:
            self._states[home] = _StateFile(home)
        return self._states[home]

    @contextlib.contextmanager
    def _job(self) -> Iterator[None]:
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    # -- jobs ----------------------------------------------------------------------------------
    def run_check(self, name: str) -> Report | None:
        """Check the model version ``name``'s model spec points at (once per version)."""
        spec = self.specs[name]
        if spec.model is None or spec.probe is None:
            raise ConfigError(name, "has no model to check")
        with self._job(), self._locks[name]:
            self._checking.add(name)
            try:
                return self._run_check(name, spec)
            finally:
                self._checking.discard(name)

    def _run_check(self, name: str, spec: MonitorSpec) -> Report | None:
        """:meth:`run_check` under the monitor's lock."""
        from ._service_model import build_observation, load_model, resolve_version

        model_spec, probe = spec.model, spec.probe
        assert model_spec is not None and probe is not None  # run_check refused the others
        ver = None
        failed = self._failures.get(name)
        if self._backing_off(name, _REGISTRY):  # ask a failed registry again only after the backoff
            return None
        try:
            ver = resolve_version(model_spec)
            if failed is not None and failed[0] == _REGISTRY:  # it answered: the backoff ends
                self._failures.pop(name, None)
                failed = None
            if ver is None:
                pinned = "" if model_spec.version is None else f" {model_spec.version}"
                log.info("%s: model %s has no version%s yet", name, model_spec.registered_name, pinned)
                self.c_checks.labels(name, "skipped").inc()
                return None
            state = self._state(spec)
            if model_spec.only_new_versions and (
                state.get(name, "last_version") == ver.uri or self._checked_in_history(spec, ver.uri)
            ):
                log.debug("%s: %s already checked", name, ver.uri)
                self.c_checks.labels(name, "skipped").inc()
                return None
            failed = self._failures.get(name)
            if self._backing_off(name, ver.uri):
                return None
            # in the home, not /tmp: a check cut off at shutdown (os._exit) left its copy in /tmp
            # for good; stop() removes the copies in flight, and the next start what a killed
            # process left (the home's serve.lock: no other service uses the folder)
            models = Path(spec.monitor.home) / _MODELS_TMP
            models.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="model-", dir=models) as tmp:
                self._model_dirs.add(tmp)
                try:
                    model = load_model(model_spec, ver, dst_path=tmp)
                    obs = build_observation(model, probe, model_spec.flavor, ver.provenance())
                    del model
                finally:
                    self._model_dirs.discard(tmp)
            report = spec.monitor.check(obs)
        except Exception as exc:
            self.c_checks.labels(name, "error").inc()
            # in a row, whatever failed: on an hourly schedule "3 errors in an hour" never
            # came, and backoff made it resolve while the model still failed
            self.g_failing.labels(name).inc()
            # the same version (or, when the registry itself failed, the registry) again
            # only after a backoff
            what = _REGISTRY if ver is None else ver.uri
            n = failed[1] + 1 if failed is not None and failed[0] == what else 1
            cap = _REGISTRY_RETRY_MAX_SECONDS if ver is None else _RETRY_MAX_SECONDS
            wait = min(cap, _RETRY_FIRST_SECONDS * 2 ** (n - 1))
            self._failures[name] = (what, n, self.clock() + wait, wait)
            retry = f"; {'the registry is asked again' if ver is None else ver.uri + ' is retried'} in {wait:.0f} s (failure {n})"
            # the client library repeats the request path on its own (urllib3's "url: /<token>/api/..."):
            # the URIs' secret fragments are masked too, not only whole URLs
            secrets = [*secret_fragments(model_spec.tracking_uri), *secret_fragments(model_spec.registry_uri)]
            log.error(
                "%s: scheduled check failed: %s%s",
                name,
                redact_text(f"{type(exc).__name__}: {exc}", secrets),
                redact_text(retry, secrets),
            )
            return None
        self._failures.pop(name, None)
        try:  # the history already holds the check: the state file is a cache of it
            state.set(name, last_version=ver.uri, last_checked_at=self.clock())
        except Exception as exc:
            log.warning("%s: could not record the checked version: %s", name, redact_text(str(exc)))
        self.c_checks.labels(name, "ok").inc()
        self.g_failing.labels(name).set(0)
        self.g_last.labels(name, "check").set(self.clock())
        with contextlib.suppress(ValueError):
            self.g_version.labels(name).set(float(ver.version))
        self._export(report, live=True)
        log.info(
            "%s: checked %s: generation %d, %s%s",
            name,
            ver.uri,
            report.generation,
            report.stage.value,
            f" ({len(report.errors)} delivery error(s), spooled)" if report.errors else "",
        )
        return report

    def _backing_off(self, name: str, what: str) -> bool:
        """Whether ``what`` (a model version's URI, or :data:`_REGISTRY`) failed for monitor
        ``name`` and its backoff has not run out: the tick is then counted as skipped."""
        failed = self._failures.get(name)
        now = self.clock()
        # a try due more than one backoff ahead: the clock stepped back (NTP, a resumed VM), and
        # waiting for the old deadline held every check back by the size of the step
        if failed is None or failed[0] != what or now >= failed[2] or failed[2] - now > failed[3]:
            return False
        log.debug("%s: %s failed %d time(s), next try in %.0f s", name, what, failed[1], failed[2] - now)
        self.c_checks.labels(name, "skipped").inc()
        return True

    def _tick_skipped(self, event: Any) -> None:
        """A scheduled check came due while the previous one of the same monitor still ran
        (``max_instances=1``): counted as ``skipped``, logged at debug level. A skipped flush or
        staleness tick (redelivery or the dead-man's switch running late) is a warning and
        counts in ``collapse_monitor_serve_skipped_ticks_total{task}``."""
        job_id = str(getattr(event, "job_id", ""))
        if job_id.startswith("check:"):
            name = job_id[len("check:") :]
            log.debug("%s: check still running, tick skipped", name)
            self.c_checks.labels(name, "skipped").inc()
        else:  # the spool / outbox flush or the dead-man's switch runs longer than its interval
            log.warning("%s: the previous run is still going, tick skipped", job_id)
            self.c_skipped.labels(job_id).inc()

    def flush(self) -> dict[str, dict[str, int]]:
        """Replay each monitor's sink spool and redeliver its alert outbox."""
        out: dict[str, dict[str, int]] = {}
        with self._job():
            for name, spec in self.specs.items():
                lock = self._locks[name]
                if not lock.acquire(blocking=False):
                    continue  # a check of this monitor runs: it replays the spool itself
                try:
                    mon = spec.monitor
                    out[name] = mon.flush(budget_seconds=self.settings.alert_budget_seconds)
                    self.g_spool.labels(name).set(mon.spool.count())
                    disp = mon.dispatcher
                    self.g_outbox.labels(name).set(0 if disp is None else len(disp.pending()))
                    self.g_last.labels(name, "flush").set(self.clock())
                except Exception as exc:
                    log.error("%s: redelivery failed: %s", name, redact_text(f"{type(exc).__name__}: {exc}"))
                finally:
                    lock.release()
        return out

    def check_staleness(self) -> list[Alert]:
        """The dead-man's switch (and the /metrics refresh from each monitor's history)."""
        from concurrent.futures import ThreadPoolExecutor
        from concurrent.futures import TimeoutError as FutureTimeout

        sent: list[Alert] = []
        with self._job():
            if self._read_pool is None:
                self._read_pool = ThreadPoolExecutor(
                    max_workers=max(1, min(32, len(self.specs))), thread_name_prefix="collapse-staleness"
                )
            now = self.clock()
            # each monitor's latest check is read in parallel, and the monitors that read only
            # their local history are judged first: a hung tracking server (a sink's latest())
            # must not hold the dead-man's switch of the monitors that never touch it. A remote
            # read is waited for until the run's deadline; one still going then is judged by a
            # later run (one read per monitor at a time): the run used to wait for every read,
            # and the ticks of the local monitors were skipped while a hung server timed out
            # (11 s runs on a 1 s interval; a serve audit, 2026-12-08)
            deadline = time.monotonic() + 0.8 * self.settings.staleness_check_interval_seconds
            for name, spec in self.specs.items():
                if name not in self._reads:
                    self._reads[name] = self._read_pool.submit(self._latest, spec)
            order = sorted(self.specs.items(), key=lambda item: bool(_remote_readers(item[1])))
            for name, spec in order:
                read = self._reads[name]
                try:
                    try:
                        wait = None if not _remote_readers(spec) else max(0.0, deadline - time.monotonic())
                        latest, unknown = read.result(timeout=wait)
                    except FutureTimeout:
                        log.info("%s: staleness: its latest check is still being read; judged when the read ends", name)
                        continue
                    finally:
                        if read.done():
                            self._reads.pop(name, None)
                    # not while a check of this monitor runs: it exports its own report once it
                    # has set the model version (read from the history, the report showed on
                    # /metrics before its version gauge: a scrape saw generation 0 of no version)
                    if latest is not None and name not in self._checking:
                        self._export(latest)
                    if unknown:
                        continue
                    planned = self._stale_alert(spec, latest, now)
                    if planned is not None:
                        alert, eid, done = planned
                        # the episode is recorded only once the alert is in the outbox (under
                        # an id fixed by the episode, so queueing it again after a failure
                        # between the two adds nothing): a failed enqueue is retried next run
                        self._dispatch(spec, alert, eid)
                        self._state(spec).set(name, **done)
                        sent.append(alert)
                    self.g_last.labels(name, "staleness").set(now)
                except Exception as exc:
                    log.error("%s: staleness check failed: %s", name, redact_text(f"{type(exc).__name__}: {exc}"))
        return sent

    # -- helpers -------------------------------------------------------------------------------
    def _checked_in_history(self, spec: MonitorSpec, uri: str) -> bool:
        """Whether the monitor has a check of model version ``uri``: the history, not the
        state file, says what was checked (a process stopped between the check and its state
        write, or another process on the same home, checked it). Found there, the state file
        is brought up to date, so the next runs need not read the history."""
        # any check, not only the newest: an alias rolled back (v1 -> v2 -> v1) pointed at a
        # version checked before, and it was checked again as a new generation
        if not any(r.provenance is not None and uri in r.provenance.sources for r in spec.monitor.reports()):
            return False
        with contextlib.suppress(Exception):
            self._state(spec).set(spec.name, last_version=uri)
        return True

    def _latest(self, spec: MonitorSpec) -> tuple[Report | None, bool]:
        """The monitor's newest check: from its local history, or from a sink that can read
        checks back (MLflow) when training jobs run elsewhere with their own history. When a
        sink cannot be read, the newest check it gave before (in this process) stands in; with
        none, the second value is True: the newest check is unknown, and the dead-man's switch
        must not judge it "never" (one failed read paged, and the next tick resolved it)."""
        reports = spec.monitor.reports()
        newest = max(reports, key=lambda r: r.created_at) if reports else None
        unknown = False
        for sink in _remote_readers(spec):
            key = (spec.name, getattr(sink, "name", "?"))
            try:
                remote = sink.latest(spec.name, by="time")
            except Exception as exc:
                remote = self._remote_seen.get(key)
                # unknown for a while; a tracking server unreadable for longer than the expected
                # interval is judged from what is known, so the switch still fires in the end
                since = self._read_failing_since.setdefault(key, self.clock())
                grace = spec.expected_interval_seconds or math.inf
                unknown = unknown or (remote is None and self.clock() - since < grace)
                log.info(
                    "%s: could not read the latest check from %s (%s): %s",
                    spec.name,
                    key[1],
                    "using the last one read"
                    if remote is not None
                    else "the dead-man's switch waits for the next read",
                    redact_text(f"{type(exc).__name__}: {exc}"),
                )
            else:
                self._read_failing_since.pop(key, None)
                if remote is not None:
                    self._remote_seen[key] = remote
            if remote is not None and (newest is None or remote.created_at > newest.created_at):
                newest = remote
        return newest, unknown

    def _export(self, report: Report, *, live: bool = False) -> None:
        """Show ``report`` on /metrics unless a newer check is shown (by generation, then time:
        after the wall clock stepped back the latest check by time is an older generation).
        ``live``: a check this service just made (a baseline checked now starts a new chain)."""
        from .sinks.base import EmitContext

        col = self.prometheus.collector
        # the same check again, or one that a newer check already replaced: nothing to do, and
        # nothing to log every tick
        if col.held(report.monitor) == (report.generation, report.created_at) or col.supersedes(report, live=live):
            return
        try:
            self.prometheus.emit(report, EmitContext() if live else None)
        except Exception as exc:  # pragma: no cover - registry-only export does no I/O
            log.warning("%s: /metrics export failed: %s", report.monitor, exc)
            return
        # the chain it belongs to: its baseline in the history (a later baseline is a chain
        # re-run from scratch; the same one, re-read by the tick after a clock step, is not)
        spec = self.specs.get(report.monitor)
        if spec is not None and not report.is_baseline:
            with contextlib.suppress(Exception):
                base = next((r for r in spec.monitor.reports() if r.generation == report.baseline_generation), None)
                col.note_chain(report, None if base is None else base.created_at)

    def _stale_alert(
        self, spec: MonitorSpec, latest: Report | None, now: float
    ) -> tuple[Alert, str, dict[str, Any]] | None:
        """The dead-man's switch's alert to send now, if any: (alert, its event id, the state
        to record once it is queued)."""
        expected = spec.expected_interval_seconds
        name = spec.name
        state = self._state(spec)
        if expected is None and state.get(name, "stale_episode") is None:
            return None  # no switch configured (one that fired before it was removed resolves below)
        if latest is not None:
            since, episode = self._not_future(name, latest.created_at, now), repr(latest.created_at)
        else:
            since = state.get(name, "watching_since")
            if since is None or since > now:
                if since is not None:
                    log.warning(
                        "%s: the dead-man's switch started watching at %s, in the future (the clock stepped "
                        "back): it counts from now",
                        name,
                        _when(since),
                    )
                since = now
                state.set(name, watching_since=now)
            episode = "never"
        age = now - since
        stale = expected is not None and age > expected
        self.g_stale.labels(name).set(1 if stale else 0)
        alerted = state.get(name, "stale_episode")

        def alert(status: str, summary: str) -> Alert:
            return Alert(
                monitor=name,
                rule=STALE_RULE,
                status=status,
                severity="warning",
                stage=Stage.HEALTHY if latest is None else latest.stage,
                generation=0 if latest is None else latest.generation,
                summary=summary,
                links=dict(spec.monitor.links),
                timestamp=now,
            )

        if stale and expected is not None and alerted != episode:
            last = "never" if latest is None else _when(latest.created_at)
            summary = (
                f"{name}: no retrain checked for {_span(age)} (expected at least every {_span(expected)}); "
                f"last check: {last}. The training pipeline or its monitoring hook may have stopped."
            )
            return (
                alert("firing", summary),
                _stale_id(name, episode, "firing"),
                {
                    "stale_episode": episode,
                    "stale_alerted_at": now,
                },
            )
        # not stale any more: a new check arrived, or the expected interval was raised or
        # removed (the incident used to stay open for good)
        if not stale and alerted is not None:
            why = (
                "checks are arriving again"
                if alerted != episode
                else "no longer overdue: the expected interval changed"
            )
            resolved = alert("resolved", f"{name}: {why}")
            return resolved, _stale_id(name, str(alerted), "resolved"), {"stale_episode": None}
        return None

    def _not_future(self, name: str, created_at: float, now: float) -> float:
        """When the dead-man's switch counts a check from: ``created_at``, or - for a check dated
        in the future (the wall clock stepped back, a training host whose clock is ahead) - when
        this process first saw it, with a warning. Its age was negative: the switch could not
        fire until the clock caught up with the date (a day ahead: a day of silence unnoticed)."""
        seen = self._future_checks.get(name)
        if seen is not None and seen[0] == created_at:
            return min(created_at, seen[1])
        if created_at <= now:
            self._future_checks.pop(name, None)
            return created_at
        self._future_checks[name] = (created_at, now)
        log.warning(
            "%s: the latest check is dated %s, %s in the future (the clock stepped back, or the training "
            "host's clock is ahead): the dead-man's switch counts it from now",
            name,
            _when(created_at),
            _span(created_at - now),
        )
        return now

    def _dispatch(self, spec: MonitorSpec, alert: Alert, eid: str) -> None:
        disp = spec.monitor.dispatcher
        if disp is None:
            log.warning("%s (%s): %s [no alert channels configured]", alert.dedup_key, alert.status, alert.summary)
            return
        log.warning("%s (%s): %s", alert.dedup_key, alert.status, alert.summary)
        results = disp.dispatch([alert], event_ids=[eid])
        for r in results:
            if not getattr(r, "ok", False):
                log.warning(
                    "%s: delivery to %s %s (kept in the outbox)",
                    alert.dedup_key,
                    getattr(r, "channel", "?"),
                    getattr(r, "status", "failed"),
                )

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def metrics_url(self) -> str | None:
        if self._http is None:
            return None
        host, port = self._http.server_address[:2]
        if ":" in str(host):  # an IPv6 literal needs its brackets in a URL (it printed http://::1:9108)
            host = f"[{host}]"
        return f"http://{host}:{port}/metrics"

    def start(self, *, http: bool = True) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        s = self.settings
        for home in sorted({Path(spec.monitor.home).resolve() for spec in self.specs.values()}):
            lock = _HomeLock(home)
            try:
                lock.acquire()
            except ConfigError:
                self._release_homes()
                raise
            self._home_locks.append(lock)
            leftovers = home / _MODELS_TMP
            if leftovers.is_dir():  # model copies of a service killed mid-check
                shutil.rmtree(leftovers, ignore_errors=True)
        if http:
            from prometheus_client import start_http_server

            try:
                self._http, _ = start_http_server(s.port, addr=s.host, registry=self.registry)
            except OSError as exc:
                import socket

                # a host that does not resolve is the host's fault, a taken port the port's
                key = "serve.host" if isinstance(exc, socket.gaierror) else "serve.port"
                self._release_homes()
                raise ConfigError(key, f"cannot listen on {s.host}:{s.port}: {exc.strerror or exc}") from None
        sched = BackgroundScheduler(
            # redelivery and the dead-man's switch have workers of their own: queued behind slow
            # checks they ran late, or were dropped as misfired
            executors={"default": ThreadPoolExecutor(s.max_workers), "housekeeping": ThreadPoolExecutor(2)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": max(1, math.ceil(s.misfire_grace_time_seconds)),  # APScheduler: int >= 1
            },
        )
        now = datetime.now(UTC)
        for name, spec in self.specs.items():
            if spec.schedule is None:
                continue
            extra = {"next_run_time": now} if spec.schedule.run_at_start else {}
            sched.add_job(
                self.run_check,
                spec.schedule.trigger(),
                args=[name],
                id=f"check:{name}",
                name=f"check {name} ({spec.schedule.describe()})",
                **extra,
            )
        sched.add_job(
            self.flush,
            IntervalTrigger(seconds=s.flush_interval_seconds),
            id="flush",
            name="spool replay and alert redelivery",
            next_run_time=now,
            executor="housekeeping",
        )
        sched.add_job(
            self.check_staleness,
            IntervalTrigger(seconds=s.staleness_check_interval_seconds),
            id="staleness",
            name="dead-man's switch",
            next_run_time=now,
            executor="housekeeping",
        )
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES

        sched.add_listener(self._tick_skipped, EVENT_JOB_MAX_INSTANCES)
        # APScheduler logs every such skipped tick as a WARNING; they are counted instead (its
        # other warnings, e.g. a missed run time, stay)
        aps_log = logging.getLogger("apscheduler.scheduler")
        if not any(isinstance(f, _SkippedTickFilter) for f in aps_log.filters):
            aps_log.addFilter(_SkippedTickFilter())
        sched.start()
        self._scheduler = sched

    def stop(self, timeout: float | None = None) -> bool:
        """Stop scheduling and serving; wait up to ``timeout`` seconds for running jobs.
        Returns False when a job was still running."""
        timeout = self.settings.shutdown_timeout_seconds if timeout is None else timeout
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._http is not None:
            with contextlib.suppress(Exception):
                self._http.shutdown()
                self._http.server_close()
            self._http = None
        with self._idle:
            clean = self._idle.wait_for(lambda: self._running == 0, timeout=timeout)
        if self._read_pool is not None:  # a read still hanging on a tracking server is abandoned
            self._read_pool.shutdown(wait=False, cancel_futures=True)
            self._read_pool = None
            self._reads.clear()
        if not clean:  # the process ends without the check still running: not without its files
            for tmp in list(self._model_dirs):
                shutil.rmtree(tmp, ignore_errors=True)
        # a delivery still in flight is abandoned with the process: free its outbox lease so a
        # replacement process retries it now, not when the lease runs out
        for spec in self.specs.values():
            disp = spec.monitor.dispatcher
            if disp is not None:
                try:
                    disp.outbox.release_leases()
                except Exception as exc:
                    log.warning("%s: could not release outbox leases: %s", spec.name, redact_text(str(exc)))
        self._release_homes()
        return clean

    def _release_homes(self) -> None:
        for lock in self._home_locks:
            lock.release()
        self._home_locks = []


def serve_command(
    config: str | os.PathLike[str], *, port: int | None = None, host: str | None = None, hard_exit: bool = True
) -> int:
    """Run the service until SIGTERM / SIGINT (the ``collapse-monitor serve`` entry point).

    With ``hard_exit`` (the CLI's default) the process ends with ``os._exit`` once the scheduler,
    the HTTP server and the logs are shut down: our state is on disk by then (history, spool and
    outbox writes are transactional), while a check still running in a worker thread - or the
    interpreter's own teardown of torch / MLflow, seconds on a busy machine - would otherwise
    hold the exit past the orchestrator's grace period. ``hard_exit=False`` returns instead.
    """
    # a dead tracking server must cost seconds, not the client's default minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    # model loads would draw MLflow's artifact download bar into the service log, once per check
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)  # one INFO line per job run
    svc = Service.from_config(config, port=port, host=host)
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set() and hard_exit:
            # a second signal while waiting for running checks: the operator is not waiting
            os.write(2, b"collapse-monitor serve: second signal, exiting now\n")
            os._exit(130)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        # SIGHUP too (a closed terminal, a supervisor's reload signal): it killed the process at
        # once, without the shutdown that frees the outbox leases and the abandoned checks' files
        hup = getattr(signal, "SIGHUP", None)
        for sig in (signal.SIGTERM, signal.SIGINT, *([hup] if hup is not None else [])):
            previous[sig] = signal.signal(sig, on_signal)
    clean = True
    try:
        svc.start()
        jobs = sum(1 for s in svc.specs.values() if s.schedule is not None)
        print(
            f"collapse-monitor serve: {len(svc.specs)} monitor(s), {jobs} scheduled check(s); "
            f"metrics at {svc.metrics_url}",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        log.info("shutting down")
    finally:
        clean = svc.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not clean:
        log.warning("a check was still running after %.0f s: exiting without it", svc.settings.shutdown_timeout_seconds)
    if hard_exit or not clean:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
