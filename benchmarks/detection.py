"""Detection-quality benchmark: when does each detector flag a recursive-training chain?

For every scenario x loop x seed (10+ generations) it records the first generation flagged by

* **collapse-monitor** (stage != healthy, default rules),
* **(a) an aggregate alert**, the numbers teams watch today: overall accuracy down 2 points
  from generation 0 where the scenario has a classifier (accuracy at the natural class mix,
  i.e. what a test set drawn like the training data shows), otherwise the Frechet distance to
  the reference doubled (on the embeddings; for text on fixed LSA sentence embeddings),
* **(b) Evidently**: DataDriftPreset on the embeddings' principal components (fitted on the
  reference), alert when the drift share >= 0.5 (for text: descriptors length / type-token
  ratio; for predictions only: the predicted-label column),

and counts false alarms on the control loops (any non-healthy check for ours; any flagged
chain for the baselines). It also reports **(a) at zero false alarms**: the aggregate alert
with its threshold raised, per scenario, just above the largest value it reached on that
scenario's control chains (calibrated in-sample, so optimistic for the aggregate), to show
what the aggregate's speed costs in false pages.

Writes ``benchmarks/results/detection.md`` and ``detection.json``.

Run: ``.venv/bin/python benchmarks/detection.py [--seeds 5] [--seed-offset 0] [--generations 10]
[--jobs 2] [--only digits] [--no-evidently] [--all-findings] [--replicates 2]``

Chains this benchmark was not tuned on: ``--world-seed N`` draws another true distribution for
every scenario (mixture means, the digits' probe / training split, the Zipf topics), and
``--set SCENARIO.KEY=VALUE`` (repeatable) changes a scenario's settings, e.g.
``--set digits.rare_digits=[3]``; results go to ``detection[-seedsA-B]-worldN.md`` (``--name``).

Judge other stage rules on a saved run, without rerunning the chains (the run needs
``--all-findings``): ``.venv/bin/python benchmarks/detection.py --rejudge
benchmarks/results/detection.json [--rules rules.yaml]``. Only the settings that act after the
tests ran can change this way (``REJUDGE_FIELDS``: significance and the stage rules).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from collapse_monitor.demo import aggregate_flags, aggregate_score

RESULTS = Path(__file__).parent / "results"

# (scenario, loop, options, collapsing?)
CHAINS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("gaussian", "replace", {}, True),
    ("gaussian", "accumulate", {}, False),
    ("gaussian", "fresh", {}, False),
    ("mixture", "replace", {}, True),
    ("mixture", "replace", {"temperature": 0.8}, True),
    ("mixture", "accumulate", {}, False),
    ("mixture", "fresh", {}, False),
    ("digits", "replace", {}, True),
    ("digits", "replace", {"temperature": 0.9}, True),
    ("digits", "accumulate", {}, False),
    ("digits", "fresh", {}, False),
    ("selftrain", "replace", {}, True),
    ("selftrain", "sampled", {}, False),
    ("selftrain", "true_labels", {}, False),
    ("zipf_text", "replace", {"top_p": 1.0}, True),
    ("zipf_text", "replace", {"top_p": 0.95}, True),
    ("zipf_text", "accumulate", {"top_p": 1.0}, False),
    ("zipf_text", "fresh", {"top_p": 1.0}, False),
]


def _label(scenario: str, loop: str, opts: dict[str, Any]) -> str:
    extra = ",".join(f"{k}={v}" for k, v in sorted(opts.items()))
    return f"{scenario}/{loop}" + (f" ({extra})" if extra else "")


def _evidently_share(ref_df: Any, cur_df: Any) -> float:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snap = Report([DataDriftPreset()]).run(cur_df, ref_df)
    for m in snap.dict().get("metrics", []):
        name = str(m.get("metric_name", m.get("metric_id", "")))
        if name.startswith("DriftedColumnsCount"):
            val = m.get("value")
            if isinstance(val, dict) and "share" in val:
                return float(val["share"])
    raise RuntimeError("no DriftedColumnsCount in the Evidently snapshot")


def _frames(ref: Any, obs: Any, pca: Any) -> tuple[Any, Any] | None:
    import pandas as pd

    from collapse_monitor._tokenize import tokenize

    if obs.embeddings is not None and pca is not None:
        cols = [f"pc{i}" for i in range(pca.n_components_)]
        return (
            pd.DataFrame(pca.transform(ref.embeddings), columns=cols),
            pd.DataFrame(pca.transform(obs.embeddings), columns=cols),
        )
    if obs.texts is not None:

        def desc(texts: Any) -> Any:
            toks = [tokenize(t) for t in texts]
            return pd.DataFrame(
                {
                    "length": [len(t) for t in toks],
                    "type_token_ratio": [len(set(t)) / max(1, len(t)) for t in toks],
                }
            )

        return desc(ref.texts), desc(obs.texts)
    if obs.predictions is not None:
        return (
            pd.DataFrame({"label": [str(x) for x in ref.labels]}),
            pd.DataFrame({"label": [str(x) for x in obs.predictions]}),
        )
    return None


def _first(flags: list[bool]) -> int | None:
    return next((i for i, f in enumerate(flags) if f), None)


#: significance levels of the operating curve (the default Rules().alpha must be among them)
ALPHAS = (0.01, 0.005, 0.003, 0.001)


class _AlphaSweep:
    """The detection rules at other ``alpha`` on the very same metric panels: the panel the
    monitor computed for each generation (``CollapseMonitor.last_panel``), then ``detect`` per
    level, the way ``CollapseMonitor.check`` calls it (baseline = generation 0, series = the
    chain's own values)."""

    def __init__(self, rules: Any) -> None:
        self.rules = rules
        self.base: Any = None
        self.history: list[dict[str, float]] = []
        self.alphas = tuple(sorted(set(ALPHAS) | {rules.alpha}, reverse=True))
        self.stages: dict[float, list[str]] = {a: [] for a in self.alphas}
        #: per level, the findings significant at the previous check (detect's ``held``)
        self.held: dict[float, set[tuple[str, str]]] = {a: set() for a in self.alphas}
        self.replicates: list[tuple[Any, Any]] = []

    def add_replicate(self, p: Any) -> None:
        """Another retrain of generation 0 (``CollapseMonitor.check_replicate``): its metrics and
        items join the baseline's, as the monitor keeps them."""
        from collapse_monitor.monitor import _replicate_of

        r = _replicate_of(p, self.base.metrics, self.base.items)
        self.replicates.append((r.metrics, r.items))

    def step(self, p: Any) -> None:
        from collapse_monitor.detection import detect

        base = self.base
        if base is None:
            self.base = p
            for a in self.alphas:
                self.stages[a].append("healthy")
        else:
            series = {k: [h[k] for h in self.history if k in h] + [mv.value] for k, mv in p.metrics.items()}
            for a in self.alphas:
                det = detect(
                    p.metrics,
                    rules=replace(self.rules, alpha=a),
                    baseline=base.metrics,
                    items=p.items,
                    base_items=base.items,
                    paired=p.paired,
                    series=series,
                    rare_classes=p.rare_classes,
                    held=self.held[a],
                    replicates=self.replicates,
                )
                self.stages[a].append(det.stage.value)
                self.held[a] = {(f.key, f.kind) for f in det.findings if f.significant}
        self.history.append({k: mv.value for k, mv in p.metrics.items()})


def fired_entry(rep: Any, generation: int) -> dict[str, Any]:
    """What made a non-healthy check fire: its stage and significant findings (metric, kind,
    family, value against the baseline, relative change, q), as the results JSON records it."""
    return {
        "generation": generation,
        "stage": rep.stage.value,
        "findings": [
            {
                "key": f.key,
                "kind": f.kind,
                "family": f.family,
                "value": f.value,
                "baseline": f.baseline,
                "relative_change": f.relative_change,
                "q_value": f.q_value,
            }
            for f in rep.findings
            if f.significant
        ],
    }


def run_one(args: tuple[Any, ...]) -> dict[str, Any]:
    """One chain: ``(scenario, loop, options, collapsing, seed, generations, with_evidently,
    all_findings[, rules as a dict[, world]])``; ``world`` (``world_options``) holds scenario
    settings that make another world: the label and the chain's role stay those of ``options``."""
    scenario, loop, opts, collapsing, seed, generations, with_evidently, all_findings = args[:8]
    rules_d = args[8] if len(args) > 8 else None
    world = dict(args[9]) if len(args) > 9 and args[9] else {}
    replicates = int(args[10]) if len(args) > 10 else 0
    import torch

    torch.set_num_threads(1)
    import collapse_monitor as cm
    from collapse_monitor.simulate import make_scenario

    t0 = time.perf_counter()
    sc = make_scenario(scenario, loop=loop, seed=seed, **{**world, **opts})
    ref = sc.reference
    pca = None
    if ref.embeddings is not None:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(10, ref.embeddings.shape[1]), random_state=0).fit(ref.embeddings)
    with tempfile.TemporaryDirectory() as home:
        rules = cm.Rules.from_dict(rules_d)
        mon = cm.CollapseMonitor(f"bench-{scenario}-{loop}-{seed}", reference=ref, sinks=[], home=home, rules=rules)
        sweep = _AlphaSweep(rules)
        stages: list[str] = []
        fired: list[dict[str, Any]] = []
        every: list[list[list[Any]]] = []  # --all-findings: each check's findings, compact
        agg: list[dict[str, float]] = []
        truth: list[dict[str, float]] = []  # the simulator's own ground truth per generation
        ev: list[float | None] = []
        for g in sc.generations(generations):
            rep = mon.check(g.observation)
            sweep.step(mon.last_panel)
            if g.generation == 0 and replicates:  # other retrains of generation 0 (check_replicate)
                for r in sc.baseline_replicates(replicates):
                    mon.check_replicate(r.observation)
                    sweep.add_replicate(mon.last_panel)
            stages.append(rep.stage.value)
            if rep.stage.value != "healthy":  # what fired: the significant findings of the check
                fired.append(fired_entry(rep, len(stages) - 1))
            if all_findings:
                every.append(
                    [
                        [f.key, f.kind, f.family, f.relative_change, f.q_value, f.significant, f.p_value]
                        for f in rep.findings
                    ]
                )
            agg.append({k: float(v) for k, v in g.aggregate.items()})
            truth.append({k: float(v) for k, v in g.truth.items()})
            frames = _frames(ref, g.observation, pca) if with_evidently else None
            ev.append(None if frames is None else _evidently_share(*frames))

    ours = _first([s != "healthy" for s in stages])
    aggregate = _first(aggregate_flags(agg))
    evidently = _first([e is not None and e >= 0.5 for e in ev])
    return {
        "scenario": scenario,
        "loop": loop,
        "options": opts,
        **({"world": world} if world else {}),
        "label": _label(scenario, loop, opts),
        "collapsing": collapsing,
        "seed": seed,
        "stages": stages,
        "ours": ours,
        "aggregate": aggregate,
        "evidently": evidently,
        "evidently_share": ev,
        "aggregates": agg,
        "truth": truth,
        "false_alarms": 0 if collapsing else sum(s != "healthy" for s in stages),
        "fired": fired,
        "alpha_stages": {str(a): st for a, st in sweep.stages.items()},
        # self-check: the sweep at the run's alpha must reproduce the monitor's own stages
        "sweep_matches_monitor": sweep.stages.get(rules.alpha) == stages,
        "seconds": time.perf_counter() - t0,
        **({"replicates": replicates} if replicates else {}),
        **({"all_findings": every} if all_findings else {}),
    }


