"""Durable alert outbox: every event is committed to sqlite BEFORE any delivery attempt.

Guarantees and bounds
---------------------
- **Persist first.** One row per (event, channel), committed (WAL, ``synchronous=FULL``)
  before the first attempt. A process that dies after that leaves a ``pending`` row that the
  next process (``AlertDispatcher.redeliver()``, the next check, or ``collapse-monitor
  serve``) delivers.
- **At least once, one idempotency key.** The row id is the event id, sent on every attempt
  (``webhook-id`` for webhooks), so a receiver can drop the duplicate that a crash between
  "sent" and "recorded" can cause.
- **Several processes at once.** A row is *claimed* in a ``BEGIN IMMEDIATE`` transaction that
  sets a lease (``lease_until``; default 60 s, at least twice the channel's timeout + 5 s);
  no other process takes a leased row, and a lease that outlives a killed process simply
  expires; an attempt that outlives its lease records nothing (the process that took the row
  over owns it). Per (channel, dedup key) rows go out in order: a resolve never overtakes its
  firing event.
- **Retry policy** (:class:`RetryPolicy`, defaults): exponential backoff with full jitter,
  ``uniform(0, min(600 s, 1 s * 2**(attempt-1)))``; ``Retry-After`` (seconds or HTTP-date)
  replaces the backoff (capped at 1 h); no retry on 4xx except 408 and 429; 410 disables the
  channel (persisted: later processes skip it until its URL/key changes); a row is ``dead``
  after 24 h (``max_age_seconds``) or 1000 attempts. The age is the limit that binds: with
  the 600 s cap a receiver that stays down is tried about every 5 minutes for the whole day
  (a 20-attempt limit, as before, gave up after about an hour of outage under ``serve``, and
  after four or five checks without it: a paging provider's hour-long incident lost pages).
- **Bounded in-call delivery.** :meth:`Outbox.deliver` works on due rows, waiting for
  backoffs only while they end inside ``budget_seconds``; no attempt starts after the budget
  is spent and each attempt's timeout is capped by its channel's fair share of what is left
  of it, so a call returns within about ``budget_seconds`` plus a fraction of a second.
- **Fair between channels.** Within one call every channel with due rows gets an attempt
  before any channel gets a second one, and an attempt may use at most ``remaining / (1 +
  channels still waiting for their first attempt)`` (never less than
  ``MIN_ATTEMPT_SECONDS``, never more than what is left): a hanging receiver costs the others
  its share of the budget, not all of it. The rows of the events a call was made for
  (``first``: a check's own alerts) go before older pending rows. Not covered: DNS resolution
  (socket timeouts do not bound it), a server that trickles its answer byte by byte (the
  timeout bounds each socket read, not the whole response) and waiting for another
  process's sqlite write lock (transactions here are a few statements long).

States: ``pending`` -> ``delivered`` | ``dead`` | ``disabled``; ``muted`` rows are recorded
and never sent. ``last_error`` is redacted by the channel before it is stored.

A damaged or unusable file
--------------------------
- **Corrupt** (sqlite says "file is not a database" or "database disk image is malformed"
  when it is opened): the file, with its ``-wal`` / ``-shm``, is moved aside as
  ``outbox.db.corrupt-<unix time>`` and a new, empty outbox starts; logged as an error naming
  the moved file (``Outbox.quarantined`` holds its path). Rows still pending in it are not
  delivered from there: a check whose alerts never reached an outbox queues them again, and the
  moved file can be inspected by hand. Every check used to fail with ``DatabaseError`` and no
  page went out until someone deleted the file.
- **Cannot be opened at all** (a read-only or full home, a folder in its place, no permission):
  :class:`~collapse_monitor.errors.AlertDeliveryError` naming the path and sqlite's reason, the
  connection closed. A check records it among its errors (``alerting: ...``) and carries on;
  ``collapse-monitor serve`` refuses to start (one line on stderr, exit status 2), because a
  service that cannot queue a page would watch the models without telling anyone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._dbfiles import exclusive_file_lock, is_corrupt, move_with_journal
from .._redact import redact_text
from ..errors import AlertDeliveryError
from .base import AlertEvent, Channel, DeliveryResult

__all__ = ["Outbox", "OutboxRow", "RetryPolicy"]

log = logging.getLogger("collapse_monitor.alerting")

#: The least time an attempt gets when the budget is shared between channels (enough for a
#: remote receiver's TCP + TLS handshake and answer); never more than what is left of the budget.
MIN_ATTEMPT_SECONDS = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,                 -- event id = idempotency key (webhook-id)
    channel TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    monitor TEXT NOT NULL,
    kind TEXT NOT NULL,               -- firing | resolved | test
    payload TEXT NOT NULL,            -- AlertEvent JSON (never rendered requests, never secrets)
    status TEXT NOT NULL,             -- pending | delivered | dead | disabled | muted
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    updated_at REAL NOT NULL,
    delivered_at REAL,
    last_http_status INTEGER,
    last_error TEXT,
    UNIQUE (id, channel)
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (status, channel, dedup_key, seq);
CREATE TABLE IF NOT EXISTS channel_state (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    disabled_at REAL NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS open_alerts (   -- which channels got the firing event of an alert
    dedup_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    severity TEXT NOT NULL,
    muted INTEGER NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (dedup_key, channel)
);
"""


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again. Full jitter (AWS Architecture Blog, "Exponential Backoff And
    Jitter", 2015): ``delay = uniform(0, min(cap, base * 2**(attempt-1)))``."""

    base_seconds: float = 1.0
    cap_seconds: float = 600.0
    #: a safety net only: ``max_age_seconds`` ends retries first (24 h of attempts at the
    #: 600 s cap, mean 300 s apart, is about 300 attempts)
    max_attempts: int = 1000
    max_age_seconds: float = 86400.0
    max_retry_after_seconds: float = 3600.0

    def backoff(self, attempts: int, rng: random.Random | None = None) -> float:
        hi = min(self.cap_seconds, self.base_seconds * 2.0 ** max(0, attempts - 1))
        return (rng or random).uniform(0.0, hi)


@dataclass(frozen=True)
class OutboxRow:
    id: str
    channel: str
    dedup_key: str
    monitor: str
    kind: str
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float
    lease_until: float | None
    delivered_at: float | None
    last_http_status: int | None
    last_error: str | None
    payload: str
    seq: int = 0

    def event(self) -> AlertEvent:
        return AlertEvent.from_dict(json.loads(self.payload))

    def result(self) -> DeliveryResult:
        return DeliveryResult(
            channel=self.channel,
            event_id=self.id,
            status=self.status,
            http_status=self.last_http_status,
            attempts=self.attempts,
            error=self.last_error,
            next_attempt_at=self.next_attempt_at if self.status == "pending" else None,
            dedup_key=self.dedup_key,
        )


_COLS = (
    "id, channel, dedup_key, monitor, kind, status, attempts, created_at, next_attempt_at, lease_until, "
    "delivered_at, last_http_status, last_error, payload, seq"
)


class Outbox:
    """The sqlite outbox. Thread-safe within a process, safe across processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
        lease_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        scope: str | None = None,
        busy_seconds: float = 30.0,
    ) -> None:
        #: the monitor whose rows this outbox delivers (None: every row). Monitors sharing a
        #: home share one outbox.db, and two of them may both name a channel ``oncall`` with
        #: different targets: a scoped outbox claims only its monitor's rows, and keeps the
        #: 410-disabled state of its channels under its own name.
        self.scope = scope
        self._prefix = "" if scope is None else f"{scope}\x1f"
        self.path = Path(path)
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.lease_seconds = float(lease_seconds)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = threading.RLock()
        #: how long an operation waits for a lock another process holds on the file
        self.busy_seconds = float(busy_seconds)
        #: where a corrupt outbox.db was moved by this process (None: it was not)
        self.quarantined: Path | None = None
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        """Open (creating if needed) the database; a corrupt one is moved aside once and a new one
        started; one that cannot be opened raises AlertDeliveryError naming the path."""
        got = self._try_setup()
        if isinstance(got, sqlite3.Connection):
            return got
        # one process at a time decides: two that both found it corrupt moved it aside twice,
        # the second time the fresh outbox the first had just started (and kept writing to)
        with exclusive_file_lock(self.path.with_name(self.path.name + ".lock")):
            got = self._try_setup()  # another process may have replaced it meanwhile
            if isinstance(got, sqlite3.Connection):
                return got
            self._quarantine(got)
            try:
                return self._setup()
            except (sqlite3.Error, OSError) as exc:
                raise self._unopenable(exc) from exc

    def _try_setup(self) -> sqlite3.Connection | sqlite3.DatabaseError:
        """The connection, or the error saying the file is corrupt; any other failure raises
        AlertDeliveryError naming the path."""
        try:
            return self._setup()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise self._unopenable(exc) from exc
            return exc
        except OSError as exc:
            raise self._unopenable(exc) from exc

    def _setup(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        db = sqlite3.connect(str(self.path), timeout=self.busy_seconds, isolation_level=None, check_same_thread=False)
        try:
            if new:
                with contextlib.suppress(OSError):
                    os.chmod(self.path, 0o600)
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_seconds * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.split(";\n"):
                    if stmt.strip():
                        db.execute(stmt)
                if "fingerprint" not in {r[1] for r in db.execute("PRAGMA table_info(open_alerts)")}:
                    # which target got the firing (written before 2026-12-06: unknown, NULL)
                    db.execute("ALTER TABLE open_alerts ADD COLUMN fingerprint TEXT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except BaseException:
            db.close()  # a failed setup must not leave the file open (and, on Windows, locked)
            raise
        return db

    def _unopenable(self, exc: BaseException) -> AlertDeliveryError:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        low = why.lower()
        hint = (
            f" (is {self.path.parent} writable, and {self.path.name} a file?)"
            if isinstance(exc, OSError) or "unable to open" in low or "readonly" in low or "read-only" in low
            else ""
        )
        return AlertDeliveryError(
            f"alert outbox {self.path} cannot be opened: {why}{hint}: alerts cannot be queued or delivered"
        )

    def _quarantine(self, why: BaseException) -> None:
        """Move a corrupt outbox.db (with its -wal / -shm) aside as
        ``outbox.db.corrupt-<unix time>`` so that a new one can start, and say so."""
        stamp = f"corrupt-{int(time.time())}"
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        n = 0
        while target.exists():  # twice in one second: keep both
            n += 1
            target = self.path.with_name(f"{self.path.name}.{stamp}-{n}")
        try:
            move_with_journal(self.path, target)
        except OSError as exc:
            raise AlertDeliveryError(
                f"alert outbox {self.path} is corrupt ({why}) and could not be moved aside "
                f"({exc.strerror or exc}): move or delete it by hand; alerts cannot be queued or delivered"
            ) from exc
        self.quarantined = target
        log.error(
            "alert outbox %s is corrupt (%s): moved to %s, starting a new one (alerts still pending in it are "
            "not delivered from there)",
            self.path,
            why,
            target.name,
        )

    # -- plumbing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r})"

    @staticmethod
    def _row(r: Sequence[Any]) -> OutboxRow:
        return OutboxRow(*r)

    # -- writing -----------------------------------------------------------------------------
    def enqueue(
        self,
        event: AlertEvent,
        targets: Mapping[str, str],
        *,
        open_alert: Sequence[tuple[str, str, bool] | tuple[str, str, bool, str | None]] = (),
        close_alert: str | None = None,
    ) -> None:
        """Persist ``event`` once per channel in ``targets`` ({channel: initial status:
        pending | muted | disabled}) in ONE transaction, with the bookkeeping of which
        channels got a firing event (``open_alert``: (channel, severity, muted)) or the
        end of it (``close_alert``: the dedup key). Re-enqueuing the same event is a no-op."""
        now = self.clock()
        payload = json.dumps(event.to_dict(), sort_keys=True, allow_nan=True)
        a = event.alert
        with self._tx() as db:
            for channel, status in targets.items():
                db.execute(
                    "INSERT OR IGNORE INTO outbox (id, channel, dedup_key, monitor, kind, payload, status, attempts,"
                    " created_at, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?,0,?,?,?)",
                    (event.id, channel, a.dedup_key, a.monitor, event.kind, payload, status, now, now, now),
                )
            for channel, severity, muted, *fp in open_alert:
                db.execute(
                    "INSERT INTO open_alerts (dedup_key, channel, severity, muted, since, fingerprint)"
                    " VALUES (?,?,?,?,?,?) ON CONFLICT (dedup_key, channel) DO UPDATE SET"
                    " muted = min(muted, excluded.muted), fingerprint = coalesce(excluded.fingerprint, fingerprint)",
                    (a.dedup_key, channel, severity, int(muted), now, fp[0] if fp else None),
                )
            if close_alert is not None:
                db.execute("DELETE FROM open_alerts WHERE dedup_key = ?", (close_alert,))

    def open_alert_targets(self, dedup_key: str) -> dict[str, str | None]:
        """channel -> the fingerprint of the target it had when the firing of ``dedup_key`` was
        routed to it (None when not recorded)."""
        with self._lock:
            cur = self._db.execute("SELECT channel, fingerprint FROM open_alerts WHERE dedup_key = ?", (dedup_key,))
            return {c: f for c, f in cur.fetchall()}

    def open_alert(self, dedup_key: str) -> list[tuple[str, str, bool]]:
        """(channel, severity, muted) of every channel the firing event of ``dedup_key`` was routed to."""
        with self._lock:
            cur = self._db.execute(
                "SELECT channel, severity, muted FROM open_alerts WHERE dedup_key = ? ORDER BY since, channel",
                (dedup_key,),
            )
            return [(c, s, bool(m)) for c, s, m in cur.fetchall()]

    # -- channel state -----------------------------------------------------------------------
    def _mine(self, column: str = "o.monitor") -> tuple[str, tuple[str, ...]]:
        """The SQL condition and its argument that keep this scope's rows."""
        return ("", ()) if self.scope is None else (f" AND {column} = ?", (self.scope,))

    def disable_channel(self, name: str, fingerprint: str, reason: str) -> None:
        now = self.clock()
        mine, margs = self._mine("monitor")
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO channel_state (name, fingerprint, disabled_at, reason) VALUES (?,?,?,?)",
                (self._prefix + name, fingerprint, now, reason),
            )
            db.execute(
                "UPDATE outbox SET status='disabled', updated_at=?, lease_owner=NULL, lease_until=NULL,"
                f" last_error=coalesce(last_error, ?) WHERE channel=? AND status='pending'{mine}",
                (now, f"channel disabled: {reason}", name, *margs),
            )

    def enable_channel(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM channel_state WHERE name = ?", (self._prefix + name,))

    def disabled_channels(self) -> dict[str, str]:
        """{name: fingerprint} of this scope's channels switched off after a 410."""
        with self._lock:
            rows = self._db.execute("SELECT name, fingerprint FROM channel_state").fetchall()
        out: dict[str, str] = {}
        for key, fp in rows:
            if self._prefix and key.startswith(self._prefix):
                out[key[len(self._prefix) :]] = fp
            elif not self._prefix and "\x1f" not in key:  # unscoped: the unscoped entries
                out[key] = fp
        return out

    def sync_channels(self, fingerprints: Mapping[str, str]) -> None:
        """Re-enable a disabled channel whose target (URL, key) has changed since the 410, and
        put its rows the 410 switched off back in the queue: a process still on the old URL
        answered 410 and switched off the rows queued for the new one too (they go to the
        target of the process that delivers them)."""
        for name, fp in self.disabled_channels().items():
            if name in fingerprints and fingerprints[name] != fp:
                log.info("alert channel %s has a new target: enabled again", name)
                self.enable_channel(name)
                now = self.clock()
                mine, margs = self._mine("monitor")
                with self._tx() as db:
                    db.execute(
                        "UPDATE outbox SET status='pending', next_attempt_at=?, updated_at=?"
                        f" WHERE channel=? AND status='disabled'{mine}",
                        (now, now, name, *margs),
                    )

    # -- reading -----------------------------------------------------------------------------
    def undelivered_firings(self, dedup_key: str) -> set[str]:
        """Channels whose every firing event of the open incident ``dedup_key`` (its firing and
        repeats since the channel's open record) went dead: none was delivered, none is still
        pending. Their resolve would announce an alert nobody was shown."""
        with self._lock:
            cur = self._db.execute(
                "SELECT o.channel FROM outbox o JOIN open_alerts a ON a.dedup_key = o.dedup_key AND a.channel = o.channel"
                " WHERE o.dedup_key = ? AND o.kind = 'firing' AND o.created_at >= a.since"
                " GROUP BY o.channel HAVING count(*) > 0 AND sum(o.status = 'dead') = count(*)",
                (dedup_key,),
            )
            return {str(c) for (c,) in cur.fetchall()}

    def rows(
        self,
        *,
        status: str | None = None,
        channel: str | None = None,
        event_id: str | None = None,
        monitor: str | None = None,
    ) -> list[OutboxRow]:
        sql, args = f"SELECT {_COLS} FROM outbox WHERE 1=1", []
        for col, val in (("status", status), ("channel", channel), ("id", event_id), ("monitor", monitor)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        with self._lock:
            return [self._row(r) for r in self._db.execute(sql + " ORDER BY seq", args).fetchall()]

    def get(self, event_id: str, channel: str) -> OutboxRow | None:
        rows = self.rows(event_id=event_id, channel=channel)
        return rows[0] if rows else None

    def pending(self) -> list[OutboxRow]:
        """Rows still waiting for delivery (this scope's)."""
        return self.rows(status="pending", monitor=self.scope)

    # -- delivery ----------------------------------------------------------------------------
    _QUEUE = (
        "o.status = 'pending' AND o.channel IN ({names}){mine}"
        " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.channel = o.channel AND p.dedup_key = o.dedup_key"
        "                 AND p.status = 'pending' AND p.seq < o.seq)"
        " AND NOT EXISTS (SELECT 1 FROM channel_state c WHERE c.name = ? || o.channel)"
    )

    def _queue(self, names: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """The claimable-row condition for ``names`` and its arguments, in order."""
        mine, margs = self._mine()
        return self._QUEUE.format(names=",".join("?" * len(names)), mine=mine), (*names, *margs, self._prefix)

    def claim(
        self,
        channels: Iterable[str],
        *,
        lease_seconds: float | None = None,
        prefer_ids: Iterable[str] = (),
        tried_channels: Iterable[str] = (),
    ) -> OutboxRow | None:
        """Take the next due row of ``channels`` under a lease (counts as an attempt).

        Order: rows of the events ``prefer_ids`` names (and the older rows queued ahead of
        them on the same channel and dedup key, which must go first) before any other row;
        then rows of channels not in ``tried_channels``; then the longest-due row first."""
        names = list(channels)
        if not names:
            return None
        now = self.clock()
        lease = self.lease_seconds if lease_seconds is None else lease_seconds
        where, wargs = self._queue(names)
        ids, tried = sorted(set(prefer_ids)), sorted(set(tried_channels))
        order = []
        if ids:
            order.append(
                "EXISTS (SELECT 1 FROM outbox q WHERE q.channel = o.channel AND q.dedup_key = o.dedup_key"
                f" AND q.status = 'pending' AND q.id IN ({','.join('?' * len(ids))})) DESC"
            )
        if tried:
            order.append(f"o.channel IN ({','.join('?' * len(tried))}) ASC")
        with self._tx() as db:
            r = db.execute(
                f"SELECT {', '.join('o.' + c.strip() for c in _COLS.split(','))} FROM outbox o WHERE {where}"
                " AND o.next_attempt_at <= ? AND (o.lease_until IS NULL OR o.lease_until <= ?)"
                f" ORDER BY {', '.join([*order, 'o.next_attempt_at', 'o.seq'])} LIMIT 1",
                (*wargs, now, now, *ids, *tried),
            ).fetchone()
            if r is None:
                return None
            row = self._row(r)
            db.execute(
                "UPDATE outbox SET lease_owner=?, lease_until=?, attempts=attempts+1, updated_at=? WHERE seq=?",
                (self.owner, now + lease, now, row.seq),
            )
        return OutboxRow(**{**row.__dict__, "attempts": row.attempts + 1, "lease_until": now + lease})

    def next_due(self, channels: Iterable[str]) -> float | None:
        """When the next row of ``channels`` becomes claimable (None: nothing pending)."""
        names = list(channels)
        if not names:
            return None
        where, wargs = self._queue(names)
        with self._lock:
            (t,) = self._db.execute(
                f"SELECT min(max(o.next_attempt_at, coalesce(o.lease_until, 0))) FROM outbox o WHERE {where}", wargs
            ).fetchone()
        return t

    def waiting_channels(self, channels: Iterable[str], *, before: float) -> set[str]:
        """Channels of ``channels`` with a row that becomes claimable before ``before`` (clock time)."""
        names = list(channels)
        if not names:
            return set()
        where, wargs = self._queue(names)
        with self._lock:
            cur = self._db.execute(
                f"SELECT DISTINCT o.channel FROM outbox o WHERE {where}"
                " AND max(o.next_attempt_at, coalesce(o.lease_until, 0)) < ?",
                (*wargs, before),
            )
            return {c for (c,) in cur.fetchall()}

    def release_leases(self) -> int:
        """Give up this process's leases (on shutdown, when a delivery attempt is abandoned): the
        rows become claimable by another process at once instead of when the lease runs out.
        Delivery stays at least once: an abandoned attempt may have reached the receiver, and
        the retry carries the same idempotency key."""
        with self._tx() as db:
            return db.execute(
                "UPDATE outbox SET lease_owner=NULL, lease_until=NULL WHERE lease_owner=?", (self.owner,)
            ).rowcount

    def has_pending(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM outbox WHERE status = 'pending' LIMIT 1").fetchone() is not None

    def complete(self, row: OutboxRow, result: DeliveryResult, *, fingerprint: str = "") -> DeliveryResult:
        """Record the outcome of one attempt and schedule the next one; returns the row's new state."""
        now = self.clock()
        pol = self.retry
        error = None if result.error is None else redact_text(result.error)[:1000]
        status, next_at, retry_after = result.status, row.next_attempt_at, result.retry_after
        if status == "delivered":
            new = "delivered"
        elif status == "gone":
            new = "disabled"
        elif status == "retry":
            if row.attempts >= pol.max_attempts or now - row.created_at >= pol.max_age_seconds:
                new = "dead"
                error = f"gave up after {row.attempts} attempt(s): {error}"
            else:
                new = "pending"
                delay = pol.backoff(row.attempts, self._rng)
                if retry_after is not None:
                    # Retry-After only ever lengthens the wait: "0" or a date in the past from
                    # a receiver under load must not turn the retry loop into a tight loop
                    # (it sent ~1,000 requests in 2 s and gave the alert up, before 2026-12-06)
                    delay = min(max(retry_after, delay, pol.base_seconds), pol.max_retry_after_seconds)
                next_at = now + delay
        else:  # failed, or anything a custom channel made up
            new = "dead"
        with self._tx() as db:
            # only while this process still holds the lease: an attempt that outlived it (DNS, a
            # trickling answer) must not overwrite what the process that took the row over
            # recorded - e.g. turn its "delivered" back into "pending", which re-sends the alert
            cur = db.execute(
                "UPDATE outbox SET status=?, next_attempt_at=?, lease_owner=NULL, lease_until=NULL, updated_at=?,"
                " delivered_at=?, last_http_status=?, last_error=? WHERE seq=? AND lease_owner IS ?",
                (
                    new,
                    next_at,
                    now,
                    now if new == "delivered" else None,
                    result.http_status,
                    error,
                    row.seq,
                    self.owner,
                ),
            )
            lost = cur.rowcount == 0
            if not lost and new == "pending" and retry_after is not None:
                # Retry-After speaks for the endpoint (Slack webhooks and PagerDuty keys are rate
                # limited per endpoint): the channel's other rows wait too, spread over up to a
                # tenth of the wait so they do not all come back in one burst. Only this row
                # waited before, and the rest of the backlog went on hitting the 429.
                mine, margs = self._mine("monitor")
                spread = max(next_at - now, 0.0) / 10.0
                db.execute(
                    "UPDATE outbox SET next_attempt_at = max(next_attempt_at, ? + ? * ((seq * 7919) % 1000) / 1000.0)"
                    f" WHERE channel = ? AND status = 'pending' AND seq != ? AND lease_owner IS NULL{mine}",
                    (next_at, spread, row.channel, row.seq, *margs),
                )
        if lost:
            current = self.get(row.id, row.channel)
            log.warning(
                "alert %s to channel %s: the lease ran out during the attempt (%s); another process took the row over",
                row.id,
                row.channel,
                status,
            )
            return current.result() if current is not None else dataclasses.replace(result, status=new)
        if new == "disabled":
            log.error("alert channel %s answered 410 Gone: disabled (later processes skip it too)", row.channel)
            self.disable_channel(row.channel, fingerprint, error or "410 Gone")
        elif new == "dead":
            log.error("alert %s to channel %s not delivered, giving up: %s", row.id, row.channel, error)
        return DeliveryResult(
            channel=row.channel,
            event_id=row.id,
            status=new,
            http_status=result.http_status,
            attempts=row.attempts,
            error=error,
            retry_after=retry_after,
            next_attempt_at=next_at if new == "pending" else None,
            dedup_key=row.dedup_key,
        )

    def expire(self) -> int:
        """Mark pending rows older than ``max_age_seconds`` dead (nobody delivered them in time)."""
        now = self.clock()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE outbox SET status='dead', updated_at=?, last_error=coalesce(last_error || ' ', '') ||"
                " '(expired: not delivered within max_age)' WHERE status='pending' AND created_at < ?"
                " AND (lease_until IS NULL OR lease_until <= ?)",
                (now, now - self.retry.max_age_seconds, now),
            )
            return cur.rowcount

    def prune(self, keep_seconds: float = 30 * 86400.0) -> int:
        """Delete finished rows (delivered, dead, disabled, muted) older than ``keep_seconds``."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM outbox WHERE status != 'pending' AND updated_at < ?", (self.clock() - keep_seconds,)
            )
            return cur.rowcount

    def deliver(
        self,
        channels: Mapping[str, Channel],
        *,
        budget_seconds: float,
        first: Iterable[tuple[str, str]] = (),
    ) -> list[DeliveryResult]:
        """Deliver due rows of ``channels`` until nothing is due within the budget; returns the
        state of each row attempted in this call after its last attempt.

        Waits for a backoff / ``Retry-After`` only when it ends inside the budget; never
        starts an attempt after the budget is spent. ``first``: (event id, channel) keys of the
        rows to deliver before any older pending row (a check's own alerts). Rows of channels
        not in ``channels`` are left for a process that has them.

        Sharing the budget: rows go out one at a time, so one attempt allowed to wait for all
        that is left (a hanging receiver with a long timeout) would leave nothing for the
        other channels. Two rules prevent that: a channel that has not had an attempt in
        this call yet goes before a second attempt of any channel (:meth:`claim`), and an
        attempt's timeout is at most ``remaining / (1 + other channels still waiting for
        their first attempt)`` - the budget is split between channels, not rows, so ten old
        rows of one channel do not shrink another channel's share - but not less than
        ``MIN_ATTEMPT_SECONDS`` (an answer from a healthy remote receiver must fit), nor more
        than what is left. Once every waiting channel had its turn, an attempt may use all
        that is left (retries, further rows).
        """
        deadline = time.monotonic() + max(0.0, float(budget_seconds))
        results: dict[tuple[str, str], DeliveryResult] = {}
        names = list(channels)
        if not names or not self.has_pending():
            return []
        self.expire()
        first_ids = {eid for eid, _ in first}
        tried: set[str] = set()
        ch_timeout = max((float(getattr(c, "timeout", 5.0)) for c in channels.values()), default=5.0)
        lease = max(self.lease_seconds, 2 * ch_timeout + 5)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            row = self.claim(names, lease_seconds=lease, prefer_ids=first_ids, tried_channels=tried)
            if row is None:
                due = self.next_due(names)
                if due is None:
                    break
                wait = due - self.clock()
                if wait >= remaining - 0.05:
                    break
                self._sleep(min(max(wait, 0.01), remaining))
                continue
            others = self.waiting_channels(names, before=self.clock() + remaining) - tried - {row.channel}
            timeout = min(remaining, max(MIN_ATTEMPT_SECONDS, remaining / (1 + len(others))))
            tried.add(row.channel)
            channel = channels[row.channel]
            try:
                event = row.event()
            except Exception as exc:  # a corrupt row must not block the queue
                raw = DeliveryResult(row.channel, row.id, "failed", error=f"unreadable outbox row: {exc}")
            else:
                try:
                    raw = channel.send(event, timeout=max(0.05, min(timeout, deadline - time.monotonic())))
                except Exception as exc:  # a custom channel that raises
                    scrub = getattr(channel, "redact", redact_text)
                    raw = DeliveryResult(row.channel, row.id, "retry", error=scrub(f"{type(exc).__name__}: {exc}"))
            results[(row.id, row.channel)] = self.complete(
                row, raw, fingerprint=str(getattr(channel, "fingerprint", ""))
            )
        return list(results.values())
