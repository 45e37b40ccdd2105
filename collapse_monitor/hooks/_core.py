"""The body every framework callback shares: build the Observation, check it, never raise.

A callback that raises aborts Lightning's ``fit`` (and the HF ``Trainer``): so
:meth:`HookCore.run` contains every ``Exception`` of ``evaluate``, of the ``generation`` /
``provenance`` callables and of the check itself, logs it (secrets redacted) and keeps it in
``last_error``. ``KeyboardInterrupt`` / ``SystemExit`` still propagate: stopping a job is the
user's call, not ours.

:class:`CheckLedger` is the small state a callback keeps in the framework's checkpoint, so that
resuming a job whose weights were already checked (a finished run resumed from its last
checkpoint trains 0 steps and fires the end-of-training hook again) does not record them as one
more generation. See :meth:`CheckLedger.skip_reason` for the rule.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._redact import redact_text
from ..errors import CollapseMonitorError, ConfigError, InputError
from ..types import Observation, Provenance, as_provenance

if TYPE_CHECKING:
    from ..monitor import CollapseMonitor
    from ..types import MetricValue, Report

__all__ = ["CheckLedger", "HookCore", "HookResults", "check_flag", "eval_mode", "step_note"]

log = logging.getLogger("collapse_monitor.hooks")

GenerationArg = int | Callable[..., "int | None"] | None
ProvenanceArg = Provenance | Callable[..., "Provenance | None"] | None


def check_flag(value: Any, key: str) -> bool:
    """``value`` if it is a bool (numpy's included), else a ConfigError naming ``key``: a string
    such as ``"no"`` or ``"false"`` would otherwise count as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(key, f"expected True or False, got {value!r}")
    return bool(value)


@contextlib.contextmanager
def eval_mode(model: Any, enabled: bool = True) -> Iterator[None]:
    """``model.eval()`` and ``torch.no_grad()`` for the evaluation, every submodule's training
    mode restored afterwards (fit may continue: the validation-end hook runs mid-fit; a backbone
    the user froze with ``.eval()`` stays in eval mode, as Lightning's own loops keep it). A
    model that is not a ``torch.nn.Module`` is left alone."""
    is_module = enabled and hasattr(model, "training") and callable(getattr(model, "train", None))
    if not is_module:
        yield
        return
    import torch

    modules = list(model.modules()) if callable(getattr(model, "modules", None)) else [model]
    modes = [bool(m.training) for m in modules]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.training = mode


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Every random state a training loop draws from - Python's ``random``, NumPy's global
    generator, torch's CPU generator and each initialised CUDA device's - as it was before, once
    the block ends: a check in the middle of fit (an evaluate that samples, a first import that
    draws) must not change what the training run does next."""
    import random

    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a requirement
        torch = None  # type: ignore[assignment]
    devices: list[int] = []
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        devices = list(range(torch.cuda.device_count()))
    try:
        if torch is None:
            yield
        else:
            with torch.random.fork_rng(devices=devices):
                yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


#: elements per row of the fingerprint: every row of a tensor's bits adds its plain and its
#: position-weighted sum, in exact int64 arithmetic: |bits| <= 2**31 and a row's weights are
#: 1..2**16 once each (they add up to 2**31 + 2**15), so |weighted sum| <= 2**62 + 2**46 < 2**63
_FP_ROW = 1 << 16
#: bit elements (int8/16/32) folded at once: the two int64 buffers hold this many (64 MiB)
_FP_CHUNK = 1 << 22
#: the seed of the position weights (any fixed value: fingerprints are compared in one process)
_FP_SEED = 0x5EED_F1A7


@functools.cache
def _fp_table() -> np.ndarray:
    """The position weights of a row: a fixed random permutation of 1..2**16. No two positions
    share a weight, so a swap of two unequal elements of one row always changes its weighted
    sum (by (a - b) * (w_i - w_j) != 0, exactly); random, so no short linear pattern of changes
    keeps it either (weights 1, 2, 3, ... miss x_i += a, x_i+1 -= 2a, x_i+2 += a)."""
    table = np.random.default_rng(_FP_SEED).permutation(_FP_ROW).astype(np.int64) + 1
    table.flags.writeable = False
    return table


def _fp_bits(torch: Any, flat: Any) -> Any:
    """``flat`` (1-D, contiguous, a plain strided tensor: see :func:`_fp_plain`) reinterpreted
    as signed integers of at most 32 bits, no copy: the exact bit patterns of floats (a NaN
    reads as its bits, so it compares equal to itself), ints and bools alike. 64- and 128-bit
    elements read as 32-bit pieces."""
    size = flat.element_size()
    if size == 1:
        return flat.view(torch.int8)
    if size == 2:
        return flat.view(torch.int16)
    if size % 4 == 0:
        return flat.view(torch.int32)
    raise TypeError(f"no integer view of {flat.dtype}")


def _fp_fold(torch: Any, flat: Any, scratch: dict[str, Any], out: list[Any]) -> None:
    """Every element of ``flat`` (1-D, contiguous) folded into ``out``: per row of
    :data:`_FP_ROW` elements of its bits (counted from the start of ``flat``), their sum and
    their position-weighted sum, as int64 on ``flat``'s device. Any change of one element
    changes its row's sum exactly (integer arithmetic, no overflow, no rounding, the same result
    on every device and in every reduction order); a swap of two unequal elements of one row
    changes its weighted sum (see :func:`_fp_table`). ``scratch`` is this device's: the weights
    ``w`` and two int64 buffers of up to :data:`_FP_CHUNK` elements, made once per fingerprint
    and reused by every chunk of every tensor (fresh int64 temporaries per tensor made the pass
    page-fault bound, several times slower, and fragmented the heap: +360 MB of peak RSS)."""
    bits = _fp_bits(torch, flat)
    w = scratch["w"]
    for start in range(0, bits.numel(), _FP_CHUNK):
        src = bits[start : start + _FP_CHUNK]
        n = src.numel()
        if scratch.get("x") is None or scratch["x"].numel() < n:
            size = min(_FP_CHUNK, max(n, 2 * (0 if scratch.get("x") is None else scratch["x"].numel())))
            scratch["x"] = scratch["p"] = None  # the old buffers go before the new ones come
            scratch["x"] = torch.empty(size, dtype=torch.int64, device=src.device)
            scratch["p"] = torch.empty(size, dtype=torch.int64, device=src.device)
        x = scratch["x"][:n]
        x.copy_(src)  # the bits as int64
        full = n // _FP_ROW * _FP_ROW
        if full:
            rows = x[:full].view(-1, _FP_ROW)
            weighted = scratch["p"][:full].view(-1, _FP_ROW)
            torch.mul(rows, w, out=weighted)
            out += [rows.sum(1), weighted.sum(1)]
        if full < n:
            tail = x[full:]
            out += [tail.sum().reshape(1), (tail * w[: tail.numel()]).sum().reshape(1)]


def _fp_plain(torch: Any, t: Any) -> bool:
    """Whether ``t``'s values may be read through an integer view of its memory: a strided,
    not quantized, not nested tensor with real storage. Checked before any kernel reads it: an
    integer view of a quantized tensor "succeeds" and the next kernel on it kills the process
    (SIGSEGV), which no ``except`` catches."""
    return bool(t.layout == torch.strided and not t.is_quantized and not t.is_nested and t.device.type != "meta")


def _fp_blocks(t: Any, limit: int) -> Iterator[Any]:
    """``t`` in its logical order as views of at most ``limit`` elements, split along its
    leading dims."""
    if t.numel() <= limit:
        yield t
    elif t.dim() == 1:
        for start in range(0, t.numel(), limit):
            yield t[start : start + limit]
    elif (per := t[0].numel()) <= limit:
        step = limit // per
        for start in range(0, t.shape[0], step):
            yield t[start : start + step]
    else:
        for i in range(t.shape[0]):
            yield from _fp_blocks(t[i], limit)


def _fp_flat(torch: Any, t: Any, scratch: dict[str, Any]) -> tuple[Any, Iterator[Any]]:
    """``t``'s elements as contiguous 1-D tensors, and the order they come in. A tensor whose
    memory is its dims in some order (contiguous, transposed, channels-last, ...) is read
    where it lies, in memory order, as one view: no copy; the order of the dims is part of the
    fingerprint (a parameter keeps its layout between two reads; a transposed copy of the same
    values is other weights). Any other tensor (an expanded one, a slice with gaps, a
    conjugate or negative view) comes in its logical order, in blocks of at most 16 MiB, each
    copied (values resolved) into one buffer of ``scratch`` in turn."""
    if not (t.is_conj() or t.is_neg()):
        if t.is_contiguous():
            return tuple(range(t.dim())), iter([t.view(-1)])
        order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
        if t.permute(order).is_contiguous():
            return tuple(order), iter([t.permute(order).view(-1)])
    size = t.element_size()
    limit = max(1, _FP_CHUNK * min(size, 4) // size)

    def copied() -> Iterator[Any]:
        key = f"block {t.dtype}"
        if scratch.get(key) is None or scratch[key].numel() < min(limit, t.numel()):
            scratch[key] = None
            scratch[key] = torch.empty(min(limit, t.numel()), dtype=t.dtype, device=t.device)
        for block in _fp_blocks(t, limit):
            flat = scratch[key][: block.numel()]
            flat.view(block.shape).copy_(block)  # a conjugate / negative view's values, resolved
            yield flat

    return "blocks", copied()


def _fp_parts(torch: Any, t: Any) -> tuple[tuple[Any, ...], list[Any]]:
    """The plain strided tensors that hold ``t``'s values, and what else tells two such
    tensors apart. Decided from ``t``'s layout and quantization alone, before any kernel reads
    its values: a quantized tensor by its integer representation (a copy, one byte per element
    for 8-bit types) and its quantization parameters; a sparse one by its index and value
    tensors (as stored: no coalescing); an MKL-DNN one of at most :data:`_FP_CHUNK` elements by
    its dense copy. Anything else (a nested tensor, a larger MKL-DNN one, a layout or a
    quantization scheme not known here) is not read: it counts by its shape, dtype and kind."""
    if t.is_quantized:
        scheme = t.qscheme()
        if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            return ("quantized", str(scheme), float(t.q_scale()), int(t.q_zero_point())), [t.int_repr()]
        if scheme in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
            parts = [t.int_repr(), t.q_per_channel_scales(), t.q_per_channel_zero_points()]
            return ("quantized", str(scheme), int(t.q_per_channel_axis())), parts
        return ("not read", str(scheme)), []
    layout = t.layout
    if layout == torch.strided:
        return (("not read", "nested"), []) if t.is_nested else ((), [t])
    if layout == torch.sparse_coo:
        return (str(layout),), [t._indices(), t._values()]
    if layout in (torch.sparse_csr, torch.sparse_bsr):
        return (str(layout),), [t.crow_indices(), t.col_indices(), t.values()]
    if layout in (torch.sparse_csc, torch.sparse_bsc):
        return (str(layout),), [t.ccol_indices(), t.row_indices(), t.values()]
    if layout == torch._mkldnn and t.numel() <= _FP_CHUNK:
        return (str(layout),), [t.to_dense()]
    return ("not read", str(layout)), []


def _fp_param(torch: Any, p: Any, scratch: Callable[[Any], dict[str, Any]]) -> tuple[bytes, list[tuple[str, Any]]]:
    """One parameter's part of the fingerprint: a description (shape, dtype, how its values
    were read) and, per tensor holding its values, the int64 vector of :func:`_fp_fold` on
    that tensor's device. A parameter that cannot be read this way (an exception) counts by
    its description and the exception's type: the other parameters still tell weights apart."""
    if isinstance(p, torch.nn.parameter.UninitializedTensorMixin):  # a lazy module's: no shape yet
        return b"uninitialized", []
    head: tuple[Any, ...] = (type(p).__name__,)
    try:
        head = (tuple(p.shape), str(p.dtype))
        local = p.to_local() if callable(getattr(p, "to_local", None)) else p  # a DTensor's shard
        if local.device.type == "meta" or local.numel() == 0:
            return repr((*head, "no values")).encode(), []
        note, parts = _fp_parts(torch, local.detach())
        kinds, found = [], []
        for part in parts:
            if not _fp_plain(torch, part):
                raise TypeError(f"cannot read a {part.layout} {part.dtype} part")
            order, flats = _fp_flat(torch, part, scratch(part.device))
            out: list[Any] = []
            for flat in flats:
                _fp_fold(torch, flat, scratch(part.device), out)
            kinds.append((tuple(part.shape), str(part.dtype), order))
            found.append((str(part.device), torch.cat(out) if out else part.new_zeros(0, dtype=torch.int64)))
    except Exception as exc:
        return repr((*head, "not read", type(exc).__name__)).encode(), []
    return repr((*head, note, kinds)).encode(), found


