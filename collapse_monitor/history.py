"""Per-monitor generation history: completed reports, the baseline (metrics and the per-item
vectors the paired tests need) and the alert lifecycle state.

Stored in a local sqlite database (WAL) under the monitor home (default ``./.collapse_monitor``,
or ``$COLLAPSE_MONITOR_HOME``), so each retrain - usually a new process - continues the
generation count and the baseline. Arrays are stored as ``.npz`` blobs (never pickled). The
MLflow sink can re-seed an empty store from the tracking server (see ``import_reports``).

Concurrency: a check holds an exclusive per-monitor file lock from generation allocation to the
history write, so concurrent checks of one monitor get distinct, gap-free generation numbers
and all see the same baseline.

Crash safety: :meth:`HistoryStore.commit_check` writes a check's report, its alert lifecycle
state and a new or grown baseline in ONE transaction, flagged "not handed off" until the caller
has handed the report to the sink spool and its alerts to the outbox (:meth:`mark_handed_off`).
A process killed in between leaves the flag set, and the next holder of the monitor's lock finds
the report with :meth:`not_handed_off` and finishes the hand-off - so a report that reached the
history always reaches the sinks and channels as well.

Errors: a home that cannot be created or a database that cannot be written (read-only, disk full)
raises :class:`~collapse_monitor.errors.CollapseMonitorError` naming the store, never a bare
``sqlite3`` / ``OSError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._dbfiles import exclusive_file_lock, is_corrupt, move_with_journal
from .errors import CollapseMonitorError
from .types import MetricValue, Report

__all__ = [
    "AlertState",
    "Baseline",
    "HistoryStore",
    "Replicate",
    "core_digest",
    "default_home",
    "merge_baselines",
    "state_digest",
    "sync_id",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checks (
    monitor TEXT NOT NULL,
    generation INTEGER NOT NULL,
    stage TEXT NOT NULL,
    created_at REAL NOT NULL,
    report_json TEXT NOT NULL,
    handed_off INTEGER NOT NULL DEFAULT 1,   -- 0: committed, not yet in the spool / outbox
    PRIMARY KEY (monitor, generation)
);
CREATE TABLE IF NOT EXISTS baselines (
    monitor TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    predictions_json TEXT,
    items BLOB
);
CREATE TABLE IF NOT EXISTS baseline_replicates (
    monitor TEXT NOT NULL,
    idx INTEGER NOT NULL,
    baseline_key TEXT NOT NULL DEFAULT '',   -- the baseline row they belong to (_baseline_key)
    metrics_json TEXT NOT NULL,
    items BLOB,
    PRIMARY KEY (monitor, idx)
);
CREATE TABLE IF NOT EXISTS baseline_sync (
    monitor TEXT PRIMARY KEY,
    baseline_key TEXT NOT NULL,              -- the baseline row it belongs to (_baseline_key)
    uid TEXT NOT NULL,                       -- the baseline's identity across machines (sync_id)
    dropped_json TEXT NOT NULL               -- digests of the replicates dropped from it
);
CREATE TABLE IF NOT EXISTS alert_state (
    monitor TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    since REAL NOT NULL,
    since_generation INTEGER NOT NULL,
    last_notified_at REAL NOT NULL,
    last_notified_generation INTEGER NOT NULL,
    clear_checks INTEGER NOT NULL DEFAULT 0,
    evidence_json TEXT NOT NULL DEFAULT '[]',  -- metric keys of the findings the incident rests on
    PRIMARY KEY (monitor, rule)
);
"""


def default_home() -> Path:
    """``$COLLAPSE_MONITOR_HOME`` or ``./.collapse_monitor`` (read when called, not at import)."""
    return Path(os.environ.get("COLLAPSE_MONITOR_HOME") or ".collapse_monitor")


