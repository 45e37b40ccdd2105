"""Retrain noise: how far do two models trained on human data alone disagree on the frozen probe?

Every scenario's ``stable`` loop retrains each generation on *fresh human data only*
(synthetic fraction 0), so its generations are exchangeable retrains: any decline it shows is
retrain noise, not collapse. This benchmark runs that loop for every scenario and reports

* **false alarms of the monitor** (default ``Rules()``) on these pure-human chains: the floor
  under the false alarms of the accumulate / fresh controls in ``detection.py``;
* **over-dispersion of the paired tests**: for every paired metric (class recalls, tail / head
  coverage, rare n-gram recall...) and every generation ``k >= 1``, the discordant items
  against generation 0 (``b`` = good at baseline and bad now, ``c`` = the reverse) give
  McNemar's statistic ``(b - c)^2 / (b + c)``. McNemar's test assumes the items flip
  independently given the two models; then the statistic averages about 1. Two retrains
  differ as *models*, so their flips are correlated through the shared fit and the average
  is ``phi`` > 1 (the dispersion factor of quasi-likelihood, McCullagh & Nelder 1989, 4.5).
  Alongside, the share of comparisons whose exact one-sided McNemar p is below 0.005, against
  the 0.5 % the test promises when only the probe items are random.

What it means: a paired test on a frozen probe answers "is this model worse than the baseline
model on these items", exactly and with few items; it does not know how much two retrains on
the same kind of data differ. Where ``phi`` is large (a class with a few dozen training items),
a lucky baseline retrain makes the next retrain look significantly worse.

Writes ``benchmarks/results/retrain-noise.md`` and ``retrain-noise.json``.

Run: ``.venv/bin/python benchmarks/retrain_noise.py [--seeds 10] [--generations 10] [--jobs 2]
[--only digits] [--replicates 2]`` (``--replicates`` writes ``retrain-noise-rep2.*``)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

SCENARIOS: tuple[str, ...] = ("gaussian", "mixture", "digits", "selftrain", "zipf_text")

#: the exact one-sided McNemar level whose rate is reported (the detection benchmark's alpha)
LEVEL = 0.005


def dispersion(pairs: list[tuple[int, int]]) -> dict[str, Any]:
    """Summary of discordant pairs ``(b, c)``: mean McNemar statistic ``(b - c)^2 / (b + c)``
    over comparisons with ``b + c > 0`` (``phi``), and the share of all comparisons whose exact
    one-sided McNemar p (``b`` against ``c``) is below :data:`LEVEL`.

    >>> dispersion([(3, 1), (0, 0), (2, 2)])["phi"]
    1.0
    """
    from collapse_monitor.metrics import stats as st

    stats_ = [(b - c) ** 2 / (b + c) for b, c in pairs if b + c > 0]
    below = sum(st.mcnemar_exact(b, c, alternative="greater") < LEVEL for b, c in pairs)
    return {
        "comparisons": len(pairs),
        "phi": round(sum(stats_) / len(stats_), 3) if stats_ else math.nan,
        "share_p_below_level": round(below / len(pairs), 4) if pairs else math.nan,
        "mean_discordant": round(sum(b + c for b, c in pairs) / len(pairs), 2) if pairs else math.nan,
    }


def run_chain(args: tuple[Any, ...]) -> dict[str, Any]:
    """One ``stable`` chain ``(scenario, seed, generations[, replicates])``: the monitor's
    stages, what fired, and each paired metric's flips against generation 0. With replicates,
    generation 0 is retrained that many more times and each is added to the baseline
    (``check_replicate``); the flips are still counted against generation 0 alone."""
    scenario, seed, generations = args[:3]
    replicates = int(args[3]) if len(args) > 3 else 0
    import torch

    torch.set_num_threads(1)
    import collapse_monitor as cm
    from collapse_monitor.detection import _paired_p, discordant
    from collapse_monitor.simulate import make_scenario

    t0 = time.perf_counter()
    sc = make_scenario(scenario, loop="stable", seed=seed)
    ref = sc.reference
    stages: list[str] = []
    fired: list[dict[str, Any]] = []
    pairs: dict[str, list[tuple[int, int]]] = {}
    monitor_p: dict[str, list[float]] = {}
    base_items: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home:
        mon = cm.CollapseMonitor(f"noise-{scenario}-{seed}", reference=ref, sinks=[], home=home)
        for g in sc.generations(generations):
            rep = mon.check(g.observation)
            panel = mon.last_panel  # the panel this check computed, per-item arrays included
            if g.generation == 0:
                for r in sc.baseline_replicates(replicates):
                    mon.check_replicate(r.observation)
            stages.append(rep.stage.value)
            if rep.stage.value != "healthy":
                fired.append(
                    {
                        "generation": g.generation,
                        "stage": rep.stage.value,
                        "findings": [
                            [f.key, f.kind, round(f.value, 4), round(f.baseline, 4), f.q_value]
                            for f in rep.findings
                            if f.significant and f.baseline is not None
                        ],
                    }
                )
            assert panel is not None
            if g.generation == 0:
                base_items = dict(panel.items)
                continue
            for key, (item_key, mask) in panel.paired.items():
                cur, base = panel.items.get(item_key), base_items.get(item_key)
                if cur is None or base is None or cur.shape != base.shape:
                    continue
                pairs.setdefault(key, []).append(discordant(cur, base, mask))
                # the test the monitor runs on them (scaled by the design effects for the
                # coverage shares' correlated points; the exact McNemar test otherwise)
                p = _paired_p(key, panel.paired, panel.items, base_items)
                if p is not None:
                    monitor_p.setdefault(key, []).append(p)
    return {
        "scenario": scenario,
        "seed": seed,
        "stages": stages,
        "fired": fired,
        "pairs": pairs,
        "monitor_p": monitor_p,
        "seconds": round(time.perf_counter() - t0, 2),
        **({"replicates": replicates} if replicates else {}),
    }


def _reported(key: str) -> bool:
    """The paired metrics the stage rules read (tail and head families); per-class recalls are
    left out of the table (``rare_class_recall`` and ``worst_class_recall`` summarise them)."""
    from collapse_monitor import Rules

    return not key.startswith("class_recall.") and Rules().family_of(key) in ("tail", "head")


def summarise(rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Markdown tables and a json summary of :func:`run_chain` rows."""
    summary: dict[str, Any] = {}
    lines = [
        "| scenario (`stable` loop) | chains with a false alarm | false-alarm checks | what fired |",
        "|---|---:|---:|---|",
    ]
    disp_lines = [
        f"| scenario | paired metric | comparisons | mean discordant items | phi (1 = McNemar's assumption) "
        f"| exact McNemar p < {LEVEL} (nominal {LEVEL:.1%}) | the monitor's paired test p < {LEVEL} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for sc in SCENARIOS:
        rs = [r for r in rows if r["scenario"] == sc]
        if not rs:
            continue
        checks = sum(len(r["stages"]) - 1 for r in rs)
        fa_checks = sum(s != "healthy" for r in rs for s in r["stages"])
        fa_chains = sum(any(s != "healthy" for s in r["stages"]) for r in rs)
        what = sorted(
            {
                f"{k} {v:.3g} vs {b:.3g} (seed {r['seed']}, gen {f['generation']})"
                for r in rs
                for f in r["fired"]
                for k, _kind, v, b, _q in f["findings"][:1]
            }
        )
        lines.append(f"| {sc} | {fa_chains}/{len(rs)} | {fa_checks}/{checks} | {'; '.join(what) or '-'} |")
        keys = [k for k in sorted({k for r in rs for k in r["pairs"]}) if _reported(k)]
        per_key: dict[str, Any] = {}
        for k in keys:
            d = dispersion([tuple(p) for r in rs for p in r["pairs"].get(k, [])])  # type: ignore[misc]
            ps = [p for r in rs for p in r.get("monitor_p", {}).get(k, [])]
            d["monitor_share_p_below_level"] = round(sum(p < LEVEL for p in ps) / len(ps), 4) if ps else math.nan
            per_key[k] = d
            shown = "-" if not ps else f"{d['monitor_share_p_below_level']:.1%}"
            disp_lines.append(
                f"| {sc} | {k} | {d['comparisons']} | {d['mean_discordant']} | {d['phi']} | "
                f"{d['share_p_below_level']:.1%} | {shown} |"
            )
        summary[sc] = {
            "chains": len(rs),
            "false_alarm_chains": fa_chains,
            "false_alarm_checks": fa_checks,
            "checks": checks,
            "dispersion": per_key,
        }
    return "\n".join(lines) + "\n\nOver-dispersion of the paired tests against generation 0:\n\n" + "\n".join(
        disp_lines
    ), summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed-offset", type=int, default=0)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", default=None, help="one scenario")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--replicates",
        type=int,
        default=0,
        help="retrain generation 0 this many more times and add each to the baseline (check_replicate)",
    )
    a = ap.parse_args(argv)
    tasks = [
        (sc, seed, a.generations, a.replicates)
        for sc in SCENARIOS
        if a.only is None or a.only == sc
        for seed in range(a.seed_offset, a.seed_offset + a.seeds)
    ]
    try:
        from rich.progress import track
    except ImportError:  # pragma: no cover

        def track(x, **_):  # type: ignore[no-redef]
            return x

    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        rows = list(track(ex.map(run_chain, tasks), total=len(tasks), description="stable chains"))
    table, summary = summarise(rows)
    last = a.seed_offset + a.seeds - 1
    header = (
        f"# Retrain noise: the `stable` loop (fresh human data every generation, no synthetic data)\n\n"
        f"Seeds {a.seed_offset}-{last} x {a.generations} generations per scenario; {len(rows)} chains in "
        f"{time.perf_counter() - t0:.0f} s on {os.cpu_count()} cores; default `Rules()`. "
        f"{f'Baseline = generation 0 and {a.replicates} replicate retrain(s) of it. ' if a.replicates else ''}"
        "Every decline here is retrain noise.\n\n"
    )
    stem = "retrain-noise" + (f"-rep{a.replicates}" if a.replicates else "")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(header + table + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"summary": summary, "rows": rows}, default=str, indent=1))
    print(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
