"""Checks under ``torch.distributed``: every rank evaluates a shard, rank 0 checks.

::

    sampler = DistributedSampler(probe_set, shuffle=False)      # pads with repeats: fine
    idx = list(sampler)                                         # this rank's probe indices
    preds = model(X_probe[idx]).argmax(1)
    emb = embed(model.sample(n_samples // world_size))          # this rank's share of samples
    res = distributed_check(mon, probe_indices=idx, predictions=preds, embeddings=emb)
    if res.stage is not cm.Stage.HEALTHY: ...                   # every rank knows the stage

Each rank validates its own inputs; the metadata (the reference's fingerprint, errors, shard
sizes, probe predictions with their indices, texts) goes around with ``all_gather_object``, an
exchange every rank makes on every call. Which collectives follow is decided from that gathered
metadata only, never from one rank's own state, so all ranks enter the same ones. Embeddings
are padded to the largest shard and gathered with ``all_gather`` (row counts exchanged first).
Per-class confusion counts are ``all_reduce``-d and compared with the gathered items, a cheap
check that nothing was lost on the way. Then group rank 0 alone builds the Observation and runs
``monitor.check`` (so only rank 0 logs to MLflow / Prometheus and pages), and by default
broadcasts the stage and generation so every rank can act on it (stop the chain, skip a
promotion).

Equal to the single-process check: probe predictions are placed by their probe index (so any
sharding, DistributedSampler's interleaving and padding included, gives the single-process
vector); sample embeddings and texts are concatenated in rank order (rank 0 first), so the
usual contiguous split reproduces the single-process order and with it every bootstrap
interval exactly.

Failures are agreed on: bad input on any rank raises the same :class:`cm.InputError` on every
rank (after the metadata exchange, so no rank is left waiting in a collective), a monitor built
on a different reference on some rank raises ``InputError("monitor.reference", ...)`` on every
rank. A check that fails on rank 0 for another reason (the history store, a sink in strict
mode) raises on every rank (with ``broadcast=True``) only when ``strict`` (default: the
monitor's); otherwise it is logged, kept in ``monitor.last_error`` on rank 0 and in the result's
``error`` on every rank, and training goes on, as with the other hooks. An empty
shard (``(0, d)`` embeddings, empty predictions with empty probe indices, ``texts=[]``) is the
same as None: that rank adds nothing; only when every rank's shards are None or empty does every
rank raise. Without an initialised process group the function is a plain local check.

Every rank must call ``distributed_check`` once per check, or the others wait in the metadata
exchange until the process group's timeout (30 minutes for gloo by default). A rank whose own
evaluation failed says so with ``failed=`` (the exception, or True) and no inputs, then raises
its own error if the run should stop::

    try:
        preds, emb = evaluate(model, idx)
    except Exception as exc:
        distributed_check(mon, failed=exc)  # complete the collectives, declaring the failure
        raise                               # or carry on: the other ranks got a result
    res = distributed_check(mon, probe_indices=idx, predictions=preds, embeddings=emb)

The other ranks then check without that share: its embeddings and texts are simply missing,
and rank 0 logs a warning naming the failed rank and its error (type and message, redacted).
When its probe items are then predicted by no rank (or no rank has anything left to check),
the check cannot run: every rank gets a result with ``error`` saying so (rank 0 logs it and
keeps it in ``monitor.last_error``), and training goes on; with ``strict`` (rank 0's) every
rank raises the ``InputError``. ``failed=`` together with inputs is bad input
(``InputError("failed", ...)`` on every rank), as is a ``failed`` that is neither a bool nor
an exception (``ConfigError``).

A rank that calls with no inputs and without ``failed=`` is a rank with nothing to add (its
shard was empty), not a failure: when probe items are then predicted by no rank, every rank
raises ``InputError("probe_indices", "... predicted by no rank ...")``, strict or not, as it
does when every rank gave a share and items are still missing (the probe set was not sharded
whole).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _validate as V
from .._redact import redact_text
from ..errors import CollapseMonitorError, ConfigError, InputError
from ..types import MetricValue, Observation, Provenance, Report, Stage, as_provenance

if TYPE_CHECKING:
    from ..monitor import CollapseMonitor

__all__ = ["DistributedResult", "distributed_check"]

log = logging.getLogger("collapse_monitor")


@dataclass(frozen=True)
class DistributedResult:
    """What each rank gets back. ``report`` is set on group rank 0 only; ``stage`` and
    ``generation`` on every rank when broadcast (else None off rank 0)."""

    rank: int
    world_size: int
    stage: Stage | None
    generation: int | None
    report: Report | None = None
    #: why rank 0's check failed when it did not raise (``strict=False``); None when it ran
    error: str | None = None
    #: ``replicate=True``: the replicate's metrics on group rank 0 (each with the baseline's
    #: value; ``report`` and ``stage`` are None, ``generation`` is the baseline's)
    replicate: dict[str, MetricValue] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ---------------------------------------------------------------------------------------------
def _message(exc: BaseException) -> str | None:
    """``str(exc)``, or None when its ``__str__`` raises: read before the metadata exchange too,
    where an exception escaping on one rank leaves the others waiting in it."""
    try:
        return str(exc)
    except Exception:
        return None


def _error(field: str, exc: Exception) -> tuple[str, str]:
    msg = _message(exc)
    if msg is None:
        msg = "(its message could not be read)"
    if isinstance(exc, InputError):
        prefix = f"{exc.field}: "
        return exc.field, msg[len(prefix) :] if msg.startswith(prefix) else msg
    return field, f"{type(exc).__name__}: {msg}"


def _skip_strict(metas: Sequence[Mapping[str, Any]]) -> bool:
    """Rank 0's ``strict`` for a check skipped because a rank failed: a value that is no bool is
    refused on every rank, as rank 0's check would refuse it (it was read as False)."""
    if metas[0].get("strict") is None:
        raise ConfigError("strict", "expected true, false or None on rank 0")
    return metas[0]["strict"] is True


