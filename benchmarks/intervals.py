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

The Frechet distance keeps the grouped percentile bootstrap (its influence function vanishes
when the samples match the reference, so a delta-method interval would collapse there);
``--frechet`` measures its replicate spread against the true sampling spread for heads of 64,
128 (the panel's ``fd_head_dim``), 256 and all 512 exact dimensions, against a fixed
reference of 20,000 rows, on healthy and collapsed samples of the embedding mixture and on the
power law, through the panel's own code (:func:`collapse_monitor.metrics.generator._diversity`).

    python benchmarks/intervals.py            # writes benchmarks/results/intervals.md / .json
    python benchmarks/intervals.py --frechet  # writes benchmarks/results/intervals-frechet.md / .json
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


FD_HEADS = (64, 128, 256, D)


def run_frechet(kind: str, m: int, reps: int, checked: int) -> list[dict[str, Any]]:
    """Truth: sd of the Frechet distance over ``reps`` independent samples; per head, the
    bootstrap's standard error (2.5-97.5 % replicate range / 3.92) on ``checked`` of them."""
    from collapse_monitor.metrics._bootstrap import group_design
    from collapse_monitor.metrics.generator import _diversity, build_generator_state

    pool = "power" if kind == "powerlaw" else "mixture"
    ref = sample(pool, 20_000, 1) if pool == "power" else speed.embeddings(20_000, 1)
    state = build_generator_state(ref)

    def gen(r: int) -> np.ndarray:
        if pool == "power":
            return sample("power", m, 10_000 + r)
        return speed.embeddings(m, 10_000 + r, collapsed=kind == "collapsed")

    def fd(x: np.ndarray, head: int, n_boot: int, seed: int) -> tuple[Any, float]:
        g, groups, weights = group_design(m, 20, n_boot, seed)
        onehot = np.zeros((g, m))
        onehot[groups, np.arange(m)] = 1.0
        n_b = weights @ onehot.sum(axis=1)
        t = time.perf_counter()
        out = _diversity(state, ref, x.astype(np.float64), groups, g, weights, onehot, n_b, (256, head), 2)
        return out["frechet_distance"], time.perf_counter() - t

    points = [fd(gen(r), D, 1, r)[0].value for r in range(reps)]
    truth = float(np.std(points, ddof=1))
    rows = []
    for head in FD_HEADS:
        ses, secs = [], 0.0
        for r in range(checked):
            mv, sec = fd(gen(r), head, 200, r)
            ses.append((mv.ci_high - mv.ci_low) / 3.92)
            secs += sec / checked
        rows.append(
            {
                "distribution": kind,
                "m": m,
                "statistic": "frechet_distance",
                "method": f"bootstrap, top {head} exact" if head < D else "bootstrap, exact",
                "truth_sd": truth,
                "mean_value": float(np.mean(points)),
                "ratio": float(np.mean(ses) / truth),
                "ratio_min": float(np.min(ses) / truth),
                "ratio_max": float(np.max(ses) / truth),
                "seconds": secs,
                "samples_truth": reps,
                "samples_checked": checked,
            }
        )
        print(f"  {kind:9s} m={m:6,d} head {head:3d} se/truth {rows[-1]['ratio']:.2f}  {secs:.2f} s", flush=True)
    return rows


def _table(title: str, intro: str, columns: list[str], cells: list[list[str]]) -> str:
    """A markdown page: title, intro paragraph, one table (text columns left, numbers right)."""
    align = ["---" if c in ("distribution", "statistic", "method", "range") else "---:" for c in columns]
    lines = [f"# {title}", "", intro, "", "| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


_PAGES: dict[str, tuple[str, str, list[str]]] = {
    "intervals": (
        "Interval calibration of the spectral entropies above max_boot_dim",
        "d = {D}. Truth = standard deviation of log(statistic) over independent samples of m rows; each "
        "method's standard error of the log (bootstrap: 2.5-97.5 % replicate range / 3.92, the panel's "
        "design: 20 groups, 200 replicates) averaged over the checked samples; ratio = estimate / truth "
        "(range over the checked samples); seconds per statistic and sample. The truth is itself an "
        "estimate: from R samples its relative error is about 1 / sqrt(2 (R - 1)) (9 % at R = 60).",
        ["distribution", "m", "statistic", "method", "truth sd(log)"],
    ),
    "intervals-frechet": (
        "Interval calibration of the Frechet distance (bootstrap head dimension)",
        "d = {D}, reference 20,000 rows. Truth = standard deviation of the Frechet distance over "
        "independent samples of m rows (fixed reference); each head's standard error = 2.5-97.5 % range "
        "of the panel's 95 % interval / 3.92, averaged over the checked samples (range in brackets); "
        "seconds = the panel's whole diversity block (Vendi, effective rank, variance, Frechet) per "
        "sample. Healthy = the reference's distribution, collapsed = the speed benchmark's collapsed mixture.",
        ["distribution", "m", "method", "Frechet distance", "truth sd"],
    ),
}


def render(rows: list[dict[str, Any]], meta: dict[str, Any], page: str = "intervals") -> str:
    title, intro, columns = _PAGES[page]
    head = f"{meta['started']}, {meta['cpus']} CPUs; total {meta['seconds']:.0f} s. " + intro.format(D=D)
    cells = []
    for r in rows:
        if page == "intervals":
            first = [r["distribution"], f"{r['m']:,}", r["statistic"], r["method"], f"{r['truth_sd_log']:.2e}"]
        else:
            first = [r["distribution"], f"{r['m']:,}", r["method"], f"{r['mean_value']:.4g}", f"{r['truth_sd']:.3g}"]
        cells.append([*first, f"{r['ratio']:.2f}", f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}", f"{r['seconds']:.2f}"])
    return _table(title, head, [*columns, "se / truth", "range", "seconds"], cells)


def _write(out_dir: str, name: str, rows: list[dict[str, Any]], meta: dict[str, Any], page: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / f"{name}.md").write_text(page)
    print(page)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,10000")
    ap.add_argument("--reps", type=int, default=60, help="independent samples for the truth")
    ap.add_argument("--checked", type=int, default=3, help="samples on which the bootstraps run")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--frechet", action="store_true", help="the Frechet distance's bootstrap heads instead")
    args = ap.parse_args(argv)
    import os

    t0 = time.time()
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count()}
    rows: list[dict[str, Any]] = []
    if args.frechet:
        for kind in ("healthy", "collapsed", "powerlaw"):
            rows += run_frechet(kind, 10_000, 30, 4)
        meta["seconds"] = time.time() - t0
        _write(args.out, "intervals-frechet", rows, meta, render(rows, meta, "intervals-frechet"))
        return 0
    for kind in ("mixture", "powerlaw"):
        for m in (int(s) for s in args.sizes.split(",")):
            rows += run(kind, m, args.reps, args.checked)
    meta["seconds"] = time.time() - t0
    _write(args.out, "intervals", rows, meta, render(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
