"""Alert lifecycle: fire on entering a non-healthy stage, repeat at a bounded rate while it
persists, resolve on recovery (after ``Rules.resolve_after`` checks in a row without the stage:
a stage that flaps stays one incident). Dedup key = monitor + rule (``Alert.dedup_key``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .detection import Rules
from .history import AlertState
from .types import Alert, Finding, Report, Stage

__all__ = ["DRIFT_SEVERITY", "RULE_DRIFT", "alert_events", "describe", "keepalive_events"]

RULE_DRIFT = "distribution_drift"
#: the severity of a drift alert (the stages' come from ``Stage.severity``)
DRIFT_SEVERITY = "info"


def _pct(x: float) -> str:
    return f"{abs(x) * 100:.0f}%"


def describe(findings: Sequence[Finding], limit: int = 3) -> str:
    """'tail_coverage -23% (0.41 [0.35, 0.47] vs 0.53)' for the worst significant declines."""
    sig = sorted((f for f in findings if f.significant), key=lambda f: (f.relative_change, f.q_value))
    seen: set[str] = set()
    parts = []
    for f in sig:
        if f.key in seen:
            continue
        seen.add(f.key)
        ci = "" if f.ci_low is None else f" [{f.ci_low:.3g}, {f.ci_high:.3g}]"
        trend = " (trend)" if f.kind == "trend" else ""
        parts.append(f"{f.key} -{_pct(f.relative_change)}{trend} ({f.value:.3g}{ci} vs {f.baseline:.3g})")
        if len(parts) == limit:
            break
    return "; ".join(parts)


def _details(findings: Sequence[Finding]) -> tuple[Mapping[str, Any], ...]:
    return tuple(
        {
            "key": f.key,
            "family": f.family,
            "kind": f.kind,
            "value": f.value,
            "baseline": f.baseline,
            "ci_low": f.ci_low,
            "ci_high": f.ci_high,
            "relative_change": f.relative_change,
            "p_value": f.p_value,
            "q_value": f.q_value,
            "test": f.test,
        }
        for f in sorted(findings, key=lambda f: f.relative_change)
        if f.significant
    )


def alert_events(
    *,
    monitor: str,
    stage: Stage,
    drift: bool,
    findings: Sequence[Finding],
    generation: int,
    synthetic_fraction: float | None,
    states: Mapping[str, AlertState],
    rules: Rules,
    now: float,
    measured: Collection[str] | None = None,
) -> tuple[list[Alert], list[AlertState], dict[str, list[str]]]:
    """Events for this check, the new lifecycle state (one entry per open rule) and the open
    rules this check could not judge: ``{rule: the evidence keys it did not measure}``.

    An open incident keeps the metric keys of the significant findings it rests on (its newest
    check that showed it, ``AlertState.evidence``). A check that did not measure all of them
    (``measured``: the keys it did; say a check given embeddings only, after an incident fired on
    the rare class's recall) neither resolves it nor counts towards ``Rules.resolve_after``: it
    has no evidence of recovery. Such a check used to resolve the incident, and the next full
    check fired it again."""
    wanted: dict[str, str] = {}
    evidence = tuple(sorted({f.key for f in findings if f.significant}))
    blind: dict[str, list[str]] = {}
    if stage is not Stage.HEALTHY:
        wanted[stage.value] = stage.severity
    if drift and rules.alert_on_drift:
        wanted[RULE_DRIFT] = DRIFT_SEVERITY
    what = describe(findings)
    events: list[Alert] = []
    new_states: list[AlertState] = []

    def make(rule: str, status: str, severity: str, ev_stage: Stage, repeat: bool = False) -> Alert:
        label = rule.replace("_", " ")
        if status == "firing":
            summary = f"{monitor}: {label} at generation {generation}"
            if what:
                summary += f" - {what}"
        else:
            summary = f"{monitor}: {label} resolved at generation {generation} (stage {stage.value})"
        return _event(
            monitor,
            rule,
            status,
            severity,
            ev_stage,
            generation,
            summary,
            findings,
            synthetic_fraction,
            now,
            repeat=repeat,
        )

    for rule, st in states.items():
        if rule not in wanted:
            missing = [] if measured is None else [k for k in st.evidence if k not in measured]
            if missing:  # not judged: the incident stays open as it was
                blind[rule] = missing
                new_states.append(st)
                continue
            if st.clear_checks + 1 < rules.resolve_after:  # not yet: the incident stays open
                new_states.append(replace(st, clear_checks=st.clear_checks + 1))
                continue
            prev_stage = Stage(rule) if rule in Stage._value2member_map_ else Stage.HEALTHY
            events.append(make(rule, "resolved", st.severity, prev_stage))
    for rule, severity in wanted.items():
        ev_stage = Stage(rule) if rule in Stage._value2member_map_ else stage
        prev = states.get(rule)
        if prev is None:
            events.append(make(rule, "firing", severity, ev_stage))
            new_states.append(AlertState(rule, severity, now, generation, now, generation, evidence=evidence))
            continue
        due = now - prev.last_notified_at >= rules.repeat_interval_seconds
        if rules.repeat_every_generations is not None:
            due = due or generation - prev.last_notified_generation >= rules.repeat_every_generations
        if due:
            events.append(make(rule, "firing", severity, ev_stage, repeat=True))
            new_states.append(
                AlertState(rule, severity, prev.since, prev.since_generation, now, generation, evidence=evidence)
            )
        else:
            new_states.append(replace(prev, clear_checks=0, evidence=evidence))
    return events, new_states, blind


def keepalive_events(report: Report) -> list[Alert]:
    """A keep-alive for each incident still open after ``report`` that this check sent nothing
    for (no firing, repeat or resolve): ``Alert.refresh``, routed only to channels whose posted
    alerts expire by themselves (Alertmanager's ``endsAt``). Without it an open incident lived
    only from repeat to repeat there, and a window shorter than the repeat interval plus a check
    interval let Alertmanager notify "resolved" while the model was still collapsed. The waiting
    out of ``Rules.resolve_after`` is still open, so it is kept alive too."""
    sent = {a.rule for a in report.alerts}
    what = describe(report.findings)
    out = []
    for rule, severity in sorted((report.open_alerts or {}).items()):
        if rule in sent:
            continue
        stage = Stage(rule) if rule in Stage._value2member_map_ else report.stage
        summary = f"{report.monitor}: {rule.replace('_', ' ')} still open at generation {report.generation}"
        if what:
            summary += f" - {what}"
        share = None if report.provenance is None else report.provenance.synthetic_fraction
        out.append(
            _event(
                report.monitor,
                rule,
                "firing",
                severity,
                stage,
                report.generation,
                summary,
                report.findings,
                share,
                report.created_at,
                repeat=True,
                refresh=True,
            )
        )
    return out


def _event(
    monitor: str,
    rule: str,
    status: str,
    severity: str,
    stage: Stage,
    generation: int,
    summary: str,
    findings: Sequence[Finding],
    synthetic_fraction: float | None,
    now: float,
    *,
    repeat: bool = False,
    refresh: bool = False,
) -> Alert:
    """One alert event: a firing carries the significant findings, a resolve none."""
    return Alert(
        monitor=monitor,
        rule=rule,
        status=status,
        severity=severity,
        stage=stage,
        generation=generation,
        summary=summary[:1024],
        details=_details(findings) if status == "firing" else (),
        synthetic_fraction=synthetic_fraction,
        timestamp=now,
        repeat=repeat,
        refresh=refresh,
    )
