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

Resuming: the callback keeps a small state in each checkpoint's ``trainer_state.json``, under
``stateful_callbacks["collapse_monitor"][<monitor name>]``: the step and generation it last
checked and the newest check the monitor's history held when the checkpoint was saved.
``train(resume_from_checkpoint=...)`` of a finished run trains 0 steps and ends training again;
those weights are not checked a second time when the checkpoint says so (``on_evaluate`` checked
that step before the save) or when the history has a check newer than the checkpoint (the run
that saved it checked them at the end of training): one INFO line says why. A resumed run that
trains is checked as before; one whose first run died before its check is checked now; a
checkpoint without the state (older versions) loads and is checked as before. The callback is
deliberately not an ``ExportableState``: with ``restore_callback_states_from_checkpoint=True``
the Trainer would rebuild such a callback from JSON arguments, and ours needs the monitor and
``evaluate``; that option only logs "callbacks not included in current configuration" for the
``collapse_monitor`` entry.

The callback contains its own failures (STYLE item 8): any ``Exception`` from ``evaluate``,
the check, a sink or an alert channel is logged and kept in ``last_error``; training goes on.
For a model sharded across ranks (FSDP, DeepSpeed ZeRO-3) call
:func:`collapse_monitor.hooks.distributed_check` on every rank instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    raise ImportError(
        "collapse_monitor.hooks.transformers needs transformers: pip install 'collapse-monitor[transformers]'"
    ) from None

from .._redact import redact_text
from ..errors import ConfigError
from ._core import GenerationArg, HookCore, HookResults, ProvenanceArg, check_flag

if TYPE_CHECKING:
    from ..monitor import CollapseMonitor
    from ..types import Observation

__all__ = ["CollapseMonitorCallback"]

log = logging.getLogger("collapse_monitor.hooks")

#: the key of this package's entry in ``TrainerState.stateful_callbacks`` (a dict: monitor -> state);
#: not a callback class name, so ``Trainer._load_callback_state`` never tries to rebuild us from it
STATE_KEY = "collapse_monitor"


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
        replicate: this ``train()`` retrains the baseline generation once more (human data only,
            another seed): the trained model is added to the baseline as a replicate
            (``monitor.check_replicate``; ``last_replicate`` holds its metrics) instead of being
            checked as a new generation. Once, at the end of training: not with ``on_evaluate``.
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
        replicate: bool = False,
    ) -> None:
        self._core = HookCore(
            monitor,
            evaluate,
            generation=generation,
            provenance=provenance,
            eval_mode=eval_mode,
            owner="CollapseMonitorCallback",
            replicate=replicate,
        )
        self.check_on_evaluate = check_flag(on_evaluate, "CollapseMonitorCallback.on_evaluate")
        self.check_on_train_end = check_flag(on_train_end, "CollapseMonitorCallback.on_train_end")
        self._train_start_step: int | None = None
        if replicate and (self.check_on_evaluate or not self.check_on_train_end):
            raise ConfigError(
                "CollapseMonitorCallback.replicate",
                "a replicate is one retrain of the baseline generation, added once at the end of training: "
                "use it with on_train_end=True and on_evaluate=False",
            )
        if not (self.check_on_evaluate or self.check_on_train_end):
            raise ConfigError(
                "CollapseMonitorCallback.on_train_end",
                "on_train_end and on_evaluate are both off: the callback would check nothing; keep on_train_end=True "
                "(a check when train() ends) or set on_evaluate=True (one per evaluation)",
            )

    def __repr__(self) -> str:
        return (
            f"CollapseMonitorCallback(monitor={self.monitor.name!r}, on_train_end={self.check_on_train_end}, "
            f"on_evaluate={self.check_on_evaluate}{', replicate=True' if self._core.replicate else ''})"
        )

    # -- TrainerCallback events --------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # the Trainer has loaded trainer_state.json of the checkpoint it resumes (if any) by now
        self._core.forget_checked()  # a new train(): the same step number is not the same weights
        try:
            self._core.ledger.start(self.monitor, read_history=bool(getattr(state, "is_world_process_zero", True)))
            saved = getattr(state, "stateful_callbacks", None)
            entry = saved.get(STATE_KEY) if isinstance(saved, dict) else None
            if isinstance(entry, dict) and self.monitor.name in entry:
                self._core.ledger.restore(entry[self.monitor.name], self.monitor.name, state.global_step)
        except Exception as exc:  # never abort train(): the check then runs as it did without the state
            log.warning(
                "collapse-monitor %s: checkpoint state not restored: %s",
                self.monitor.name,
                redact_text(f"{type(exc).__name__}: {exc}"),
            )
        self._persist(state)
        self._train_start_step = getattr(state, "global_step", None)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._train_start_step = None
        if self.check_on_train_end:
            self._maybe_check(args, state, model)

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self.check_on_evaluate:
            return
        start = getattr(self, "_train_start_step", None)
        if start is not None and getattr(args, "eval_on_start", False) and getattr(state, "global_step", None) == start:
            # the Trainer's sanity check of the weights training starts from, before any step:
            # not a generation (it became the baseline on a new monitor), as Lightning's sanity
            # check is not
            log.info("collapse-monitor %s: eval_on_start evaluation, check skipped", self.monitor.name)
            return
        self._maybe_check(args, state, model)

    def _maybe_check(self, args: Any, state: Any, model: Any) -> None:
        if not getattr(state, "is_world_process_zero", True):
            return
        # the same weights are checked once (HookCore): with on_evaluate, the last evaluation and
        # the end of training (or a trainer.evaluate() after it) see the same model and step; one
        # generation, not two. Only a successful check counts: a failed one is tried again.
        self._core.run_at_step(model, (args, state, model), getattr(state, "global_step", None))
        self._persist(state)

    def _persist(self, state: Any) -> None:
        """Put the ledger where the Trainer's next checkpoint saves it (``trainer_state.json``)."""
        try:
            saved = getattr(state, "stateful_callbacks", None)
            if isinstance(saved, dict):
                entry = saved.setdefault(STATE_KEY, {})
                if isinstance(entry, dict):
                    entry[self.monitor.name] = self._core.ledger.state(self.monitor.name)
        except Exception:  # pragma: no cover - plain dicts; a checkpoint without it still resumes
            pass