def _is_iterator(x: Any) -> bool:
    """A one-shot iterable (a generator): read once, by :func:`_local_shard`."""
    try:
        return x is not None and iter(x) is x
    except Exception:
        return False


def _empty(x: Any) -> bool:
    """An empty shard: no rows (a (0,) or (0, d) array or tensor, ``[]``, ``()``)."""
    try:  # before the metadata exchange: an odd object must not raise on one rank only
        shape = getattr(x, "shape", None)
        if shape is not None:
            return len(shape) >= 1 and int(shape[0]) == 0
        return len(x) == 0
    except Exception:
        return False


#: the end of the message for probe items predicted by no rank
_SHARD_HINT = "shard the whole probe set, e.g. DistributedSampler(drop_last=False)"


def _short_repr(x: Any) -> str:
    """``repr(x)`` cut to 80 characters, for an error raised after the metadata exchange (a
    repr that raises is named by its type: raising before the exchange left the other ranks
    waiting in it until the process group's timeout)."""
    try:
        return repr(x)[:80]
    except Exception:
        return f"<{type(x).__name__} object>"


def _reference_meta(ref: Any) -> dict[str, Any]:
    """What every rank must agree on before any collective: the reference (by fingerprint) and
    the families that decide which collectives run (embedding width, probe labels, texts)."""
    return {
        "fingerprint": ref.fingerprint,
        "width": None if ref.embeddings is None else int(ref.embeddings.shape[1]),
        "m": None if ref.labels is None else len(ref.labels),
        "texts": ref.texts is not None,
        "desc": repr(ref),
    }


