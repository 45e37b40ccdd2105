"""Interval calibration of the two spectral entropies above ``max_boot_dim`` (d = 512).

The generator panel gives ``vendi_score`` (cosine kernel) and ``effective_rank`` a 95 %
interval. Up to ``max_boot_dim`` (256) dimensions it is the grouped percentile bootstrap with
exact replicate spectra. Above, exact replicate spectra cost one 512 x 512 eigen-decomposition
each (200 per statistic and check), so the panel used to approximate them (exact in the top 256
principal directions, first-order in the others); it now takes the delta-method interval from
the entropy's influence function instead (:func:`collapse_monitor.metrics._bootstrap.entropy_influence`).

This benchmark measures how well each estimates the real sampling spread: ``R`` independent
samples of ``m`` rows from the same distribution give the Monte Carlo standard deviation of
``log statistic`` (the truth); on a few of them it computes the standard error each method
implies (delta: its ``se``; bootstrap: the 2.5-97.5 % replicate range of the log statistic /
3.92) and its cost. Ratio = estimate / truth (1 is perfect).

Distributions: the speed benchmark's embedding mixture (64-dimensional structure plus isotropic
noise) and a Gaussian with a power-law spectrum (eigenvalues ``i^-1``), d = 512, float32.

    python benchmarks/intervals.py            # writes benchmarks/results/intervals.md / .json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed

from collapse_monitor.metrics._bootstrap import entropy_influence, gram, group_design, spectral_bootstrap
from collapse_monitor.metrics.diversity import hill_number, normalize_rows, spectral_effective_rank

RESULTS = Path(__file__).parent / "results"
D = 512


def sample(kind: str, m: int, seed: int) -> np.ndarray:
    if kind == "mixture":
        return speed.embeddings(m, seed, collapsed=True)
    scales = np.arange(1, D + 1) ** -0.5  # power law: eigenvalues i^-1
    rot = np.linalg.qr(np.random.default_rng(7).normal(size=(D, D)))[0]
    return ((np.random.default_rng(seed).normal(size=(m, D)) * scales) @ rot.T).astype(np.float32)


def features(x: np.ndarray, stat: str) -> tuple[np.ndarray, bool, float]:
    """(rows, centred, denominator) of the statistic's matrix."""
    if stat == "vendi_score":
        return normalize_rows(x.astype(np.float64)), False, float(x.shape[0])
    return x - x.mean(axis=0, dtype=np.float64), True, float(x.shape[0] - 1)


def delta(x: np.ndarray, stat: str) -> tuple[float, float]:
    rows, _, denom = features(x, stat)
    ent = entropy_influence(rows, gram(rows)[0], denom, workers=2)
    point = hill_number(ent.eigenvalues) if stat == "vendi_score" else spectral_effective_rank(ent.eigenvalues)
    return float(np.log(point)), ent.se


def boot_se(x: np.ndarray, stat: str, max_dim: int, seed: int, n_boot: int = 200, n_groups: int = 20) -> float:
    """The panel's bootstrap design (G random groups, multinomial group weights)."""
    rows, centred, _ = features(x, stat)
    m = rows.shape[0]
    g, groups, weights = group_design(m, n_groups, n_boot, seed)
    fn = hill_number if stat == "vendi_score" else spectral_effective_rank
    _, reps = spectral_bootstrap(rows, groups, g, weights, centred=centred, stat=fn, max_dim=max_dim, workers=2)
    lo, hi = np.percentile(np.log(reps), [2.5, 97.5])
    return float((hi - lo) / 3.92)


def run(kind: str, m: int, reps: int, checked: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for stat in ("vendi_score", "effective_rank"):
        logs, ses, t_delta = [], [], 0.0
        for r in range(reps):
            x = sample(kind, m, 10_000 + r)
            t = time.perf_counter()
            lv, se = delta(x, stat)
            t_delta += time.perf_counter() - t
            logs.append(lv)
            ses.append(se)
        truth = float(np.std(logs, ddof=1))
        est: dict[str, list[float]] = {"delta": ses[:checked], "bootstrap, top 256 exact": [], "bootstrap, exact": []}
        cost = {"delta": t_delta / reps, "bootstrap, top 256 exact": 0.0, "bootstrap, exact": 0.0}
        for r in range(checked):
            x = sample(kind, m, 10_000 + r)
            for name, md in (("bootstrap, top 256 exact", 256), ("bootstrap, exact", D)):
                t = time.perf_counter()
                est[name].append(boot_se(x, stat, md, seed=r))
                cost[name] += (time.perf_counter() - t) / checked
        for name, vals in est.items():
            rows.append(
                {
                    "distribution": kind,
                    "m": m,
                    "statistic": stat,
                    "method": name,
                    "truth_sd_log": truth,
                    "mean_se_log": float(np.mean(vals)),
                    "ratio": float(np.mean(vals) / truth),
                    "ratio_min": float(np.min(vals) / truth),
                    "ratio_max": float(np.max(vals) / truth),
                    "seconds": cost[name],
                    "samples_truth": reps,
                    "samples_checked": checked,
                }
            )
            print(
                f"  {kind:8s} m={m:6,d} {stat:15s} {name:26s} se/truth {rows[-1]['ratio']:.2f}"
                f" ({rows[-1]['ratio_min']:.2f}-{rows[-1]['ratio_max']:.2f})  {cost[name]:.2f} s",
                flush=True,
            )
    return rows


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        "# Interval calibration of the spectral entropies above max_boot_dim",
        "",
        f"{meta['started']}, {meta['cpus']} CPUs; total {meta['seconds']:.0f} s. d = {D}. Truth = standard deviation "
        "of log(statistic) over independent samples of m rows; each method's standard error of the log "
        "(bootstrap: 2.5-97.5 % replicate range / 3.92, the panel's design: 20 groups, 200 replicates) "
        "averaged over the checked samples; ratio = estimate / truth (range over the checked samples); "
        "seconds per statistic and sample. The truth is itself an estimate: from R samples its relative "
        "error is about 1 / sqrt(2 (R - 1)) (9 % at R = 60).",
        "",
        "| distribution | m | statistic | method | truth sd(log) | se / truth | range | seconds |",
        "| --- | ---: | --- | --- | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r['distribution']} | {r['m']:,} | {r['statistic']} | {r['method']} | {r['truth_sd_log']:.2e} | "
            f"{r['ratio']:.2f} | {r['ratio_min']:.2f}-{r['ratio_max']:.2f} | {r['seconds']:.2f} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,10000")
    ap.add_argument("--reps", type=int, default=60, help="independent samples for the truth")
    ap.add_argument("--checked", type=int, default=3, help="samples on which the bootstraps run")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    import os

    t0 = time.time()
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count()}
    rows: list[dict[str, Any]] = []
    for kind in ("mixture", "powerlaw"):
        for m in (int(s) for s in args.sizes.split(",")):
            rows += run(kind, m, args.reps, args.checked)
    meta["seconds"] = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "intervals.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / "intervals.md").write_text(render(rows, meta))
    print(render(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
