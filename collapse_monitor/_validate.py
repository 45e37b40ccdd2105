"""Input validation shared by Reference and Observation. Everything raises InputError(field, ...)."""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError

_TOKEN_CHARS_LIMIT = 10_000_000


def tensor_to_numpy(x: Any, field: str | None = None) -> Any:
    """A torch tensor (detected without importing torch) as a numpy array on the CPU; dtypes
    numpy has no type for (bfloat16, the float8 types) go through float32 first, exactly. Other
    objects are returned as they are."""
    if not (hasattr(x, "detach") and hasattr(x, "cpu")):
        return x
    if getattr(getattr(x, "device", None), "type", None) == "meta":
        # the caller names the field (as_embeddings / as_labels): a bare NotImplementedError before
        raise InputError(field or "tensor", "is on the meta device (a shape without data): materialise it first")
    t = x.detach().cpu()
    try:
        return t.numpy()
    except TypeError:  # "Got unsupported ScalarType BFloat16"
        return t.float().numpy()


def as_embeddings(x: Any, field: str, *, width: int | None = None) -> np.ndarray:
    """A finite, 2-D float32 C-contiguous read-only array with at least one row."""
    if x is None:
        raise InputError(field, "expected a 2-D array of shape (n, d), got None")
    x = tensor_to_numpy(x, field)
    if hasattr(x, "to_numpy") and hasattr(x, "dtypes"):
        # a pandas DataFrame, nullable dtypes (Float64, Int64) included: as floats, <NA> as NaN
        # (refused below, naming the field); np.asarray gave dtype object and a refusal
        with contextlib.suppress(TypeError, ValueError):  # not numeric: the dtype check says so
            x = x.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists etc.
        raise InputError(field, f"could not be read as a numeric array ({type(exc).__name__})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(field, f"expected a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(field, "expected real numbers, got complex values")
    if arr.ndim != 2:
        raise InputError(field, f"expected a 2-D array of shape (n, d), got shape {arr.shape}")
    n, d = arr.shape
    if n == 0:
        raise InputError(field, "is empty: expected at least one row")
    if d == 0:
        raise InputError(field, "has zero columns: expected d >= 1")
    if width is not None and d != width:
        raise InputError(field, f"expected width d={width} (the reference's), got d={d}")
    # in row blocks of about 4 M values: the float32 result plus one block's float64 copy, where
    # whole-array float64 copies took 4-5x the input's memory (3.5 GB for 50k x 4096 float32;
    # a memmap was read entirely into memory as float64)
    out = np.empty((n, d), dtype=np.float32)
    rows = max(1, (1 << 22) // d)
    bad = 0
    big = False
    for a in range(0, n, rows):
        block = np.asarray(arr[a : a + rows], dtype=np.float64)
        finite = np.isfinite(block)
        if not finite.all():
            bad += int(block.size - np.count_nonzero(finite))
            continue
        if bad:  # an error is coming: only its count is needed
            continue
        big = big or bool(np.abs(block).max(initial=0.0) > 1e15)
        out[a : a + rows] = block
    if bad:
        raise InputError(field, f"contains {bad} NaN or infinite value(s); clean or drop those rows")
    if big:
        raise InputError(field, "contains values above 1e15 in magnitude; normalise the embeddings")
    out.setflags(write=False)
    return out


#: rows closer than this to the first row in every value: a reference's geometry is lost in float32
MIN_SPREAD = 1e-6


def check_spread(x: np.ndarray, field: str) -> None:
    """InputError unless the rows of the 2-D ``x`` differ measurably: a reference whose rows are
    all the same (a constant, or an already collapsed sample) has no neighbourhoods, tail,
    clusters or diversity to compare against, and one whose values all lie within
    :data:`MIN_SPREAD` of its first row's loses them in float32 (squared distances underflow:
    coverage 0 for an observation equal to the reference; the variance floor dominates:
    variance_ratio 0.08). One pass over every row, in float64 blocks of about 4 M values (the
    rows that differ may come last; no full float64 copy)."""
    n, d = x.shape
    rows = max(1, (1 << 22) // max(d, 1))
    first = np.asarray(x[0], dtype=np.float64)
    spread = 0.0
    for a in range(0, n, rows):
        spread = max(spread, float(np.abs(np.asarray(x[a : a + rows], dtype=np.float64) - first).max(initial=0.0)))
    if spread == 0.0:
        raise InputError(
            field,
            f"all {n} rows are identical: a reference needs spread (pass the human-origin "
            "embeddings, not a constant or an already collapsed sample)",
        )
    if spread < MIN_SPREAD:
        raise InputError(
            field,
            f"has all its values within {spread:.1e} of the first row's, too small to measure in float32 "
            "(distances underflow): standardise the embeddings (or multiply them by a constant) before passing them",
        )


def _label_key(v: Any, field: str, index: int | None = None) -> Hashable:
    at = "" if index is None else f" (item {index})"  # where, in a list of thousands
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        raise InputError(field, f"contains a NaN or infinite label{at}")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, (str, int, bool)):
        raise InputError(field, f"labels must be str or int, got {type(v).__name__}{at}")
    return v


def as_labels(x: Any, field: str, *, length: int | None = None) -> np.ndarray:
    """A 1-D object array of str/int labels (numbers that are whole become int)."""
    if x is None:
        raise InputError(field, "expected a 1-D sequence of labels, got None")
    x = tensor_to_numpy(x, field)
    if isinstance(x, (str, bytes)):
        raise InputError(field, "expected a sequence of labels, got a single string")
    try:
        # a list as objects: numpy turned one mixing ints past 2**63 (64-bit hashes) with small
        # ones into float64, merging labels and changing their values
        arr = np.array(x, dtype=object) if isinstance(x, (list, tuple)) else np.asarray(x)
    except Exception:
        raise InputError(field, "could not be read as a 1-D sequence of labels") from None
    if arr.ndim == 2 and 1 in arr.shape:
        raise InputError(field, f"expected a 1-D sequence of labels, got shape {arr.shape}: pass x.ravel() (a column)")
    if arr.ndim != 1:
        raise InputError(field, f"expected a 1-D sequence of labels, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(field, "is empty: expected at least one label")
    if length is not None and arr.size != length:
        raise InputError(
            field,
            f"has {arr.size} entries but reference.labels has {length}: predictions must align with the probe set",
        )
    out = np.empty(arr.size, dtype=object)
    kinds: set[type] = set()
    for i, v in enumerate(arr.tolist()):
        key = _label_key(v, field, i)
        kinds.add(str if isinstance(key, str) else int)
        out[i] = key
    if len(kinds) > 1:
        # mixed str/int labels: compare by string form, as metric keys do
        out = np.array([str(v) for v in out], dtype=object)
    out.setflags(write=False)
    return out


def as_texts(x: Any, field: str) -> tuple[str, ...]:
    if x is None:
        raise InputError(field, "expected a list of strings, got None")
    if isinstance(x, str):
        raise InputError(field, "expected a list of strings, got a single string (wrap it in a list)")
    if isinstance(x, (Mapping, bytes, bytearray)):  # iterating a dict gives its keys, silently
        raise InputError(field, f"expected a list of strings, got {type(x).__name__}")
    if isinstance(x, (set, frozenset)):  # its order changes with every process's hash seed, and
        # with it the reference fingerprint: every new process lost the paired tests
        raise InputError(field, f"expected an ordered list of strings, got a {type(x).__name__} (sort it)")
    if not isinstance(x, Sequence) and not hasattr(x, "__iter__"):
        raise InputError(field, f"expected a list of strings, got {type(x).__name__}")
    out = []
    total = 0
    for i, t in enumerate(x):
        if not isinstance(t, str):
            raise InputError(field, f"item {i} is {type(t).__name__}, expected str")
        total += len(t)
        out.append(t)
    if not out:
        raise InputError(field, "is empty: expected at least one text")
    if total > _TOKEN_CHARS_LIMIT * 10:
        raise InputError(field, f"holds {total} characters; subsample to at most {_TOKEN_CHARS_LIMIT * 10}")
    return tuple(out)


def as_probability(x: Any, field: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InputError(field, f"expected a number in [0, 1], got {type(x).__name__}") from None
    if not np.isfinite(v) or not 0.0 <= v <= 1.0:
        raise InputError(field, f"expected a number in [0, 1], got {v!r}")
    return v