def _local_shard(
    ref_labels: np.ndarray | None,
    ref_width: int | None,
    has_ref_texts: bool,
    world: int,
    probe_indices: Any,
    predictions: Any,
    embeddings: Any,
    texts: Any,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Validate this rank's inputs. Never raises: errors travel in ``meta["error"]`` so every
    rank reaches the collectives and raises the same error afterwards. An empty shard (no
    predictions, no embedding rows, no texts) counts as None: this rank simply adds nothing."""
    meta: dict[str, Any] = {"error": None, "idx": None, "pred": None, "n_emb": 0, "texts": None}
    emb: np.ndarray | None = None
    try:
        if predictions is not None and _empty(predictions):
            if probe_indices is not None and not _empty(probe_indices):
                raise InputError("probe_indices", f"has {len(probe_indices)} entries for 0 predictions")
            predictions = probe_indices = None
        if embeddings is not None and _empty(embeddings):
            shape = tuple(getattr(embeddings, "shape", ()))
            if len(shape) == 2 and ref_width is not None and int(shape[1]) != ref_width:
                raise InputError("embeddings", f"expected width d={ref_width} (the reference's), got d={shape[1]}")
            embeddings = None
        unordered = (str, bytes, set, frozenset, Mapping)  # refused by as_texts below, as by Observation
        if texts is not None and not isinstance(texts, unordered) and hasattr(texts, "__iter__"):
            texts = list(texts)  # a generator is read once, here
            if not texts:
                texts = None
        if predictions is not None:
            if ref_labels is None:
                raise InputError("predictions", "given but the reference has no labels")
            pred = V.as_labels(predictions, "predictions")
            if probe_indices is None:
                if world > 1:
                    raise InputError("probe_indices", "required with predictions when the world size is > 1")
                probe_indices = np.arange(len(pred))
            if hasattr(probe_indices, "detach"):
                probe_indices = probe_indices.detach().cpu().numpy()
            idx = np.asarray(probe_indices)
            if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
                raise InputError("probe_indices", f"expected a 1-D sequence of ints, got shape {idx.shape} {idx.dtype}")
            if idx.size != pred.size:
                raise InputError("probe_indices", f"has {idx.size} entries for {pred.size} predictions")
            m = len(ref_labels)
            if idx.size and (idx.min() < 0 or idx.max() >= m):
                raise InputError("probe_indices", f"out of range for a probe set of {m} items")
            meta["idx"], meta["pred"] = idx.astype(np.int64), pred
        elif probe_indices is not None and len(probe_indices):
            raise InputError("predictions", "probe_indices given without predictions")
        if embeddings is not None:
            if ref_width is None:
                raise InputError("embeddings", "given but the reference has no embeddings")
            emb = V.as_embeddings(embeddings, "embeddings", width=ref_width)
            meta["n_emb"] = int(emb.shape[0])
        if texts is not None:
            if not has_ref_texts:
                raise InputError("texts", "given but the reference has no texts")
            meta["texts"] = list(V.as_texts(texts, "texts"))
    except Exception as exc:
        meta["error"] = _error("distributed_check", exc)
        emb = None
        meta["n_emb"] = 0
    return meta, emb


_WHY_CHARS = 200  # a failed rank's error (type and message), as rank 0 logs it


def _failed_flag(failed: Any) -> tuple[bool | str, str | None]:
    """``failed=`` as (flag, why): the flag is True or False, or the value's repr (refused on
    every rank after the exchange); ``why`` is a redacted, short "Type: message" of an exception."""
    if failed is None or isinstance(failed, (bool, np.bool_)):
        return bool(failed), None
    if isinstance(failed, BaseException):
        msg = _message(failed)  # one whose __str__ fails still failed the evaluation
        why = f"{type(failed).__name__}: {msg}" if msg else type(failed).__name__
        why = redact_text(" ".join(why.split()))
        return True, why if len(why) <= _WHY_CHARS else why[: _WHY_CHARS - 3] + "..."
    return _short_repr(failed), None


def _failed_ranks(metas: Sequence[Mapping[str, Any]], failed: Sequence[int], what: str) -> str:
    """Why, for rank 0's log and the result's error: ``rank 1 gave no predictions (its
    evaluation failed: RuntimeError: ...)``. The reasons were redacted on their own ranks, and
    are not redacted again (a second pass took the ")" after a masked ``token=***`` along)."""
    why = [(r, metas[r]["failed_why"]) for r in failed]
    if len(failed) == 1:
        reason = f": {why[0][1]}" if why[0][1] else ""
        return f"rank {failed[0]} gave no {what} (its evaluation failed{reason})"
    reasons = "".join(f"; rank {r}: {w}" for r, w in why if w)
    return f"ranks {', '.join(map(str, failed))} gave no {what} (their evaluation failed{reasons})"


def _skipped(
    exc: InputError, failed: Sequence[int], metas: Sequence[Mapping[str, Any]], what: str
) -> tuple[str, InputError]:
    """The error of a check that cannot run because ranks declared their evaluation failed (no
    bad input: it must not stop every rank's training), and the InputError strict raises."""
    cause = _failed_ranks(metas, failed, what)
    # the hint for a probe set not sharded whole does not apply: a rank failed
    msg = _error(exc.field, exc)[1].removesuffix(f"; {_SHARD_HINT}")
    return f"collapse-monitor check skipped: {cause}, so {msg}", InputError(exc.field, f"{msg}; {cause}")


def _assemble_predictions(metas: Sequence[Mapping[str, Any]], m: int) -> np.ndarray | None:
    shards = [(r, mt["idx"], mt["pred"]) for r, mt in enumerate(metas) if mt["pred"] is not None]
    if not shards:
        return None
    out = np.empty(m, dtype=np.result_type(*[p.dtype for _, _, p in shards]))
    owner = np.full(m, -1, dtype=np.int64)
    for r, idx, pred in shards:
        order = np.argsort(idx, kind="stable")  # one rank predicting one item twice must agree too
        si, sp = idx[order], pred[order]
        twice = (si[1:] == si[:-1]) & (sp[1:] != sp[:-1])
        if twice.any():
            raise InputError(
                "predictions", f"probe item {int(si[1:][twice][0])} got two different predictions on rank {r}"
            )
        seen = owner[idx] >= 0
        if seen.any():  # DistributedSampler pads with repeats: fine when they agree
            clash = idx[seen][out[idx[seen]] != pred[seen]]
            if clash.size:
                raise InputError(
                    "predictions",
                    f"probe item {int(clash[0])} got different predictions on ranks {int(owner[clash[0]])} and {r}",
                )
        out[idx] = pred
        owner[idx] = np.where(owner[idx] >= 0, owner[idx], r)
    missing = np.flatnonzero(owner < 0)
    if missing.size:
        raise InputError(
            "probe_indices",
            f"{missing.size} of {m} probe items were predicted by no rank "
            f"(first: {missing[:5].tolist()}); {_SHARD_HINT}",
        )
    return out


def _confusion(ref_labels: np.ndarray, idx: np.ndarray, pred: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    pos = {str(c): i for i, c in enumerate(classes)}
    k = len(classes)
    mat = np.zeros((k, k + 1), dtype=np.int64)  # last column: a label the reference never had
    for t, p in zip(ref_labels[idx].tolist(), pred.tolist(), strict=True):
        mat[pos[str(t)], pos.get(str(p), k)] += 1
    return mat


# ---------------------------------------------------------------------------------------------
def distributed_check(
    monitor: CollapseMonitor,
    *,
    probe_indices: Any = None,
    predictions: Any = None,
    embeddings: Any = None,
    texts: Sequence[str] | None = None,
    generation: int | None = None,
    provenance: Provenance | None = None,
    group: Any = None,
    broadcast: bool = True,
    strict: bool | None = None,
    failed: BaseException | bool | None = None,
    replicate: bool = False,
) -> DistributedResult:
    """Gather each rank's shard of a generation's outputs and check them on group rank 0.

    Args:
        monitor: the same monitor (same reference, checked by fingerprint) on every rank; only
            rank 0 writes.
        probe_indices: indices into ``monitor.reference.labels`` of this rank's ``predictions``
            (required with predictions when the world size is above 1; duplicates across ranks
            must agree).
        predictions: this rank's predicted labels for those probe items (may be empty, with
            empty or no probe_indices, or None on some ranks).
        embeddings: this rank's (k_r, d) sample embeddings (tensor or array; may be empty, e.g.
            ``(0, d)``, or None on some ranks).
        texts: this rank's generated texts (may be empty or None on some ranks).
        generation, provenance: as in :class:`cm.Observation` (rank 0's generation is used;
            provenance may be given on any rank, and ranks that give it must agree).
        group: a ``torch.distributed`` process group (default: the world).
        broadcast: send the stage and generation to every rank (default True; the same value
            on every rank).
        strict: raise on every rank when rank 0's check fails for a reason other than bad
            input (a sink or alert channel failing, the history store, a rank's ``failed``
            evaluation leaving probe items unpredicted); default: the monitor's ``strict``,
            rank 0's value. Otherwise the failure is in ``error``.
        failed: this rank's own evaluation failed: the exception (its type and message,
            redacted, go to rank 0's log and the ``error``) or True, with no inputs. Probe
            items left unpredicted by it skip the check (see ``strict``) instead of raising;
            when nothing is missing the check runs without its share and rank 0 warns.
        replicate: these outputs are of another retrain of the baseline generation (human data
            only, another seed): rank 0 adds them to the baseline as a replicate
            (``monitor.check_replicate``) instead of checking a new generation; the result's
            ``replicate`` holds its metrics on rank 0. The same value on every rank.

    Returns a :class:`DistributedResult`; ``report`` holds the Report on rank 0.

    Raises:
        InputError: on every rank alike, for bad input on any rank (the message names it), a
            different reference on some rank (field ``monitor.reference``), or no data on any
            rank. Every rank must call this, a rank with nothing to add with no inputs, one
            whose evaluation failed with ``failed=`` (see the module docstring); missing probe
            items raise unless a rank declared ``failed``. Also ``InputError("failed")`` for
            ``failed`` together with inputs.
        ConfigError: on every rank alike, for a ``broadcast`` that is not a bool or a ``failed``
            that is neither a bool nor an exception.
    """
    import torch.distributed as dist

    ref = monitor.reference
    if replicate is True or (isinstance(replicate, np.bool_) and bool(replicate)):
        monitor.last_replicate = None  # this call's, whatever happens below (a skip, bad input)
    live = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank(group) if live else 0
    world = dist.get_world_size(group) if live else 1
    collective = live and world > 1
    labels = ref.labels
    ref_meta = _reference_meta(ref)
    meta, emb = _local_shard(
        labels, ref_meta["width"], ref_meta["texts"], world, probe_indices, predictions, embeddings, texts
    )
    # a non-boolean is refused after the exchange, alike on every rank (raising here, on the
    # ranks that got it wrong, would leave the others waiting in the collective)
    flag = bool(broadcast) if isinstance(broadcast, (bool, np.bool_)) else _short_repr(broadcast)
    meta["reference"], meta["broadcast"] = ref_meta, flag
    meta["replicate"] = bool(replicate) if isinstance(replicate, (bool, np.bool_)) else _short_repr(replicate)
    # failed=: refused like broadcast when it is neither a bool nor an exception; together
    # with inputs it contradicts itself: bad input, raised after the exchange like the shards'
    meta["failed"], meta["failed_why"] = _failed_flag(failed)
    if meta["failed"] is True:
        inputs = [
            name
            for name, x in (
                ("probe_indices", probe_indices),
                ("predictions", predictions),
                ("embeddings", embeddings),
                # a generator was read by _local_shard: what it held (an empty one is no input)
                ("texts", meta.get("texts") if _is_iterator(texts) else texts),
            )
            if x is not None and not _empty(x)
        ]
        if inputs:
            meta["error"] = (
                "failed",
                f"given with {', '.join(inputs)}: a rank whose evaluation failed passes no inputs "
                "(pass failed= only where the evaluation failed)",
            )
            emb, meta["n_emb"] = None, 0
    strict_ = monitor.strict if strict is None else strict
    meta["strict"] = bool(strict_) if isinstance(strict_, (bool, np.bool_)) else None  # rank 0's decides
    # provenance given on any rank travels with the metadata (it was read on rank 0 only, so a
    # rank 1 that knew the training mix lost it silently); a bad one is an error after the
    # exchange, like the shards'
    meta["provenance"] = None
    try:
        prov = as_provenance(provenance, "provenance")
        meta["provenance"] = None if prov is None else prov.to_dict()
    except Exception as exc:  # anything raised on one rank only must not leave the others waiting
        if meta["error"] is None:
            meta["error"] = _error("provenance", exc)

    # The one exchange every rank always makes. Everything after it (which collectives run, and
    # every error) is decided from the gathered metadata alone, so all ranks decide alike.
    metas: list[dict[str, Any]] = [meta]
    if collective:
        metas = [{} for _ in range(world)]
        dist.all_gather_object(metas, meta, group=group)
    ref0 = metas[0]["reference"]
    for r, mt in enumerate(metas):
        if mt["reference"]["fingerprint"] != ref0["fingerprint"]:
            raise InputError(
                "monitor.reference",
                f"rank {r} has a different reference ({mt['reference']['desc']}) than rank 0 ({ref0['desc']}): "
                "build the same monitor on every rank",
            )
    flags = (("broadcast", "True or False"), ("failed", "an exception, True, False or None"))
    for name, expected in (*flags, ("replicate", "True or False")):
        for r, mt in enumerate(metas):
            if not isinstance(mt[name], bool):
                raise ConfigError(name, f"expected {expected}, got {mt[name]} on rank {r}")
    for name in ("broadcast", "replicate"):
        for r, mt in enumerate(metas):
            if mt[name] != metas[0][name]:
                raise InputError(
                    name,
                    f"is {mt[name]} on rank {r} but {metas[0][name]} on rank 0: pass the same value on every rank",
                )
    bad = [(r, mt["error"]) for r, mt in enumerate(metas) if mt["error"] is not None]
    if bad:
        r, (field, msg) = bad[0]
        raise InputError(field, f"on rank {r}: {msg}" if world > 1 else msg)
    given = [(r, mt["provenance"]) for r, mt in enumerate(metas) if mt.get("provenance") is not None]
    for r, d in given[1:]:
        if d != given[0][1]:
            raise InputError(
                "provenance",
                f"differs between rank {given[0][0]} and rank {r}: pass the same provenance on every rank, "
                "or on rank 0 only",
            )
    provenance = Provenance.from_dict(given[0][1]) if given else None
    # ranks whose own evaluation failed (failed=): what they did not give skips the check
    # instead of raising, unless strict; a rank idle without failed= is an empty shard
    failed_ranks = [r for r, mt in enumerate(metas) if mt["failed"] is True]
    if all(mt["pred"] is None and mt["n_emb"] == 0 and not mt["texts"] for mt in metas):
        none = InputError(
            "distributed_check", "no rank gave predictions, embeddings or texts (every shard was None or empty)"
        )
        if not failed_ranks:
            raise none
        error, strict_exc = _skipped(none, failed_ranks, metas, "share")
        if _skip_strict(metas):
            raise strict_exc
        return _skip(monitor, rank, world, none, error)

    # the references agree (same fingerprint), so rank 0's width / probe size hold on every rank
    width, m = ref0["width"], ref0["m"]
    gathered_emb = _gather_embeddings(emb, [mt["n_emb"] for mt in metas], width, group, collective)
    try:
        full_preds = None if m is None else _assemble_predictions(metas, m)
    except InputError as exc:
        if exc.field != "probe_indices":
            raise
        idle = [r for r, mt in enumerate(metas) if mt["pred"] is None]
        if not failed_ranks and not idle:  # every rank gave predictions: not sharded whole
            raise
        if not failed_ranks:  # the same, or a rank's failure went unsaid
            hint = (
                f"; rank{'s' if len(idle) > 1 else ''} {', '.join(map(str, idle))} gave no predictions: "
                "a rank whose evaluation failed passes failed=True (or the exception)"
            )
            raise InputError(exc.field, _error(exc.field, exc)[1] + hint) from None
        # probe items unpredicted because a rank's own evaluation failed: not bad input, a
        # failed check, which must not stop every rank's training
        error, strict_exc = _skipped(exc, failed_ranks, metas, "predictions")
        if _skip_strict(metas):
            raise strict_exc from None
        return _skip(monitor, rank, world, exc, error)
    if failed_ranks and rank == 0:
        cause = _failed_ranks(metas, failed_ranks, "share")
        log.warning("collapse-monitor: %s; the check runs without %s", cause, "them" if len(failed_ranks) > 1 else "it")
    if full_preds is not None and collective:
        _check_counts(metas, meta, labels, ref.classes, group)  # type: ignore[arg-type]
    all_texts = [t for mt in metas if mt["texts"] for t in mt["texts"]] or None

    # rank 0 decides, and every rank follows its decision (broadcast): a rank deciding from the
    # error's field name alone returned while rank 0 raised
    payload: dict[str, Any] = {"stage": None, "generation": None, "error": None, "strict": strict_ is True}
    report: Report | None = None
    added: dict[str, MetricValue] | None = None
    exc_main: Exception | None = None
    as_replicate = metas[0]["replicate"] is True
    if rank == 0:
        adding = False
        try:
            if not isinstance(strict_, (bool, np.bool_)):
                raise ConfigError("strict", f"expected true, false or None, got {strict!r}")
            strict_ = bool(strict_)
            payload["strict"] = strict_
            obs = Observation(
                embeddings=gathered_emb,
                predictions=full_preds,
                texts=all_texts,
                generation=generation,
                provenance=provenance,
            )
            if as_replicate:
                adding = True
                added = monitor.check_replicate(obs)
                with contextlib.suppress(Exception):  # only for the result: the replicate is stored
                    base = monitor.history.baseline(monitor.name)
                    payload["generation"] = None if base is None else base.generation
            else:
                report = monitor._check(obs, (), strict_)
                payload.update(stage=report.stage.value, generation=report.generation)
        except Exception as exc:
            exc_main = exc
            payload["error"] = _error("check", exc)
            # a replicate refused by the baseline's state (none yet, another reference, fewer
            # samples than it had: a rank's failed= share) is a failed check, not bad input from a
            # rank: contained unless strict, as the other hooks contain it
            payload["bad_input"] = isinstance(exc, (InputError, ConfigError)) and not adding
    if metas[0]["broadcast"] and collective:
        box = [payload]
        src = 0 if group is None else dist.get_global_rank(group, 0)
        dist.broadcast_object_list(box, src=src, group=group)
        payload = box[0]
    if payload["error"] is not None:
        field, msg = payload["error"]
        bad_input = bool(payload.get("bad_input"))
        what = "replicate of the baseline" if as_replicate else "check"
        if not bad_input and not payload["strict"]:
            # never break the training job: recorded, logged on rank 0, the same on every rank
            error = f"collapse-monitor {what} failed on rank 0: {field}: {msg}"
            if exc_main is not None:
                monitor.last_error = exc_main
                log.error("%s (training continues; strict=True raises)", redact_text(error))
            return DistributedResult(rank, world, None, None, None, error=redact_text(error))
        if exc_main is not None:
            raise exc_main
        if bad_input and field != "check":
            raise InputError(field, f"on rank 0: {msg}")
        raise CollapseMonitorError(f"collapse-monitor {what} failed on rank 0: {field}: {msg}")
    stage = None if payload["stage"] is None else Stage(payload["stage"])
    return DistributedResult(rank, world, stage, payload["generation"], report, replicate=added)


def _skip(monitor: CollapseMonitor, rank: int, world: int, exc: InputError, error: str) -> DistributedResult:
    """A check skipped on every rank alike: rank 0 logs it and keeps it in ``last_error``."""
    if rank == 0:
        monitor.last_error = exc
        log.error("%s (training continues; strict=True raises)", error)
    return DistributedResult(rank, world, None, None, None, error=error)


def _gather_embeddings(
    emb: np.ndarray | None, sizes: Sequence[int], width: int | None, group: Any, collective: bool
) -> np.ndarray | None:
    """Pad every shard to the largest, all_gather, trim, concatenate in rank order. Every
    shard was validated against the reference's width, so all widths agree."""
    if max(sizes, default=0) == 0 or width is None:
        return None
    if not collective:
        return emb
    import torch
    import torch.distributed as dist

    device = _device(group)
    buf = torch.zeros((max(sizes), width), dtype=torch.float32, device=device)
    if emb is not None and emb.shape[0]:
        buf[: emb.shape[0]] = torch.from_numpy(np.array(emb, dtype=np.float32)).to(device)
    out = [torch.empty_like(buf) for _ in sizes]
    dist.all_gather(out, buf, group=group)
    return np.concatenate([t[:s].cpu().numpy() for t, s in zip(out, sizes, strict=True) if s], axis=0)


def _check_counts(
    metas: Sequence[Mapping[str, Any]], mine: Mapping[str, Any], labels: np.ndarray, classes: Sequence[Any], group: Any
) -> None:
    """all_reduce each rank's per-class confusion counts and compare them with the gathered
    items: a mismatch means items were lost or altered between ranks."""
    import torch
    import torch.distributed as dist

    k = len(classes)
    local = np.zeros((k, k + 1), dtype=np.int64)
    if mine["pred"] is not None:
        local = _confusion(labels, mine["idx"], mine["pred"], classes)
    t = torch.from_numpy(local).to(_device(group))
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    expected = sum(
        (_confusion(labels, mt["idx"], mt["pred"], classes) for mt in metas if mt["pred"] is not None),
        np.zeros((k, k + 1), dtype=np.int64),
    )
    if not np.array_equal(t.cpu().numpy(), expected):
        raise CollapseMonitorError("distributed_check: gathered probe predictions disagree with the all-reduced counts")


def _device(group: Any) -> Any:
    import torch
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
