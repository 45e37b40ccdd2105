"""The sink Protocol and the durable spool.

A sink consumes a finished, frozen Report (``emit(report, context)``); it never computes.
When a sink fails, the monitor records the error in ``report.errors`` and writes the report to
the spool (one JSON file per report and sink, written atomically); the next check - or
``collapse-monitor serve`` - replays the spool, oldest first, and deletes each file once the
sink accepted it.

A spool directory that cannot be written (read-only, not a directory, disk full) loses nothing
this process still holds: the report is kept in memory, replayed by the next check or
``flush()`` of the same process, and ``put`` raises ``OSError`` saying so (the monitor records
it in ``report.errors``). Only a process that exits before the sink comes back loses it - its
history entry stays in ``history.db``.

A report the sink rejects *for good* (it raised an exception with ``permanent = True``, such as
:class:`PermanentSinkError`) does not block the reports behind it: the replay moves it to a dead
letter (``<spool file>.dead``: the report and the redacted reason) and goes on; see
:meth:`Spool.replay` for where the line between permanent and transient is drawn.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .._redact import redact_text
from ..errors import SinkError
from ..types import Observation, Reference, Report

__all__ = ["EmitContext", "PermanentSinkError", "Sink", "Spool", "is_permanent"]

log = logging.getLogger("collapse_monitor.sinks")


@dataclass(frozen=True)
class EmitContext:
    """What a sink may use besides the report: the raw inputs (for artifacts such as the
    Evidently drift report) and the monitor's history (for history plots). ``None`` fields
    mean a replay from the spool, where only the report survives."""

    reference: Reference | None = None
    observation: Observation | None = None
    history: Sequence[Report] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Sink(Protocol):
    """Where reports go. ``name`` identifies the sink in errors and in the spool."""

    name: str

    def emit(self, report: Report, context: EmitContext | None = None) -> Mapping[str, Any] | None:
        """Deliver ``report``; may return facts for the report (e.g. ``{"run_id": ...}``)."""
        ...


class PermanentSinkError(SinkError):
    """A sink rejected this one report for good: sending the same report again can only fail
    the same way (e.g. MLflow answered ``400 INVALID_PARAMETER_VALUE`` to it). The spool moves
    such a report to a dead letter instead of retrying it (:meth:`Spool.replay`)."""

    permanent = True


def is_permanent(exc: BaseException) -> bool:
    """Did the sink declare ``exc`` a permanent rejection of the report (``exc.permanent is
    True``; :class:`PermanentSinkError` or any exception of a third-party sink that sets it)?

    >>> is_permanent(PermanentSinkError("rejected")), is_permanent(SinkError("connection refused"))
    (True, False)
    """
    return getattr(exc, "permanent", False) is True


def _stem(report: Report) -> str:
    """A spool file's name without suffix: time first (files sort oldest first), then generation."""
    return f"{time.time_ns():020d}-{report.generation:06d}-{uuid.uuid4().hex[:8]}"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Spool:
    """Directory of reports a sink could not take yet (``<sink key>/*.json``), and of the
    reports it rejected for good (``<sink key>/*.dead``, see :meth:`replay`)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._memory: dict[str, list[Report]] = {}  # reports the directory could not take

    def _dir(self, sink_key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sink_key)
        return self.directory / safe

    def put(self, sink_key: str, report: Report) -> Path:
        """Write ``report`` for ``sink_key`` atomically. When the directory cannot take it the
        report is kept in memory for this process and ``OSError`` is raised (errno kept)."""
        d = self._dir(sink_key)
        failure: OSError | None = None
        try:
            return self._write(d, report)
        except OSError as exc:
            self._memory.setdefault(d.name, []).append(report)
            why = exc.strerror or type(exc).__name__
            log.warning("spool %s cannot be written (%s): report kept in memory until this process exits", d, why)
            failure = OSError(
                exc.errno, f"spool {d} cannot be written ({why}); report kept in memory until this process exits"
            )
        raise failure  # outside the except block: no __context__ chained to it

    def bury(self, sink_key: str, sink_name: str, report: Report, reason: str) -> str:
        """Write ``report`` straight to a dead letter of ``sink_key`` (a live emit the sink
        rejected for good: spooling it would only cost one more failing replay); returns the
        error text for the report."""
        return self._bury(sink_name, self._dir(sink_key), _stem(report), report.to_dict(), report, reason)

    @staticmethod
    def _write(d: Path, report: Report) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{_stem(report)}.json"
        _atomic_write(path, json.dumps(report.to_dict()))
        return path

    def pending(self, sink_key: str) -> list[Path]:
        """Spooled files of ``sink_key``, oldest first (reports held in memory not included)."""
        try:
            return sorted(p for p in self._dir(sink_key).iterdir() if p.suffix == ".json")
        except OSError:  # missing, not a directory, unreadable
            return []

    def dead_letters(self, sink_key: str) -> list[Path]:
        """Reports ``sink_key`` rejected for good, oldest first: ``*.dead`` JSON files holding
        ``{"sink", "reason", "dead_lettered_at", "report"}``. Nothing replays them; to send one
        again (e.g. after upgrading the sink), write its ``report`` back as a ``.json`` file."""
        try:
            return sorted(p for p in self._dir(sink_key).iterdir() if p.suffix == ".dead")
        except OSError:
            return []

    def in_memory(self, sink_key: str) -> list[Report]:
        """Reports of ``sink_key`` the directory could not take (this process only)."""
        return list(self._memory.get(self._dir(sink_key).name, ()))

    def count(self, sink_key: str | None = None) -> int:
        """Reports waiting (files and reports held in memory)."""
        if sink_key is not None:
            return len(self.pending(sink_key)) + len(self.in_memory(sink_key))
        held = sum(len(v) for v in self._memory.values())
        try:
            dirs = [p.name for p in self.directory.iterdir() if p.is_dir()]
        except OSError:
            return held
        return held + sum(len(self.pending(name)) for name in dirs)

    def replay(
        self,
        sink: Sink,
        *,
        sink_key: str | None = None,
        limit: int | None = None,
        context_for: Callable[[Report], EmitContext | None] | None = None,
        deadline: float | None = None,
    ) -> tuple[int, list[str]]:
        """Re-emit spooled reports to ``sink``, oldest first. Returns (number delivered, errors).
        ``context_for(report)``: the context a replayed report goes with (stored state only, such
        as the baseline; ``None`` by default: a replay has no raw data). ``deadline`` (a
        ``time.monotonic()`` value): no report is started after it (the first one always is), the
        rest stay queued in order: a check's replay of a long backlog into a slow server is
        bounded (an audit measured 50 s for 5 reports at 1 s a request).

        What a failure does depends on whether it is transient or permanent:

        * **Transient** (the default for any exception: connection refused, timeouts, 5xx, 429,
          401/403 - a credential or a server can be fixed -, a proxy's answer): the replay
          **stops** at that report and everything behind it stays queued, in order. Order matters
          (Prometheus must not show an older check over a newer one; MLflow runs and the paired
          history follow generations), and the next report would most likely fail the same way
          and cost another timeout.
        * **Permanent** (the sink raised an exception with ``permanent = True``, see
          :func:`is_permanent`; the MLflow sink does so when MLflow itself refused the report's
          content, ``INVALID_PARAMETER_VALUE`` / ``BAD_REQUEST``): retrying that one report can
          only fail again, and stopping there would block every later report of the sink
          forever (head-of-line blocking). The report is moved to a dead letter
          (``<spool file>.dead``: the report, the sink and the redacted reason; see
          :meth:`dead_letters`), a warning is logged, the reason is returned among the errors,
          and the replay **goes on** with the next report. A report held in memory (unwritable
          spool) that is rejected for good is written as a dead letter when the directory
          allows it, else only logged, and dropped.

        A spool file that cannot be read is moved aside as ``.bad`` (never retried either), and
        that is among the returned errors (the check's ``report.errors``), not only in the log.
        """
        key = sink_key or getattr(sink, "spool_key", None) or sink.name
        done = 0
        errors: list[str] = []
        tried = 0

        def out_of_time() -> bool:
            return deadline is not None and tried > 0 and time.monotonic() >= deadline

        for path in self.pending(key)[: limit or None]:
            if out_of_time():
                return done, errors
            tried += 1
            try:
                data = json.loads(path.read_text())
                report = Report.from_dict(data)
            except Exception as exc:  # unreadable file: move aside, never loop on it, and say so
                msg = (
                    f"{sink.name}: spooled report {path.name} is unreadable ({type(exc).__name__}): moved aside as "
                    f"{path.with_suffix('.bad').name}, not delivered; the check is still in the monitor's history"
                )
                log.warning("%s", msg)
                errors.append(msg)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            try:
                sink.emit(report, None if context_for is None else context_for(report))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # a sink's CancelledError too: the report waits
                reason = redact_text(f"{type(exc).__name__}: {exc}")
                if not is_permanent(exc):
                    errors.append(f"{sink.name}: replay failed: {reason}")
                    return done, errors
                errors.append(self._bury(sink.name, path.parent, path.stem, data, report, reason, spooled=path))
                continue
            with contextlib.suppress(OSError):
                path.unlink()
            done += 1
        held = self._memory.get(self._dir(key).name, [])
        while held and (limit is None or done < limit) and not out_of_time():
            tried += 1
            try:
                sink.emit(held[0], None)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # a sink's CancelledError too: the report waits
                reason = redact_text(f"{type(exc).__name__}: {exc}")
                if not is_permanent(exc):
                    errors.append(f"{sink.name}: replay failed: {reason}")
                    break
                report = held.pop(0)
                errors.append(self._bury(sink.name, self._dir(key), _stem(report), report.to_dict(), report, reason))
                continue
            held.pop(0)
            done += 1
        return done, errors

    @staticmethod
    def _bury(
        sink_name: str,
        d: Path,
        stem: str,
        data: Mapping[str, Any],
        report: Report,
        reason: str,
        *,
        spooled: Path | None = None,
    ) -> str:
        """Write the dead letter ``d/<stem>.dead`` and remove ``spooled``; returns the error text."""
        what = f"{sink_name}: generation {report.generation} of {report.monitor!r} rejected for good"
        letter = d / f"{stem}.dead"
        envelope = {"sink": sink_name, "reason": reason, "dead_lettered_at": time.time(), "report": data}
        try:
            d.mkdir(parents=True, exist_ok=True)
            _atomic_write(letter, json.dumps(envelope))
        except OSError as exc:
            if spooled is None:  # held in memory: nowhere to keep it
                log.warning("%s (%s); dead letter not writable (%s): report dropped", what, reason, exc.strerror)
                return f"{what}, dropped (dead letter not writable): {reason}"
            log.warning("%s (%s); dead letter not writable (%s): left in the spool", what, reason, exc.strerror)
            return f"{what}, left in the spool (dead letter not writable): {reason}"
        if spooled is not None:
            with contextlib.suppress(OSError):
                spooled.unlink()
        log.warning("%s, moved to dead letter %s: %s", what, letter, reason)
        return f"{what}, moved to dead letter {letter.name}: {reason}"