class _Unread:
    """Weights that could not be listed (a module's buffers or packed weights raised): they
    count as such in the fingerprint, and the rest still tells weights apart."""

    def __init__(self, what: str) -> None:
        self.what = what

    @property
    def shape(self) -> tuple[int, ...]:
        raise TypeError(f"{self.what} not read")


def _fp_state(obj: Any, depth: int = 0) -> Iterator[Any]:
    """The tensors in a quantized module's saved state: nested tuples, lists and dicts, and
    the packed-params script objects through their ``__getstate__`` (a dynamic LSTM keeps its
    weights three levels down)."""
    import torch

    if depth > 8:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _fp_state(v, depth + 1)
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _fp_state(v, depth + 1)
    elif isinstance(obj, torch.ScriptObject) and callable(getattr(obj, "__getstate__", None)):
        yield from _fp_state(obj.__getstate__(), depth + 1)


def _fp_tensors(model: Any, params: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    """What holds a module's weights: its parameters, then each submodule's persistent buffers
    (BatchNorm's running statistics: two checkpoints with the same parameters and other
    statistics are other models; a non-persistent buffer, such as a KV cache that a forward
    pass fills, is state, not weights), then the saved state of quantized modules (a class
    from ``torch.ao.nn`` or derived from one: ``quantize_dynamic`` and eager-mode quantization
    keep their weights in packed params, neither parameters nor buffers, so every such model
    had one fingerprint and other weights at the same step read as the same). Their state is
    what the module itself saves in a checkpoint (``_save_to_state_dict``: this module only, no
    hooks, no collective); a scripted one's (``torch.jit.script``) is read by its
    ``_weight_bias()``.
    A module whose buffers or state cannot be read counts as unread; the others still count."""
    yield from params()
    modules = getattr(model, "modules", None)
    if not callable(modules):
        return
    import torch

    try:
        mods = list(modules())
    except Exception:
        yield _Unread("modules")
        return
    for mod in mods:
        try:
            skip = getattr(mod, "_non_persistent_buffers_set", ())
            found = [b for n, b in getattr(mod, "_buffers", {}).items() if b is not None and n not in skip]
        except Exception:
            found = [_Unread("buffers")]
        try:
            if any(c.__module__.startswith("torch.ao.nn.") for c in type(mod).__mro__):
                state: dict[str, Any] = {}
                mod._save_to_state_dict(state, "", True)
                found += list(_fp_state(state))
            elif (
                isinstance(mod, torch.jit.ScriptModule)
                and callable(getattr(mod, "_weight_bias", None))
                and not any(callable(getattr(c, "_weight_bias", None)) for c in mod.children())
            ):
                # a scripted quantized module (torch.jit.script): its class is not torch.ao's, and
                # its packed weights are attributes of the compiled module, read by its exported
                # _weight_bias() (a quantized Linear's packed-params child answers for it)
                found += list(_fp_state(mod._weight_bias()))
        except Exception:
            found.append(_Unread(f"{type(mod).__name__} state"))
        yield from found


def weights_fingerprint(model: Any) -> str | None:
    """A fingerprint of a torch module's weights that sees every element (its parameters,
    persistent buffers and quantized modules' packed weights, :func:`_fp_tensors`): per tensor, its
    shape, dtype and layout and the :func:`_fp_fold` of its bits, computed on
    its own device, one transfer of the short result per device. Loading other weights changes
    it, a sparse update too (one embedding row, one element: 8 sampled values per tensor read
    those as the same weights and skipped their check); reading the same weights again in the
    same process gives the same string, NaN entries included.

    Cost: one pass over the weights, four int64 kernels per 4M 32-bit words. Measured on a
    shared 2-core CPU (torch 2.13, median of 15 calls): about 30 ms for an MLP of 35M float32
    parameters, about 70 ms for the same in float64 (twice the words); a 500 MB float32 tensor
    about 0.2 s. Memory: per device two int64 buffers of at most :data:`_FP_CHUNK` elements
    (64 MiB; fewer for smaller tensors), made once per call and reused by every chunk, whatever
    the model's size (peak RSS +27 MB on that MLP, +73 MB on a 500 MB tensor, contiguous or
    transposed). A parameter is read where it lies when its memory is its dims in some order
    (contiguous, transposed, channels-last); any other layout is copied in blocks of at most
    16 MiB into one more buffer. Copied whole: a quantized parameter's integer representation
    (one byte per element for 8-bit types), an MKL-DNN one of at most 2**22 elements.

    A parameter on the meta device or of a lazy module (no values yet) counts by its shape; a
    distributed tensor by its local shard (no collective: only rank zero checks); a quantized
    one by its integers and quantization parameters; a sparse one by its indices and values;
    one whose values are not read (see :func:`_fp_parts`, or an exception reading it) by its
    shape, dtype and kind. Nothing here calls a kernel on a tensor of a kind not checked first
    (an integer view of a quantized tensor kills the process). None for a model that is not a
    module (or when its parameters cannot be listed)."""
    params = getattr(model, "parameters", None)
    if not callable(params):
        return None
    try:
        import torch

        cached: dict[str, dict[str, Any]] = {}

        def scratch(device: Any) -> dict[str, Any]:  # per device: the weights, and buffers made once
            if str(device) not in cached:
                cached[str(device)] = {"w": torch.tensor(_fp_table(), dtype=torch.int64, device=device)}
            return cached[str(device)]

        h = hashlib.blake2b(digest_size=16)
        heads: list[bytes] = []
        spots: list[list[tuple[str, int]]] = []  # per parameter: per part, its device and its index there
        by_device: dict[str, list[Any]] = {}
        with torch.no_grad():
            for p in _fp_tensors(model, params):
                head, found = _fp_param(torch, p, scratch)
                heads.append(head)
                spots.append([])
                for key, vec in found:
                    spots[-1].append((key, len(by_device.setdefault(key, []))))
                    by_device[key].append(vec)
            host = {key: torch.cat(vs).cpu().split([v.numel() for v in vs]) for key, vs in by_device.items()}
        for head, where in zip(heads, spots, strict=True):
            h.update(len(head).to_bytes(8, "little") + head)
            for key, i in where:
                data = host[key][i].numpy().tobytes()
                h.update(len(data).to_bytes(8, "little") + data)
        return h.hexdigest()
    except Exception:  # parameters that cannot even be listed: identity and step only
        return None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _newest_check(monitor: CollapseMonitor) -> tuple[float, int] | None:
    """``(created_at, generation)`` of the newest report in the monitor's history, None if empty."""
    reports = monitor.reports()
    if not reports:
        return None
    newest = max(reports, key=lambda r: r.created_at)
    return float(newest.created_at), int(newest.generation)


def step_note(step: int) -> str:
    """The note a hook check leaves in its report: which global step's weights it checked."""
    return f"checked by a training hook at global step {step}"


_WEIGHTS_NOTE = "weights checked by a training hook: "


def weights_note(fingerprint: str) -> str:
    """The note beside :func:`step_note` that says which weights were checked
    (:func:`weights_fingerprint`), so a resumed run tells its own step's check from another
    job's check at the same step number."""
    return f"{_WEIGHTS_NOTE}{fingerprint}"


#: per monitor (and per kind of check: a generation or a replicate), the last weights a hook
#: checked: (weak reference to the model, global step, fingerprint). Kept per monitor, not per
#: callback: two callbacks of one monitor (``on="validation_end"`` and ``on="fit_end"``) checked
#: the same weights at the end of training as two generations (a hooks audit, 2026-12-08).
_CHECKED: weakref.WeakKeyDictionary[Any, dict[bool, tuple[Any, int, str | None]]] = weakref.WeakKeyDictionary()


class CheckLedger:
    """Which training step a callback last checked, kept in the framework's checkpoint.

    Saved with every checkpoint (JSON-safe, see :meth:`state`): the step and generation of the
    callback's last successful check and ``history_newest``, the creation time of the newest
    report in the monitor's history as far as this process knows (read when training starts,
    moved by each check). The end-of-training check comes *after* the last checkpoint is saved,
    so a checkpoint alone cannot say whether its weights were checked; the history can: every
    hook check leaves the note :func:`step_note` (``checked by a training hook at global step
    N``) in its report, and such a report newer than the checkpoint's ``history_newest`` means
    the run that saved the checkpoint went on to check the weights of that step.

    On resume, :meth:`skip_reason` skips a check only when no training step ran since the
    checkpoint (the weights are the checkpoint's) and either the checkpoint says this step was
    checked, or the history has a hook check *of this step* newer than the checkpoint (a newer
    check of other weights, e.g. a later epoch's when a run rolls back to an earlier
    checkpoint, does not count). A run that died before its check (or whose check failed) is
    therefore checked on resume; a checkpoint without this state (older versions) is checked as
    before. Plain attributes only: the callback stays picklable.
    """

    VERSION = 1

    def __init__(self) -> None:
        self.checked_step: int | None = None
        self.checked_generation: int | None = None
        self.history_known = False  # history_newest was read (a failed read leaves it unknown)
        self.history_newest: float | None = None
        self.restored: dict[str, Any] | None = None  # the state of the checkpoint this run resumed from
        self.restored_step: int | None = None  # the global step that checkpoint was saved at

    def start(self, monitor: CollapseMonitor, *, read_history: bool = True) -> None:
        """A new fit / train() begins: forget an earlier run's checks and checkpoint, note the
        history's newest check (only where checks run: rank zero). Never raises."""
        self.checked_step = self.checked_generation = None
        self.restored = self.restored_step = None
        self.history_known, self.history_newest = False, None
        if not read_history:
            return
        try:
            newest = _newest_check(monitor)
        except Exception as exc:  # an unreadable history only loses the resume shortcut
            log.warning(
                "collapse-monitor %s: could not read the history for the checkpoint state: %s",
                getattr(monitor, "name", "?"),
                redact_text(f"{type(exc).__name__}: {exc}"),
            )
            return
        self.history_known, self.history_newest = True, None if newest is None else newest[0]

    def state(self, monitor_name: str) -> dict[str, Any]:
        """What goes into the checkpoint (ints, floats, strings, None)."""
        out: dict[str, Any] = {
            "version": self.VERSION,
            "monitor": monitor_name,
            "checked_step": self.checked_step,
            "checked_generation": self.checked_generation,
        }
        if self.history_known:
            out["history_newest"] = self.history_newest
        return out

    def restore(self, state: Any, monitor_name: str, step: Any) -> None:
        """Take the state of the checkpoint being resumed (saved at global step ``step``). A
        state of another monitor, of an unknown shape or without a step is ignored."""
        if not isinstance(state, dict) or state.get("monitor") != monitor_name or _int_or_none(step) is None:
            return
        self.restored, self.restored_step = dict(state), int(step)
        if _int_or_none(state.get("checked_step")) is not None:  # carried into this run's checkpoints
            self.checked_step = _int_or_none(state.get("checked_step"))
            self.checked_generation = _int_or_none(state.get("checked_generation"))

    def skip_reason(
        self, monitor: CollapseMonitor, step: Any, fingerprint: Callable[[], str | None] | None = None
    ) -> str | None:
        """Why the check at global step ``step`` would record already-checked weights again,
        or None: check. May raise (the history read); the caller contains it. With
        ``fingerprint`` (the model's :func:`weights_fingerprint`, asked for only when needed),
        a hook check in the history counts only if it checked these weights (its
        :func:`weights_note`; one without the note, from an older version, counts by its step
        as before): another job's check at the same step number is not this checkpoint's (a
        run that died before its check, resumed, was skipped on a later generation's check at
        the same step; a hooks audit, 2026-12-08)."""
        r, step = self.restored, _int_or_none(step)
        if r is None or step is None or step != self.restored_step:
            return None  # not resumed, or trained since the checkpoint: new weights
        if _int_or_none(r.get("checked_step")) == step:
            gen = _int_or_none(r.get("checked_generation"))
            as_gen = "" if gen is None else f" as generation {gen}"
            return f"step {step} was checked{as_gen} before its checkpoint was saved"
        then = r.get("history_newest", "unknown")  # None: the history was empty when it was saved
        if then is not None and (isinstance(then, bool) or not isinstance(then, int | float)):
            return None  # the saving process could not read the history (or an unknown shape): check
        mark = step_note(step)
        hits = [r for r in monitor.reports() if mark in r.notes and (then is None or float(r.created_at) > then)]
        these = fingerprint() if hits and fingerprint is not None else None
        if these is not None:
            mine = weights_note(these)
            hits = [r for r in hits if mine in r.notes or not any(n.startswith(_WEIGHTS_NOTE) for n in r.notes)]
        if hits:
            gen = int(max(hits, key=lambda r: r.created_at).generation)
            self.checked_step, self.checked_generation = step, gen
            return (
                f"no training step since the checkpoint at step {step}, and the history has a check of the "
                f"weights at that step (generation {gen}) newer than that checkpoint: the run that saved it checked them"
            )
        return None

    def record(self, step: Any, report: Report) -> None:
        """A check of the weights at ``step`` succeeded."""
        self.checked_step = _int_or_none(step)
        self.checked_generation = int(report.generation)
        created = float(report.created_at)
        self.history_known = True
        self.history_newest = created if self.history_newest is None else max(created, self.history_newest)


class HookCore:
    """Runs one check for a callback; holds ``last_report`` / ``last_error``."""

    def __init__(
        self,
        monitor: CollapseMonitor,
        evaluate: Callable[[Any], Observation],
        *,
        generation: GenerationArg = None,
        provenance: ProvenanceArg = None,
        eval_mode: bool = True,
        owner: str = "callback",
        replicate: bool = False,
    ) -> None:
        if not (callable(getattr(monitor, "check", None)) and callable(getattr(monitor, "_observe_safely", None))):
            raise ConfigError(f"{owner}.monitor", f"expected a cm.CollapseMonitor, got {type(monitor).__name__}")
        if not callable(evaluate):
            raise ConfigError(f"{owner}.evaluate", "expected a callable model -> cm.Observation")
        if (
            generation is not None
            and not callable(generation)
            and (isinstance(generation, bool) or not isinstance(generation, int) or generation < 0)
        ):
            raise ConfigError(f"{owner}.generation", f"expected an int >= 0 or a callable, got {generation!r}")
        if isinstance(provenance, Mapping):  # as @mon.watch and mon.retrain take it
            try:
                provenance = as_provenance(provenance, f"{owner}.provenance")
            except InputError as exc:
                raise ConfigError(exc.field, exc.message) from None
        if provenance is not None and not callable(provenance) and not isinstance(provenance, Provenance):
            raise ConfigError(
                f"{owner}.provenance",
                f"expected cm.Provenance, a mapping of its fields or a callable, got {type(provenance).__name__}",
            )
        check_flag(eval_mode, f"{owner}.eval_mode")
        replicate = check_flag(replicate, f"{owner}.replicate")
        self.monitor = monitor
        self.evaluate = evaluate
        self.generation = generation
        self.provenance = provenance
        self.eval_mode = eval_mode
        #: add each checked model to the baseline as a replicate (``monitor.check_replicate``)
        self.replicate = replicate
        self.last_report: Report | None = None
        self.last_replicate: dict[str, MetricValue] | None = None
        self.last_error: BaseException | None = None
        self.ledger = CheckLedger()

    def __getstate__(self) -> dict[str, Any]:
        # a user's exception may not survive pickling (its __init__ takes other arguments), and a
        # weak reference never does: a spawned worker gets the error's text, not the object
        state = self.__dict__.copy()
        if state.get("last_error") is not None:
            err = state["last_error"]
            state["last_error"] = CollapseMonitorError(redact_text(f"{type(err).__name__}: {err}"))
        return state

    @property
    def _checked(self) -> tuple[Any, int, str | None] | None:
        """(weak reference to the model, global step, fingerprint) of the monitor's last
        successful hook check of this kind since :meth:`forget_checked` (:data:`_CHECKED`): the
        same weights are checked once (a validation at the end of training and a validate()
        after it; HF's last evaluation and the end of training; two callbacks of one monitor)."""
        try:
            return _CHECKED.get(self.monitor, {}).get(bool(self.replicate))
        except TypeError:  # a monitor without weak references: no memory
            return None

    @_checked.setter
    def _checked(self, value: tuple[Any, int, str | None] | None) -> None:
        try:
            kinds = _CHECKED.setdefault(self.monitor, {})
        except TypeError:
            return
        if value is None:
            kinds.pop(bool(self.replicate), None)
        else:
            kinds[bool(self.replicate)] = value

    def forget_checked(self) -> None:
        """A new training run starts: the step number may repeat with other weights. Where the
        weights themselves were fingerprinted the memory stays, since the fingerprint tells
        trained weights apart: a second ``fit()`` that trains 0 steps (``max_epochs`` already
        reached) holds the checked weights, and checking them again made a new generation of
        the same model. Only a check without a fingerprint (a model that is not a module) is
        forgotten."""
        if self._checked is not None and self._checked[2] is None:
            self._checked = None

    def _same_weights(self, model: Any, step: int | None, fingerprint: Callable[[], str | None]) -> bool:
        """The same model object at the same global step, holding the same values: HF's
        ``load_best_model_at_end`` and Lightning's ``validate(ckpt_path=...)`` load other
        weights into the same object at the same step (that check was skipped, and the last
        generation described weights the trainer had thrown away)."""
        if self._checked is None or step is None:
            return False
        ref, at, checked = self._checked
        return at == step and ref() is model and (checked is None or fingerprint() == checked)

    def run_at_step(self, model: Any, context: tuple[Any, ...], step: Any) -> Report | None:
        """:meth:`run`, unless the weights at global step ``step`` were already checked before
        the checkpoint this run resumed from (one INFO line says why; ``last_report`` /
        ``last_error`` are left as they were). A failure of that test is logged and the check
        runs, as it did before the ledger existed."""
        memo: list[str | None] = []

        def fingerprint() -> str | None:  # the weights as they are before the check, read once
            if not memo:
                memo.append(weights_fingerprint(model))
            return memo[0]

        try:
            # a replicate is no generation and leaves no report: the ledger cannot tell whether its
            # weights were added (a generation checked by another job at the same step would read as
            # this one); a replicate measured again is not stored twice (check_replicate)
            reason = None if self.replicate else self.ledger.skip_reason(self.monitor, step, fingerprint)
        except Exception as exc:
            reason = None
            log.warning(
                "collapse-monitor %s: could not tell whether step %s was already checked, checking: %s",
                getattr(self.monitor, "name", "?"),
                step,
                redact_text(f"{type(exc).__name__}: {exc}"),
            )
        if reason is not None:
            log.info("collapse-monitor %s: check skipped, resumed from a checkpoint: %s", self.monitor.name, reason)
            return None
        at = _int_or_none(step)
        if self._same_weights(model, at, fingerprint):
            log.info(
                "collapse-monitor %s: the weights at step %s were checked already, check skipped", self.monitor.name, at
            )
            return None
        notes: tuple[str, ...] = ()
        if at is not None:
            checked = fingerprint()
            notes = (step_note(at),) if checked is None else (step_note(at), weights_note(checked))
        report = self.run(model, context, notes=notes)
        if report is not None or self.last_replicate is not None:
            if report is not None:  # a replicate is no generation: a resumed job's copy is not stored twice
                with contextlib.suppress(Exception):
                    self.ledger.record(step, report)
            if at is not None:
                with contextlib.suppress(TypeError):  # an object without weak references: no memory
                    self._checked = (weakref.ref(model), at, weights_fingerprint(model))
        return report

    def run(self, model: Any, context: tuple[Any, ...], notes: tuple[str, ...] = ()) -> Report | None:
        """Evaluate ``model`` and check it; ``context`` is what the generation/provenance
        callables receive. Returns the Report, or None when something failed (see last_error);
        ``last_report`` / ``last_error`` always describe this latest attempt. With
        ``replicate`` the model is added to the baseline as a replicate: None is returned and
        ``last_replicate`` holds its metrics."""
        self.last_report = None
        self.last_replicate = None
        self.last_error = None
        try:
            if model is None:
                raise ConfigError("model", "the trainer passed no model to the callback")
            gen = self.generation(*context) if callable(self.generation) else self.generation
            prov = self.provenance(*context) if callable(self.provenance) else self.provenance

            def make() -> Observation:
                with eval_mode(model, self.eval_mode):
                    return self.evaluate(model)

            # the training loop draws on as if no check had run (the callbacks run inside it, on its
            # thread; watch/retrain do not restore: in a threaded job that rewinds other threads' draws)
            with rng_preserved():
                result = self.monitor._observe_safely(
                    make, generation=gen, provenance=prov, strict=False, notes=notes, replicate=self.replicate
                )
            if result is None:
                self.last_error = self.monitor.last_error
                return None
            if self.replicate:
                self.last_replicate = result  # type: ignore[assignment]
                return None
            report: Report = result  # type: ignore[assignment]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # contain everything: a raising callback aborts fit
            self.last_error = exc
            log.error(
                "collapse-monitor %s: callback failed, training continues: %s",
                getattr(self.monitor, "name", "?"),
                redact_text(f"{type(exc).__name__}: {exc}"),
            )
            return None
        self.last_report = report
        if report.errors:
            log.warning(
                "collapse-monitor %s: %d delivery error(s), spooled for retry", report.monitor, len(report.errors)
            )
        return report


class HookResults:
    """What every callback exposes about its latest check, read from its ``HookCore``."""

    _core: HookCore

    @property
    def monitor(self) -> CollapseMonitor:
        return self._core.monitor

    @property
    def last_report(self) -> Report | None:
        """The report of the latest check; None when it failed (see ``last_error``) or none ran."""
        return self._core.last_report

    @property
    def last_replicate(self) -> dict[str, MetricValue] | None:
        """With ``replicate=True``: the metrics of the replicate the latest check added to the
        baseline (each with the baseline's value); None when it failed or none ran."""
        return self._core.last_replicate

    @property
    def last_error(self) -> BaseException | None:
        """The failure of the last check, None when it succeeded."""
        return self._core.last_error
