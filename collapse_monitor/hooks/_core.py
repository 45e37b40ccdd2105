"""The body every framework callback shares: build the Observation, check it, never raise.

A callback that raises aborts Lightning's ``fit`` (and the HF ``Trainer``): so
:meth:`HookCore.run` contains every ``Exception`` of ``evaluate``, of the ``generation`` /
``provenance`` callables and of the check itself, logs it (secrets redacted) and keeps it in
``last_error``. ``KeyboardInterrupt`` / ``SystemExit`` still propagate: stopping a job is the
user's call, not ours.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._redact import redact_text
from ..errors import ConfigError
from ..types import Observation, Provenance

if TYPE_CHECKING:
    from ..monitor import CollapseMonitor
    from ..types import Report

__all__ = ["HookCore", "HookResults", "eval_mode"]

log = logging.getLogger("collapse_monitor.hooks")

GenerationArg = int | Callable[..., "int | None"] | None
ProvenanceArg = Provenance | Callable[..., "Provenance | None"] | None


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
        if provenance is not None and not callable(provenance) and not isinstance(provenance, Provenance):
            raise ConfigError(
                f"{owner}.provenance", f"expected cm.Provenance or a callable, got {type(provenance).__name__}"
            )
        self.monitor = monitor
        self.evaluate = evaluate
        self.generation = generation
        self.provenance = provenance
        self.eval_mode = eval_mode
        self.last_report: Report | None = None
        self.last_error: BaseException | None = None

    def run(self, model: Any, context: tuple[Any, ...]) -> Report | None:
        """Evaluate ``model`` and check it; ``context`` is what the generation/provenance
        callables receive. Returns the Report, or None when something failed (see last_error);
        ``last_report`` / ``last_error`` always describe this latest attempt."""
        self.last_report = None
        self.last_error = None
        try:
            if model is None:
                raise ConfigError("model", "the trainer passed no model to the callback")
            gen = self.generation(*context) if callable(self.generation) else self.generation
            prov = self.provenance(*context) if callable(self.provenance) else self.provenance

            def make() -> Observation:
                with eval_mode(model, self.eval_mode):
                    return self.evaluate(model)

            report = self.monitor._observe_safely(make, generation=gen, provenance=prov, strict=False)
            if report is None:
                self.last_error = self.monitor.last_error
                return None
        except Exception as exc:  # contain everything: a raising callback aborts fit
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
    def last_error(self) -> BaseException | None:
        """The failure of the last check, None when it succeeded."""
        return self._core.last_error
