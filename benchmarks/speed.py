"""Speed and memory benchmark of the metric engine, side by side with the reference packages.

One run measures, each case in a fresh subprocess (so peak memory does not mix):

* our ``prdc`` (exact, both radius passes) against ``prdc.compute_prdc`` (Naeem et al. 2020),
  our whole generator panel with a cold reference (state built inside the timing) and with a
  warm one (the reference side cached, i.e. every check after the first), our
  ``vendi_score`` against ``vendi_score.vendi.score_dual``, at n = m = 2k, 10k, 50k, d = 512,
  float32;
* the hardware bound of each k-NN case: the distance products it needs (``n(n-1)/2 d`` per
  symmetric radius pass, ``n m d`` for the cross pass; two flops each) divided by the torch
  float32 matmul rate measured in the same subprocess just before the case (best of 5
  ``2048 x 512 @ 512 x 2048`` products, same thread count);
* value agreement with the reference packages;
* the approximate mode (``knn="ivf"``) against the exact path at n = m = 100k;
* two checks of one ``CollapseMonitor`` (sinks=[]) with the same Reference; text metrics on
  about a million tokens; what ``check()`` adds to the metric math with MLflow (sqlite),
  Prometheus (textfile) and a webhook to a local HTTP receiver; ``import collapse_monitor``.

Peak RSS is the subprocess's ``VmHWM`` after the case, reset (``/proc/self/clear_refs``)
once the inputs are built, so it covers the interpreter, torch, the inputs and the case.
Data: a 50-mode Gaussian mixture with Zipf weights on a 64-d subspace plus isotropic noise
(embedding-like: low intrinsic dimension, rare modes); the samples drop the 10 rarest modes
and shrink the spread by 10 % (a mild collapse, so the metrics are not at their bounds).

Writes ``benchmarks/results/speed.md`` and ``speed.json``.

Run: ``.venv/bin/python benchmarks/speed.py`` (about 10-15 minutes on 2 cores; ``--quick``
for 2k / 10k only and the approximate check at 20k).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
D = 512
K = 5


# --------------------------------------------------------------------------- data


def embeddings(n: int, seed: int, *, collapsed: bool = False, d: int = D) -> np.ndarray:
    """``n`` embedding-like rows (float32), generated in blocks (no float64 copy of the set)."""
    base = np.random.default_rng(12345)  # the mixture itself is fixed
    basis = np.linalg.qr(base.normal(size=(d, 64)))[0]
    centres = base.normal(size=(50, 64)) * 3.0
    w = 1.0 / np.arange(1, 51)
    scale = 1.0
    if collapsed:
        w[-10:] = 0.0
        scale = 0.9
    w /= w.sum()
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, 20_000):
        b = min(n, a + 20_000)
        comp = rng.choice(50, size=b - a, p=w)
        z = (centres[comp] + rng.normal(size=(b - a, 64)) * scale) @ basis.T
        out[a:b] = z + rng.normal(size=(b - a, d)) * 0.3
    return out


def zipf_texts(n_tokens: int, seed: int, *, top: int | None = None, per_text: int = 50) -> list[str]:
    """Texts of ``per_text`` tokens drawn from a Zipf(1.1) law over 50,000 pseudo-words;
    ``top`` keeps only the ``top`` most frequent words (a truncated tail)."""
    from collapse_monitor.simulate.zipf_text import pseudo_words

    vocab = np.array(pseudo_words(50_000))
    p = 1.0 / np.arange(1, vocab.size + 1) ** 1.1
    if top is not None:
        p[top:] = 0.0
    p /= p.sum()
    ids = np.random.default_rng(seed).choice(vocab.size, size=n_tokens, p=p)
    words = vocab[ids]
    return [" ".join(words[a : a + per_text]) for a in range(0, n_tokens, per_text)]


# --------------------------------------------------------------------------- measuring


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> tuple[float, float]:
    """(CPU-seconds all processes have used, CPU-seconds this process has used) so far."""
    import resource

    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle, iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def gflops() -> float:
    """Best of 5 float32 ``2048 x 512 @ 512 x 2048`` torch products, in GFLOP/s (the
    engine's library: :func:`gemm_rates` has numpy's too)."""
    return gemm_rates()["torch"]


def gemm_rates() -> dict[str, float]:
    """GFLOP/s of the same float32 product through torch (``torch.mm``, the engine's) and
    numpy (``np.matmul`` on torch's thread count; OpenBLAS in the PyPI wheels), best of 5
    each. The engine stays on torch's BLAS even where numpy's is faster: OpenBLAS's sgemm
    bits depend on the product's shape and thread count (measured), and the engine's results
    must not depend on block sizes or threads."""
    import torch
    from threadpoolctl import threadpool_limits

    rng = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, D, generator=rng), torch.randn(2048, D, generator=rng)
    out = torch.empty(2048, 2048)
    an, bn, on = a.numpy(), b.numpy(), out.numpy()
    rates = {}
    with threadpool_limits(torch.get_num_threads(), user_api="blas"):
        for name, fn in (("torch", lambda: torch.mm(a, b.T, out=out)), ("numpy", lambda: np.matmul(an, bn.T, out=on))):
            fn()
            best = float("inf")
            for _ in range(5):
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
            rates[name] = 2 * 2048 * 2048 * D / best / 1e9
    return rates


class ProductTimer:
    """Seconds spent inside ``torch.mm`` while the context is open: the engine computes every
    exact distance block with one ``torch.mm`` (``_knn_blocks._Products``), so this splits a
    k-NN case's wall into its distance products and everything else (comparison passes,
    merges, moments, spectra, validation), which does not get faster with the matmul."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> ProductTimer:
        import torch

        self._mm = mm = torch.mm

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return mm(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t

        torch.mm = timed
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.mm = self._mm


def products(n: int, m: int, *, ref_cached: bool = False) -> float:
    """Flops of the distance products exact PRDC needs (symmetric radius passes)."""
    pairs = m * (m - 1) / 2 + n * m + (0 if ref_cached else n * (n - 1) / 2)
    return 2.0 * D * pairs


def run_case(case: str, n: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Body of one subprocess: build inputs, reset the peak, time the case."""
    import torch

    if opts.get("threads"):
        torch.set_num_threads(int(opts["threads"]))
    out: dict[str, Any] = {"case": case, "n": n, "threads": torch.get_num_threads(), "nprobe": opts.get("nprobe")}
    fn = CASES[case]
    prepared = fn(n, opts, None)  # inputs and imports, untimed
    out["gemm_rates_before"] = gemm_rates()
    out["gflops_before"] = out["gemm_rates_before"]["torch"]
    reset_peak()
    out["rss_start"] = _status("VmRSS")
    walls, others, in_mm = [], [], []
    for _ in range(max(1, int(opts.get("repeats", 1)))):  # best of: the cores are shared
        busy0, own0 = cpu_seconds()
        with ProductTimer() as products_timer:
            t = time.perf_counter()
            result = fn(n, opts, prepared)
            walls.append(time.perf_counter() - t)
        busy1, own1 = cpu_seconds()
        others.append(max(0.0, (busy1 - busy0) - (own1 - own0)) / walls[-1])
        in_mm.append(products_timer.seconds)
    best = int(np.argmin(walls))
    out["wall"], out["walls"], out["other_load"] = walls[best], walls, others[best]
    out["product_seconds"] = in_mm[best]
    out["peak_rss"] = _status("VmHWM")
    out["gemm_rates_after"] = gemm_rates()
    out["gflops_after"] = out["gemm_rates_after"]["torch"]
    out.update(result or {})
    if "flops" in out:
        rate = max(out["gflops_before"], out["gflops_after"]) * 1e9
        out["bound"] = out["flops"] / rate
    return out


# --------------------------------------------------------------------------- cases
# Each case is called twice: with ``prepared=None`` it returns its inputs (untimed), then
# with them it does the measured work and returns what to record.


def case_ours_prdc(n: int, opts: dict[str, Any], prep: Any) -> Any:
    from collapse_monitor.metrics import prdc

    if prep is None:
        ref, gen = embeddings(n, 1), embeddings(n, 2, collapsed=True)
        prdc(ref[:500], gen[:500])  # warm-up: imports, thread pool
        return ref, gen
    ref, gen = prep
    return {"values": prdc(ref, gen, K), "flops": products(n, n)}


def case_ref_prdc(n: int, opts: dict[str, Any], prep: Any) -> Any:
    import prdc as prdc_pkg

    if prep is None:
        return embeddings(n, 1), embeddings(n, 2, collapsed=True)
    ref, gen = prep
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the sizes
        vals = prdc_pkg.compute_prdc(real_features=ref, fake_features=gen, nearest_k=K)
    return {"values": {k: float(v) for k, v in vals.items()}}


def case_panel_cold(n: int, opts: dict[str, Any], prep: Any) -> Any:
    from collapse_monitor.metrics.generator import build_generator_state, generator_panel

    if prep is None:
        ref, gen = embeddings(n, 1), embeddings(n, 2, collapsed=True)
        small = build_generator_state(ref[:500])
        generator_panel(small, ref[:500], gen[:300], n_boot=20)  # warm-up: imports
        return ref, gen
    ref, gen = prep
    t = time.perf_counter()
    state = build_generator_state(ref, k=K)
    t_state = time.perf_counter() - t
    res = generator_panel(state, ref, gen)
    return {"state_seconds": t_state, "values": _panel_values(res), "flops": products(n, n)}


def case_panel_warm(n: int, opts: dict[str, Any], prep: Any) -> Any:
    from collapse_monitor.metrics.generator import build_generator_state, generator_panel

    if prep is None:
        ref, gen = embeddings(n, 1), embeddings(n, 2, collapsed=True)
        state = build_generator_state(ref, k=K)
        generator_panel(state, ref, gen[:300], n_boot=20)
        return state, ref, gen
    state, ref, gen = prep
    res = generator_panel(state, ref, gen)
    return {"values": _panel_values(res), "flops": products(n, n, ref_cached=True)}


def _panel_values(res: Any) -> dict[str, float]:
    return {k: round(mv.value, 6) for k, mv in sorted(res.metrics.items())}


def case_vendi_ref(n: int, opts: dict[str, Any], prep: Any) -> Any:
    from vendi_score import vendi

    if prep is None:
        gen = embeddings(n, 2, collapsed=True)
        vendi.score_dual(gen[:100])
        return gen
    return {"value": float(vendi.score_dual(prep))}


def case_vendi_ours(n: int, opts: dict[str, Any], prep: Any) -> Any:
    from collapse_monitor.metrics import vendi_score

    if prep is None:
        gen = embeddings(n, 2, collapsed=True)
        vendi_score(gen[:100])
        return gen
    return {"value": vendi_score(prep)}


def case_exact_big(n: int, opts: dict[str, Any], prep: Any) -> Any:
    return case_ours_prdc(n, opts, prep)


def case_ivf(n: int, opts: dict[str, Any], prep: Any) -> Any:
    from collapse_monitor.metrics import prdc

    if prep is None:
        ref, gen = embeddings(n, 1), embeddings(n, 2, collapsed=True)
        prdc(ref[:2000], gen[:2000], knn="ivf")
        return ref, gen
    ref, gen = prep
    return {"values": prdc(ref, gen, K, knn="ivf", nprobe=opts.get("nprobe"))}


def case_monitor_twice(n: int, opts: dict[str, Any], prep: Any) -> Any:
    import collapse_monitor as cm

    if prep is None:
        ref, g1, g2 = embeddings(n, 1), embeddings(n, 2), embeddings(n, 3, collapsed=True)
        home = tempfile.mkdtemp(prefix="cm-speed-")
        warm = cm.CollapseMonitor("warmup", reference=cm.Reference(embeddings=ref[:400]), sinks=[], home=home)
        warm.check(cm.Observation(embeddings=g1[:300]))
        return ref, g1, g2, home
    ref, g1, g2, home = prep
    firsts, seconds = [], []
    for r in range(TWICE_RUNS):  # a fresh home each time: the first check builds the reference state
        fresh = tempfile.mkdtemp(prefix=f"run{r}-", dir=home)
        mon = cm.CollapseMonitor("speed-twice", reference=cm.Reference(embeddings=ref), sinks=[], home=fresh)
        t = time.perf_counter()
        mon.check(cm.Observation(embeddings=g1))
        firsts.append(time.perf_counter() - t)
        t = time.perf_counter()
        mon.check(cm.Observation(embeddings=g2))
        seconds.append(time.perf_counter() - t)
    first, second = min(firsts), min(seconds)
    ratios = [b / a for a, b in zip(firsts, seconds, strict=True)]
    return {
        "first": first,
        "second": second,
        "ratio": second / first,
        "median_ratio": statistics.median(ratios),
        "firsts": firsts,
        "seconds": seconds,
    }


TWICE_RUNS = 5
"""Runs of the two-check case: best first over best second, as the other cases' best of; the
median of the per-run ratios is reported beside it (the ratio of one run is noisier)."""


def case_text(n: int, opts: dict[str, Any], prep: Any) -> Any:
    from collapse_monitor.metrics.text import build_text_state, text_panel

    if prep is None:
        ref, gen = zipf_texts(n, 1), zipf_texts(n, 2, top=5000)
        small = build_text_state(ref[:200])
        text_panel(small, gen[:200], budget=2000)
        return ref, gen
    ref, gen = prep
    t = time.perf_counter()
    state = build_text_state(ref)
    t_state = time.perf_counter() - t
    t = time.perf_counter()
    res = text_panel(state, gen)  # default budget (20,000 tokens), 100 replicates
    t_default = time.perf_counter() - t
    t = time.perf_counter()
    full = text_panel(state, gen, budget=n)  # every token
    t_full = time.perf_counter() - t
    return {
        "tokens": sum(len(x.split()) for x in gen),
        "state_seconds": t_state,
        "panel_default_budget_seconds": t_default,
        "panel_full_budget_seconds": t_full,
        "rare_ngram_recall": res.metrics["rare_ngram_recall"].value,
        "distinct_2_full": full.metrics["distinct_2"].value,
    }


class _Receiver(BaseHTTPRequestHandler):
    hits: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.hits.append(time.time())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def case_check_overhead(n: int, opts: dict[str, Any], prep: Any) -> Any:
    """Each check's metric panel is computed first (timed: ``panel``), then ``check()`` runs
    with that panel served from memory (timed: ``overhead``): the overhead is measured
    directly, not as the difference of two noisy timings of the math."""
    import collapse_monitor as cm
    from collapse_monitor.metrics import engine

    if prep is None:
        ref = embeddings(n, 1)
        obs = [embeddings(n, 2), embeddings(n, 3), embeddings(n, 4, collapsed=True) * 0.5]
        server = HTTPServer(("127.0.0.1", 0), _Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return ref, obs, server
    ref, obs, server = prep
    tmp = Path(tempfile.mkdtemp(prefix="cm-overhead-"))
    sinks = [
        cm.MLflowSink(tracking_uri=f"sqlite:///{tmp}/mlflow.db", evidently=False),
        cm.PrometheusSink(textfile=tmp / "collapse.prom"),
    ]
    hook = cm.Webhook(f"http://127.0.0.1:{server.server_address[1]}/hook", secret="whsec_" + "A" * 32)
    mon = cm.CollapseMonitor(
        "speed-overhead", reference=cm.Reference(embeddings=ref), sinks=sinks, alerts=[hook], home=tmp / "home"
    )
    real = engine.compute_panel
    checks = []
    try:
        for x in obs:
            o = cm.Observation(embeddings=x)
            t = time.perf_counter()
            panel = real(mon.reference, o, rules=mon.rules, cache=mon.cache)  # the math alone, warm
            math_s = time.perf_counter() - t
            engine.compute_panel = lambda *a, _p=panel, **k: _p  # type: ignore[assignment]
            t = time.perf_counter()
            rep = mon.check(o)
            overhead = time.perf_counter() - t
            engine.compute_panel = real
            checks.append(
                {
                    "generation": rep.generation,
                    "stage": str(rep.stage.value),
                    "alerts": len(rep.alerts),
                    "errors": list(rep.errors),
                    "check": math_s + overhead,
                    "panel": math_s,
                    "overhead": overhead,
                }
            )
    finally:
        engine.compute_panel = real
        server.shutdown()
    return {"checks": checks, "webhook_posts": len(_Receiver.hits)}


CASES = {
    "ours_prdc": case_ours_prdc,
    "ref_prdc": case_ref_prdc,
    "panel_cold": case_panel_cold,
    "panel_warm": case_panel_warm,
    "vendi_ref": case_vendi_ref,
    "vendi_ours": case_vendi_ours,
    "exact_big": case_exact_big,
    "ivf": case_ivf,
    "monitor_twice": case_monitor_twice,
    "text": case_text,
    "check_overhead": case_check_overhead,
}


# --------------------------------------------------------------------------- driver


def spawn(case: str, n: int, opts: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--n", str(n), "--opts", json.dumps(opts)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    print(f"  {case:15s} n={n:>7,d} {json.dumps(opts) if opts else ''} ...", end="", flush=True, file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(" timed out", file=sys.stderr)
        return {"case": case, "n": n, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        print(" failed", file=sys.stderr)
        return {"case": case, "n": n, "error": proc.stderr.strip().splitlines()[-1:] or [f"rc={proc.returncode}"]}
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f" {res.get('wall', 0):.2f} s (process {time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return res


def import_time(runs: int = 5) -> dict[str, Any]:
    """Best of ``runs``: ``-X importtime`` cumulative of collapse_monitor, and the wall of
    ``python -c 'import collapse_monitor'`` minus that of ``python -c pass``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cum, walls, bare = [], [], []
    for _ in range(runs):
        p = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import collapse_monitor"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        for line in p.stderr.splitlines():
            parts = [x.strip() for x in line.split("|")]
            if len(parts) == 3 and parts[2] == "collapse_monitor":
                cum.append(int(parts[1]) / 1e6)
        for target, code in ((walls, "import collapse_monitor"), (bare, "pass")):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)
            target.append(time.perf_counter() - t)
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, collapse_monitor; print(sorted(m for m in ('torch', 'mlflow', "
            "'evidently', 'sklearn', 'prometheus_client', 'scipy', 'pandas') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    ).stdout.strip()
    return {
        "importtime_cumulative": min(cum),
        "wall_minus_bare_python": min(walls) - min(bare),
        "heavy_modules_loaded": heavy,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--opts", default="{}")
    ap.add_argument("--sizes", default="2000,10000,50000")
    ap.add_argument("--approx-n", type=int, default=100_000)
    ap.add_argument("--nprobe", default="8,16")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every case (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs for n <= 10k")
    ap.add_argument("--quick", action="store_true", help="sizes 2k,10k; approximate check at 20k")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.n, json.loads(args.opts)), default=float))
        return

    sizes = [2000, 10_000] if args.quick else [int(x) for x in args.sizes.split(",")]
    approx_n = 20_000 if args.quick else args.approx_n
    base = {"threads": args.threads} if args.threads else {}
    t0 = time.time()
    meta = {
        "load_before": loadavg(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    rows: list[dict[str, Any]] = []
    print("speed benchmark", meta, file=sys.stderr)
    for n in sizes:
        rep = {**base, "repeats": args.repeats if n <= 10_000 else 1}
        for case in ("ours_prdc", "panel_warm", "vendi_ours", "vendi_ref"):
            rows.append(spawn(case, n, rep))
        rows.append(spawn("panel_cold", n, base))  # builds the state: one run
        if n <= 20_000:
            rows.append(spawn("ref_prdc", n, rep))
        else:
            rows.append({"case": "ref_prdc", "n": n, "not_run": prdc_memory_note(n, rows)})
    extra = {
        "monitor_twice": spawn("monitor_twice", 10_000, base),
        "text": spawn("text", 1_000_000, base),
        "check_overhead": spawn("check_overhead", 2000, base),
        "import": import_time(),
    }
    approx = [spawn("exact_big", approx_n, base, timeout=1500)]
    for nprobe in [int(x) for x in args.nprobe.split(",")]:
        approx.append(spawn("ivf", approx_n, {**base, "nprobe": nprobe}))
    meta["load_after"] = loadavg()
    meta["total_seconds"] = round(time.time() - t0, 1)
    report = {"meta": meta, "rows": rows, "approx": approx, **extra}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "speed.md").write_text(render(report))
    print(render(report))


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def prdc_memory_note(n: int, rows: list[dict[str, Any]]) -> str:
    """compute_prdc keeps an n x n float32 distance matrix per pass and argpartition's n x n
    int64 index array next to it (12 n^2 bytes); the cross pass then holds the n x n distances
    and n x n boolean masks. Scaled from the largest measured run as well."""
    dense = 3 * 4 * n * n / 1e9
    measured = [r for r in rows if r.get("case") == "ref_prdc" and "peak_rss" in r]
    note = f"not run: needs ~{dense:.0f} GB (3 dense n x n float32 matrices)"
    if measured:
        big = max(measured, key=lambda r: r["n"])
        scaled = (big["peak_rss"] - big["rss_start"]) * (n / big["n"]) ** 2 / 1e9
        note += f"; peak scaled from n={big['n']:,}: ~{scaled:.0f} GB"
    return note


# --------------------------------------------------------------------------- rendering


def _gb(x: float | None) -> str:
    return "" if x is None else f"{x / 1e9:.2f}"


def render(rep: dict[str, Any]) -> str:
    meta = rep["meta"]
    lines = [
        "# Speed benchmark",
        "",
        f"{meta['started']}, {meta['cpus']} CPUs, Python {meta['python']}; load average before "
        f"{' '.join(meta['load_before'])}, after {' '.join(meta['load_after'])}; total "
        f"{meta['total_seconds']:.0f} s. d = {D}, float32, k = {K}, n reference = m samples. "
        "Bound = the distance products the case needs / the matmul rate measured in the same "
        "subprocess by torch (the engine's BLAS); the GEMM column also gives numpy's BLAS on the same "
        "float32 product (not used by the engine: its bits depend on the product's shape and threads). Every case ran in a fresh subprocess; peak RSS is that process's. Wall = best "
        "of 3 runs for n <= 10,000 (the cores are shared), one run above; panel (cold) is one run. "
        "Other load = cores' worth of CPU that other processes used during the (best) run: above "
        "about 0.2 the case did not have the machine to itself and its wall / bound is inflated. "
        "In products = seconds inside `torch.mm` (every exact distance block is one product), with its "
        "ratio to the bound (above 1: the products ran below the measured GEMM rate, or the diagonal "
        "blocks of a self pass, computed whole, added work); rest = wall minus that (comparison "
        "passes, merges, moments, spectra, k-means, validation): seconds a faster matmul does not remove.",
        "",
        "| n | case | wall s | bound s | wall / bound | in products s (/ bound) | rest s | peak RSS GB | GEMM GFLOP/s torch / numpy | threads | other load |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "ours_prdc": "collapse-monitor `prdc` (exact, cold)",
        "panel_warm": "collapse-monitor generator panel, reference cached",
        "panel_cold": "collapse-monitor generator panel, reference built",
        "ref_prdc": "`prdc.compute_prdc`",
        "vendi_ours": "collapse-monitor `vendi_score`",
        "vendi_ref": "`vendi.score_dual`",
    }
    for r in rep["rows"]:
        name = names.get(r["case"], r["case"])
        if "not_run" in r or "error" in r:
            lines.append(f"| {r['n']:,} | {name} | {r.get('not_run') or r.get('error')} | | | | | | | | |")
            continue
        bound = r.get("bound")
        rates = {
            k: max(r.get("gemm_rates_before", {}).get(k, 0.0), r.get("gemm_rates_after", {}).get(k, 0.0))
            for k in ("torch", "numpy")
        }
        gf_s = (
            f"{rates['torch']:.0f} / {rates['numpy']:.0f}"
            if "gemm_rates_before" in r
            else f"{max(r['gflops_before'], r['gflops_after']):.0f}"
        )
        b_s = "" if bound is None else f"{bound:.2f}"
        ratio = "" if bound is None else f"{r['wall'] / bound:.2f}"
        mm_s = rest_s = ""
        if bound is not None and r.get("product_seconds"):
            mm_s = f"{r['product_seconds']:.2f} ({r['product_seconds'] / bound:.2f})"
            rest_s = f"{r['wall'] - r['product_seconds']:.2f}"
        lines.append(
            f"| {r['n']:,} | {name} | {r['wall']:.2f} | {b_s} | {ratio} | {mm_s} | {rest_s} | {_gb(r['peak_rss'])} | {gf_s} "
            f"| {r['threads']} | {r.get('other_load', float('nan')):.2f} |"
        )
    lines += ["", "## Value agreement and speed-ups", ""]
    lines += agreement(rep["rows"])
    lines += ["", '## Approximate k-NN (`knn="ivf"`) against the exact path', ""]
    lines += approx_table(rep["approx"])
    lines += ["", "## Checks, text, overhead, import", ""]
    lines += misc(rep)
    return "\n".join(lines) + "\n"


def _by(rows: list[dict[str, Any]], case: str, n: int) -> dict[str, Any] | None:
    for r in rows:
        if r.get("case") == case and r.get("n") == n and "wall" in r:
            return r
    return None


def agreement(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| n | prdc max abs diff (ours vs prdc) | ours prdc speed-up | panel (cached) vs compute_prdc | "
        "panel (cold) vs compute_prdc | Vendi rel diff | Vendi speed-up |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in sorted({r["n"] for r in rows}):
        ours, ref = _by(rows, "ours_prdc", n), _by(rows, "ref_prdc", n)
        warm, cold = _by(rows, "panel_warm", n), _by(rows, "panel_cold", n)
        vo, vr = _by(rows, "vendi_ours", n), _by(rows, "vendi_ref", n)
        diff = speed = pw = pc = ""
        if ours and ref:
            d = {k: abs(ours["values"][k] - ref["values"][k]) for k in ref["values"]}
            diff = ", ".join(f"{k} {v:.1e}" for k, v in d.items())
            speed = f"{ref['wall'] / ours['wall']:.1f}x"
            pw = f"{ref['wall'] / warm['wall']:.1f}x faster" if warm else ""
            pc = f"{ref['wall'] / cold['wall']:.1f}x faster" if cold else ""
        vd = vs = ""
        if vo and vr:
            vd = f"{abs(vo['value'] - vr['value']) / vr['value']:.1e}"
            vs = f"{vr['wall'] / vo['wall']:.1f}x"
        out.append(f"| {n:,} | {diff or 'n/a'} | {speed} | {pw} | {pc} | {vd} | {vs} |")
    return out


def approx_table(rows: list[dict[str, Any]]) -> list[str]:
    exact = next((r for r in rows if r.get("case") == "exact_big" and "values" in r), None)
    out = [
        "| n | path | wall s | peak RSS GB | precision | recall | density | coverage | |coverage error| |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "values" not in r:
            out.append(f"| {r.get('n', '')} | {r['case']} | {r.get('error', '')} | | | | | | |")
            continue
        v = r["values"]
        label = "exact" if r["case"] == "exact_big" else f"ivf, nprobe={r.get('nprobe') or 8}"
        err = "" if exact is None else f"{abs(v['coverage'] - exact['values']['coverage']):.4f}"
        out.append(
            f"| {r['n']:,} | {label} | {r['wall']:.1f} | {_gb(r['peak_rss'])} | {v['precision']:.4f} | "
            f"{v['recall']:.4f} | {v['density']:.4f} | {v['coverage']:.4f} | {err} |"
        )
    return out


def misc(rep: dict[str, Any]) -> list[str]:
    out = []
    mt = rep["monitor_twice"]
    if "ratio" in mt:
        out.append(
            f"- Same Reference, two `CollapseMonitor(sinks=[]).check()` at n = m = {mt['n']:,}: first "
            f"{mt['first']:.2f} s, second {mt['second']:.2f} s (second / first = {mt['ratio']:.0%})"
            + (
                f"; best of {len(mt['firsts'])} runs, each with a fresh home, per-run ratios "
                + ", ".join(f"{b / a:.0%}" for a, b in zip(mt["firsts"], mt["seconds"], strict=True))
                + (f" (median {mt['median_ratio']:.0%})" if "median_ratio" in mt else "")
                + "."
                if "firsts" in mt
                else "."
            )
        )
    tx = rep["text"]
    if "tokens" in tx:
        out.append(
            f"- Text, {tx['tokens']:,} generated tokens vs a {tx['n']:,}-token reference: reference state "
            f"{tx['state_seconds']:.2f} s (once per reference), `text_panel` at the default 20,000-token "
            f"budget {tx['panel_default_budget_seconds']:.2f} s, at a budget of every token "
            f"{tx['panel_full_budget_seconds']:.2f} s."
        )
    co = rep["check_overhead"]
    for c in co.get("checks", []):
        out.append(
            f"- `check()` generation {c['generation']} ({c['stage']}, {c['alerts']} alert(s)) with MLflow "
            f"sqlite + Prometheus textfile + webhook: {c['check']:.2f} s; the metric panel alone "
            f"{c['panel']:.2f} s; overhead (check() with the panel precomputed) {c['overhead'] * 1000:.0f} ms"
            + (f"; errors: {c['errors']}" if c["errors"] else "")
            + "."
        )
    if "webhook_posts" in co:
        out.append(f"- Webhook posts received by the local receiver: {co['webhook_posts']}.")
    im = rep["import"]
    out.append(
        f"- `import collapse_monitor`: {im['importtime_cumulative'] * 1000:.0f} ms (`-X importtime` "
        f"cumulative, best of 5); {im['wall_minus_bare_python'] * 1000:.0f} ms wall over a bare "
        f"interpreter; heavy modules loaded: {im['heavy_modules_loaded']}."
    )
    return out


if __name__ == "__main__":
    main()
