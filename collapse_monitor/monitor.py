"""CollapseMonitor: check() orchestrates metrics -> detection -> history -> sinks -> alerts.

Failure policy: bad input raises ``InputError`` before anything is logged. After that, the
monitor never lets a sink or alert channel break the caller: failures are recorded in
``report.errors``, reports are spooled and alert events stay in the outbox, both retried on the
next check or by ``collapse-monitor serve``. ``strict=True`` raises ``SinkError`` /
``AlertDeliveryError`` instead (after the report was recorded and spooled). ``watch()``
additionally contains every failure of the evaluation so the training function's return value
always passes through unchanged.

Crash safety: under the monitor's lock a check commits its report, alert state and baseline in
one transaction (flagged "not handed off"), then hands the report to every sink (or the spool)
and its alerts to the outbox, and only then clears the flag. A process killed anywhere in
between leaves the flag set; the next check or ``flush()`` (under the same lock) spools the
report for every sink and persists its alerts (deterministic event ids: nothing doubles), so a
generation that reached the history always reaches MLflow and the receivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import dataclasses
import functools
import inspect
import json
import logging
import math
import os
import re
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ._lifecycle import RULE_DRIFT, alert_events, keepalive_events
from ._redact import redact_text
from .detection import Rules, detect, remeasured
from .errors import AlertDeliveryError, CollapseMonitorError, ConfigError, InputError, SinkError
from .history import AlertState, Baseline, HistoryStore, Replicate, default_home, merge_baselines, sync_id
from .metrics.cache import ReferenceCache
from .metrics.knn import check_device
from .sinks.base import EmitContext, Sink, Spool, is_permanent
from .types import Alert, MetricValue, Observation, Provenance, Reference, Report, Stage, as_generation, as_provenance

if TYPE_CHECKING:
    from .alerting import AlertDispatcher, Channel
    from .metrics.engine import PanelResult

__all__ = ["CollapseMonitor"]

log = logging.getLogger("collapse_monitor")

F = TypeVar("F", bound=Callable[..., Any])
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


#: metrics never copied into the baseline from a later generation: ``rare_flips`` counts the
#: baseline's right answers lost since (0 at the baseline by definition) and
#: ``synthetic_fraction`` is the provenance the caller declared, not a property of the model.
_NO_LATE_BASELINE = frozenset({"rare_flips", "synthetic_fraction"})


def _measurable(reference: Reference) -> set[str]:
    """The metric keys a check against ``reference`` can produce (classes' own recalls aside)."""
    from .detection import METRICS_OF

    return {key for data, keys in METRICS_OF.items() if getattr(reference, data) is not None for key in keys}


def _rekey_hashed(baseline: Baseline, metrics: Mapping[str, MetricValue]) -> None:
    """A baseline read back from MLflow's metrics alone holds the keys MLflow refused (a class
    label with ``/``, a long or a ``.n``-like one) under their hashed metric names, where the
    ``collapse.metric_keys`` tag (at most 5,000 characters: about 100 keys, a few CJK ones) did
    not map them back. Each is renamed to the current check's key with that metric name, so it
    is compared instead of being taken from this check as "first seen" (an audit: 21 of 30
    class declines flagged)."""
    missing = [k for k in metrics if k not in baseline.metrics]
    if not missing:
        return
    from .sinks.mlflow import PREFIX, metric_name

    by_name = {name: k for k in missing if (name := metric_name(k)[len(PREFIX) :]) != k}
    for name in [n for n in baseline.metrics if n in by_name and n not in metrics]:
        key = by_name[name]
        baseline.metrics[key] = baseline.metrics.pop(name)
        for rep in baseline.replicates:
            if name in rep.metrics:
                rep.metrics[key] = rep.metrics.pop(name)


def _check_rules_fit(rules: Rules, reference: Reference) -> tuple[str, ...]:
    """Rules this reference cannot honour, found when the monitor is built. A
    ``class_recall.<label>`` of a class the reference does not have would leave its family
    empty: a ConfigError. ``k`` at least the reference's rows minus one makes every k-NN ball
    hold the whole reference, so precision, recall, coverage and tail coverage stay 1 whatever
    the generation does: a warning now and a note on every report (tiny references still
    check; their other metrics work)."""
    notes: list[str] = []
    emb = reference.embeddings
    if emb is not None and rules.k >= emb.shape[0] - 1:
        note = (
            f"rules.k={rules.k} needs a reference of more than {rules.k + 1} rows, it has {emb.shape[0]}: the k-NN "
            "metrics (precision, recall, coverage, tail/head coverage) cannot fall; lower k or add rows"
        )
        log.warning("%s", note)
        notes.append(note)
    measurable = _measurable(reference)
    if (
        rules.tail
        and not any(key in measurable or key.startswith("class_recall.") for key in rules.tail)
        and not (rules.rare_class_tests and reference.labels is not None)
    ):
        # a labels-only reference with tail: [tail_coverage, rare_mode_coverage] read a rare
        # class lost entirely as healthy, without a word (a config audit)
        note = (
            f"no metric of rules.tail ({', '.join(rules.tail)}) can be measured with this reference "
            f"({', '.join(k for k in ('embeddings', 'labels', 'texts') if getattr(reference, k) is not None)}): "
            "early collapse (the tail falling) cannot be seen; add a tail metric of this data to rules.tail"
        )
        log.warning("%s", note)
        notes.append(note)
    diverse = [key for key in rules.diversity if key in measurable]
    if 0 < len(diverse) < rules.early_diversity_metrics:
        # accepted, then never reached: diversity narrowing alone could not call early collapse
        note = (
            f"rules.early_diversity_metrics={rules.early_diversity_metrics} but this reference measures "
            f"{len(diverse)} metric(s) of rules.diversity ({', '.join(diverse)}): diversity narrowing alone "
            "never calls early collapse; lower it"
        )
        log.warning("%s", note)
        notes.append(note)
    classes = {str(c) for c in (reference.class_priors or {})}
    for family in ("tail", "head", "diversity"):
        for i, key in enumerate(getattr(rules, family)):
            if key.startswith("class_recall.") and key[len("class_recall.") :] not in classes:
                known = ", ".join(sorted(classes)[:20]) if classes else "none: the reference has no labels"
                raise ConfigError(
                    f"rules.{family}[{i}]", f"{key!r}: not a class of the reference (its classes: {known})"
                )
    return tuple(notes)


class CollapseMonitor:
    """Watches one recursive-training chain against a frozen human-origin reference.

    >>> import numpy as np, collapse_monitor as cm, tempfile
    >>> ref = cm.Reference(labels=[0] * 90 + [1] * 10)
    >>> mon = cm.CollapseMonitor("doc", reference=ref, sinks=[], home=tempfile.mkdtemp())
    >>> mon.check(cm.Observation(predictions=[0] * 90 + [1] * 10)).stage
    <Stage.HEALTHY: 'healthy'>
    """

    def __init__(
        self,
        name: str,
        reference: Reference,
        *,
        sinks: Sequence[Sink] | None = None,
        alerts: Sequence[Channel] = (),
        rules: Rules | Mapping[str, Any] | None = None,
        home: str | os.PathLike[str] | None = None,
        strict: bool = False,
        device: str | None = None,
        links: Mapping[str, str] | None = None,
        routing: Mapping[str, Sequence[str]] | None = None,
        mutes: Any = None,
        alert_budget_seconds: float = 10.0,
        replay_budget_seconds: float | None = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                "name",
                f"expected 1-128 characters of letters, digits, '_', '.', '-' (not starting with one), got {name!r}",
            )
        if not isinstance(reference, Reference):
            raise ConfigError("reference", f"expected cm.Reference, got {type(reference).__name__}")
        self.name = name
        self.reference = reference
        self.rules = rules if isinstance(rules, Rules) else Rules.from_dict(rules)
        #: notes every report carries about rules that this reference cannot honour
        self._fit_notes = _check_rules_fit(self.rules, reference)
        if home is not None and not isinstance(home, (str, os.PathLike)):
            raise ConfigError("home", f"expected a path (str or os.PathLike), got {type(home).__name__}")
        self.home = Path(home) if home is not None else default_home()
        if not isinstance(strict, bool):
            raise ConfigError("strict", f"expected true or false, got {strict!r}")
        self.strict = strict
        if replay_budget_seconds is not None and (
            isinstance(replay_budget_seconds, bool)
            or not isinstance(replay_budget_seconds, (int, float))
            or not math.isfinite(replay_budget_seconds)
            or replay_budget_seconds <= 0
        ):
            raise ConfigError(
                "replay_budget_seconds", f"expected a number of seconds above 0, or None, got {replay_budget_seconds!r}"
            )
        #: the time a check may spend replaying a sink's spooled backlog before its own report
        #: (None: no limit; strict checks replay it all): the rest waits, in order, for the next
        #: checks, flush() or serve
        self.replay_budget_seconds = None if replay_budget_seconds is None else float(replay_budget_seconds)
        self._alerts_blocked_at: int | None = None  # see _recover
        self.device = device
        self.clock = clock
        env_links = {
            "dashboard": os.environ.get("COLLAPSE_MONITOR_DASHBOARD_URL", ""),
            "runbook": os.environ.get("COLLAPSE_MONITOR_RUNBOOK_URL", ""),
        }
        if links is not None:  # the values are URLs that may carry tokens: never echo them
            if not isinstance(links, Mapping):
                raise ConfigError("links", f"expected a mapping of link name -> URL, got {type(links).__name__}")
            for k, v in links.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise ConfigError(f"links.{k}", f"expected a URL string, got {type(v).__name__}")
        check_device(device)
        self.links = {k: v for k, v in {**env_links, **dict(links or {})}.items() if v}
        if sinks is not None and (isinstance(sinks, (str, bytes)) or not isinstance(sinks, Iterable)):
            # one sink given alone was a TypeError (not iterable), after the home was set up
            raise ConfigError(
                "sinks",
                f"expected a list of sinks, e.g. sinks=[{type(sinks).__name__}(...)], got {type(sinks).__name__}",
            )
        if sinks is None:
            from .sinks import MLflowSink

            sinks = [MLflowSink()]
        self.sinks: list[Sink] = list(sinks)
        for i, s in enumerate(self.sinks):
            if not hasattr(s, "emit") or not hasattr(s, "name"):
                raise ConfigError(
                    f"sinks[{i}]", f"expected a sink with .name and .emit(report), got {type(s).__name__}"
                )
        self.history = HistoryStore(self.home)
        self.cache = ReferenceCache(self.home / "cache")
        self.spool = Spool(self.home / "spool")
        from .alerting.dispatcher import check_dispatch_options

        # routing / mutes / budget are checked now, so a typo is a ConfigError here and not a
        # failure of every later check (the outbox itself opens at the first alert)
        self.channels = list(
            check_dispatch_options(alerts, routing=routing, mutes=mutes, budget_seconds=alert_budget_seconds)[
                0
            ].values()
        )
        repeat = self.rules.repeat_interval_seconds
        for i, ch in enumerate(self.channels):
            window = getattr(ch, "resend_window", None)  # Alertmanager: how long a posted firing lives
            if isinstance(window, (int, float)) and window <= repeat:
                # the firing is posted again only with a repeat: a window up to the repeat
                # interval let an open incident expire in between, and Alertmanager told
                # on-call "resolved" while the model was still collapsed (an alerting audit)
                raise ConfigError(
                    f"alerts[{i}].resend_window",
                    f"{window:g} s is not above rules.repeat_interval_seconds ({repeat:g} s): Alertmanager would "
                    "let an open incident expire between repeats and notify 'resolved'; set it above the repeat "
                    "interval (and above any mute you plan)",
                )
        self._dispatcher: AlertDispatcher | None = None
        self._dispatcher_opts = dict(routing=routing, mutes=mutes, budget_seconds=alert_budget_seconds)
        self._tls = threading.local()  # last_report / last_error, per thread
        self._last_any: dict[str, Any] = {}  # ... and of any thread, for threads that made no check
        #: the last check's metric panel, per-item arrays included (diagnostics, benchmarks)
        self.last_panel: PanelResult | None = None
        #: the measurement-settings warning is logged once per monitor (each report notes it)
        self._said_remeasured = False

    # pickling (Lightning's ddp_spawn, deep copies of callbacks): the settings travel, the
    # process-local handles (history / cache / spool / outbox connections and locks, the last
    # report) are opened anew on the other side, on the same home
    _LOCAL = ("history", "cache", "spool", "_dispatcher", "_tls", "_last_any", "last_panel")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._LOCAL}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.history = HistoryStore(self.home)
        self.cache = ReferenceCache(self.home / "cache")
        self.spool = Spool(self.home / "spool")
        self._dispatcher = None
        self._tls, self._last_any = threading.local(), {}
        self.last_panel = None

    # the latest check's report and error, per thread: ``watch`` hands its report back through
    # ``last_report``, and threads retraining through one monitor read each other's
    @property
    def last_report(self) -> Report | None:
        """The report of this thread's latest check (a thread that made none: the latest of any
        thread); None when that check failed (see :attr:`last_error`)."""
        return self._last("last_report")

    @last_report.setter
    def last_report(self, value: Report | None) -> None:
        self._set_last("last_report", value)

    @property
    def last_replicate(self) -> dict[str, MetricValue] | None:
        """The metrics of this thread's latest replicate of the baseline (:meth:`check_replicate`,
        or a hook with ``replicate=True``; also one equal to a stored replicate, which is not
        stored twice), each with the baseline's value; None when it failed (see
        :attr:`last_error`) or none was measured."""
        return self._last("last_replicate")

    @last_replicate.setter
    def last_replicate(self, value: dict[str, MetricValue] | None) -> None:
        self._set_last("last_replicate", value)

    @property
    def last_error(self) -> BaseException | None:
        """The failure of this thread's latest check (as :attr:`last_report`), None if it ran."""
        return self._last("last_error")

    @last_error.setter
    def last_error(self, value: BaseException | None) -> None:
        self._set_last("last_error", value)

    def _last(self, key: str) -> Any:
        mine = self._tls.__dict__
        return mine[key] if key in mine else self._last_any.get(key)

    def _set_last(self, key: str, value: Any) -> None:
        setattr(self._tls, key, value)
        self._last_any[key] = value

    def __repr__(self) -> str:
        return (
            f"CollapseMonitor({self.name!r}, reference={self.reference!r}, "
            f"sinks={[s.name for s in self.sinks]}, alerts={len(self.channels)} channel(s))"
        )

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str], *, reference: Reference | None = None, **overrides: Any
    ) -> CollapseMonitor:
        """Build a monitor from a YAML file (see ``collapse_monitor.config``)."""
        from .config import monitor_from_config

        return monitor_from_config(path, reference=reference, **overrides)

    @property
    def _outbox_path(self) -> Path:
        return self.home / "outbox.db"

    @property
    def dispatcher(self) -> AlertDispatcher | None:
        if not self.channels:
            return None
        if self._dispatcher is None:
            from .alerting import AlertDispatcher

            self._dispatcher = AlertDispatcher(
                self.channels,
                outbox_path=self._outbox_path,
                scope=self.name,  # monitors sharing a home share outbox.db: deliver only ours
                **self._dispatcher_opts,
            )
        return self._dispatcher

    # ------------------------------------------------------------------------------------------
    def check(self, observation: Observation) -> Report:
        """Measure one generation, compare it with the baseline and the trend, log and alert."""
        return self._check(observation, ())

    def check_replicate(self, observation: Observation) -> dict[str, MetricValue]:
        """Add another retrain of the baseline generation (human data only, another seed or
        another draw of the same data) to the baseline. Later checks then count a decline only
        if it holds against the baseline *and* every replicate (an intersection-union test,
        ``detect``'s ``replicates``), so one lucky baseline retrain, against which an average
        retrain reads as a significant loss, no longer sets the bar alone. One or two replicates
        are enough for that (README, "Replicate baselines").

        Call it after the baseline generation's :meth:`check` (a new machine reads the baseline
        back from the sinks first, as a check does); checking the baseline generation again
        starts a new baseline without replicates, and :meth:`drop_replicates` removes them.
        A replicate must be measured like the baseline: ``InputError`` for fewer sample
        embeddings or texts than the baseline had, or a larger synthetic fraction than the
        baseline generation declared. A replicate that reads as collapsed against the baseline is
        kept, with a warning (that is what a lucky baseline looks like, and what replicates are
        for; a failed retrain is dropped with :meth:`drop_replicates`). Nothing is logged to the
        sinks and no alert is evaluated; the next check's MLflow run carries the baseline with its
        replicates. A replicate equal to one already stored (the same weights measured again by a
        deterministic ``evaluate``: a resumed training job that trained no step and ends its fit
        again) is not added twice, nor is one dropped earlier (:meth:`drop_replicates`, here or
        on another machine that shares the baseline through MLflow).
        Returns the replicate's metrics, each with the baseline's value (also in
        :attr:`last_replicate`). The training hooks take ``replicate=True`` (``watch``,
        ``retrain``, the Lightning and Hugging Face callbacks, ``distributed_check``).
        """
        self.last_replicate = None
        if not isinstance(observation, Observation):
            raise InputError("observation", f"expected cm.Observation, got {type(observation).__name__}")
        observation.validate_against(self.reference)
        with self.history.lock(self.name):
            baseline = self._replicates_baseline("check_replicate")
            if baseline is None:
                raise InputError(
                    "observation",
                    "there is no baseline yet: check the baseline generation first (monitor.check, or "
                    "collapse-monitor check without --replicate), then add its replicates",
                )
            if observation.generation is not None and observation.generation != baseline.generation:
                raise InputError(
                    "observation.generation",
                    f"a replicate is another retrain of the baseline generation {baseline.generation}, got "
                    f"generation {observation.generation}",
                )
            if baseline.fingerprint != self.reference.fingerprint:
                raise InputError(
                    "observation",
                    "the reference changed since the baseline: check the baseline generation again before adding "
                    "replicates",
                )
            self._check_replicate_like_baseline(observation, baseline)
            panel = self._panel(observation, baseline)
            replicate = _replicate_of(panel, baseline.metrics, baseline.items)
            metrics = replicate.metrics
            digest = replicate.digest()
            # 0: the baseline generation's own outputs again (its own digest, as a replicate of itself).
            # Only where the baseline has per-item vectors: metrics alone (a baseline read back from
            # a report) can be equal for two retrains right on other items
            own = Replicate({k: v for k, v in baseline.metrics.items() if k not in _NO_LATE_BASELINE}, baseline.items)
            candidates = [own, *baseline.replicates] if baseline.items else []
            same = next((i for i, r in enumerate(candidates) if r.digest() == digest), None)
            if same is None and digest in baseline.dropped:
                same = -1  # dropped from this baseline (here or on another machine): it stays out
            if same is None:
                baseline.replicates.append(replicate)
                self.history.save_baseline(self.name, baseline)
            self.last_panel = panel
            count = len(baseline.replicates)
        result = {k: mv.with_baseline(baseline.metrics[k].value) for k, mv in metrics.items()}
        slot: tuple[int, bool, str | None]
        if same is not None:
            # the same weights measured again (a resumed job that trained no step ends its fit
            # again; a script run twice; the baseline's own outputs): a copy adds nothing to the test
            if same < 0:
                log.warning(
                    "%s: this replicate equals one dropped from baseline generation %d (drop_replicates, on this or "
                    "another machine): not added again; a dropped retrain stays out (check the baseline generation "
                    "again to start over)",
                    self.name,
                    baseline.generation,
                )
            else:
                log.info(
                    "%s: this replicate equals %s of baseline generation %d%s",
                    self.name,
                    f"replicate {same}" if same else "the outputs",
                    baseline.generation,
                    ", already stored: not added again" if same else ": no other retrain, not added",
                )
            slot = (same, False, None)
        else:
            log.info("%s: replicate %d of baseline generation %d stored", self.name, count, baseline.generation)
            lacking = sorted(k for k in baseline.metrics if k not in metrics and k not in _NO_LATE_BASELINE)
            if lacking:
                log.warning(
                    "%s: the replicate has no %s%s (give it the same outputs as the baseline): those metrics are "
                    "judged against the baseline alone",
                    self.name,
                    ", ".join(lacking[:5]),
                    f" and {len(lacking) - 5} more" if len(lacking) > 5 else "",
                )
            slot = (count, True, self._judge_replicate(panel, baseline, count))
        self.last_replicate = result
        # which replicate it is, whether it was new, and how it reads against the baseline (the CLI)
        self._set_last("replicate_slot", slot)
        return result

    def _judge_replicate(self, panel: Any, baseline: Baseline, count: int) -> str | None:
        """How stored replicate ``count`` reads against the baseline (its stage), with a warning
        naming the command that drops it when it reads as collapsed; None when it could not be
        judged (the replicate is stored: how it reads is advice, and its failure is not the call's)."""
        try:
            det = detect(
                panel.metrics,
                rules=self.rules,
                baseline=baseline.metrics,
                items=panel.items,
                base_items=baseline.items,
                paired=panel.paired,
                rare_classes=panel.rare_classes,
            )
        except Exception as exc:
            log.warning(
                "%s: replicate %d stored, but it could not be judged against the baseline: %s",
                self.name,
                count,
                redact_text(f"{type(exc).__name__}: {exc}"),
            )
            return None
        if det.stage is not Stage.HEALTHY:
            fell = ", ".join(f"{f.key} {f.relative_change:+.1%}" for f in det.findings if f.significant)
            log.warning(
                "%s: replicate %d reads %s against the baseline (%s): a retrain of the same data this far from the "
                "baseline is the retrain noise replicates are for, and every later decline must now beat it; if its "
                "training failed, drop it: drop_replicates([%d]) (collapse-monitor check --config <its config> "
                "--drop-replicates %d)",
                self.name,
                count,
                det.stage.value,
                fell,
                count,
                count,
                extra={"cm_replicate_reads": det.stage.value},  # the CLI says it once itself, with its --config
            )
        return det.stage.value

    def _check_replicate_like_baseline(self, obs: Observation, baseline: Baseline) -> None:
        """A replicate measured on fewer samples or texts than the baseline, or trained on more
        synthetic data than the baseline generation, would lower the bar for every later check
        (the intersection-union test takes the replicate with the smallest decline): refused."""
        base_m, _ = _baseline_sizes(baseline)
        if base_m and obs.embeddings is not None and len(obs.embeddings) < base_m:
            raise InputError(
                "observation.embeddings",
                f"{len(obs.embeddings)} sample embeddings where the baseline had {base_m}: a replicate is measured "
                f"like the baseline; pass at least {base_m}",
            )
        count = baseline.items.get("texts.count")
        if count is not None and obs.texts is not None and len(obs.texts) < int(count[0]):
            raise InputError(
                "observation.texts",
                f"{len(obs.texts)} texts where the baseline had {int(count[0])}: a replicate is measured like the "
                f"baseline; pass at least {int(count[0])}",
            )
        frac = None if obs.provenance is None else obs.provenance.synthetic_fraction
        if frac:
            # the share the baseline generation declared (its provenance, kept as a baseline metric)
            declared = baseline.metrics.get("synthetic_fraction")
            base_frac = 0.0 if declared is None else float(declared.value)
            if frac > base_frac + 1e-9:
                raise InputError(
                    "observation.provenance.synthetic_fraction",
                    f"{frac:g}, where the baseline generation declared {base_frac:g}: a replicate is another retrain "
                    "of the baseline generation, on the same kind of data",
                )

    def _replicates_baseline(self, what: str) -> Baseline | None:
        """The baseline, under the monitor's lock; on a machine with an empty history it is read
        back from the sinks first, as a check does. A sink that could hold it and did not answer
        is an error: "check the baseline generation first" would start a new baseline there."""
        failed: list[str] = []
        reseeded = False
        if self.history.last_generation(self.name) is None and not self.history.reports(self.name):
            self._reseed_from_sinks(failed)
            reseeded = True
        baseline = self.history.baseline(self.name)
        if baseline is not None and not reseeded:  # read back just now: the newest copy already
            merged = self._sync_baseline(baseline)
            if merged is not None:
                if what != "baseline":  # a read stores nothing (a read-only home); the next check does
                    self.history.save_baseline(self.name, merged)
                baseline = merged
        if failed and baseline is None:
            raise CollapseMonitorError(
                f"{what}: the local history of {self.name} is empty and its baseline could not be read back from "
                f"the sinks (history could not be read from {failed[0]}); retry when they are reachable"
            )
        return baseline

    def _sync_baseline(self, baseline: Baseline, notes: list[str] | None = None) -> Baseline | None:
        """The baseline merged with the newest copy of it in each sink that keeps one (MLflow):
        the replicates other machines added or dropped since this one last read it
        (:func:`~collapse_monitor.history.merge_baselines`); None when nothing changed. A sink
        that cannot be read is logged and noted, and the check goes on with this machine's copy,
        as it does while the sink has reports waiting in the spool (it was down at its last try:
        the check's replay finds out whether it is back)."""
        baseline.uid = sync_id(baseline)  # an older version's baseline: its identity before it grows
        current = baseline
        for sink in self.sinks:
            sync = getattr(sink, "sync_baseline", None)
            if sync is None or self._still_spooled(sink):
                continue
            try:
                got, notice = sync(self.name, current)
            except Exception as exc:
                msg = redact_text(f"{type(exc).__name__}: {exc}")
                log.warning("%s: the baseline could not be compared with its copy on %s: %s", self.name, sink.name, msg)
                if notes is not None:
                    notes.append(
                        f"the baseline was not compared with its copy on {sink.name} ({msg}): judged against this "
                        "machine's replicates"
                    )
                continue
            if notice:
                log.warning("%s: %s", self.name, notice)
                if notes is not None:
                    notes.append(notice)
            if got is None:
                continue
            before = {r.digest() for r in current.replicates}
            after = {r.digest() for r in got.replicates}
            current = got
            if before != after:  # not when only drops or a newly seen metric came in
                what = (
                    f"baseline replicates merged with the copy on {sink.name}: {len(after - before)} added and "
                    f"{len(before - after)} dropped on other machines, {len(after)} now"
                )
                log.info("%s: %s", self.name, what)
                if notes is not None:
                    notes.append(what)
        return None if current is baseline else current

    def baseline(self) -> Baseline | None:
        """The stored baseline: its generation, metrics and replicates (``baseline.replicates``,
        each with its metrics), read back from the sinks first on a machine with an empty
        history, as a check does; None before the first check. ``collapse-monitor check
        --show-baseline`` prints it as a table, with the spread of the retrains per metric."""
        with self.history.lock(self.name):
            return self._replicates_baseline("baseline")

    def take_baseline(self) -> Baseline:
        """Replace this machine's baseline with the newest one uploaded to the sinks that keep
        one (MLflow), replicates and drops included: the way to end two baselines at once (one
        machine checked the baseline generation again, or started its own after its history
        could not be read back; every check on the other machines notes it). Run it on each
        machine whose baseline is not the right one, right after a check on the machine whose
        baseline is (its copy is then the newest upload). Checks are not changed; later checks
        are judged against the baseline taken. Raises ``CollapseMonitorError`` when no sink
        holds a baseline or none could be read (nothing is changed then)."""
        failed: list[str] = []
        readers = 0
        with self.history.lock(self.name):
            for sink in self.sinks:
                reader = getattr(sink, "newest_baseline", None)
                if reader is None:
                    continue
                readers += 1
                try:
                    got = reader(self.name)
                except Exception as exc:
                    failed.append(f"{sink.name} ({redact_text(f'{type(exc).__name__}: {exc}')})")
                    continue
                if got is None:
                    continue
                mine = self.history.baseline(self.name)
                same = False
                if mine is not None and sync_id(mine) == sync_id(got):
                    same = True
                    # this machine's own baseline: merged, not replaced, so replicates added or
                    # dropped here and not uploaded yet (a replicate logs no run) are kept (an
                    # audit: they were thrown away, and the note said it was this machine's already)
                    got = merge_baselines(mine, got)
                self.history.save_baseline(self.name, got)
                log.info(
                    "%s: baseline generation %d with %d replicate(s) taken from %s%s",
                    self.name,
                    got.generation,
                    len(got.replicates),
                    sink.name,
                    " (it was this machine's already: merged, its own replicates and drops kept)" if same else "",
                )
                return got
        if failed:
            why = f": {'; '.join(failed)}"
        elif readers:
            why = " (its sinks hold no baseline of it yet: check the baseline generation first)"
        else:
            why = " (none of its sinks keeps one: an MLflow sink with artifacts does)"
        raise CollapseMonitorError(f"take_baseline: no baseline of {self.name} could be read from the sinks{why}")

    def drop_replicates(self, numbers: Sequence[int] | None = None) -> int:
        """Remove replicates of the baseline (one added by mistake, a failed retrain): those
        numbered ``numbers`` (1 for the first added, as :meth:`check_replicate` and ``check
        --show-baseline`` number them; the others keep their order and are renumbered), or all
        of them when None. Returns how many were dropped (on a new machine the baseline is read
        back from the sinks first). ``InputError`` names a number the baseline does not have.

        A dropped replicate stays out: its outputs given to :meth:`check_replicate` again are not
        added back, and another machine's copy of the baseline loses it when the two merge
        through MLflow (this machine's next check uploads the baseline without it; a machine
        that checks before that still judges against it)."""
        if numbers is not None:
            if isinstance(numbers, (str, bytes, Mapping)) or not isinstance(numbers, Iterable):
                raise InputError("numbers", f"expected a list of replicate numbers from 1, got {numbers!r}")
            given = list(numbers)
            bad = [n for n in given if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1]
            if bad:
                raise InputError("numbers", f"expected a list of replicate numbers from 1, got {bad[0]!r}")
            numbers = [int(n) for n in given]
        with self.history.lock(self.name):
            baseline = self._replicates_baseline("drop_replicates")
            have = 0 if baseline is None else len(baseline.replicates)
            wanted = set(range(1, have + 1)) if numbers is None else set(numbers)
            missing = sorted(n for n in wanted if n > have)
            if missing:
                raise InputError(
                    "numbers",
                    f"no replicate {', '.join(map(str, missing))}: the baseline has {have} "
                    "(collapse-monitor check --show-baseline lists them)",
                )
            if baseline is None or not wanted:
                return 0
            # remembered as dropped: a merge with another machine's copy must not bring them back
            baseline.dropped |= {r.digest() for i, r in enumerate(baseline.replicates, 1) if i in wanted}
            baseline.replicates = [r for i, r in enumerate(baseline.replicates, 1) if i not in wanted]
            self.history.save_baseline(self.name, baseline)
        log.info(
            "%s: %d replicate(s) of baseline generation %d dropped, %d kept",
            self.name,
            len(wanted),
            baseline.generation,
            len(baseline.replicates),
        )
        return len(wanted)

    def _check(self, observation: Observation, notes: tuple[str, ...], strict: bool | None = None) -> Report:
        """:meth:`check`, with ``notes`` from the caller (a training hook's global step) first
        among the report's notes, and the caller's ``strict`` (``watch(strict=...)``; None: the
        monitor's). A strict failure is raised after the report was recorded: the exception's
        ``report`` and ``self.last_report`` hold it."""
        strict = self.strict if strict is None else strict
        if not isinstance(observation, Observation):
            raise InputError("observation", f"expected cm.Observation, got {type(observation).__name__}")
        observation.validate_against(self.reference)
        t0 = time.perf_counter()
        with self.history.lock(self.name):
            pending = self._recover()
            held = self._alerts_blocked_at  # an older generation's alerts not queued yet: this one waits
            report, extra = self._measure(observation, t0, notes)
            self.last_panel = extra.pop("panel")
            stored_json = self.history.commit_check(
                report,
                alert_states=extra.pop("alert_states"),
                baseline=extra["baseline"] if extra["baseline_changed"] else None,
            )
            report, keys, failure, queued = self._hand_off(
                report,
                observation,
                self._history_after(report, stored_json, extra.pop("stored")),
                extra,
                strict=strict,
                held_behind=held,
            )
        if pending:  # an earlier generation's alerts still not in the outbox: say so on every check
            report = dataclasses.replace(report, errors=(*pending, *report.errors))
        try:
            report = self._deliver_alerts(report, keys, queued=queued, strict=strict)
        except AlertDeliveryError as exc:
            failure = failure or exc
        self.last_report = report
        if failure is not None:
            failure.report = report  # recorded: a caller that retries must not check it again
            raise failure
        return report

    def _history_after(self, report: Report, stored_json: str, stored: list[Report] | None) -> list[Report]:
        """The monitor's history right after ``report``'s commit, oldest first, as
        ``history.reports`` reads it: the rows this check read before its commit (under the
        monitor's lock: no other writer), with ``report``, decoded from ``stored_json`` (its
        row as committed), in place of its generation's row. Each row was parsed twice a check
        before (0.3 of 0.4 s a check at 400 generations, seconds at thousands of classes)."""
        if stored is None:
            return self.history.reports(self.name)
        mine = Report.from_dict(json.loads(stored_json))
        return sorted((*(r for r in stored if r.generation != report.generation), mine), key=lambda r: r.generation)

    def _recover(self) -> list[str]:
        """Finish the hand-off of reports whose check was killed after its history commit
        (called under the lock, so their process is gone): spool them for every sink (sinks
        drop replays they already hold) and persist their alerts (same event ids). Persisting is
        enough: the calling check delivers every due outbox row after its own events
        (``_deliver_alerts``), ``flush()`` redelivers them.

        A report whose check finished but whose alerts could not be written to the outbox
        (``alerting:`` among its errors) only has its alerts persisted again: that page used to
        be lost for good, with the alert state saying it was sent. Until the outbox takes it,
        it stays pending and every check says so (the returned errors). Alerts are queued in
        check order: once one check's cannot be, the later ones wait behind it (a firing queued
        after its own resolve left the incident open for good); ``_alerts_blocked_at`` is then
        the generation they wait for."""
        pending: list[str] = []
        self._alerts_blocked_at = None
        # oldest check first (by time, not generation: a chain re-run from generation 0 checks a
        # lower generation after a higher one, and its resolve must follow that one's firing)
        for r in sorted(self.history.not_handed_off(self.name), key=lambda rep: rep.created_at):
            alerts_only = any(e.startswith("alerting:") for e in r.errors)
            if not alerts_only:
                for sink in self.sinks:
                    try:
                        self.spool.put(getattr(sink, "spool_key", None) or sink.name, r)
                    except OSError as exc:
                        log.warning("recovering generation %d: %s", r.generation, redact_text(str(exc)))
            if r.alerts and self.channels:
                try:
                    if self._alerts_blocked_at is not None:
                        raise _HeldBehind(self._alerts_blocked_at)
                    disp = self.dispatcher
                    assert disp is not None
                    disp.persist(list(r.alerts), r)
                except Exception as exc:
                    msg = redact_text(f"alerting: {type(exc).__name__}: {exc}")
                    if self._alerts_blocked_at is None:
                        self._alerts_blocked_at = r.generation
                        log.warning("recovering generation %d: %s", r.generation, msg)
                    pending.append(f"generation {r.generation}'s alerts are not queued yet ({msg}); retried next check")
                    if not alerts_only:  # sinks have it now; only the alerts are left to persist
                        self.history.save_report(dataclasses.replace(r, errors=(*r.errors, msg)), handed_off=False)
                    continue
            self.history.save_report(r)  # handed off
            log.warning(
                "%s: generation %d %s: queued for its %s",
                self.name,
                r.generation,
                "had alerts the outbox did not take" if alerts_only else "was committed by a check that did not finish",
                "channels" if alerts_only else "sinks and channels",
            )
        return pending

    def _measure(
        self, obs: Observation, t0: float, caller_notes: tuple[str, ...] = ()
    ) -> tuple[Report, dict[str, Any]]:
        rules = self.rules
        last = self.history.last_generation(self.name)
        notes: list[str] = [*caller_notes, *self._fit_notes]
        if self.history.quarantined is not None:
            notes.append(
                f"history.db was corrupt: moved aside to {self.history.quarantined.name}; the history starts again"
            )
            self.history.quarantined = None
        cached: list[Report] | None = None

        def stored_reports() -> list[Report]:  # read once per check, when needed (it parses every row)
            nonlocal cached
            if cached is None:
                cached = self.history.reports(self.name)
            return cached

        reseeded = last is None and not stored_reports()
        if reseeded:
            notes.extend(self._reseed_from_sinks())
            last = self.history.last_generation(self.name)
            # read again: the history read back is this check's history too (the empty read
            # left the first check on a new machine without trends, held findings and the
            # baseline's measure)
            cached = None
        generation = obs.generation if obs.generation is not None else (0 if last is None else last + 1)
        baseline = self.history.baseline(self.name)
        rebaseline = baseline is not None and obs.generation is not None and generation == baseline.generation
        if rebaseline:
            # the baseline generation checked again (a chain re-run from scratch, maybe on a new
            # probe set): it is the baseline, so it replaces the stored one instead of being
            # judged against it
            notes.append(f"generation {generation} checked again: it replaces the stored baseline")
            baseline = None
        synced = False
        if baseline is not None and not reseeded:  # read back from the sinks just now: the newest copy
            merged = self._sync_baseline(baseline, notes)
            if merged is not None:
                baseline, synced = merged, True
        # an older generation checked after a newer one (a backfill, an old checkpoint re-run):
        # its findings are reported, but the alerts follow the newest generation (a healthy
        # backfill used to resolve the open incident of a collapsed newest generation)
        # Newer generations of an earlier chain (checked before the baseline was checked again,
        # a chain re-run from scratch) do not count.
        newest = None
        if last is not None and generation < last and not rebaseline:
            stored = stored_reports()
            since = max(
                (r.created_at for r in stored if baseline and r.generation == baseline.generation), default=None
            )
            newer = [
                r.generation for r in stored if r.generation > generation and (since is None or r.created_at >= since)
            ]
            newest = max(newer, default=None)
        backfill = newest is not None
        if backfill:
            notes.append(
                f"generation {generation} is older than the newest checked ({newest}): reported, the alerts of "
                f"generation {newest} stay as they are"
            )
        elif last is not None and generation == last and obs.generation is not None and not rebaseline:
            notes.append(f"generation {generation} checked again: this report replaces the stored one")
        if baseline is not None and baseline.fingerprint != self.reference.fingerprint:
            notes.append("the reference changed since the baseline: paired tests skipped")
        # sample-count-dependent metrics are compared at the baseline's size: a larger sample is
        # subsampled to it, the text metrics use its token budget, and a smaller sample is noted
        # (300 healthy samples against a 2,000-sample baseline read as a late collapse)
        base_m, _ = _baseline_sizes(baseline)
        panel = self._panel(obs, baseline)
        base_texts = None if baseline is None else baseline.items.get("texts.count")
        _note_smaller_than_baseline(panel, base_m, None if base_texts is None else int(base_texts[0]), notes)
        unmeasured = [c for c in panel.rare_classes if f"class_recall.{c}" not in panel.metrics]
        if unmeasured and self.reference.labels is not None:
            # a rare class of class_priors with no probe item: its recall, the classifier's main
            # early-collapse signal, cannot be measured, and nothing used to say so
            notes.append(
                f"rare class(es) {', '.join(unmeasured[:10])} have no probe items: their recall is not measured; "
                "add probe items of them"
            )
        pinned = rules.baseline_generation
        if pinned is not None and baseline is not None and baseline.generation != pinned and not rebaseline:
            # set after the fact, the pin did nothing, and nothing said so
            notes.append(
                f"rules.baseline_generation={pinned} is not used: generation {baseline.generation} already is the "
                "baseline (a pin applies to a new monitor; checking that generation again replaces the baseline)"
            )
        baseline_changed = synced  # another machine's replicates or drops merged in: stored with this check
        # a pinned generation that was never checked (skipped, or its check failed): the first one
        # after it is the baseline. Waiting for it kept every later check "healthy" against nothing,
        # a rare class lost or not (a config audit)
        past_pin = pinned is not None and generation > pinned and not backfill
        is_baseline = baseline is None and (pinned is None or pinned == generation or rebaseline or past_pin)
        if is_baseline and past_pin and pinned != generation:
            log.warning(
                "%s: rules.baseline_generation=%d was never checked; generation %d, the first checked after it, is "
                "the baseline",
                self.name,
                pinned,
                generation,
            )
            notes.append(
                f"rules.baseline_generation={pinned} was never checked: generation {generation}, the first checked "
                "after it, is the baseline"
            )
        if is_baseline:
            baseline = Baseline(
                generation,
                self.reference.fingerprint,
                dict(panel.metrics),
                dict(panel.items),
                panel.predictions,
                uid=uuid.uuid4().hex,  # its identity on every machine that reads a copy (merging replicates)
            )
            baseline_changed = True
            det = detect(panel.metrics, rules=rules, baseline=None)
            notes.append(f"generation {generation} is the baseline")
        elif baseline is None:
            det = detect(panel.metrics, rules=rules, baseline=None)
            notes.append(f"waiting for the pinned baseline generation {pinned}")
        else:
            users = _item_users(panel)
            grown = self._grow_baseline(baseline, panel, users)
            same_ref = baseline.fingerprint == self.reference.fingerprint
            lacking = _missing_items(baseline, users) if same_ref else []
            if lacking:
                notes.append(
                    f"the baseline has no per-item vectors for {', '.join(lacking[:5])}"
                    f"{f' and {len(lacking) - 5} more' if len(lacking) > 5 else ''} (read back without its "
                    "artifact?): their paired tests are replaced by interval tests"
                )
            history = [r for r in stored_reports() if baseline.generation <= r.generation < generation]
            base_report = max(
                (r for r in history if r.generation == baseline.generation and r.is_baseline),
                key=lambda r: r.created_at,
                default=None,
            )
            if base_report is not None:
                # this chain's checks only: after a re-baseline (the baseline generation checked
                # again, a chain re-run from scratch) the earlier chain's rows that the new one
                # has not replaced (generations it skips) joined its trend series and lent it
                # their held findings (a detection audit, 2026-12-08); by check time, as backfills
                history = [r for r in history if r.created_at >= base_report.created_at]
            # rules that define the metrics (k, tail_quantile, rare_threshold, text_budget, ...)
            # changed since the baseline was measured: those metrics are not compared with it, nor
            # trended across the change (k 5 -> 2 on identical samples read tail_coverage -18 %
            # and a drift alert, an audit)
            measure = rules.measure
            changed, unlike = remeasured(None if base_report is None else base_report.measure, measure)
            if changed:
                said = ", ".join(f"rules.{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
                notes.append(
                    f"{said} since the baseline (generation {baseline.generation}) was measured: "
                    f"{', '.join(sorted(m for m in unlike if m in panel.metrics)) or 'no metric of this check'} "
                    "not compared with it; restore the setting, or check the baseline generation again to start a "
                    "new baseline"
                )
                if not self._said_remeasured:
                    self._said_remeasured = True
                    log.warning("%s: %s", self.name, notes[-1])

            # once per stored report, not once per report and key (2,000 reports x 1,000 keys took
            # 2.4 s a check that way; a review)
            unlike_of = [remeasured(r.measure, measure)[1] for r in history]
            series = {
                key: [
                    r.metrics[key].value
                    for r, other in zip(history, unlike_of, strict=True)
                    if key in r.metrics and key not in other
                ]
                + [mv.value]
                for key, mv in panel.metrics.items()
            }

            def kept(metrics: Mapping[str, MetricValue]) -> dict[str, MetricValue]:
                return {k: v for k, v in metrics.items() if k not in unlike}

            det = detect(
                panel.metrics,
                rules=rules,
                baseline=kept(baseline.metrics),
                items=panel.items if same_ref else {},
                base_items=baseline.items if same_ref else {},
                paired=panel.paired,
                series=series,
                rare_classes=panel.rare_classes,
                held=_held_findings(
                    [r for r in history if r.baseline_generation == baseline.generation], panel.metrics.keys()
                ),
                replicates=[(kept(r.metrics), r.items if same_ref else {}) for r in baseline.replicates],
            )
            if baseline.replicates:
                notes.append(
                    f"judged against the baseline and {len(baseline.replicates)} replicate retrain(s) of generation "
                    f"{baseline.generation}: a decline counts only if it holds against each (intersection-union test)"
                )
            if grown:
                baseline_changed = True
                notes.append(f"baseline extended with {', '.join(grown)} (first seen now)")
        now = self.clock()
        current = self.history.alert_states(self.name)
        events, states, blind = (
            ([], list(current.values()), {})
            if backfill
            else alert_events(
                monitor=self.name,
                stage=det.stage,
                drift=det.drift,
                findings=det.findings,
                generation=generation,
                synthetic_fraction=None if obs.provenance is None else obs.provenance.synthetic_fraction,
                states=current,
                rules=rules,
                now=now,
                measured=det.metrics.keys(),
            )
        )
        for rule, missing in sorted(blind.items()):
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            notes.append(
                f"the open {rule.replace('_', ' ')} alert stays open: this check did not measure {shown}, which it "
                "rests on (a check that measures them can resolve it)"
            )
        report = Report(
            monitor=self.name,
            generation=generation,
            stage=det.stage,
            metrics=det.metrics,
            alerts=tuple(events),
            findings=det.findings,
            drift=det.drift,
            # waiting for a pinned baseline: the generation it waits for (its own made it read as a
            # baseline, which a metrics-only read-back from MLflow then took for the baseline)
            baseline_generation=(generation if pinned is None else pinned) if baseline is None else baseline.generation,
            provenance=obs.provenance,
            reference_fingerprint=self.reference.fingerprint,
            created_at=now,
            duration_seconds=time.perf_counter() - t0,
            notes=tuple(notes) + det.notes,
            rare_classes=panel.rare_classes,
            open_alerts={st.rule: st.severity for st in states},
            measure=rules.measure,
        )
        extra = {
            "baseline": baseline,
            "baseline_changed": baseline_changed,
            "home": str(self.home),
            "alert_states": None if backfill else states,  # a backfill leaves them as they are
            "backfill": backfill,
            "panel": panel,
            # the stored reports as read before this check's commit (None: not read), so that
            # the hand-off need not parse every row again
            "stored": cached,
        }
        return report, extra

    def _panel(self, obs: Observation, baseline: Baseline | None) -> Any:
        """The metric panel of ``obs``, at the baseline's sample size and text budget."""
        from .metrics.engine import compute_panel

        base_m, base_b = _baseline_sizes(baseline)
        return compute_panel(
            self.reference,
            obs,
            rules=self.rules,
            cache=self.cache,
            baseline_predictions=None if baseline is None else baseline.predictions,
            device=self.device,
            max_samples=base_m,
            text_budget=base_b,
        )

    def _grow_baseline(self, baseline: Baseline, panel: Any, users: Mapping[str, set[str]]) -> list[str]:
        """A family seen for the first time joins the baseline with its first values. Not the
        keys in ``_NO_LATE_BASELINE``: their first value says nothing about the baseline.

        An item vector joins only with the metrics that rest on it: a baseline read back
        from MLflow without its artifact has metrics and no items, and taking the current
        check's items as the baseline's made every paired test compare a generation with
        itself (p = 1: a collapse went unflagged, check after check)."""
        _rekey_hashed(baseline, panel.metrics)
        new = [k for k in panel.metrics if k not in baseline.metrics and k not in _NO_LATE_BASELINE]
        if not new:
            return []
        new_set = set(new)
        new_items = [k for k in panel.items if k not in baseline.items and users.get(k, set()) <= new_set]
        for k in new:
            baseline.metrics[k] = panel.metrics[k]
        for k in new_items:
            baseline.items[k] = panel.items[k]
        if baseline.predictions is None and panel.predictions is not None and "accuracy" in new_set:
            baseline.predictions = panel.predictions
        families = sorted({k.split(".")[0] for k in new})
        return families[:5]

    def _reseed_from_sinks(self, failed: list[str] | None = None) -> list[str]:
        """An empty local store (new machine, new working dir): read history back from a sink.
        Returns notes for the report when a sink that could hold the history did not answer
        (``failed`` gets ``"<sink> (<error>)"`` of each)."""
        notes: list[str] = []
        for sink in self.sinks:
            loader = getattr(sink, "load_history", None)
            if loader is None:
                continue
            try:
                got = loader(self.name)
            except Exception as exc:
                msg = redact_text(f"{type(exc).__name__}: {exc}")
                log.warning("could not read history of %s from %s: %s", self.name, sink.name, msg)
                if failed is not None:
                    failed.append(f"{sink.name} ({msg})")
                notes.append(
                    f"history could not be read from {sink.name} ({msg}): generation numbering starts from the "
                    "local store; pass Observation(generation=...) to continue a chain kept there"
                )
                continue
            if got:
                reports, baseline = got
                self.history.import_history(self.name, reports, baseline)
                self._restore_alert_state(reports)
                log.info("continued %s from %s: %d generation(s)", self.name, sink.name, len(reports))
                return []
        return notes

    def _restore_alert_state(self, reports: Sequence[Report]) -> None:
        """A chain continued from a sink: the incidents that were open stay open (no new page).

        From the newest report's ``open_alerts`` (the newest by time: a chain re-run from
        generation 0 is the one that goes on), so an incident waiting out
        ``Rules.resolve_after`` behind a healthy check, or a drift alert, is kept too; reports
        without it (older versions, hand-made ones) give their stage's rule."""
        if not reports or self.history.alert_states(self.name):
            return
        ordered = sorted(reports, key=lambda r: (r.created_at, r.generation), reverse=True)
        last = ordered[0]
        if last.open_alerts is None:
            opened = {} if last.stage is Stage.HEALTHY else {last.stage.value: last.stage.severity}
        else:
            opened = dict(last.open_alerts)
        states = []
        for rule, severity in sorted(opened.items()):
            first = last  # the incident began at the oldest report of the run that held it open
            for r in ordered[1:]:
                held = rule in r.open_alerts if r.open_alerts is not None else r.stage.value == rule
                if not held:
                    break
                first = r
            waiting = 0 if rule == last.stage.value or rule == RULE_DRIFT else 1  # a healthy check seen
            states.append(
                AlertState(
                    rule,
                    severity,
                    first.created_at,
                    first.generation,
                    last.created_at,
                    last.generation,
                    clear_checks=waiting,
                    # what the incident rests on, where the newest report still showed it
                    evidence=() if waiting else tuple(sorted({f.key for f in last.findings if f.significant})),
                )
            )
        if states:
            self.history.set_alert_states(self.name, states)

    def _linked(self, alerts: Iterable[Alert]) -> tuple[Alert, ...]:
        """``alerts`` with the configured links (this check's MLflow run among them) added."""
        return tuple(dataclasses.replace(a, links={**self.links, **dict(a.links)}) for a in alerts)

    # ------------------------------------------------------------------------------------------
    def _hand_off(
        self,
        report: Report,
        obs: Observation | None,
        history: Sequence[Report],
        extra: Mapping[str, Any],
        *,
        strict: bool,
        held_behind: int | None = None,
    ) -> tuple[Report, list[tuple[str, str]], CollapseMonitorError | None, bool]:
        """Under the lock, right after the history commit: every sink gets the report (or the
        spool does), then its alerts - with this check's links - are committed to the outbox,
        then the history row is flagged handed off. Returns the report, the alerts' outbox keys
        and, in strict mode, the error to raise once the alerts went out."""
        errors: list[str] = []
        self.links.pop("mlflow_run", None)  # only this check's run may be linked
        if report.alerts and self.links:  # the configured links first: sinks store the alerts with them
            report = dataclasses.replace(
                report,
                alerts=self._linked(report.alerts),
            )
        ctx = EmitContext(reference=self.reference, observation=obs, history=history, extra=extra)
        strict_error: str | None = None
        budget = None if strict else self.replay_budget_seconds
        for sink in self.sinks:
            key = getattr(sink, "spool_key", None) or sink.name
            deadline = None if budget is None else time.monotonic() + budget
            replay_errors = self._replay(sink, deadline=deadline)[1]
            errors.extend(redact_text(e) for e in replay_errors)
            cut = deadline is not None and time.monotonic() >= deadline
            waiting = self._still_spooled(sink) if replay_errors or cut else 0
            if waiting:
                # the replay just failed on a sink that is down: this report joins the queue
                # behind the older ones without a second wait on the dead server (a hanging
                # server cost each check twice the documented bound), and stays in order; so
                # it does when the replay of a long backlog spent the check's replay budget
                if replay_errors:
                    said = "sink down, report spooled for retry: %s"
                    msg = f"{sink.name}: not tried, {waiting} earlier report(s) could not be delivered either"
                else:
                    said = "%s"
                    msg = (
                        f"{sink.name}: queued behind {waiting} earlier report(s) still to replay (the check's "
                        f"replay budget of {budget:g} s is spent); the next checks, flush() or serve deliver them in order"
                    )
                msg = redact_text(msg)
                log.warning(said, msg)
                errors.append(msg)
                try:
                    self.spool.put(key, report)
                except Exception as sexc:
                    errors.append(redact_text(f"spool: {type(sexc).__name__}: {sexc}"))
                if strict and strict_error is None:
                    strict_error = msg
                continue
            try:
                got = sink.emit(report, ctx)
                if got:
                    report = self._merge_facts(report, got)
                    errors.extend(redact_text(str(w)) for w in got.get("warnings") or ())
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # CancelledError from a sink's own event loop too: contained
                msg = redact_text(f"{sink.name}: {type(exc).__name__}: {exc}")
                try:
                    if is_permanent(exc):  # rejected for good: a retry can only fail the same way
                        errors.append(self.spool.bury(key, sink.name, report, msg))
                    else:
                        log.warning("sink failed, report spooled for retry: %s", msg)
                        errors.append(msg)
                        self.spool.put(key, report)
                except Exception as sexc:
                    errors.append(redact_text(f"spool: {type(sexc).__name__}: {sexc}"))
                if strict and strict_error is None:
                    strict_error = msg
        drift = sys.modules.get("collapse_monitor.sinks.evidently")
        if drift is not None and obs is not None:
            drift.release(obs)  # every sink had its Evidently run: the memo lets go of the data
        alerts = self._linked(report.alerts)
        report = dataclasses.replace(report, alerts=alerts, errors=tuple(errors))
        keys: list[tuple[str, str]] = []
        keys_ok = True
        # open incidents this check sent nothing for: kept alive where alerts expire by themselves
        # (not for a backfill, whose alerts are the newest generation's; not listed in the report)
        refresh = (
            self._linked(keepalive_events(report))
            if not extra.get("backfill", True) and any(getattr(c, "keeps_alive", False) for c in self.channels)
            else ()
        )
        if self.channels and refresh and not report.alerts and held_behind is None:
            try:  # best effort: a missed keep-alive costs nothing while the window outlasts a check
                disp = self.dispatcher
                assert disp is not None
                keys = disp.persist(list(refresh), report)
            except Exception as exc:
                log.warning("%s", redact_text(f"alerting (keep-alive): {type(exc).__name__}: {exc}"))
        if self.channels and report.alerts:
            try:  # the outbox opens here at the first alert: an unopenable one is an error, not a crash
                if held_behind is not None:  # an older generation's alerts go first (see _recover)
                    raise _HeldBehind(held_behind)
                disp = self.dispatcher
                assert disp is not None
                keys = disp.persist([*report.alerts, *refresh], report)
            except Exception as exc:
                keys_ok = False
                msg = redact_text(f"alerting: {type(exc).__name__}: {exc}")
                log.warning("%s", msg)
                report = dataclasses.replace(report, errors=(*report.errors, msg))
                if strict and strict_error is None:
                    strict_error = msg
        # run id, sink facts and errors; handed off unless its alerts missed the outbox (the next
        # check persists them again, see _recover)
        queued = not (self.channels and report.alerts and not keys_ok)
        self.history.save_report(report, handed_off=queued)
        failure: CollapseMonitorError | None = None
        if strict_error is not None:
            failure = (AlertDeliveryError if strict_error.startswith("alerting:") else SinkError)(strict_error)
        return report, keys, failure, queued

    def _deliver_alerts(
        self, report: Report, keys: Sequence[tuple[str, str]], *, queued: bool = True, strict: bool
    ) -> Report:
        """Deliver this check's alert events, then whatever earlier checks or processes left in
        the outbox that is due (also when this check raised no event), all within the one alert
        budget. Each channel whose delivery failed in this check gets one redacted line in
        ``report.errors`` - also when the event stays queued for a retry. Never raises, except
        ``AlertDeliveryError`` in strict mode when a delivery failed for good."""
        if not self.channels or (not keys and self._dispatcher is None and not self._outbox_path.exists()):
            return report  # no outbox yet (it opens at the first alert): nothing can be pending
        errors = list(report.errors)
        strict_error: str | None = None
        try:
            disp = self.dispatcher
            if disp is not None:
                outcome = disp.deliver_check(keys)
                errors.extend(outcome.errors)
                if outcome.final_errors:
                    strict_error = "; ".join(outcome.final_errors)
        except Exception as exc:  # a broken outbox never breaks the caller
            msg = redact_text(f"alerting: {type(exc).__name__}: {exc}")
            log.warning("%s", msg)
            errors.append(msg)
            strict_error = msg
        if tuple(errors) != report.errors:
            report = dataclasses.replace(report, errors=tuple(errors))
            with contextlib.suppress(Exception):
                self.history.save_report(report, handed_off=queued)
        if strict_error is not None and strict:
            raise AlertDeliveryError(strict_error)
        return report

    def _merge_facts(self, report: Report, got: Mapping[str, Any]) -> Report:
        """Facts a sink returned: the MLflow run (id and link) and numeric metrics such as
        Evidently's ``embedding_drift_share``, which later sinks and the caller then see."""
        changes: dict[str, Any] = {}
        if got.get("run_id") and report.run_id is None:
            changes["run_id"] = str(got["run_id"])
        if got.get("mlflow_run"):
            self.links["mlflow_run"] = str(got["mlflow_run"])
        share = got.get("embedding_drift_share")
        if isinstance(share, (int, float)) and math.isfinite(share) and "embedding_drift_share" not in report.metrics:
            v = float(share)
            changes["metrics"] = {**report.metrics, "embedding_drift_share": MetricValue(v, v, v)}
        return dataclasses.replace(report, **changes) if changes else report

    def _wait_for_sinks(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds per sink for its background work (the MLflow history
        charts); a failure is logged, never raised."""
        for sink in self.sinks:
            wait = getattr(sink, "flush", None)
            if callable(wait):
                try:
                    wait(timeout=timeout)
                except Exception as exc:  # a sink's background work never breaks the caller
                    log.warning("sink %s flush failed: %s", sink.name, redact_text(f"{type(exc).__name__}: {exc}"))

    def flush(self, *, budget_seconds: float | None = None) -> dict[str, int]:
        """Replay the sink spool and redeliver pending alerts (what ``serve`` does on a timer),
        and wait for the sinks' background work (the MLflow history charts) to finish. Returns
        what each sink took from the spool and the alerts delivered; what fails (a read-only or
        full home, a corrupt outbox) is logged, never raised. The spool is replayed whole
        (a check replays it for ``replay_budget_seconds``)."""
        out: dict[str, int] = {}
        try:
            with self.history.lock(self.name):  # one replayer per home: replays never race a check
                for line in self._recover():
                    log.warning("%s", line)
                for sink in self.sinks:
                    out[sink.name] = self._replay(sink)[0]
        except Exception as exc:  # a read-only or full home: contained, as a check's failure is
            # (it raised into the training script, which calls flush() at its end; an audit)
            log.warning(
                "%s: flush could not replay the spool: %s", self.name, redact_text(f"{type(exc).__name__}: {exc}")
            )
            for sink in self.sinks:
                out.setdefault(sink.name, 0)
        self._wait_for_sinks(budget_seconds if budget_seconds is not None else 60.0)
        try:  # a corrupt outbox.db is recorded, as in check(): flush() is what cron jobs call
            disp = self.dispatcher
            if disp is not None:
                res = disp.redeliver(budget_seconds=budget_seconds)
                out["alerts"] = sum(1 for r in res if getattr(r, "ok", False))
        except Exception as exc:
            log.warning("alert redelivery failed: %s", redact_text(f"{type(exc).__name__}: {exc}"))
            out["alerts"] = 0
        return out

    def _still_spooled(self, sink: Any) -> int:
        """Reports still waiting in ``sink``'s spool (its own key and its legacy keys, and those
        held in memory where the spool directory could not take them)."""
        own = getattr(sink, "spool_key", None) or sink.name
        try:
            return len(self.spool.in_memory(own)) + sum(
                len(self.spool.pending(k)) for k in dict.fromkeys((*getattr(sink, "legacy_spool_keys", ()), own))
            )
        except Exception:  # an unreadable spool: try the sink as before
            return 0

    def _replay(self, sink: Any, *, deadline: float | None = None) -> tuple[int, list[str]]:
        """Replay ``sink``'s spool: what older versions spooled under its legacy keys first
        (when they hold anything), then its own key; a legacy key left with reports (the sink
        is down, or the ``deadline`` passed) stops it, so no report overtakes an older one."""
        done, errors = 0, []
        own = getattr(sink, "spool_key", None) or sink.name
        for key in (*getattr(sink, "legacy_spool_keys", ()), own):
            if key != own and not self.spool.pending(key):
                continue
            with self.history.lock(key, spool=True):  # one replayer per spool key in the home
                # only a sink that stores the baseline (MLflow's artifact) gets it with a replay:
                # others take a context as "a check made now" (Prometheus's ordering)
                stored = self._replay_context if getattr(sink, "keeps_baseline", False) else None
                n, errs = self.spool.replay(sink, sink_key=key, context_for=stored, deadline=deadline)
            done += n
            errors.extend(errs)
            if key != own and self.spool.pending(key):  # the sink is down: keep the order
                break
        return done, errors

    def _replay_context(self, report: Report) -> EmitContext | None:
        """What a replayed report goes with: for the baseline generation's report, the baseline
        as this home stores it (stored state, not raw data), so a sink that keeps the baseline
        (MLflow's artifact) gets it even when every check of the job fell in an outage."""
        if report.monitor != self.name or not report.is_baseline:
            return None
        try:
            baseline = self.history.baseline(self.name)
        except Exception:  # the replay goes on without it, as before
            return None
        if baseline is None or baseline.generation != report.generation:
            return None
        return EmitContext(reference=self.reference, extra={"baseline": baseline, "baseline_changed": True})

    def reports(self) -> list[Report]:
        """The monitor's history, oldest generation first."""
        return self.history.reports(self.name)

    # ------------------------------------------------------------------------------------------
    def watch(
        self,
        evaluate: Callable[[Any], Observation],
        *,
        generation: int | Callable[..., int | None] | None = None,
        provenance: Provenance | Callable[..., Provenance | None] | None = None,
        strict: bool | None = None,
        every_rank: bool = False,
        replicate: bool = False,
    ) -> Callable[[F], F]:
        """Decorate a training function: after it returns, ``evaluate(result)`` builds the
        Observation and the monitor checks it. The return value passes through unchanged;
        ``self.last_report`` holds the report. ``generation``/``provenance`` may be values or
        callables receiving the training function's arguments. Any failure of the evaluation
        or the check is logged and kept in ``self.last_error`` (``strict=True`` re-raises).

        In a multi-process job (an initialised ``torch.distributed`` group of more than one
        rank, or ``RANK`` / ``WORLD_SIZE`` set by torchrun and other launchers) only rank 0
        evaluates and checks, as the Lightning and Hugging Face callbacks do: every rank
        running the same script checked the same retrain, one generation per rank. So
        ``evaluate`` must not call collectives (use :func:`collapse_monitor.hooks.distributed_check`
        on every rank for a sharded probe set). ``every_rank=True`` checks on every rank, for
        jobs whose ranks train separate models (give each rank its own monitor name).

        An ``async def`` training function is awaited, then its check (``evaluate``, the
        metrics, the sinks' requests: seconds with a remote MLflow) runs in a worker thread
        (:func:`asyncio.to_thread`) while the event loop serves its other coroutines; run on
        the loop, it stalled every one of them for as long. The check is otherwise the same:
        the result passes through unchanged, a failure is contained (``strict=True`` re-raises
        it in the awaiting task), ``last_report`` / ``last_error`` are set for the awaiting
        thread, only rank 0 checks. The async checks of one monitor run one at a time, as they
        did on the loop, so concurrent trainers get distinct generations in the order their
        checks commit; those waiting their turn wait on the loop, so one monitor takes at most
        one thread of the loop's default executor (the others stay free for the rest of the
        service and for an ``evaluate`` that uses the loop). ``evaluate`` and the
        ``generation`` / ``provenance`` callables see the caller's context variables (a copy:
        what they set does not come back), its active MLflow run (the sink nests under it as
        before) and its torch modes (grad and inference mode, the current CUDA device, autocast
        on CPU / CUDA with torch >= 2.4), taken when the trainer returns; other per-thread state
        (``threading.local``, other torch settings kept per thread) stays in the loop's thread.
        Nor do they run on the loop's thread: an ``evaluate`` that needs the event loop (an
        async client, a lock of the loop) submits its coroutine to it with
        :func:`asyncio.run_coroutine_threadsafe` (``.result()`` waits; the loop is free to run
        it) rather than ``asyncio.get_running_loop()``, which fails in the worker thread.
        Cancelling the awaiting task while its check is queued or running cancels the wait, not
        the check: it runs in its thread and is recorded (the monitor's next async check waits
        for it); only the loop's shutdown drops a check still queued, with a warning.
        A hand-off that fails (the loop's executor shut down) is contained as a failed check.
        Under another runner (trio, or one sniffio does not name asyncio; a coroutine driven by
        hand) there is no loop to hand the check to: it runs inline, as a sync trainer's.

        ``replicate=True`` is for a job that retrains the baseline generation once more (human
        data only, another seed): its result is added to the baseline as a replicate
        (:meth:`check_replicate`) instead of being checked as a new generation, and
        ``self.last_replicate`` holds its metrics (``last_report`` is None). Everything else
        (rank 0 only, failures contained, ``strict``, async trainers) is as for a check.
        """
        if not callable(evaluate):
            raise ConfigError("watch.evaluate", "expected a callable model -> Observation")
        _check_watch_options(generation, provenance, "watch", strict, every_rank, replicate)

        def deco(fn: F | None = None, *extra: Any, **kw: Any) -> F:
            if fn is None or extra or kw or not (callable(fn) or isinstance(fn, classmethod)):
                # `@mon.watch` without its parentheses: the training function became `evaluate`
                # and its call lands here (it used to be a bare TypeError)
                raise ConfigError(
                    "watch",
                    "decorate with @mon.watch(evaluate=lambda model: cm.Observation(...)), parentheses and all",
                )
            if isinstance(fn, classmethod):  # not callable: it read as `@mon.watch` without parentheses
                raise ConfigError("watch", "put @mon.watch(...) below @classmethod, next to the function")
            if isinstance(fn, staticmethod):
                # callable since Python 3.10, but a plain function returned in its place became an
                # instance method, and `self` was passed to the static function
                return staticmethod(deco(fn.__func__))  # type: ignore[return-value]
            if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
                # calling one returns before any training ran: the check would evaluate a generator
                raise ConfigError(
                    "watch",
                    f"{getattr(fn, '__name__', 'the function')} is a generator: watch a function that returns the "
                    "trained model, or use `with mon.retrain() as r: ... r.observe(...)` inside the loop",
                )

            def check(result: Any, args: Any, kwargs: Any) -> None:
                self._observe_safely(
                    lambda: evaluate(result),
                    generation=(lambda: generation(*args, **kwargs)) if callable(generation) else generation,
                    provenance=(lambda: provenance(*args, **kwargs)) if callable(provenance) else provenance,
                    strict=self.strict if strict is None else strict,  # the monitor's, when called
                    replicate=replicate,
                )

            def on_rank() -> bool:  # in a multi-process job, rank 0 checks (every_rank: each rank)
                return every_rank or not self._left_to_rank_zero("watch")

            async def after_await(training: Any, args: Any, kwargs: Any) -> Any:
                """Await an async trainer, then check its result off the event loop."""
                result = await training
                if not on_rank():
                    return result
                loop = _asyncio_loop()
                if loop is None:  # trio, a hand-driven coroutine: no asyncio loop to hand it to
                    check(result, args, kwargs)  # inline, as a sync trainer's
                    return result
                call = (result, args, kwargs)
                try:  # off the loop: the check blocks for as long as it takes
                    outcome, raised = await _check_in_worker(self, loop, check, call)
                except Exception as exc:  # the hand-off itself failed (the loop's executor shut down, ...)
                    _hand_off_failed(self, exc, self.strict if strict is None else strict)
                    return result
                for key, value in outcome.items():  # what the check left, for the awaiting thread
                    setattr(self._tls, key, value)
                if raised is not None:  # strict: raised in the awaiting task, as on the loop
                    raise raised
                return result

            if inspect.iscoroutinefunction(fn):  # an async trainer: check once it has finished

                @functools.wraps(fn)
                async def awaiting(*args: Any, **kwargs: Any) -> Any:
                    return await after_await(fn(*args, **kwargs), args, kwargs)

                return awaiting  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                result = fn(*args, **kwargs)
                if inspect.iscoroutine(result):
                    # an async trainer that is not a coroutine function (an object with `async def
                    # __call__`, an `async def` under a decorator that hides it): checked once
                    # awaited, not before any training ran
                    return after_await(result, args, kwargs)
                if on_rank():
                    if inspect.isgenerator(result) or inspect.isasyncgen(result):
                        self._failed_check(
                            ConfigError(
                                "watch",
                                f"{getattr(fn, '__name__', 'the function')} returned a generator, before any "
                                "training ran: watch a function that returns the trained model, or use `with "
                                "mon.retrain() as r: ... r.observe(...)` inside the loop",
                            ),
                            self.strict if strict is None else strict,
                        )
                        return result
                    check(result, args, kwargs)
                return result

            return wrapper  # type: ignore[return-value]

        return deco

    @contextlib.contextmanager
    def retrain(
        self,
        *,
        generation: int | None = None,
        provenance: Provenance | None = None,
        strict: bool | None = None,
        every_rank: bool = False,
        replicate: bool = False,
    ) -> Iterator[_Retrain]:
        """Context-manager form for scripts without a function boundary::

        with mon.retrain(provenance=cm.Provenance(synthetic_fraction=0.5)) as r:
            model = train(...)
            r.observe(lambda: cm.Observation(embeddings=sample(model)))  # a callable: bad input is contained
        r.report  # the Report (None if the check failed; see mon.last_error)

        In a multi-process job only rank 0 observes (``every_rank=True``: every rank), as
        :meth:`watch`; on the other ranks ``observe`` returns None without calling it.
        ``replicate=True``: a retrain of the baseline generation, added to the baseline as a
        replicate (:meth:`check_replicate`); ``observe`` returns its metrics, also in
        ``r.replicate`` (``r.report`` stays None).
        """
        _check_watch_options(generation, provenance, "retrain", strict, every_rank, replicate)
        r = _Retrain(self, generation, provenance, self.strict if strict is None else strict, every_rank, replicate)
        yield r

    def _left_to_rank_zero(self, where: str) -> bool:
        """Whether this process is a rank other than 0 of a multi-process job, so ``watch`` /
        ``retrain`` leave the check to rank 0 (one INFO line per monitor says so)."""
        rank = _other_rank()
        if rank is None:
            return False
        if not getattr(self, "_rank_note_logged", False):
            self._rank_note_logged = True
            log.info(
                "collapse-monitor %s: rank %d of a multi-process job, %s leaves the check to rank 0 "
                "(every_rank=True checks on every rank)",
                self.name,
                rank,
                where,
            )
        return True

    def _observe_safely(
        self,
        make: Callable[[], Observation],
        *,
        generation: int | Callable[[], int | None] | None,
        provenance: Provenance | Callable[[], Provenance | None] | None,
        strict: bool,
        notes: tuple[str, ...] = (),
        replicate: bool = False,
    ) -> Report | dict[str, MetricValue] | None:
        """A hook's check of ``make()``: the Report (``replicate``: the replicate's metrics, see
        :meth:`check_replicate`), or None when it failed (logged, ``last_error``; raised when
        ``strict``)."""
        self.last_error = None
        self.last_report = None
        if replicate:
            self.last_replicate = None
        try:
            if callable(generation):
                generation = generation()
            if callable(provenance):
                provenance = provenance()
            obs = make()
            if not isinstance(obs, Observation):
                raise InputError("evaluate", f"must return cm.Observation, got {type(obs).__name__}")
            # a copy: the caller's Observation may be reused for the next retrain
            obs = copy.copy(obs)
            if generation is not None and obs.generation is None:
                obs.generation = as_generation(generation, "generation")
            if provenance is not None and obs.provenance is None:
                obs.provenance = as_provenance(provenance, "provenance")
            elif provenance is not None:
                notes = (*notes, *_overridden_provenance_note(provenance, obs.provenance))
            if replicate:
                return self.check_replicate(obs)
            return self._check(obs, notes, strict)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # CancelledError, GeneratorExit from a sink or evaluate: contained
            self._failed_check(exc, strict, what="replicate of the baseline" if replicate else "check")
            return None

    def _failed_check(self, exc: BaseException, strict: bool, context: str = "", what: str = "check") -> None:
        """A hook's failed check: logged and kept in ``last_error``; raised when ``strict``."""
        self.last_error = exc
        log.error(
            "collapse-monitor %s: %s failed, %s: %s",
            self.name,
            what,
            "raising it (strict)" if strict else "training result kept",
            redact_text(f"{type(exc).__name__}: {context}{exc}"),
        )
        if strict:
            raise exc


def _item_users(panel: Any) -> dict[str, set[str]]:
    """Item vector key -> the metric keys whose tests rest on it (paired tests, count rates)."""
    users: dict[str, set[str]] = {}
    paired = panel.paired
    for key in paired:
        item = paired.item_key(key) if hasattr(paired, "item_key") else paired[key][0]
        users.setdefault(item, set()).add(key)
    for item in panel.items:
        for prefix in ("rate.", "design."):  # a count rate; a share's design effect (its McNemar's)
            if item.startswith(prefix):
                users.setdefault(item, set()).add(item[len(prefix) :])
    return users


def _missing_items(baseline: Baseline, users: Mapping[str, set[str]]) -> list[str]:
    """Metrics the baseline has whose item vectors it lacks (paired / rate tests fall back to
    the interval tests); ``users``: :func:`_item_users` of the check's panel."""
    out = set()
    for item, keys in users.items():
        # (a baseline without the design effects still has the paired test: it borrows them)
        if item not in baseline.items and not item.startswith("design."):
            out |= {k for k in keys if k in baseline.metrics}
    return sorted(out)


def _replicate_of(panel: Any, base_metrics: Mapping[str, MetricValue], base_items: Mapping[str, Any]) -> Replicate:
    """A replicate of the baseline from its metric panel: the metrics and item vectors the
    baseline has, except those counted against the baseline itself (``_NO_LATE_BASELINE``)."""
    return Replicate(
        {k: v for k, v in panel.metrics.items() if k in base_metrics and k not in _NO_LATE_BASELINE},
        {k: v for k, v in panel.items.items() if k in base_items},
    )


def _baseline_sizes(baseline: Baseline | None) -> tuple[int | None, int | None]:
    """The baseline's sample count (``tail_mass_ratio``'s n: every sample is counted) and text
    token budget (``ngram_entropy``'s n), where it measured them."""
    if baseline is None:
        return None, None
    m = baseline.metrics.get("tail_mass_ratio")
    b = baseline.metrics.get("ngram_entropy")
    return (m.n if m is not None and m.n else None), (b.n if b is not None and b.n else None)


def _note_smaller_than_baseline(panel: Any, base_m: int | None, base_texts: int | None, notes: list[str]) -> None:
    """A note when this generation was measured on fewer sample embeddings, or fewer texts,
    than the baseline: coverage, PRDC, the spectral statistics and the text metrics fall with
    the sample size alone, so their declines may not be collapse. They are still tested:
    leaving them out judged a collapsed smaller sample healthy and resolved its open alert.
    The same number of texts that got shorter is not noted: shorter outputs are a symptom of
    collapse, not a smaller measurement."""
    m_mv = panel.metrics.get("tail_mass_ratio")
    m = None if m_mv is None else m_mv.n
    if base_m and m and m < base_m:
        notes.append(
            f"{m} sample embeddings where the baseline had {base_m}: coverage, PRDC and the spectral "
            "metrics fall with the sample count alone, so their declines here may not be collapse; "
            f"pass at least {base_m} samples (extra ones are subsampled)"
        )
    count = panel.items.get("texts.count")
    n_texts = None if count is None else int(count[0])
    if base_texts and n_texts is not None and n_texts < base_texts:
        notes.append(
            f"{n_texts} texts where the baseline had {base_texts}: the text metrics fall with the amount "
            f"of text alone, so their declines here may not be collapse; pass at least {base_texts} texts"
        )


class _HeldBehind(Exception):
    """This generation's alerts wait until an older generation's are in the outbox."""

    def __init__(self, generation: int) -> None:
        super().__init__(f"held behind generation {generation}'s alerts, which the outbox has not taken yet")


def _overridden_provenance_note(hook: Any, own: Provenance | None) -> tuple[str, ...]:
    """The Observation's own provenance wins over the hook's, as documented; a note says the
    hook's was dropped. A hook value that is not a valid provenance is dropped too, and noted,
    rather than failing a check that never needed it."""
    try:
        if as_provenance(hook, "provenance") == own:
            return ()
    except Exception as exc:  # the value is unused: say why, do not fail the check
        return (
            "the provenance given to the hook is not valid "
            f"({redact_text(f'{type(exc).__name__}: {exc}')[:200]}): the Observation's is used",
        )
    return ("the provenance given to the hook differs from the Observation's: the Observation's is used",)


#: one lock per monitor for the checks of ``watch``-ed async trainers, which run in worker
#: threads: they ran one at a time on the event loop, and still do, also from several loops or
#: threads (not kept in the monitor, so a monitor still pickles and deep-copies)
_ASYNC_CHECK_LOCKS: weakref.WeakKeyDictionary[CollapseMonitor, threading.Lock] = weakref.WeakKeyDictionary()
#: and per monitor and event loop, the asyncio.Lock its checks queue on before taking a thread of
#: the loop's pool (waiting in the pool, N finished trainers held N of its threads: others' work
#: starved, and an ``evaluate`` using the loop's pool, as async clients do, deadlocked), with the
#: number of checks queued or running there: the entry goes when it falls to 0, so a loop that is
#: never closed is not kept alive (with its selector and executor threads) by a monitor
_ASYNC_LOOP_QUEUES: weakref.WeakKeyDictionary[CollapseMonitor, dict[asyncio.AbstractEventLoop, list[Any]]] = (
    weakref.WeakKeyDictionary()
)
#: the hand-off tasks in flight (the loop keeps only weak references to its tasks)
_HAND_OFFS: set[asyncio.Task[Any]] = set()
_ASYNC_CHECK_LOCKS_GUARD = threading.Lock()


def _async_check_lock(mon: CollapseMonitor) -> threading.Lock:
    with _ASYNC_CHECK_LOCKS_GUARD:
        lock = _ASYNC_CHECK_LOCKS.get(mon)
        if lock is None:
            lock = _ASYNC_CHECK_LOCKS[mon] = threading.Lock()
        return lock


def _loop_queue_enter(mon: CollapseMonitor, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
    with _ASYNC_CHECK_LOCKS_GUARD:
        entry = _ASYNC_LOOP_QUEUES.setdefault(mon, {}).setdefault(loop, [asyncio.Lock(), 0])
        entry[1] += 1
        lock: asyncio.Lock = entry[0]
        return lock


def _loop_queue_leave(mon: CollapseMonitor, loop: asyncio.AbstractEventLoop) -> None:
    with _ASYNC_CHECK_LOCKS_GUARD:
        per_loop = _ASYNC_LOOP_QUEUES.get(mon, {})
        entry = per_loop.get(loop)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:  # nothing queued: an unlocked lock without waiters holds no state
                del per_loop[loop]
        if not per_loop:
            _ASYNC_LOOP_QUEUES.pop(mon, None)


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop when the awaiting coroutine runs as its task; None under another
    runner (trio, curio, a coroutine driven by hand), or one sniffio says is not asyncio (an
    asyncio loop may run beside it, as trio-asyncio's): no asyncio future can be awaited there."""
    import sys

    sniffio = sys.modules.get("sniffio")  # imported by trio and anyio, which set it
    if sniffio is not None:
        with contextlib.suppress(Exception):
            if sniffio.current_async_library() != "asyncio":
                return None
    try:
        loop = asyncio.get_running_loop()
        return loop if asyncio.current_task(loop) is not None else None
    except RuntimeError:  # no running event loop in this thread
        return None


async def _check_in_worker(
    mon: CollapseMonitor,
    loop: asyncio.AbstractEventLoop,
    check: Callable[[Any, Any, Any], None],
    call: tuple[Any, Any, Any],
) -> tuple[dict[str, Any], Exception | None]:
    """An async trainer's check in a thread of ``loop``'s default executor (what
    :func:`asyncio.to_thread` does), after the monitor's earlier checks on this loop: they queue
    on the loop, so at most one thread of its pool per monitor. The caller's context variables,
    MLflow runs and torch modes (taken now, in the awaiting thread) go with it. The queueing
    runs as a task of its own: cancelling the awaiting task cancels its wait, not the check,
    whether it is queued or running (a queued check was dropped)."""
    runs, modes = _mlflow_run_stack(), _torch_modes()
    ctx = contextvars.copy_context()
    work = functools.partial(ctx.run, _check_off_loop, mon, check, call, runs, modes)
    task = loop.create_task(_queued_check(mon, loop, work))
    _HAND_OFFS.add(task)
    task.add_done_callback(_hand_off_done)
    result: tuple[dict[str, Any], Exception | None] = await asyncio.shield(task)
    return result


def _held_findings(chain: Sequence[Report], keys: Collection[str]) -> set[tuple[str, str]]:
    """The (key, kind) of the findings to re-test on their own (``detect``'s ``held``): for each
    metric, the significant findings of the newest check of the chain that measured it. A check
    that did not measure a metric (one given embeddings only) used to drop its held finding, and
    the next check resolved a loss that was still there (a detection audit, 2026-12-08)."""
    held: set[tuple[str, str]] = set()
    decided: set[str] = set()
    wanted = set(keys)
    for r in sorted(chain, key=lambda rep: rep.generation, reverse=True):
        new = r.metrics.keys() - decided
        if new:
            held.update((f.key, f.kind) for f in r.findings if f.significant and f.key in new)
            decided.update(new)
        if wanted <= decided:
            break
    return held


def _hand_off_done(task: asyncio.Task[Any]) -> None:
    _HAND_OFFS.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an awaiting task cancelled meanwhile no longer reads it


async def _queued_check(mon: CollapseMonitor, loop: asyncio.AbstractEventLoop, work: Callable[[], Any]) -> Any:
    lock = _loop_queue_enter(mon, loop)
    try:
        try:
            await lock.acquire()
        except asyncio.CancelledError:  # only the loop's shutdown cancels this task
            log.warning("collapse-monitor %s: a queued check was dropped: its event loop shut down", mon.name)
            raise
        try:
            # cancelled at the loop's shutdown, the thread still completes the check (the loop
            # waits for its executor's threads)
            return await loop.run_in_executor(None, work)
        finally:
            lock.release()
    finally:
        _loop_queue_leave(mon, loop)


def _hand_off_failed(mon: CollapseMonitor, exc: Exception, strict: bool) -> None:
    """An async trainer's check that could not be handed to a worker thread: contained as a
    failed check is (logged, ``last_error``), raised when strict."""
    mon.last_report = mon.last_replicate = None
    mon._failed_check(exc, strict, "could not hand the check to a worker thread: ")


def _mlflow_run_stack() -> list[Any] | None:
    """A copy of this thread's stack of active MLflow runs (MLflow keeps it per thread), for the
    worker thread of an async trainer's check: the MLflow sink nests its run under the caller's
    active run. None when MLflow is not imported or keeps it elsewhere (then nothing nests)."""
    import sys

    fluent = sys.modules.get("mlflow.tracking.fluent")
    try:
        return list(fluent._active_run_stack.get()) if fluent is not None else None
    except Exception:
        return None


#: autocast device types whose state follows an async trainer's check into its worker thread
_AUTOCAST_DEVICES = ("cpu", "cuda")


def _torch_modes() -> dict[str, Any] | None:
    """This thread's torch modes, which torch keeps per thread: grad and inference mode, the
    current CUDA device (once CUDA is initialised), autocast on CPU / CUDA (torch >= 2.4's
    per-device API). None when torch is not imported (nothing to carry)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    modes: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        modes["grad"] = bool(torch.is_grad_enabled())
        modes["inference"] = bool(torch.is_inference_mode_enabled())
    with contextlib.suppress(Exception):
        if torch.cuda.is_initialized():
            modes["cuda_device"] = int(torch.cuda.current_device())
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4: is_autocast_enabled(device_type)
        with contextlib.suppress(Exception):
            modes["autocast"] = {
                device: torch.get_autocast_dtype(device)
                for device in _AUTOCAST_DEVICES
                if torch.is_autocast_enabled(device)
            }
            modes["autocast_cache"] = bool(torch.is_autocast_cache_enabled())
    return modes


def _autocast_on(torch: Any, device: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device))
    except Exception:
        return False


def _enter_torch_modes(stack: contextlib.ExitStack, modes: dict[str, Any] | None) -> None:
    """Re-enter the awaiting thread's torch modes in a worker thread, for as long as ``stack``
    (which restores the pooled thread's own on exit)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not modes:
        return
    entering: list[Callable[[], Any]] = []
    if "cuda_device" in modes:
        entering.append(lambda: torch.cuda.device(modes["cuda_device"]))
    # both ways: a mode the caller has off is turned off too, where the pooled thread has it on
    # (a guard some other job left open in that thread)
    if "inference" in modes and (modes["inference"] or torch.is_inference_mode_enabled()):
        entering.append(lambda: torch.inference_mode(modes["inference"]))
    if "grad" in modes:
        entering.append(lambda: torch.set_grad_enabled(modes["grad"]))
    autocast: dict[str, Any] = modes.get("autocast") or {}
    for device in _AUTOCAST_DEVICES if "autocast" in modes else ():  # torch >= 2.4
        if device in autocast:
            entering.append(
                functools.partial(
                    torch.autocast,
                    device,
                    dtype=autocast[device],
                    enabled=True,
                    cache_enabled=modes.get("autocast_cache", True),
                )
            )
        elif _autocast_on(torch, device):
            entering.append(functools.partial(torch.autocast, device, enabled=False))
    for make in entering:  # a mode that cannot be re-entered here is left out, not the check
        try:
            stack.enter_context(make())
        except Exception as exc:
            log.debug("collapse-monitor: the caller's torch mode is not carried to the check's thread: %r", exc)


#: what a check leaves per thread (``CollapseMonitor.last_report`` and its siblings)
_LAST_KEYS = ("last_report", "last_error", "last_replicate")


def _check_off_loop(
    mon: CollapseMonitor,
    check: Callable[[Any, Any, Any], None],
    call: tuple[Any, Any, Any],
    runs: list[Any] | None,
    modes: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Exception | None]:
    """An async trainer's check, in a worker thread: one at a time per monitor, with the
    caller's active MLflow runs and torch modes. Returns what it left in ``last_report`` /
    ``last_error`` (for the awaiting thread) and the exception a strict check raised (re-raised
    there)."""
    mine = mon._tls.__dict__
    for key in _LAST_KEYS:  # a pooled thread's earlier check is not this one's
        mine.pop(key, None)
    raised: Exception | None = None
    try:
        with contextlib.ExitStack() as stack:  # the caller's per-thread state, this thread's back after
            _enter_mlflow_runs(stack, runs)
            _enter_torch_modes(stack, modes)
            with _async_check_lock(mon):
                check(*call)
    except Exception as exc:  # a strict check's failure: the awaiting task raises it
        raised = exc
    return {k: mine[k] for k in _LAST_KEYS if k in mine}, raised


def _enter_mlflow_runs(stack: contextlib.ExitStack, runs: list[Any] | None) -> None:
    """Make the awaiting thread's active MLflow runs this worker thread's, for as long as
    ``stack`` (which puts the thread's own back on exit)."""
    import sys

    fluent = sys.modules.get("mlflow.tracking.fluent") if runs is not None else None
    if fluent is None:
        return
    try:
        own = fluent._active_run_stack.get()
        fluent._active_run_stack.set(list(runs or ()))
    except Exception:
        return

    def restore() -> None:
        with contextlib.suppress(Exception):
            fluent._active_run_stack.set(own)

    stack.callback(restore)


def _other_rank() -> int | None:
    """This process's rank when it is not rank 0 of a multi-process job: an initialised
    ``torch.distributed`` group of more than one rank (torch is only looked at when the job
    imported it), else ``RANK`` with ``WORLD_SIZE`` > 1 (torchrun, Accelerate, DeepSpeed set
    both before the group exists). None on rank 0 and in a single-process job."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized():
                rank = int(dist.get_rank())
                return rank if rank != 0 and dist.get_world_size() > 1 else None
        except Exception:  # a torch without distributed support: the environment decides
            pass
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    return rank if rank != 0 and world > 1 else None


def _check_watch_options(
    generation: Any, provenance: Any, where: str, strict: Any = None, every_rank: Any = False, replicate: Any = False
) -> None:
    """``watch`` / ``retrain`` options that are values (not callables) are checked when given,
    so a wrong type is a ConfigError in the training script, not a failed check every retrain
    (``strict="false"`` would be true, and raise every failed check into the training job)."""
    if strict is not None and not isinstance(strict, bool):
        raise ConfigError(f"{where}.strict", f"expected true or false, got {strict!r}")
    if not isinstance(every_rank, bool):
        raise ConfigError(f"{where}.every_rank", f"expected true or false, got {every_rank!r}")
    if not isinstance(replicate, bool):
        raise ConfigError(f"{where}.replicate", f"expected true or false, got {replicate!r}")
    try:
        if generation is not None and not callable(generation):
            as_generation(generation, f"{where}.generation")
        if provenance is not None and not callable(provenance):
            as_provenance(provenance, f"{where}.provenance")
    except InputError as exc:
        raise ConfigError(exc.field, str(exc).split(": ", 1)[-1]) from None


class _Retrain:
    def __init__(
        self,
        mon: CollapseMonitor,
        generation: int | None,
        provenance: Provenance | None,
        strict: bool,
        every_rank: bool = False,
        replicate: bool = False,
    ):
        self._mon = mon
        self._generation = generation
        self._provenance = provenance
        self._strict = strict
        self._every_rank = every_rank
        self._replicate = replicate
        self.report: Report | None = None
        #: the replicate's metrics (``retrain(replicate=True)``), None otherwise or when it failed
        self.replicate: dict[str, MetricValue] | None = None

    def observe(self, observation: Observation | Callable[[], Observation]) -> Report | dict[str, MetricValue] | None:
        if not self._every_rank and self._mon._left_to_rank_zero("retrain"):
            return None
        make = observation if callable(observation) else (lambda: observation)
        result = self._mon._observe_safely(
            make,
            generation=self._generation,
            provenance=self._provenance,
            strict=self._strict,
            replicate=self._replicate,
        )
        if self._replicate:
            self.replicate = result  # type: ignore[assignment]
        else:
            self.report = result  # type: ignore[assignment]
        return result