@dataclass
class Baseline:
    generation: int
    fingerprint: str
    metrics: dict[str, MetricValue]
    items: dict[str, np.ndarray] = field(default_factory=dict)
    predictions: list[Any] | None = None
    #: other retrains of the baseline generation on human data (``check_replicate``): a
    #: decline counts only if it holds against each of them too (``detect``'s ``replicates``)
    replicates: list[Replicate] = field(default_factory=list)
    #: the baseline's identity across machines: set when a check makes a generation the baseline
    #: and carried by every copy (MLflow's artifact, a monitor rebuilt from it); "" for a baseline
    #: stored by an older version (:func:`sync_id` then derives it from the contents)
    uid: str = ""
    #: digests (:meth:`Replicate.digest`) of the replicates dropped from it (``drop_replicates``):
    #: kept so that a merge with another machine's copy does not bring them back
    dropped: set[str] = field(default_factory=set)


@dataclass
class Replicate:
    """Another retrain of the baseline generation: its metrics and per-item vectors."""

    metrics: dict[str, MetricValue]
    items: dict[str, np.ndarray] = field(default_factory=dict)

    def digest(self) -> str:
        """Equal for two replicates with the same metrics and item vectors (the same weights
        evaluated twice: a resumed training job that trained no step ends its fit again)."""
        h = hashlib.sha256(json.dumps({k: v.to_dict() for k, v in self.metrics.items()}, sort_keys=True).encode())
        for k in sorted(self.items):
            a = np.ascontiguousarray(self.items[k])
            h.update(f"|{k}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        return h.hexdigest()


@dataclass
class AlertState:
    rule: str
    severity: str
    since: float
    since_generation: int
    last_notified_at: float
    last_notified_generation: int
    #: checks in a row that no longer showed the rule's stage (resolution waits for
    #: ``Rules.resolve_after`` of them)
    clear_checks: int = 0
    #: the metric keys of the significant findings the incident rests on (its newest check that
    #: showed it): a check that did not measure all of them cannot resolve it
    evidence: tuple[str, ...] = ()


def _evidence(text: Any) -> tuple[str, ...]:
    """An alert state's stored evidence keys; anything unreadable is no evidence (the incident
    then resolves as before it was kept)."""
    try:
        keys = json.loads(text)
    except (TypeError, ValueError):
        return ()
    return tuple(k for k in keys if isinstance(k, str)) if isinstance(keys, list) else ()


def core_meta(b: Baseline) -> dict[str, Any]:
    """The baseline generation's own measurement as JSON (what :func:`core_digest` hashes first)."""
    return {
        "generation": b.generation,
        "fingerprint": b.fingerprint,
        "metrics": {k: v.to_dict() for k, v in sorted(b.metrics.items())},
        "predictions": b.predictions,
    }


def core_digest(b: Baseline) -> str:
    """A digest of the baseline generation's own measurement (metrics, predictions, item
    vectors), without its replicates."""
    h = hashlib.sha256()
    h.update(json.dumps(core_meta(b), sort_keys=True).encode())
    for k in sorted(b.items):
        arr = np.ascontiguousarray(b.items[k])
        h.update(f"{k}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:32]


def state_digest(b: Baseline) -> str:
    """A digest of everything a copy of the baseline holds: its measurement, its replicates (in
    any order: two machines that merged the same ones in another order hold the same state) and
    the replicates dropped from it. Without replicates or drops it is :func:`core_digest`."""
    core = core_digest(b)
    if not b.replicates and not b.dropped:
        return core
    state = {"core": core, "replicates": sorted(r.digest() for r in b.replicates), "dropped": sorted(b.dropped)}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:32]


def sync_id(b: Baseline) -> str:
    """The baseline's identity across machines: its ``uid``, or for a baseline stored by an
    older version its :func:`core_digest` (equal on every machine that read the same copy)."""
    return b.uid or core_digest(b)


def merge_baselines(local: Baseline, remote: Baseline) -> Baseline:
    """Two copies of one baseline (equal :func:`sync_id`) merged: the replicates of both (each
    once, this machine's first, in their order) less those either copy dropped, and the drops of
    both. Metrics and item vectors one copy gained later (``_grow_baseline``) are taken from it;
    where both gained one with different values (two machines saw a new family at once), the
    ``remote`` copy's: every machine merges with the copy on the server, so all take the values
    uploaded first. The replicate sets merge commutatively (up to order) and idempotently, so
    machines that merge each other's copies converge: a two-phase set (2P-Set) of replicates by
    content, in which a removal wins and is for good (Shapiro et al., "Conflict-free Replicated
    Data Types", SSS 2011)."""
    dropped = local.dropped | remote.dropped
    replicates: list[Replicate] = []
    seen: set[str] = set()
    for r in [*local.replicates, *remote.replicates]:
        d = r.digest()
        if d not in dropped and d not in seen:
            seen.add(d)
            replicates.append(r)
    return Baseline(
        generation=local.generation,
        fingerprint=local.fingerprint,
        metrics={**local.metrics, **remote.metrics},
        items={**local.items, **remote.items},
        predictions=remote.predictions if remote.predictions is not None else local.predictions,
        replicates=replicates,
        uid=sync_id(local),
        dropped=dropped,
    )


def _baseline_key(generation: int, fingerprint: str, metrics_json: str) -> str:
    """Which baseline row a replicate belongs to: a digest of the row as stored."""
    return hashlib.sha256(f"{generation}|{fingerprint}|{metrics_json}".encode()).hexdigest()[:32]


def _pack(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return buf.getvalue()


def _unpack(blob: bytes | None) -> dict[str, np.ndarray]:
    if not blob:
        return {}
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _locked_retry(fn: Callable[[], Any], *, deadline: float) -> Any:
    """``fn()``, again after a short sleep while sqlite says the database is locked or busy
    (a lock that sqlite's own busy handler does not wait for, e.g. WAL recovery or a
    journal-mode switch in another process), until ``deadline`` (``time.monotonic()``)."""
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            msg = str(exc).lower()
            if ("locked" not in msg and "busy" not in msg) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


log = logging.getLogger("collapse_monitor")


class HistoryStore:
    """sqlite-backed history of one monitor home."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, lock_timeout: float = 600.0) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.lock_timeout = lock_timeout
        self._db: Path = self.home / "history.db"
        self._ready = False
        #: where a corrupt history.db was moved by this process (the monitor notes it once)
        self.quarantined: Path | None = None

    # -- plumbing ------------------------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException) -> CollapseMonitorError:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return CollapseMonitorError(f"history store {self._db}: {what} failed: {why}")

    def _connect(self) -> sqlite3.Connection:
        try:
            return self._open()
        except CollapseMonitorError as exc:
            if self._corrupt_cause(exc) is None:
                raise
        # one process at a time decides: two that both found it corrupt moved it aside twice,
        # the second time the fresh store the first had just started (and written to)
        with exclusive_file_lock(self._db.with_name(self._db.name + ".lock")):
            try:
                return self._open()  # another process may have replaced it meanwhile
            except CollapseMonitorError as exc:
                cause = self._corrupt_cause(exc)
                if cause is None:
                    raise
            self._quarantine(cause)
            return self._open()

    @staticmethod
    def _corrupt_cause(exc: CollapseMonitorError) -> sqlite3.DatabaseError | None:
        cause = exc.__cause__
        return cause if isinstance(cause, sqlite3.DatabaseError) and is_corrupt(cause) else None

    def _quarantine(self, why: BaseException) -> None:
        """Move a history.db that is not a database, or whose disk image is malformed, aside
        (``history.db.corrupt-<unix time>``, with its -wal/-shm) and start a fresh one: every
        later check used to fail on it forever. The next check re-seeds from the sinks that hold
        the history (MLflow) or starts a new baseline, and says so in its notes."""
        stamp = f"corrupt-{int(time.time())}"
        target = self._db.with_name(f"{self._db.name}.{stamp}")
        move_with_journal(self._db, target)
        self._ready = False
        self.quarantined = target
        log.error("history store %s is corrupt (%s): moved to %s, starting a new one", self._db, why, target.name)

    def _open(self) -> sqlite3.Connection:
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            if self._ready and not self._db.exists():
                # the home was removed under a running process (a cleanup job, tmpfiles, a
                # remount): the new, empty file needs its schema again, or every later check
                # failed with "no such table" until the process restarted
                self._ready = False
                log.warning("history store %s disappeared: starting a new one", self._db)
            if not self._db.exists():
                # owner-only, like outbox.db and the spool: the reports hold the alerts' links,
                # which may carry tokens (a dashboard's auth_token); SQLite gives its -wal and
                # -shm files the database's mode
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self._db, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            con = sqlite3.connect(self._db, timeout=60.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._fail("opening", exc) from exc
        try:
            con.execute("PRAGMA synchronous=NORMAL")
            if not self._ready:
                # WAL is a property of the file: set once per process. The switch takes a lock
                # that another process's first connection may hold; "locked" here is retried.
                _locked_retry(lambda: con.execute("PRAGMA journal_mode=WAL"), deadline=time.monotonic() + 60.0)
                con.executescript(_SCHEMA)
                cols = {r[1] for r in con.execute("PRAGMA table_info(checks)")}
                if "handed_off" not in cols:  # a store written by an older version
                    con.execute("ALTER TABLE checks ADD COLUMN handed_off INTEGER NOT NULL DEFAULT 1")
                cols = {r[1] for r in con.execute("PRAGMA table_info(baseline_replicates)")}
                if "baseline_key" not in cols:  # written by a development version: its rows own no baseline
                    con.execute("ALTER TABLE baseline_replicates ADD COLUMN baseline_key TEXT NOT NULL DEFAULT ''")
                cols = {r[1] for r in con.execute("PRAGMA table_info(alert_state)")}
                if "clear_checks" not in cols:  # written before Rules.resolve_after
                    con.execute("ALTER TABLE alert_state ADD COLUMN clear_checks INTEGER NOT NULL DEFAULT 0")
                if "evidence_json" not in cols:  # written before an incident kept its evidence
                    con.execute("ALTER TABLE alert_state ADD COLUMN evidence_json TEXT NOT NULL DEFAULT '[]'")
                self._ready = True
        except sqlite3.Error as exc:
            con.close()
            raise self._fail("opening", exc) from exc
        return con

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise self._fail("writing", exc) from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        con = self._connect()
        try:
            return con.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("reading", exc) from exc
        finally:
            con.close()

    @contextlib.contextmanager
    def lock(self, monitor: str, *, spool: bool = False) -> Iterator[None]:
        """Exclusive per-monitor lock across processes (fcntl.flock; released if the holder dies).
        ``spool=True``: the lock of the spool key ``monitor`` instead, shared by every monitor of
        the home (monitors sharing a home share the spool: two replaying at once sent every
        report twice)."""
        import fcntl

        lock_dir = self.home / "locks" / ("spool" if spool else "")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in monitor)
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
            # 0600 like every other file of the home (it holds a pid, no secret)
            fd = os.open(lock_dir / f"{safe}.lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            fh = os.fdopen(fd, "a+")  # held across the yield
        except OSError as exc:
            raise self._fail(f"locking {'spool' if spool else 'monitor'} {monitor!r}", exc) from exc
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CollapseMonitorError(
                            f"{'spool' if spool else 'monitor'} {monitor!r} is locked by another check for over "
                            f"{self.lock_timeout:.0f} s"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    # -- generations ---------------------------------------------------------------------------
    def last_generation(self, monitor: str) -> int | None:
        rows = self._read("SELECT MAX(generation) FROM checks WHERE monitor=?", (monitor,))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    @staticmethod
    def _put_report(con: sqlite3.Connection, report: Report, handed_off: bool) -> str:
        """Store ``report``; returns its row's JSON."""
        blob = json.dumps(report.to_dict(), allow_nan=False)
        con.execute(
            "INSERT OR REPLACE INTO checks(monitor, generation, stage, created_at, report_json, handed_off)"
            " VALUES (?,?,?,?,?,?)",
            (report.monitor, report.generation, report.stage.value, report.created_at, blob, int(handed_off)),
        )
        return blob

    def save_report(self, report: Report, *, handed_off: bool = True) -> None:
        """Store ``report`` (replacing its generation's row), flagged as handed off unless
        ``handed_off=False`` (its alerts did not reach the outbox: the next check retries)."""
        with self._tx() as con:
            self._put_report(con, report, handed_off)

    def commit_check(
        self,
        report: Report,
        *,
        alert_states: Sequence[AlertState] | None = None,
        baseline: Baseline | None = None,
    ) -> str:
        """One transaction for everything a check decides: the report (flagged "not handed off"),
        the alert lifecycle state (when given) and the baseline (when new or grown). Returns the
        report's row as stored (JSON)."""
        with self._tx() as con:
            blob = self._put_report(con, report, False)
            if baseline is not None:
                self._put_baseline(con, report.monitor, baseline)
            if alert_states is not None:
                self._put_alert_states(con, report.monitor, alert_states)
        return blob

    def mark_handed_off(self, report: Report) -> None:
        """The report is in the spool / with the sinks and its alerts are in the outbox."""
        with self._tx() as con:
            con.execute(
                "UPDATE checks SET handed_off=1 WHERE monitor=? AND generation=? AND created_at=?",
                (report.monitor, report.generation, report.created_at),
            )

    def not_handed_off(self, monitor: str) -> list[Report]:
        """Committed reports whose hand-off never finished (their process died), oldest first.
        Only meaningful while holding :meth:`lock`: the hand-off happens under it."""
        rows = self._read(
            "SELECT generation, report_json FROM checks WHERE monitor=? AND handed_off=0 ORDER BY generation",
            (monitor,),
        )
        return self._decode(monitor, rows)

    def reports(self, monitor: str) -> list[Report]:
        """Every stored report, oldest first; a row that cannot be decoded is skipped with an
        error in the log (it used to fail every later check with a raw JSONDecodeError)."""
        rows = self._read("SELECT generation, report_json FROM checks WHERE monitor=? ORDER BY generation", (monitor,))
        return self._decode(monitor, rows)

    def _decode(self, monitor: str, rows: Sequence[Any]) -> list[Report]:
        out = []
        for generation, blob in rows:
            try:
                out.append(Report.from_dict(json.loads(blob)))
            except Exception as exc:
                log.error(
                    "history store %s: generation %s of %s cannot be read (%s): skipped",
                    self._db,
                    generation,
                    monitor,
                    type(exc).__name__,
                )
        return out

    # -- baseline ------------------------------------------------------------------------------
    def baseline(self, monitor: str) -> Baseline | None:
        rows = self._read(
            "SELECT generation, fingerprint, metrics_json, predictions_json, items FROM baselines WHERE monitor=?",
            (monitor,),
        )
        if not rows:
            return None
        row = rows[0]
        try:
            metrics = {k: MetricValue.from_dict(v) for k, v in json.loads(row[2]).items()}
            preds = None if row[3] is None else json.loads(row[3])
            b = Baseline(int(row[0]), row[1], metrics, _unpack(row[4]), preds)
        except Exception as exc:  # never a bare JSONDecodeError / BadZipFile
            raise CollapseMonitorError(
                f"history store {self._db}: the baseline of {monitor} cannot be read ({type(exc).__name__}); "
                "move history.db aside to start a new baseline"
            ) from None
        key = _baseline_key(int(row[0]), row[1], row[2])
        b.replicates = self._replicates(monitor, key)
        sync = self._read("SELECT baseline_key, uid, dropped_json FROM baseline_sync WHERE monitor=?", (monitor,))
        if sync and sync[0][0] == key:  # a row of another baseline (an older version re-baselined) is ignored
            try:
                b.uid, b.dropped = str(sync[0][1]), {str(d) for d in json.loads(sync[0][2])}
            except Exception as exc:
                log.error(
                    "history store %s: the drops of the baseline of %s cannot be read (%s); dropped replicates "
                    "may come back from another machine's copy",
                    self._db,
                    monitor,
                    type(exc).__name__,
                )
        return b

    def _replicates(self, monitor: str, key: str) -> list[Replicate]:
        """The replicates of the baseline row whose key is ``key``. Rows of another baseline (left
        by a version that re-baselined without knowing of them) are ignored, and one that cannot
        be read is skipped with an error: it must not make the baseline unreadable."""
        out: list[Replicate] = []
        rows = self._read(
            "SELECT idx, baseline_key, metrics_json, items FROM baseline_replicates WHERE monitor=? ORDER BY idx",
            (monitor,),
        )
        for idx, owner, metrics_json, blob in rows:
            if owner != key:
                continue
            try:
                out.append(
                    Replicate({k: MetricValue.from_dict(v) for k, v in json.loads(metrics_json).items()}, _unpack(blob))
                )
            except Exception as exc:
                log.error(
                    "history store %s: replicate %s of the baseline of %s cannot be read (%s); it is left out",
                    self._db,
                    idx,
                    monitor,
                    type(exc).__name__,
                )
        return out

    @staticmethod
    def _put_baseline(con: sqlite3.Connection, monitor: str, b: Baseline) -> None:
        metrics_json = json.dumps({k: v.to_dict() for k, v in b.metrics.items()})
        con.execute(
            "INSERT OR REPLACE INTO baselines(monitor, generation, fingerprint, metrics_json, predictions_json, items)"
            " VALUES (?,?,?,?,?,?)",
            (
                monitor,
                b.generation,
                b.fingerprint,
                metrics_json,
                None if b.predictions is None else json.dumps(b.predictions),
                _pack(b.items),
            ),
        )
        # the replicates belong to this baseline: a new baseline (the generation checked again)
        # starts with none
        con.execute("DELETE FROM baseline_replicates WHERE monitor=?", (monitor,))
        key = _baseline_key(b.generation, b.fingerprint, metrics_json)
        con.executemany(
            "INSERT INTO baseline_replicates(monitor, idx, baseline_key, metrics_json, items) VALUES (?,?,?,?,?)",
            [
                (monitor, i, key, json.dumps({k: v.to_dict() for k, v in r.metrics.items()}), _pack(r.items))
                for i, r in enumerate(b.replicates)
            ],
        )
        con.execute(
            "INSERT OR REPLACE INTO baseline_sync(monitor, baseline_key, uid, dropped_json) VALUES (?,?,?,?)",
            (monitor, key, sync_id(b), json.dumps(sorted(b.dropped))),
        )

    def save_baseline(self, monitor: str, b: Baseline) -> None:
        with self._tx() as con:
            self._put_baseline(con, monitor, b)

    # -- alert lifecycle -----------------------------------------------------------------------
    def alert_states(self, monitor: str) -> dict[str, AlertState]:
        rows = self._read(
            "SELECT rule, severity, since, since_generation, last_notified_at, last_notified_generation,"
            " clear_checks, evidence_json FROM alert_state WHERE monitor=?",
            (monitor,),
        )
        return {
            r[0]: AlertState(r[0], r[1], r[2], r[3], r[4], r[5], clear_checks=r[6], evidence=_evidence(r[7]))
            for r in rows
        }

    @staticmethod
    def _put_alert_states(con: sqlite3.Connection, monitor: str, states: Sequence[AlertState]) -> None:
        con.execute("DELETE FROM alert_state WHERE monitor=?", (monitor,))
        con.executemany(
            "INSERT INTO alert_state (monitor, rule, severity, since, since_generation, last_notified_at,"
            " last_notified_generation, clear_checks, evidence_json) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    monitor,
                    s.rule,
                    s.severity,
                    s.since,
                    s.since_generation,
                    s.last_notified_at,
                    s.last_notified_generation,
                    s.clear_checks,
                    json.dumps(list(s.evidence)),
                )
                for s in states
            ],
        )

    def set_alert_states(self, monitor: str, states: Sequence[AlertState]) -> None:
        with self._tx() as con:
            self._put_alert_states(con, monitor, states)

    # -- re-seeding from a remote (MLflow) -----------------------------------------------------
    def import_history(self, monitor: str, reports: Sequence[Report], baseline: Baseline | None) -> None:
        """Fill an empty local store from reports and a baseline read back elsewhere."""
        for r in reports:
            self.save_report(r)
        if baseline is not None and self.baseline(monitor) is None:
            self.save_baseline(monitor, baseline)
