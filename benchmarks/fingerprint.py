"""What the callbacks' "same weights?" fingerprint costs, and what it sees.

The Lightning and Hugging Face callbacks check a model once per set of weights: a second
``fit()`` that trained nothing is not a new generation. They tell weights apart by
:func:`collapse_monitor.hooks._core.weights_fingerprint`. Until stop 37 it read 8 evenly spaced
values per tensor (a few hundred reads, near-free) and so missed sparse updates: one changed
embedding row read as the same weights and its check was skipped. It now folds every element's
bits into exact int64 row sums, a full pass over the weights. This benchmark puts the two side
by side in one run, on CPU, for MLP-shaped models of growing size:

* **time** per fingerprint (median of ``--repeat`` calls, after one warm-up);
* **peak extra memory** while it runs (the process's resident-set high-water mark, sampled
  before and after in a fresh child process per model, so one model's peak does not hide the
  next one's);
* **what it sees**: whether changing one element (a position the sampled version does not
  read) changes the fingerprint.

The sampled version is reimplemented here verbatim from 435a45d as the reference.

Writes ``benchmarks/results/fingerprint.md`` and ``fingerprint.json``.

Run: ``.venv/bin/python benchmarks/fingerprint.py [--sizes 1,10,50,100] [--repeat 3]``
(sizes in millions of parameters).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
WIDTH = 1024  # hidden width of the MLP-shaped models: square 1024 x 1024 layers


def sampled_fingerprint(model: Any, per_tensor: int = 8) -> str:
    """The fingerprint before stop 37 (435a45d): ``per_tensor`` evenly spaced entries per tensor."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    by_device: dict[Any, list[Any]] = {}
    with torch.no_grad():
        for p in model.parameters():
            flat = p.detach().reshape(-1)
            h.update(repr((tuple(p.shape), str(p.dtype))).encode())
            if flat.numel():
                idx = torch.linspace(0, flat.numel() - 1, min(per_tensor, flat.numel()), device=flat.device).long()
                by_device.setdefault(flat.device, []).append(flat[idx].float())
        for device in sorted(by_device, key=str):
            h.update(torch.cat(by_device[device]).cpu().numpy().tobytes())
    return h.hexdigest()


def build(millions: float) -> Any:
    """An MLP of about ``millions`` million float32 parameters (square layers plus biases)."""
    import torch

    torch.manual_seed(0)
    layers = max(1, round(millions * 1e6 / (WIDTH * WIDTH + WIDTH)))
    return torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)])


def _rss_mib() -> float:
    """This process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(millions: float, which: str, repeat: int) -> dict[str, Any]:
    """In a child process: build the model, time ``repeat`` fingerprints, report the peak."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from collapse_monitor.hooks._core import weights_fingerprint

    torch.set_num_threads(os.cpu_count() or 1)
    fp = weights_fingerprint if which == "full" else sampled_fingerprint
    model = build(millions)
    n = sum(p.numel() for p in model.parameters())
    before = _rss_mib()
    first = fp(model)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        again = fp(model)
        times.append(time.perf_counter() - t0)
    peak = _rss_mib() - before
    with torch.no_grad():  # one element the sampled version does not read: row 1, column 1
        model[0].weight[1, 1] += 1e-3
    sees = fp(model) != again
    return {"params": n, "seconds": statistics.median(times), "peak_mib": peak, "stable": first == again, "sees": sees}


def run(sizes: list[float], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for millions in sizes:
        row: dict[str, Any] = {"millions": millions}
        for which in ("sampled", "full"):  # a fresh process each: its own memory high-water mark
            cmd = [sys.executable, __file__, "--child", f"{millions},{which},{repeat}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            row["params"] = got.pop("params")
            row[which] = got
        row["ratio"] = row["full"]["seconds"] / max(row["sampled"]["seconds"], 1e-9)
        rows.append(row)
        print(
            f"{row['params'] / 1e6:7.1f} M params: sampled {row['sampled']['seconds'] * 1e3:8.2f} ms, "
            f"full {row['full']['seconds'] * 1e3:8.1f} ms ({row['ratio']:.0f}x), "
            f"full peak +{row['full']['peak_mib']:.0f} MiB, sees one element: "
            f"sampled {row['sampled']['sees']}, full {row['full']['sees']}",
            flush=True,
        )
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        "# The callbacks' weights fingerprint: every element (now) against 8 sampled values per tensor (before)",
        "",
        f"{meta['machine']}; torch {meta['torch']}, {meta['threads']} threads; median of {meta['repeat']} calls "
        "after a warm-up; each model in a fresh process. Models: square 1024 x 1024 float32 linear layers.",
        "",
        "| parameters | sampled (before) | every element (now) | ratio | now: seconds per 100M params | "
        "now: peak extra memory | one changed element seen (before / now) | same weights, same fingerprint (now) |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        full, samp = r["full"], r["sampled"]
        out.append(
            f"| {r['params'] / 1e6:.1f} M | {samp['seconds'] * 1e3:.2f} ms | {full['seconds'] * 1e3:.1f} ms | "
            f"{r['ratio']:.0f}x | {full['seconds'] / r['params'] * 1e8:.2f} s | {full['peak_mib']:.0f} MiB | "
            f"{'yes' if samp['sees'] else 'no'} / {'yes' if full['sees'] else 'no'} | "
            f"{'yes' if full['stable'] else 'NO'} |"
        )
    out += [
        "",
        "The fingerprint runs when a callback decides whether to check (the end of `fit`, or of a "
        'validation with `on="validation_end"`), once per decision, never per training step.',
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,10,50,100", help="model sizes in millions of parameters (comma-separated)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--name", default="fingerprint", help="results file stem under benchmarks/results/")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # MILLIONS,WHICH,REPEAT: one measurement
    args = ap.parse_args(argv)
    if args.child:
        millions, which, repeat = args.child.split(",")
        print(json.dumps(_measure(float(millions), which, int(repeat))))
        return 0
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    import torch

    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": os.cpu_count() or 1,
        "repeat": args.repeat,
    }
    rows = run(sizes, args.repeat)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(rows, meta))
    print(f"wrote {RESULTS / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
