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
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..types import Observation, Reference, Report

__all__ = ["EmitContext", "Sink", "Spool"]

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


class Spool:
    """Directory of reports a sink could not take yet."""

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
        try:
            return self._write(d, report)
        except OSError as exc:
            self._memory.setdefault(d.name, []).append(report)
            why = exc.strerror or type(exc).__name__
            log.warning("spool %s cannot be written (%s): report kept in memory until this process exits", d, why)
            raise OSError(
                exc.errno, f"spool {d} cannot be written ({why}); report kept in memory until this process exits"
            ) from None

    @staticmethod
    def _write(d: Path, report: Report) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{report.generation:06d}-{uuid.uuid4().hex[:8]}.json"
        data = json.dumps(report.to_dict())
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, d / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return d / name

    def pending(self, sink_key: str) -> list[Path]:
        """Spooled files of ``sink_key``, oldest first (reports held in memory not included)."""
        try:
            return sorted(p for p in self._dir(sink_key).iterdir() if p.suffix == ".json")
        except OSError:  # missing, not a directory, unreadable
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

    def replay(self, sink: Sink, *, sink_key: str | None = None, limit: int | None = None) -> tuple[int, list[str]]:
        """Re-emit spooled reports to ``sink`` oldest first; stop at the first failure.

        Returns (number delivered, errors)."""
        key = sink_key or getattr(sink, "spool_key", None) or sink.name
        done = 0
        errors: list[str] = []
        for path in self.pending(key)[: limit or None]:
            try:
                report = Report.from_dict(json.loads(path.read_text()))
            except Exception as exc:  # unreadable file: move aside, never loop on it
                log.warning("moving unreadable spool file %s aside (%s)", path.name, type(exc).__name__)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            try:
                sink.emit(report, None)
            except Exception as exc:
                errors.append(f"{sink.name}: replay failed: {type(exc).__name__}: {exc}")
                return done, errors
            with contextlib.suppress(OSError):
                path.unlink()
            done += 1
        held = self._memory.get(self._dir(key).name, [])
        while held and (limit is None or done < limit):
            try:
                sink.emit(held[0], None)
            except Exception as exc:
                errors.append(f"{sink.name}: replay failed: {type(exc).__name__}: {exc}")
                break
            held.pop(0)
            done += 1
        return done, errors