def _evidently_ran(rows: list[dict[str, Any]]) -> bool:
    """Whether baseline (b) ran on these chains (``--no-evidently`` leaves every share None)."""
    return any(s is not None for r in rows for s in r.get("evidently_share") or [])


def either_flags(aggregates: list[dict[str, float]]) -> list[bool]:
    """Baseline (a) read literally, "accuracy down 2 points *or* Frechet distance doubled":
    either one, where a scenario has both (digits); elsewhere the same as (a)."""
    flags = aggregate_flags(aggregates)
    if aggregates and "accuracy" in aggregates[0] and "frechet_distance" in aggregates[0]:
        frechet = aggregate_flags([{"frechet_distance": a["frechet_distance"]} for a in aggregates])
        flags = [x or y for x, y in zip(flags, frechet, strict=True)]
    return flags


def _calibrated_thresholds(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per scenario: the largest aggregate score any of its control chains reached after
    generation 0 (the aggregate alert at zero false alarms fires strictly above it)."""
    out: dict[str, float] = {}
    for r in rows:
        if r["collapsing"]:
            continue
        sc = aggregate_score(r["aggregates"])
        if sc is not None:
            out[r["scenario"]] = max(out.get(r["scenario"], -float("inf")), max(sc[1][1:], default=-float("inf")))
    return out


def _operating_curve(rows: list[dict[str, Any]], generations: int) -> list[dict[str, Any]]:
    out = []
    for a in ALPHAS:
        fa = checks = flagged = after = 0
        leads: list[int] = []
        n_coll = 0
        for r in rows:
            st = r.get("alpha_stages", {}).get(str(a))
            if st is None:
                continue
            first = _first([x != "healthy" for x in st])
            if r["collapsing"]:
                n_coll += 1
                agg = r["aggregate"]
                flagged += first is not None
                after += first is None or (agg is not None and first > agg)
                if first is not None:
                    leads.append((agg if agg is not None else generations) - first)
            else:
                fa += sum(x != "healthy" for x in st)
                checks += len(st)
        out.append(
            {
                "alpha": a,
                "false_alarm_checks": fa,
                "control_checks": checks,
                "flagged": flagged,
                "collapsing": n_coll,
                "after_or_never": after,
                "median_lead": statistics.median(leads) if leads else None,
            }
        )
    return out


def _med(xs: list[int | None]) -> str:
    vals = [x for x in xs if x is not None]
    if not vals:
        return "never"
    s = f"{statistics.median(vals):g}"
    return s if len(vals) == len(xs) else f"{s} ({len(vals)}/{len(xs)})"


def summarise(rows: list[dict[str, Any]], generations: int) -> tuple[str, dict[str, Any]]:
    thresholds = _calibrated_thresholds(rows)
    for r in rows:
        thr = thresholds.get(r["scenario"])
        sc = aggregate_score(r["aggregates"])
        # from generation 1, as (a) itself, and never below generation 0's own score (no change):
        # a control maximum below it (accuracy only rose) made this alert "fire" at generation 0
        # on every chain
        r["aggregate_calibrated"] = (
            None if thr is None or sc is None else _first([False] + [v > max(thr, sc[1][0]) + 1e-12 for v in sc[1][1:]])
        )
        # (b) from generation 1 too: generation 0 is trained on human data only, so Evidently's
        # flag there is the gap between the refit and the reference, not collapse (it counted as
        # a detection at generation 0 on the gaussian chains); it stays a control false alarm
        shares = r.get("evidently_share") or []
        r["evidently_gen0"] = bool(shares) and shares[0] is not None and shares[0] >= 0.5
        r["evidently"] = _first([False] + [e is not None and e >= 0.5 for e in shares[1:]])
        r["aggregate_either"] = _first(either_flags(r["aggregates"]))
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    lines = [
        "| chain | kind | flagged (ours) | first gen ours | aggregate (a) | (a) at zero false alarms | Evidently (b) | "
        "lead vs (a) | ours <= (a) | false alarms ours (checks) | false alarms (a) / (b) (chains) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {"chains": {}}
    all_leads: list[int] = []
    for label, rs in by.items():
        collapsing = rs[0]["collapsing"]
        ours = [r["ours"] for r in rs]
        agg = [r["aggregate"] for r in rs]
        cal = [r["aggregate_calibrated"] for r in rs]
        # no control chain of the scenario ran (--only a collapsing chain): no threshold, not "never"
        calibrated = any(r["scenario"] == rs[0]["scenario"] and not r["collapsing"] for r in rows)
        ev = [r["evidently"] for r in rs]
        ev_ran = _evidently_ran(rs)
        # lead: generations between our flag and the aggregate alert (aggregate never -> end of run)
        leads = [(a if a is not None else generations) - o for o, a in zip(ours, agg, strict=True) if o is not None]
        not_after = sum(o is not None and (a is None or o <= a) for o, a in zip(ours, agg, strict=True))
        if collapsing:
            all_leads.extend(leads)
        fa = sum(r["false_alarms"] for r in rs)
        checks = sum(len(r["stages"]) for r in rs)
        summary["chains"][label] = {
            "collapsing": collapsing,
            "flagged": sum(o is not None for o in ours),
            "n": len(rs),
            "ours": ours,
            "aggregate": agg,
            "aggregate_calibrated": cal if calibrated else None,
            "evidently": ev,
            "median_lead": statistics.median(leads) if leads else None,
            "not_after_aggregate": not_after if collapsing else None,
            "false_alarm_checks": fa,
            "checks": checks,
        }
        ev_any = [e is not None or r["evidently_gen0"] for e, r in zip(ev, rs, strict=True)]
        fa_ev = f"{sum(ev_any)}/{len(rs)}" if ev_ran else "not run"
        fa_base = f"{sum(a is not None for a in agg)}/{len(rs)} / {fa_ev}"
        lines.append(
            f"| {label} | {'collapsing' if collapsing else 'control'} | "
            f"{sum(o is not None for o in ours)}/{len(rs)} | {_med(ours)} | {_med(agg)} | {_med(cal) if calibrated else 'n/a'} | {_med(ev) if ev_ran else 'not run'} | "
            f"{'-' if not collapsing else _fmt_lead(statistics.median(leads) if leads else None)} | "
            f"{f'{not_after}/{len(rs)}' if collapsing else '-'} | "
            f"{'-' if collapsing else f'{fa}/{checks}'} | {'-' if collapsing else fa_base} |"
        )
    coll = [r for r in rows if r["collapsing"]]
    ctrl = [r for r in rows if not r["collapsing"]]
    self_train = [r for r in coll if r["scenario"] == "selftrain"]

    def acc_moved(r: dict[str, Any]) -> float:
        g = r["ours"]
        return abs(r["aggregates"][0]["accuracy"] - r["aggregates"][g]["accuracy"]) if g is not None else float("nan")

    totals = {
        "collapsing_chains": len(coll),
        "flagged": sum(r["ours"] is not None for r in coll),
        "median_lead": statistics.median(all_leads) if all_leads else None,
        "flagged_after_aggregate": sum(
            r["ours"] is None or (r["aggregate"] is not None and r["ours"] > r["aggregate"]) for r in coll
        ),
        "control_chains": len(ctrl),
        "control_checks": sum(len(r["stages"]) for r in ctrl),
        "false_alarm_checks": sum(r["false_alarms"] for r in ctrl),
        "aggregate_false_alarm_chains": sum(r["aggregate"] is not None for r in ctrl),
        "evidently_false_alarm_chains": sum(r["evidently"] is not None or r["evidently_gen0"] for r in ctrl),
        "evidently_at_generation_0": sum(r["evidently_gen0"] for r in rows),
        "evidently_at_generation_0_biased": sum(r["evidently_gen0"] and _biased(r) for r in rows),
        "either_flagged_after": sum(
            r["ours"] is None or (r["aggregate_either"] is not None and r["ours"] > r["aggregate_either"]) for r in coll
        ),
        "either_median_lead": _median_lead(coll, "aggregate_either", generations),
        "either_false_alarm_chains": sum(r["aggregate_either"] is not None for r in ctrl),
        "either_differs": sum(r["aggregate_either"] != r["aggregate"] for r in rows),
        "selftrain_by_gen2_under_1pt": sum(
            r["ours"] is not None and r["ours"] <= 2 and acc_moved(r) < 0.01 for r in self_train
        ),
        "selftrain_chains": len(self_train),
        **_truth_totals(ctrl),
    }
    summary["totals"] = totals
    curve = _operating_curve(rows, generations)
    mismatched = [f"{r['label']} seed {r['seed']}" for r in rows if not r.get("sweep_matches_monitor", True)]
    summary["operating_curve"] = curve
    ev_ctrl = _evidently_ran(ctrl)
    lines += [
        "",
        f"- Collapsing chains flagged: {totals['flagged']}/{totals['collapsing_chains']}; median lead over the "
        f"aggregate alert (a) across the {totals['flagged']} flagged: {_fmt_lead(totals['median_lead'])} generations "
        f"(a chain we never flag is left out here and counted below); flagged after (a) "
        f"(or never): {totals['flagged_after_aggregate']}/{totals['collapsing_chains']}.",
        f"- False alarms on the controls: {totals['false_alarm_checks']} of {totals['control_checks']} checks "
        f"({totals['control_chains']} chains; the count includes each chain's generation 0, the baseline, which is "
        f"never flagged: {totals['control_checks'] - totals['control_chains']} judged); (a) flagged "
        f"{totals['aggregate_false_alarm_chains']}"
        + (f" and (b) {totals['evidently_false_alarm_chains']}" if ev_ctrl else "")
        + f" of the {totals['control_chains']} control chains"
        + ("." if ev_ctrl else " ((b), Evidently, not run)."),
        *_truth_line(totals),
        *(
            [
                f"- Evidently (b) is counted from generation 1, like (a) and our monitor, whose baseline generation 0 "
                f"is. It fired at generation 0 on {totals['evidently_at_generation_0']} of the {len(rows)} chains: "
                f"{totals['evidently_at_generation_0_biased']} with biased sampling, whose generation 0 is already "
                f"sampled with the bias (a real difference our monitor, judging against generation 0, cannot see), "
                f"the others trained on human data only (the refit's gap to the reference; a false alarm on the "
                f"controls)."
            ]
            if _evidently_ran(rows)
            else []
        ),
        f"- (a) read literally, accuracy down 2 points *or* the Frechet distance doubled, whichever comes first "
        f"where a chain has both ({totals['either_differs']} chains here differ from (a)): flagged after it "
        f"(or never) {totals['either_flagged_after']}/{totals['collapsing_chains']}, median lead "
        f"{_fmt_lead(totals['either_median_lead'])}; it fired on {totals['either_false_alarm_chains']} of the "
        f"{totals['control_chains']} control chains.",
        *(
            [
                f"- selftrain/replace flagged by generation 2 with accuracy moved < 1 point: "
                f"{totals['selftrain_by_gen2_under_1pt']}/{totals['selftrain_chains']}."
            ]
            if self_train
            else []
        ),
        "",
        "Operating curve: the same panels judged at other `alpha` (everything else default)"
        + ("." if not mismatched else f"; WARNING: the sweep differs from the monitor on {', '.join(mismatched)}."),
        "",
        "| alpha | false alarms (control checks) | collapsing chains flagged | flagged after (a) or never | "
        "median lead vs (a) |",
        "|---:|---:|---:|---:|---:|",
        *[
            f"| {c['alpha']:g} | {c['false_alarm_checks']}/{c['control_checks']} | {c['flagged']}/{c['collapsing']} | "
            f"{c['after_or_never']}/{c['collapsing']} | {_fmt_lead(c['median_lead'])} |"
            for c in curve
        ],
    ]
    alarms = _false_alarm_lines(ctrl)
    if alarms:
        lines += [
            "",
            "Control false alarms, what fired (the significant findings: metric, value against generation 0):",
            "",
            *alarms,
        ]
    return "\n".join(lines), summary


def _model_lost_a_mode(row: dict[str, Any], generation: int) -> bool | None:
    """Whether the simulator's truth shows the chain's model lost a mode at ``generation`` (a
    true mode's weight below half of it: mixture's ``modes_lost``); ``None`` where the row has
    no such truth (other scenarios, or a run before truth was recorded)."""
    truth = row.get("truth") or []
    if generation >= len(truth) or "modes_lost" not in truth[generation]:
        return None
    return truth[generation]["modes_lost"] >= 1


def _truth_totals(ctrl: list[dict[str, Any]]) -> dict[str, int]:
    """Control false alarms judged against the simulator's truth: the flagged checks where it
    records mode weights, and those where the model really had lost a mode (the flag is right
    about the model, on a loop the issue counts as a control)."""
    judged = lost = 0
    for r in ctrl:
        for g, st in enumerate(r["stages"]):
            if st == "healthy":
                continue
            verdict = _model_lost_a_mode(r, g)
            if verdict is not None:
                judged += 1
                lost += verdict
    return {"false_alarms_with_mode_truth": judged, "false_alarms_model_lost_a_mode": lost}


def _truth_line(totals: dict[str, Any]) -> list[str]:
    if not totals.get("false_alarms_with_mode_truth"):
        return []
    return [
        f"- Of the control false alarms on chains whose simulator records mode weights (mixture), "
        f"{totals['false_alarms_model_lost_a_mode']} of {totals['false_alarms_with_mode_truth']} are at a check where "
        f"the model had really lost a mode (a true mode's weight below half of it): right about the model, on a "
        f"loop counted as a control."
    ]


def add_truth(path: str | Path) -> int:
    """Record the simulator's truth in a saved run's flagged control rows that lack it (runs
    before truth was recorded), by re-running those chains' scenarios (not the monitor: the
    chains are deterministic); rewrites the JSON and the markdown's table (its header kept).
    Returns how many rows it filled."""
    from collapse_monitor.simulate import make_scenario

    path = Path(path)
    raw = path.read_text()
    data = json.loads(raw)
    filled = 0
    for r in data["rows"]:
        if r["collapsing"] or not r["false_alarms"] or r.get("truth"):
            continue
        sc = make_scenario(r["scenario"], loop=r["loop"], seed=r["seed"], **{**r.get("world", {}), **r["options"]})
        r["truth"] = [{k: float(v) for k, v in g.truth.items()} for g in sc.generations(len(r["stages"]))]
        filled += 1
    generations = max(len(r["stages"]) for r in data["rows"])
    table, summary = summarise(data["rows"], generations)
    data["summary"] = summary
    compact = "\n" not in raw[:200]
    fmt: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 1}
    path.write_text(json.dumps(data, default=str, **fmt))
    md = path.with_suffix(".md")
    if md.exists():
        head = md.read_text().split("\n| chain |", 1)[0]
        md.write_text(head + "\n" + table + "\n")
    return filled


def _biased(row: dict[str, Any]) -> bool:
    """A chain sampled with a bias knob (temperature or top-p below 1, top-k) from generation 0."""
    o = row.get("options") or {}
    return o.get("temperature", 1.0) < 1.0 or o.get("top_p", 1.0) < 1.0 or o.get("top_k") is not None


def _median_lead(rows: list[dict[str, Any]], baseline: str, generations: int) -> float | None:
    """Median over the flagged chains of (the baseline's first flag, end of run when it never
    fired) minus ours."""
    leads = [
        (r[baseline] if r[baseline] is not None else generations) - r["ours"] for r in rows if r["ours"] is not None
    ]
    return statistics.median(leads) if leads else None


def _fmt_lead(lead: float | None) -> str:
    """A median lead in generations as the table prints it (``0`` rather than ``0.0``)."""
    return "n/a" if lead is None else f"{lead:g}"


def _false_alarm_lines(ctrl: list[dict[str, Any]]) -> list[str]:
    """One line per flagged control check, naming the findings that made it fire (rows of
    runs before the ``fired`` field was recorded are skipped). Paired tests on the same items
    (a rare class's recall is also the worst and the rare-class recall) share one entry."""
    out = []
    for r in ctrl:
        for f in r.get("fired", []):
            same: dict[tuple[float, float, str], list[str]] = {}
            for x in f["findings"]:
                if "value" in x:
                    k = (round(x["value"], 6), round(x["baseline"], 6), x["kind"])
                else:  # a re-judged row: only the relative change is kept
                    k = (round(x["relative_change"], 6), float("nan"), x["kind"])
                same.setdefault(k, []).append(x["key"])
            what = "; ".join(
                (
                    f"{' / '.join(sorted(keys))} {v:.3f} against {b:.3f} ({kind} test)"
                    if b == b
                    else f"{' / '.join(sorted(keys))} {v:+.1%} ({kind} test)"
                )
                for (v, b, kind), keys in sorted(same.items(), key=lambda t: sorted(t[1]))
            )
            out.append(f"- {r['label']} seed {r['seed']} generation {f['generation']} ({f['stage']}): {what}")
    return out


# Rules fields that act on a check's findings after its tests ran: significance (q <= alpha and a
# drop of at least min_effect) and the stage rules of ``classify``. Every other field changes
# the tests themselves (trend, k, n_boot, ...), so judging it needs the chains rerun.
REJUDGE_FIELDS = (
    "alpha",
    "min_effect",
    "diversity_min_effect",
    "late_min_effect",
    "late_head_min_effect",
    "drift_ratio",
    "early_diversity_metrics",
    "tail",
    "head",
    "diversity",
)


def rejudge_rules(d: dict[str, Any] | None) -> Any:
    """``Rules`` from a mapping (a YAML file's ``rules:`` block, or the bare block), refusing
    settings that a re-judge cannot honour."""
    from collapse_monitor import Rules

    if d is not None and not isinstance(d, dict):
        raise ValueError(f"the rules file must hold a mapping of rule settings, got {type(d).__name__}")
    d = dict(d or {})
    if isinstance(d.get("rules"), dict):
        d = d["rules"]
    rules = Rules.from_dict(d)  # unknown keys and bad values: ConfigError naming the key
    other = sorted(k for k in d if k not in REJUDGE_FIELDS)
    if other:
        raise ValueError(
            f"rules.{other[0]} changes the tests themselves, not how their findings are judged; "
            f"a re-judge can change only {', '.join(REJUDGE_FIELDS)}: rerun the chains for {', '.join(other)}"
        )
    return rules


def read_rules_file(path: str) -> dict[str, Any]:
    """A rules YAML file as a mapping (its ``rules:`` block, or the bare block); a file that is
    not YAML or not a mapping is a ``ConfigError`` naming the file, not a parser traceback."""
    import yaml

    from collapse_monitor import ConfigError

    p = Path(path)
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("rules", f"{p.name} is not valid YAML{where}") from None
    if not isinstance(d, dict):
        raise ConfigError("rules", f"{p.name} must hold a mapping of rule settings, got {type(d).__name__}")
    return d["rules"] if isinstance(d.get("rules"), dict) else d


def run_rules(path: str | None) -> dict[str, Any] | None:
    """The rules a run uses, read from a YAML file (its ``rules:`` block, or the bare block)
    and validated (``ConfigError`` names a bad key) before any chain starts; ``None``: defaults."""
    if path is None:
        return None
    from collapse_monitor import Rules

    return Rules.from_dict(read_rules_file(path)).to_dict()


def world_options(world_seed: int, settings: list[str] | None) -> dict[str, dict[str, Any]]:
    """Per scenario, the settings of ``--world-seed`` and ``--set SCENARIO.KEY=VALUE`` (the value
    read as YAML), checked by building each scenario once: a bad key or value is a
    ``ConfigError`` naming it before any chain starts.

    A chain in another world is one this benchmark was not tuned on: ``world_seed`` draws a new
    true distribution (mixture means, the digits' probe / training split, the Zipf vocabulary's
    topics), and the settings change the scenario itself (``digits.rare_digits=[3]``).
    """
    import yaml

    from collapse_monitor import ConfigError
    from collapse_monitor.simulate import make_scenario

    names = sorted({c[0] for c in CHAINS})
    out: dict[str, dict[str, Any]] = {n: ({"world_seed": world_seed} if world_seed else {}) for n in names}
    for item in settings or []:
        key, sep, raw = item.partition("=")
        scen, dot, field = key.strip().partition(".")
        if not sep or not dot or not field:
            raise ConfigError("--set", f"expected SCENARIO.KEY=VALUE, got {item!r}")
        if scen not in out:
            raise ConfigError("--set", f"unknown scenario {scen!r} in {item!r}; expected one of {', '.join(names)}")
        if field in ("seed", "loop") or any(c[0] == scen and field in c[2] for c in CHAINS):
            # the chains set these themselves: a --set of them was shown in the results and
            # silently not used (or crashed with "multiple values for 'seed'")
            fixed = sorted({k for c in CHAINS if c[0] == scen for k in c[2]} | {"seed", "loop"})
            raise ConfigError("--set", f"{scen}.{field} is set by the benchmark's chains ({', '.join(fixed)})")
        value = yaml.safe_load(raw)
        out[scen][field] = tuple(value) if isinstance(value, list) else value
    for scen, kw in out.items():
        if kw:
            try:
                make_scenario(scen, **kw)
            except ConfigError as exc:  # an unknown option, or a value out of range
                raise ConfigError(f"--set {scen}.{exc.key}", str(exc).partition(": ")[2]) from None
    return {k: v for k, v in out.items() if v}


def _world_line(world: dict[str, dict[str, Any]]) -> str:
    if not world:
        return ""
    return "; world: " + ", ".join(f"{s}.{k}={v!r}" for s, kw in sorted(world.items()) for k, v in kw.items())


def _rules_line(rules_d: dict[str, Any] | None) -> str:
    """``default `Rules()``` or the settings that differ from it."""
    from collapse_monitor import Rules

    if rules_d is None:
        return "default `Rules()`"
    base = Rules().to_dict()
    diff = ", ".join(f"{k}={v!r}" for k, v in rules_d.items() if base.get(k) != v)
    return f"rules: {diff}" if diff else "default `Rules()`"


def rejudge_stages(checks: list[list[list[Any]]], rules: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """One chain's stages under ``rules``, from its ``all_findings`` (per check: key, kind,
    family, relative change, q, significant and, from runs made since 2026-12-06, the
    unadjusted p), through the real ``judge`` (``classify``, and the findings marked as the
    monitor reports them). A finding significant at the previous check is re-tested on its own
    p, as ``detect``'s ``held`` does; a run saved without p cannot hold one (it judges as the
    monitor did before holding).

    Exact for every field in ``REJUDGE_FIELDS`` except one case: a key dropped from the
    tail / head / diversity lists keeps the q-values of the run (Benjamini-Hochberg over the
    tests the run made), which is conservative. A key the run did not test cannot be added.
    Returns the stages and, per flagged check, its significant findings (``fired``).
    """
    from collapse_monitor.detection import judge
    from collapse_monitor.types import Finding

    stages: list[str] = []
    fired: list[dict[str, Any]] = []
    nan = float("nan")
    held: set[tuple[str, str]] = set()
    for g, check in enumerate(checks):
        # the run's rare classes: their own recall was tested (as tail) under class_recall.<c>
        rare = [k[len("class_recall.") :] for k, _, fam, *_ in check if fam == "tail" and k.startswith("class_recall.")]
        fs = []
        for key, kind, _family, rel, q, _sig, *more in check:
            fam = rules.family_of(key, rare_classes=rare)
            if fam is not None:
                p = more[0] if more else None
                sig = rules.is_significant(q, rel, fam) or (
                    p is not None and (key, kind) in held and rules.is_significant(p, rel, fam)
                )
                fs.append(Finding(key, fam, kind, nan, nan, rel, nan if p is None else p, q, sig, "rejudged"))
        stage_, _, _, judged = judge(fs, rules)
        held = {(f.key, f.kind) for f in judged if f.significant}
        stage = stage_.value
        stages.append(stage)
        if stage != "healthy":
            fired.append(
                {
                    "generation": g,
                    "stage": stage,
                    "findings": [
                        {
                            "key": f.key,
                            "kind": f.kind,
                            "family": f.family,
                            "relative_change": f.relative_change,
                            "q_value": f.q_value,
                        }
                        for f in judged
                        if f.significant
                    ],
                }
            )
    return stages, fired


def rejudge(rows: list[dict[str, Any]], rules: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a saved run judged again under ``rules`` (stages, first flags, false
    alarms, what fired, the alpha sweep), ready for ``summarise``; also the labels of the
    chains whose stages changed against the recorded run."""
    out: list[dict[str, Any]] = []
    changed: list[str] = []
    for r in rows:
        if "all_findings" not in r:
            raise ValueError(
                f"{r['label']} seed {r['seed']}: the run kept no per-check findings; rerun it with --all-findings"
            )
        stages, fired = rejudge_stages(r["all_findings"], rules)
        if stages != r["stages"]:
            changed.append(f"{r['label']} seed {r['seed']}")
        n = dict(r)
        n["stages"] = stages
        n["fired"] = fired
        n["ours"] = _first([s != "healthy" for s in stages])
        n["false_alarms"] = 0 if r["collapsing"] else sum(s != "healthy" for s in stages)
        n["alpha_stages"] = {str(a): rejudge_stages(r["all_findings"], replace(rules, alpha=a))[0] for a in ALPHAS}
        n["sweep_matches_monitor"] = True
        out.append(n)
    return out, changed


def resummarise(path: str | Path, generations: int = 10) -> str:
    """Rebuild the markdown table from a saved detection json (no re-run)."""
    rows = json.loads(Path(path).read_text())["rows"]
    return summarise(rows, generations)[0]


def run_chains(fn: Any, tasks: list[tuple[Any, ...]], jobs: int) -> list[dict[str, Any]]:
    """``fn`` over the chain tasks, in order, with a progress bar: in this process for
    ``jobs <= 1`` (no pickling: also what the tests use), else in a process pool."""
    try:
        from rich.progress import track
    except ImportError:  # pragma: no cover

        def track(x, **_):  # type: ignore[no-redef]
            return x

    if jobs <= 1:
        return list(track(map(fn, tasks), total=len(tasks), description="chains"))
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        return list(track(ex.map(fn, tasks), total=len(tasks), description="chains"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seed-offset", type=int, default=0, help="first seed (5 gives held-out seeds 5..9)")
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", default=None, help="substring filter on chain labels")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-evidently", action="store_true", help="skip baseline (b) (faster, for tuning)")
    ap.add_argument(
        "--all-findings",
        action="store_true",
        help="keep every check's findings (key, kind, family, relative change, q, significant) in the JSON, "
        "to judge other stage rules offline (classify) without rerunning the chains",
    )
    ap.add_argument(
        "--rejudge",
        metavar="JSON",
        action="append",
        help="judge a saved --all-findings run (repeat to pool runs) under --rules instead of running chains",
    )
    ap.add_argument(
        "--rules",
        metavar="YAML",
        help="a YAML file of rules (or its rules: block): the chains run under them (default Rules()), "
        "or with --rejudge the saved findings are judged under them",
    )
    ap.add_argument(
        "--world-seed",
        type=int,
        default=0,
        help="another true distribution for every scenario (0: the one the defaults were chosen on)",
    )
    ap.add_argument(
        "--set",
        metavar="SCENARIO.KEY=VALUE",
        action="append",
        help="a scenario setting for every chain of that scenario, e.g. digits.rare_digits=[3] (repeatable)",
    )
    ap.add_argument(
        "--replicates",
        type=int,
        default=0,
        help="retrain generation 0 this many more times on human data and add each to the baseline "
        "(CollapseMonitor.check_replicate): declines must hold against every one",
    )
    ap.add_argument("--name", help="results file stem (default: detection[-seedsA-B][-worldN][-repN])")
    ap.add_argument(
        "--add-truth",
        metavar="JSON",
        action="append",
        help="record the simulator's truth in a saved run's flagged control rows (runs before it was recorded) "
        "and rewrite its JSON and markdown table, instead of running chains (repeatable)",
    )
    ap.add_argument(
        "--incidents",
        metavar="JSON",
        action="append",
        help="count the alert incidents (first firings) of saved runs' stages under the real alert lifecycle "
        "at resolve_after 1, 2 and 3 instead of running chains (repeat to pool runs)",
    )
    a = ap.parse_args(argv)
    if a.add_truth:
        for p in a.add_truth:
            print(f"{p}: truth recorded in {add_truth(p)} flagged control rows")
        return 0
    if a.incidents:
        return _main_incidents(a.incidents)
    if a.rejudge:
        return _main_rejudge(a.rejudge, a.rules)
    from collapse_monitor import ConfigError

    try:
        rules_d = run_rules(a.rules)
        world = world_options(a.world_seed, a.set)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tasks = [
        (s, lp, o, c, seed, a.generations, not a.no_evidently, a.all_findings, rules_d, world.get(s, {}), a.replicates)
        for (s, lp, o, c) in CHAINS
        for seed in range(a.seed_offset, a.seed_offset + a.seeds)
        if a.only is None or a.only in _label(s, lp, o)
    ]
    t0 = time.perf_counter()
    rows = run_chains(run_one, tasks, a.jobs)
    table, summary = summarise(rows, a.generations)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    elapsed = time.perf_counter() - t0
    last = a.seed_offset + a.seeds - 1
    stem = a.name or (
        ("detection" if a.seed_offset == 0 else f"detection-seeds{a.seed_offset}-{last}")
        + (f"-world{a.world_seed}" if a.world_seed else "")
        + (f"-rep{a.replicates}" if a.replicates else "")
    )
    header = (
        f"# Detection benchmark\n\nSeeds {a.seed_offset}-{last} x {a.generations} generations per chain; "
        f"{len(rows)} chains in {elapsed:.0f} s on {os.cpu_count()} cores; {_rules_line(rules_d)}"
        f"{_world_line(world)}{'; no Evidently' if a.no_evidently else ''}"
        f"{f'; baseline = generation 0 and {a.replicates} replicate retrain(s) of it' if a.replicates else ''}.\n"
        "Columns: generation of the first flag (median over seeds; `(k/n)` = only k of n chains flagged), "
        "lead = generations between our flag and the aggregate alert (end of run when it never fired), "
        "median over seeds.\n\n"
    )
    (out / f"{stem}.md").write_text(header + table + "\n")
    for name in write_rows_json(out, stem, summary, rows, a.generations, compact=a.all_findings):
        print(f"wrote {out / name}", file=sys.stderr)
    print(header + table)
    return 0


#: the largest results JSON kept whole; above it the rows are written in blocks of seeds
MAX_JSON_BYTES = 2_000_000
SEED_BLOCK = 5


def write_rows_json(
    out: Path, stem: str, summary: dict[str, Any], rows: list[dict[str, Any]], generations: int, *, compact: bool
) -> list[str]:
    """Write ``{stem}.json`` (summary and rows); returns the file names written. With every
    check's findings (``compact``: no indentation) a run of more than 5 seeds passes 2 MB (15
    seeds: 5.3 MB), too large to keep in git: its rows are then written as
    ``{stem}-seedsA-B.json`` per block of 5 seeds, each with its own summary
    (:func:`summarise`). ``--rejudge`` takes the blocks together (repeat the option)."""
    fmt: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 1}

    def text(s: dict[str, Any], r: list[dict[str, Any]]) -> str:
        return json.dumps({"summary": s, "rows": r}, default=str, **fmt)

    whole = text(summary, rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    if len(whole.encode()) <= MAX_JSON_BYTES or len(seeds) <= SEED_BLOCK:
        (out / f"{stem}.json").write_text(whole)
        return [f"{stem}.json"]
    names = []
    for i in range(0, len(seeds), SEED_BLOCK):
        block = seeds[i : i + SEED_BLOCK]
        part = [r for r in rows if int(r["seed"]) in block]
        name = f"{stem}-seeds{block[0]}-{block[-1]}.json"
        (out / name).write_text(text(summarise(part, generations)[1], part))
        names.append(name)
    return names


def incidents(stages: list[str], resolve_after: int) -> int:
    """How many incidents (first ``firing`` events, repeats not counted) a chain's stage sequence
    opens under the monitor's own alert lifecycle with ``Rules(resolve_after=...)``: one check a
    day, so a repeat is never due."""
    from collapse_monitor import Rules, Stage
    from collapse_monitor._lifecycle import alert_events

    rules = Rules(resolve_after=resolve_after, repeat_interval_seconds=1e12)
    states: dict[str, Any] = {}
    opened = 0
    for g, st in enumerate(stages):
        events, new, _ = alert_events(
            monitor="bench",
            stage=Stage(st),
            drift=False,
            findings=(),
            generation=g,
            synthetic_fraction=None,
            states=states,
            rules=rules,
            now=86400.0 * g,
        )
        opened += sum(e.status == "firing" and not e.repeat for e in events)
        states = {s.rule: s for s in new}
    return opened


def _main_incidents(paths: list[str]) -> int:
    rows: list[dict[str, Any]] = []
    try:
        for p in paths:
            rows += json.loads(Path(p).read_text())["rows"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# Alert incidents under the alert lifecycle\n\n{len(rows)} chains from {', '.join(paths)}.\n")
    print("| resolve_after | incidents on control chains | incidents on collapsing chains |")
    print("|---:|---:|---:|")
    for k in (1, 2, 3):
        ctrl = sum(incidents(r["stages"], k) for r in rows if not r["collapsing"])
        coll = sum(incidents(r["stages"], k) for r in rows if r["collapsing"])
        print(f"| {k} | {ctrl} | {coll} |")
    return 0


def _main_rejudge(paths: list[str], rules_path: str | None) -> int:
    from collapse_monitor import ConfigError, Rules

    try:
        rules = rejudge_rules(read_rules_file(rules_path) if rules_path else None)
        rows: list[dict[str, Any]] = []
        for p in paths:
            rows += json.loads(Path(p).read_text())["rows"]
        new, changed = rejudge(rows, rules)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    generations = max(len(r["stages"]) for r in new)
    table, _ = summarise(new, generations)
    d = rules.to_dict()
    base = Rules().to_dict()
    diff = ", ".join(f"{k}={d[k]!r}" for k in REJUDGE_FIELDS if d[k] != base[k]) or "default rules"
    print(
        f"# Detection benchmark, re-judged\n\n{len(new)} chains from {', '.join(paths)}; rules: {diff}.\n"
        f"Stages changed against the recorded run on {len(changed)} of {len(new)} chains"
        + (f": {'; '.join(changed)}" if changed else "")
        + ".\n\n"
        + table
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
