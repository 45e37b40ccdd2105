"""Reference-side cache: computed once per Reference (keyed by its fingerprint and the
parameters), kept in memory and on disk as ``.npz`` (no pickle: nothing executable is ever
loaded from the cache directory).

A cacheable state is any object with ``to_arrays() -> dict[str, np.ndarray]`` and a
classmethod ``from_arrays(arrays) -> state``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

__all__ = ["Cacheable", "ReferenceCache", "default_cache"]

log = logging.getLogger("collapse_monitor.cache")


class Cacheable(Protocol):
    def to_arrays(self) -> dict[str, np.ndarray]: ...

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Any: ...


T = TypeVar("T")


def _params_hash(params: Mapping[str, Any]) -> str:
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


class ReferenceCache:
    """In-memory LRU plus an optional directory of ``.npz`` files.

    >>> cache = ReferenceCache(directory=None)
    >>> class S:
    ...     def __init__(self, a): self.a = a
    ...     def to_arrays(self): return {"a": self.a}
    ...     @classmethod
    ...     def from_arrays(cls, d): return cls(d["a"])
    >>> s = cache.get("fp", "demo", {"k": 5}, S, lambda: S(np.arange(3)))
    >>> cache.get("fp", "demo", {"k": 5}, S, lambda: 1 / 0).a.tolist()
    [0, 1, 2]
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, max_items: int = 32) -> None:
        self.directory = None if directory is None else Path(directory)
        self.max_items = max_items
        self._mem: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0

    def _key(self, fingerprint: str, name: str, params: Mapping[str, Any]) -> str:
        return f"{fingerprint}-{name}-{_params_hash(params)}"

    def get(
        self,
        fingerprint: str,
        name: str,
        params: Mapping[str, Any],
        cls: type[T],
        build: Callable[[], T],
    ) -> T:
        key = self._key(fingerprint, name, params)
        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                self.hits += 1
                return self._mem[key]
        state = self._load(key, cls)
        if state is None:
            self.misses += 1
            state = build()
            self._store(key, state)
        else:
            self.hits += 1
        with self._lock:
            self._mem[key] = state
            while len(self._mem) > self.max_items:
                self._mem.popitem(last=False)
        return state

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.npz"

    def _load(self, key: str, cls: type[T]) -> T | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            return cls.from_arrays(arrays)  # type: ignore[attr-defined]
        except Exception as exc:  # corrupt or stale file: rebuild
            log.warning("ignoring unreadable reference cache %s (%s)", path.name, type(exc).__name__)
            return None

    def _store(self, key: str, state: Any) -> None:
        path = self._path(key)
        if path is None:
            return
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            arrays = state.to_arrays()
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except Exception as exc:  # a full or read-only disk must not break a check
            log.warning("could not write reference cache %s (%s: %s)", path, type(exc).__name__, exc)
            if tmp is not None:  # a partial file left by every failed write filled the disk further
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()


_default: ReferenceCache | None = None


def default_cache() -> ReferenceCache:
    """Process-wide in-memory cache (no disk) used when a caller passes none."""
    global _default
    if _default is None:
        _default = ReferenceCache(None)
    return _default
