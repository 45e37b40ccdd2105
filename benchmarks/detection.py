"""Detection-quality benchmark: when does each detector flag a recursive-training chain?

For every scenario x loop x seed (10+ generations) it records the first generation flagged by

* **collapse-monitor** (stage != healthy),
* **(a) an aggregate alert**: overall probe accuracy down 2 points from generation 0, or - for
  scenarios without a classifier - the Frechet distance to the reference doubled,
* **(b) Evidently**: DataDriftPreset on the embeddings' principal components (fitted on the
  reference), alert when the drift share >= 0.5 (for text: descriptors length / type-token
  ratio / mean token rank; for predictions only: the predicted-label column),

and counts false alarms (any flag) on the control loops. Writes
``benchmarks/results/detection.md`` and ``detection.json``.

Run: ``.venv/bin/python benchmarks/detection.py [--seeds 5] [--generations 10] [--jobs 2]``
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
from pathlib import Path
from typing import Any

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


def run_one(args: tuple[str, str, dict[str, Any], bool, int, int, bool]) -> dict[str, Any]:
    scenario, loop, opts, collapsing, seed, generations, with_evidently = args
    import torch

    torch.set_num_threads(1)
    import collapse_monitor as cm
    from collapse_monitor.simulate import make_scenario

    t0 = time.perf_counter()
    sc = make_scenario(scenario, loop=loop, seed=seed, **opts)
    ref = sc.reference
    pca = None
    if ref.embeddings is not None:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(10, ref.embeddings.shape[1]), random_state=0).fit(ref.embeddings)
    with tempfile.TemporaryDirectory() as home:
        mon = cm.CollapseMonitor(f"bench-{scenario}-{loop}-{seed}", reference=ref, sinks=[], home=home)
        stages: list[str] = []
        agg: list[dict[str, float]] = []
        ev: list[float | None] = []
        for g in sc.generations(generations):
            rep = mon.check(g.observation)
            stages.append(rep.stage.value)
            agg.append({k: float(v) for k, v in g.aggregate.items()})
            frames = _frames(ref, g.observation, pca) if with_evidently else None
            ev.append(None if frames is None else _evidently_share(*frames))

    def first(flags: list[bool]) -> int | None:
        return next((i for i, f in enumerate(flags) if f), None)

    ours = first([s != "healthy" for s in stages])
    if "accuracy" in agg[0]:
        base = agg[0]["accuracy"]
        agg_flags = [a["accuracy"] <= base - 0.02 for a in agg]
    elif "frechet_distance" in agg[0]:
        base = max(agg[0]["frechet_distance"], 1e-12)
        agg_flags = [a["frechet_distance"] >= 2 * base for a in agg]
    else:
        agg_flags = [False] * len(agg)
    aggregate = first(agg_flags)
    evidently = first([e is not None and e >= 0.5 for e in ev])
    return {
        "scenario": scenario,
        "loop": loop,
        "options": opts,
        "label": _label(scenario, loop, opts),
        "collapsing": collapsing,
        "seed": seed,
        "stages": stages,
        "ours": ours,
        "aggregate": aggregate,
        "evidently": evidently,
        "evidently_share": ev,
        "aggregates": agg,
        "false_alarms": 0 if collapsing else sum(s != "healthy" for s in stages),
        "seconds": time.perf_counter() - t0,
    }


def summarise(rows: list[dict[str, Any]], generations: int) -> tuple[str, dict[str, Any]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    lines = [
        "| chain | kind | flagged (ours) | first gen ours (median) | aggregate (a) | Evidently (b) | "
        "lead vs (a) (median) | never after (a) | false alarms ours (checks) | false alarms (a) / (b) (chains) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}

    def med(xs: list[int | None]) -> str:
        vals = [x for x in xs if x is not None]
        if not vals:
            return "never"
        s = f"{statistics.median(vals):g}"
        return s if len(vals) == len(xs) else f"{s} ({len(vals)}/{len(xs)})"

    for label, rs in by.items():
        collapsing = rs[0]["collapsing"]
        ours = [r["ours"] for r in rs]
        agg = [r["aggregate"] for r in rs]
        ev = [r["evidently"] for r in rs]
        # lead: generations between our flag and the aggregate alert (aggregate never -> end of run)
        leads = [(a if a is not None else generations) - o for o, a in zip(ours, agg, strict=True) if o is not None]
        never_after = all(o is not None and (a is None or o <= a) for o, a in zip(ours, agg, strict=True))
        fa = sum(r["false_alarms"] for r in rs)
        checks = sum(len(r["stages"]) for r in rs)
        summary[label] = {
            "collapsing": collapsing,
            "flagged": sum(o is not None for o in ours),
            "chains": len(rs),
            "ours": ours,
            "aggregate": agg,
            "evidently": ev,
            "median_lead": statistics.median(leads) if leads else None,
            "never_after_aggregate": never_after if collapsing else None,
            "false_alarm_checks": fa,
            "checks": checks,
        }
        lines.append(
            f"| {label} | {'collapsing' if collapsing else 'control'} | "
            f"{sum(o is not None for o in ours)}/{len(rs)} | {med(ours)} | {med(agg)} | {med(ev)} | "
            f"{'-' if not collapsing else (f'{statistics.median(leads):g}' if leads else 'n/a')} | "
            f"{('yes' if never_after else 'NO') if collapsing else '-'} | "
            f"{'-' if collapsing else f'{fa}/{checks}'} | "
            f"{'-' if collapsing else f'{sum(a is not None for a in agg)}/{len(rs)} / {sum(e is not None for e in ev)}/{len(rs)}'} |"
        )
    return "\n".join(lines), summary


def resummarise(path: str | Path, generations: int = 10) -> str:
    """Rebuild the markdown table from a saved detection.json (no re-run)."""
    rows = json.loads(Path(path).read_text())["rows"]
    return summarise(rows, generations)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", default=None, help="substring filter on chain labels")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-evidently", action="store_true", help="skip baseline (b) (faster, for tuning)")
    a = ap.parse_args(argv)
    tasks = [
        (s, lp, o, c, seed, a.generations, not a.no_evidently)
        for (s, lp, o, c) in CHAINS
        for seed in range(a.seeds)
        if a.only is None or a.only in _label(s, lp, o)
    ]
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        from rich.progress import track
    except ImportError:  # pragma: no cover

        def track(x, **_):  # type: ignore[no-redef]
            return x

    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        for row in track(ex.map(run_one, tasks), total=len(tasks), description="chains"):
            rows.append(row)
    table, summary = summarise(rows, a.generations)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    elapsed = time.perf_counter() - t0
    header = (
        f"# Detection benchmark\n\n{a.seeds} seeds x {a.generations} generations per chain; "
        f"{len(rows)} chains in {elapsed:.0f} s on {os.cpu_count()} cores.\n"
        "Columns: generation of the first flag (median over seeds; `(k/n)` = only k of n chains flagged), "
        "lead = generations between our flag and the aggregate alert (end of run when it never fired).\n\n"
    )
    (out / "detection.md").write_text(header + table + "\n")
    (out / "detection.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=str))
    print(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
