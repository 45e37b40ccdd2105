"""Lightning callback: check the trained model at the end of ``fit``.

::

    from collapse_monitor.hooks.lightning import CollapseMonitorCallback

    cb = CollapseMonitorCallback(mon, evaluate=lambda module: cm.Observation(
        predictions=module(X_probe).argmax(1)))
    trainer = L.Trainer(max_epochs=5, callbacks=[cb])
    trainer.fit(model, datamodule)
    cb.last_report          # the Report (None if the check failed: see cb.last_error)

Runs on global rank zero only, never during the sanity check nor under ``fast_dev_run``
(Lightning turns loggers off there too: a debug run is not a generation). ``evaluate`` runs
under ``module.eval()`` and ``torch.no_grad()``; the training mode is restored afterwards.

Like every Lightning hook it is a no-op by default, but unlike Lightning's contract it contains
its own failures (STYLE item 8): a callback that raises aborts ``fit``, so any ``Exception``
from ``evaluate``, the check, a sink or an alert channel is logged and kept in ``last_error``.

Resuming: the callback keeps a small state in the checkpoint (``state_dict``, under
``state_key`` = class name + monitor + ``on``): the step and generation it last checked and the
newest check the monitor's history held when the checkpoint was saved. ``fit(..., ckpt_path=...)``
of a finished job trains 0 steps and ends ``fit`` again; those weights are not checked a second
time when the checkpoint says so, or when the history has a check newer than the checkpoint (the
run that saved it checked them after saving): one INFO line says why. A resumed job that trains
is checked as before; one whose first run died before its check is checked now; a checkpoint
without the state (older versions) loads and is checked as before. Lightning refuses two stateful
callbacks with the same ``state_key``: one monitor takes one callback per ``on`` in a Trainer.

With a model sharded across ranks (FSDP, DeepSpeed ZeRO-3) a forward pass on rank zero alone
would hang: call :func:`collapse_monitor.hooks.distributed_check` on every rank from your own
hook instead.

Works with the ``lightning`` package (``lightning.pytorch``) and, when only that is installed,
the standalone ``pytorch_lightning`` package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - the standalone package only
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[assignment]
    except ImportError:
        raise ImportError(
            "collapse_monitor.hooks.lightning needs Lightning: pip install 'collapse-monitor[lightning]'"
        ) from None

from ..errors import ConfigError
from ._core import GenerationArg, HookCore, HookResults, ProvenanceArg, check_flag

if TYPE_CHECKING:
    from ..monitor import CollapseMonitor
    from ..types import Observation

__all__ = ["CollapseMonitorCallback"]

log = logging.getLogger("collapse_monitor.hooks")

_EVENTS = ("fit_end", "train_end", "validation_end")


class CollapseMonitorCallback(HookResults, Callback):
    """Check ``evaluate(pl_module)`` with ``monitor`` when ``on`` happens.

    Args:
        monitor: the :class:`cm.CollapseMonitor` of this training chain.
        evaluate: ``pl_module -> cm.Observation`` (probe predictions, sample embeddings, texts).
        generation: an int, or ``(trainer, pl_module) -> int | None``; default: previous + 1.
        provenance: a :class:`cm.Provenance`, or ``(trainer, pl_module) -> Provenance | None``.
        on: ``"fit_end"`` (default), ``"train_end"`` or ``"validation_end"`` (every validation
            run outside the sanity check: one generation per validation, except that the same
            weights are checked once: a ``trainer.validate()`` after fit at the step already
            checked is skipped).
        eval_mode: run ``evaluate`` under ``eval()`` + ``torch.no_grad()`` (default True).
        replicate: this ``fit`` retrains the baseline generation once more (human data only,
            another seed): the trained module is added to the baseline as a replicate
            (``monitor.check_replicate``; ``last_replicate`` holds its metrics) instead of being
            checked as a new generation. Once per fit: not with ``on="validation_end"``.
    """

    def __init__(
        self,
        monitor: CollapseMonitor,
        evaluate: Callable[[Any], Observation],
        *,
        generation: GenerationArg = None,
        provenance: ProvenanceArg = None,
        on: str = "fit_end",
        eval_mode: bool = True,
        replicate: bool = False,
    ) -> None:
        super().__init__()
        if on not in _EVENTS:
            raise ConfigError("CollapseMonitorCallback.on", f"expected one of {', '.join(_EVENTS)}, got {on!r}")
        if check_flag(replicate, "CollapseMonitorCallback.replicate") and on == "validation_end":
            raise ConfigError(
                "CollapseMonitorCallback.replicate",
                "a replicate is one retrain of the baseline generation, added once per fit: use on='fit_end' "
                "(or on='train_end')",
            )
        self.on = on
        self._core = HookCore(
            monitor,
            evaluate,
            generation=generation,
            provenance=provenance,
            eval_mode=eval_mode,
            owner="CollapseMonitorCallback",
            replicate=replicate,
        )
        # the checkpoint being resumed: its state_dict and its global step, from two hooks
        self._restored_state: dict[str, Any] | None = None
        self._restored_step: Any = None
        self._loaded_step: Any = None  # the step of the checkpoint a fit resumed (no validation due at it)
        self._validated = True  # a validation ran in the current fit (on="validation_end"); set False by setup

    def __repr__(self) -> str:
        extra = ", replicate=True" if self._core.replicate else ""
        return f"CollapseMonitorCallback(monitor={self.monitor.name!r}, on={self.on!r}{extra})"

    # -- checkpoint state (resuming a finished job must not add a generation) -------------------
    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor.name, on=self.on)

    def state_dict(self) -> dict[str, Any]:
        try:
            return self._core.ledger.state(self.monitor.name)
        except Exception:  # pragma: no cover - plain attributes; a checkpoint without it still loads
            return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_state = state_dict
        self._restore()  # with on_load_checkpoint's step: whichever Lightning calls second restores

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # the step the checkpoint was saved at (Lightning writes it at the top level of every checkpoint)
        self._restored_step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
        self._loaded_step = self._restored_step
        self._restore()

    def _restore(self) -> None:
        state, step = getattr(self, "_restored_state", None), getattr(self, "_restored_step", None)
        if state is None or step is None:
            return
        self._restored_state = self._restored_step = None
        try:
            self._core.ledger.restore(state, self.monitor.name, step)
        except Exception as exc:  # pragma: no cover - restore() only reads plain values
            self._core.last_error = exc

    # -- Lightning hooks ---------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # runs before Lightning restores a checkpoint (in either strategy order): a new ledger; the
        # history's newest check is only needed for the checkpoints a fit saves, on rank zero
        self._restored_state = self._restored_step = None
        try:
            fit_on_zero = stage == "fit" and bool(getattr(trainer, "is_global_zero", True))
        except Exception:  # pragma: no cover - a broken trainer object
            fit_on_zero = False
        if stage == "fit":  # new training: a repeated step number is not the same weights
            self._core.forget_checked()
            self._validated = False
            self._loaded_step = None  # the step of the checkpoint this fit resumes
            self._core.ledger.start(self.monitor, read_history=fit_on_zero)
        # test / validate / predict keep the fit's ledger: a new one forgot which step was
        # checked, so the checkpoint saved after `fit(); test()` said nothing was, and resuming
        # it for zero steps recorded the same weights as a new generation

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.on == "fit_end":
            self._maybe_check(trainer, pl_module)
        elif self.on == "validation_end" and not getattr(self, "_validated", True):
            try:
                zero = bool(getattr(trainer, "is_global_zero", True))
            except Exception:  # pragma: no cover - a broken trainer object
                zero = False
            start = getattr(self, "_loaded_step", None)
            if start is not None and getattr(trainer, "global_step", None) == start:
                zero = False  # a resume with nothing left to train: no validation was due, no step to check
            if zero:  # the user asked for a check per validation and got none, silently
                log.warning(
                    "collapse-monitor %s: on='validation_end' but no validation ran in this fit "
                    "(no val_dataloader, or limit_val_batches=0): nothing was checked; use on='fit_end'",
                    self.monitor.name,
                )

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.on == "train_end":
            self._maybe_check(trainer, pl_module)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.on == "validation_end":
            if not getattr(trainer, "sanity_checking", False):
                self._validated = True
            self._maybe_check(trainer, pl_module)

    def _maybe_check(self, trainer: Any, pl_module: Any) -> None:
        try:
            if getattr(trainer, "sanity_checking", False):
                return
            if not getattr(trainer, "is_global_zero", True):
                return
            if getattr(trainer, "fast_dev_run", False):
                log.info("collapse-monitor %s: fast_dev_run, check skipped", self.monitor.name)
                return
        except Exception as exc:  # pragma: no cover - a broken trainer object
            self._core.last_error = exc
            return
        try:
            step = trainer.global_step
        except Exception:  # pragma: no cover - a trainer without steps: no resume shortcut
            step = None
        self._core.run_at_step(pl_module, (trainer, pl_module), step)
