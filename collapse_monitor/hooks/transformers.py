"""Hugging Face ``Trainer`` callback: check the trained model at the end of training.

::

    from collapse_monitor.hooks.transformers import CollapseMonitorCallback

    cb = CollapseMonitorCallback(mon, evaluate=lambda model: cm.Observation(
        predictions=model(input_ids=probe_ids).logits.argmax(-1)))
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb])
    trainer.train()
    cb.last_report          # the Report (None if the check failed: see cb.last_error)

``on_train_end`` (default on) checks once per ``train()``; ``on_evaluate=True`` also checks
after every evaluation phase (one generation each). Weights already checked at the same
training step (the last evaluation and the end of training) are not checked again. Only the world process zero
(``state.is_world_process_zero``) checks. ``evaluate`` gets the unwrapped model and runs under
``model.eval()`` and ``torch.no_grad()``; the training mode is restored afterwards.

The callback contains its own failures (STYLE item 8): any ``Exception`` from ``evaluate``,
the check, a sink or an alert channel is logged and kept in ``last_error``; training goes on.
For a model sharded across ranks (FSDP, DeepSpeed ZeRO-3) call
:func:`collapse_monitor.hooks.distributed_check` on every rank instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    raise ImportError(
        "collapse_monitor.hooks.transformers needs transformers: pip install 'collapse-monitor[transformers]'"
    ) from None

from ._core import GenerationArg, HookCore, HookResults, ProvenanceArg

if TYPE_CHECKING:
    from ..monitor import CollapseMonitor
    from ..types import Observation

__all__ = ["CollapseMonitorCallback"]


class CollapseMonitorCallback(HookResults, TrainerCallback):
    """Check ``evaluate(model)`` with ``monitor`` at the end of ``Trainer.train()``.

    Args:
        monitor: the :class:`cm.CollapseMonitor` of this training chain.
        evaluate: ``model -> cm.Observation``.
        generation: an int, or ``(args, state, model) -> int | None``; default: previous + 1.
        provenance: a :class:`cm.Provenance`, or ``(args, state, model) -> Provenance | None``.
        on_evaluate: also check after every evaluation phase (default False).
        on_train_end: check at the end of training (default True).
        eval_mode: run ``evaluate`` under ``eval()`` + ``torch.no_grad()`` (default True).
    """

    def __init__(
        self,
        monitor: CollapseMonitor,
        evaluate: Callable[[Any], Observation],
        *,
        generation: GenerationArg = None,
        provenance: ProvenanceArg = None,
        on_evaluate: bool = False,
        on_train_end: bool = True,
        eval_mode: bool = True,
    ) -> None:
        self._core = HookCore(
            monitor,
            evaluate,
            generation=generation,
            provenance=provenance,
            eval_mode=eval_mode,
            owner="CollapseMonitorCallback",
        )
        self.check_on_evaluate = bool(on_evaluate)
        self.check_on_train_end = bool(on_train_end)
        self._checked_at: tuple[int, Any] | None = None  # (trainer state, global step) of the last check

    def __repr__(self) -> str:
        return (
            f"CollapseMonitorCallback(monitor={self.monitor.name!r}, on_train_end={self.check_on_train_end}, "
            f"on_evaluate={self.check_on_evaluate})"
        )

    # -- TrainerCallback events --------------------------------------------------------------
    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.check_on_train_end:
            self._maybe_check(args, state, model)

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.check_on_evaluate:
            self._maybe_check(args, state, model)

    def _maybe_check(self, args: Any, state: Any, model: Any) -> None:
        if not getattr(state, "is_world_process_zero", True):
            return
        # the same weights are checked once: with on_evaluate, the last evaluation and the end of
        # training (or a trainer.evaluate() after it) see the same step; one generation, not two
        at = (id(state), getattr(state, "global_step", None))
        if at[1] is not None and at == self._checked_at:
            return
        self._checked_at = at
        self._core.run(model, (args, state, model))
