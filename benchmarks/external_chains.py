"""Detection on chains this repository did not write: scikit-learn models on scikit-learn data.

Every chain of ``benchmarks/detection.py`` comes from ``collapse_monitor.simulate``, the code
the detection defaults were chosen on. The chains here use only the public API (``Reference``,
``CollapseMonitor``, ``Observation``, ``Rules``) and scikit-learn's models and data, written the
way a user writes a recursive-training loop. They were written after the defaults were fixed
(2026-12-05); the data's difficulty (``class_sep``) was set from the generation-0 classifier
alone (accuracy 0.85-0.92, rarest-class recall 0.6-0.85) before any check ran, and nothing in
the monitor was changed after seeing them.

Data: ``sklearn.datasets.make_classification`` (5 classes with priors .50/.25/.12/.10/.03, 12
features, 8 informative, one cluster per class, ``class_sep`` 1.2; a new dataset per seed). A
frozen real probe set (3,000 labelled points) and a real reference sample (2,000 points) are
held out; the class with prior .03 is the rare class (< 5 %).

* ``sk_gmm``: the generator is one ``sklearn.mixture.GaussianMixture`` (2 components, full
  covariance) per class plus the class frequencies, refit each generation on its training set
  and sampled (2,000 points); the classifier is a ``LogisticRegression`` trained on those
  samples and scored on the probe set. Loops: ``replace`` (trained on the previous generation's
  samples only), ``replace`` with ``temperature`` 0.8 (covariances scaled at sampling, the
  quality-favouring sampling of Alemohammad et al. 2024, "Self-Consuming Generative Models Go
  MAD"), ``accumulate`` (the real training set plus every generation's samples) and ``fresh``
  (half new real data, half the previous generation's samples). The rare class's frequency
  random-walks and its 2-component fit on ~60 points loses variance at every refit
  (Shumailov et al. 2024, Nature 631: 755-759).
* ``sk_pseudolabel``: a ``LogisticRegression`` retrained each generation on a fresh real pool
  (3,000 points) labelled by the previous model: ``argmax`` labels (``replace``, collapsing: the
  rare class is under-predicted, so the next model sees fewer of it), labels sampled from
  ``predict_proba`` (``sampled``, control) and true labels (``true_labels``, control).

Judged as in ``detection.py``: the monitor's first non-healthy generation against (a) the
aggregate alert (probe accuracy down 2 points from generation 0), false alarms on the controls,
the operating curve over ``alpha``; the table and JSON go to
``benchmarks/results/external-chains.{md,json}`` (``-g20`` for 20 generations).

Run: ``.venv/bin/python benchmarks/external_chains.py`` (``--seeds``, ``--generations``,
``--jobs``, ``--only``, ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detection as det  # the judge: table, operating curve, alpha sweep

RESULTS = Path(__file__).resolve().parent / "results"
PRIORS = (0.50, 0.25, 0.12, 0.10, 0.03)
N_FEATURES = 12
CLASS_SEP = 1.2
N_REF, N_PROBE, N_TRAIN, M, POOL = 2000, 3000, 2000, 2000, 3000
#: generations the fresh pool is drawn for: the dataset does not depend on the run's length, so a
#: 20-generation chain repeats the 10-generation one and goes on
MAX_GENERATIONS = 30

#: (scenario, loop, options, collapsing)
CHAINS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("sk_gmm", "replace", {}, True),
    ("sk_gmm", "replace", {"temperature": 0.8}, True),
    ("sk_gmm", "accumulate", {}, False),
    ("sk_gmm", "fresh", {}, False),
    ("sk_pseudolabel", "replace", {}, True),
    ("sk_pseudolabel", "sampled", {}, False),
    ("sk_pseudolabel", "true_labels", {}, False),
]


def make_data(seed: int, generations: int) -> dict[str, np.ndarray]:
    """One dataset per seed: the reference sample, the probe set, the generation-0 training set
    and enough unseen real points for every generation's fresh pool."""
    from sklearn.datasets import make_classification

    if generations > MAX_GENERATIONS:
        raise ValueError(f"at most {MAX_GENERATIONS} generations")
    n = N_REF + N_PROBE + N_TRAIN + (MAX_GENERATIONS + 1) * POOL
    X, y = make_classification(
        n_samples=n,
        n_features=N_FEATURES,
        n_informative=8,
        n_redundant=2,
        n_classes=len(PRIORS),
        n_clusters_per_class=1,
        weights=list(PRIORS),
        class_sep=CLASS_SEP,
        flip_y=0.0,
        random_state=1000 + seed,
    )
    a, b, c = N_REF, N_REF + N_PROBE, N_REF + N_PROBE + N_TRAIN
    return {
        "X_ref": X[:a],
        "X_probe": X[a:b],
        "y_probe": y[a:b],
        "X_train": X[b:c],
        "y_train": y[b:c],
        "X_pool": X[c:],
        "y_pool": y[c:],
    }


class ClassGMM:
    """A class-conditional generator: class frequencies and one Gaussian mixture per class
    (classes that vanished from the training set stay vanished)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator, components: int = 2) -> None:
        from sklearn.mixture import GaussianMixture

        self.classes = np.arange(len(PRIORS))
        counts = np.array([(y == c).sum() for c in self.classes], dtype=float)
        self.priors = counts / counts.sum()
        self.fits: dict[int, Any] = {}
        for c in self.classes:
            Xc = X[y == c]
            if len(Xc) == 0:
                continue
            k = min(components, len(Xc))
            self.fits[int(c)] = GaussianMixture(
                n_components=k, covariance_type="full", random_state=int(rng.integers(2**31))
            ).fit(Xc)

    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        counts = rng.multinomial(n, self.priors)
        xs, ys = [], []
        for c, nc in zip(self.classes, counts, strict=True):
            if nc == 0:
                continue
            g = self.fits[int(c)]
            comp = rng.choice(len(g.weights_), size=nc, p=g.weights_)
            z = rng.standard_normal((nc, N_FEATURES))
            chol = np.linalg.cholesky(g.covariances_ * temperature)  # (k, d, d)
            xs.append(g.means_[comp] + np.einsum("nij,nj->ni", chol[comp], z))
            ys.append(np.full(nc, c))
        return np.concatenate(xs), np.concatenate(ys)


def _classifier(X: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000).fit(X, y)


def gmm_generations(d: dict[str, np.ndarray], loop: str, seed: int, generations: int, temperature: float = 1.0):
    """``(embeddings, probe predictions, probe accuracy)`` per generation of an ``sk_gmm`` chain."""
    rng = np.random.default_rng(seed)
    X_tr, y_tr = d["X_train"], d["y_train"]
    acc_X, acc_y = [X_tr], [y_tr]  # accumulate: the real set and every generation's samples
    fresh_at = 0
    for _ in range(generations):
        gen = ClassGMM(X_tr, y_tr, rng)
        S, yS = gen.sample(M, rng, temperature)
        pred = _classifier(S, yS).predict(d["X_probe"])
        yield S, pred, float((pred == d["y_probe"]).mean())
        if loop == "replace":
            X_tr, y_tr = S, yS
        elif loop == "accumulate":
            acc_X.append(S)
            acc_y.append(yS)
            X_tr, y_tr = np.concatenate(acc_X), np.concatenate(acc_y)
        elif loop == "fresh":
            half = M // 2
            keep = rng.choice(len(S), size=half, replace=False)
            Xf, yf = d["X_pool"][fresh_at : fresh_at + half], d["y_pool"][fresh_at : fresh_at + half]
            fresh_at += half
            X_tr, y_tr = np.concatenate([Xf, S[keep]]), np.concatenate([yf, yS[keep]])
        else:
            raise ValueError(f"sk_gmm has no loop {loop!r}")


def pseudolabel_generations(d: dict[str, np.ndarray], loop: str, seed: int, generations: int):
    """``(None, probe predictions, probe accuracy)`` per generation of an ``sk_pseudolabel`` chain."""
    rng = np.random.default_rng(seed)
    model = _classifier(d["X_train"], d["y_train"])
    for g in range(generations):
        pred = model.predict(d["X_probe"])
        yield None, pred, float((pred == d["y_probe"]).mean())
        P = d["X_pool"][g * POOL : (g + 1) * POOL]
        if loop == "replace":
            labels = model.predict(P)
        elif loop == "sampled":
            proba = model.predict_proba(P)
            u = rng.random((len(P), 1))
            labels = model.classes_[(proba.cumsum(axis=1) < u).sum(axis=1).clip(max=proba.shape[1] - 1)]
        elif loop == "true_labels":
            labels = d["y_pool"][g * POOL : (g + 1) * POOL]
        else:
            raise ValueError(f"sk_pseudolabel has no loop {loop!r}")
        model = _classifier(P, labels)


def run_one(args: tuple[Any, ...]) -> dict[str, Any]:
    """One chain ``(scenario, loop, options, collapsing, seed, generations)``, judged like a
    ``detection.py`` chain (same row fields, no Evidently)."""
    scenario, loop, opts, collapsing, seed, generations = args
    import collapse_monitor as cm

    t0 = time.perf_counter()
    d = make_data(seed, generations)
    if scenario == "sk_gmm":
        ref = cm.Reference(embeddings=d["X_ref"], labels=d["y_probe"])
        chain = gmm_generations(d, loop, seed, generations, **opts)
    elif scenario == "sk_pseudolabel":
        ref = cm.Reference(labels=d["y_probe"])
        chain = pseudolabel_generations(d, loop, seed, generations)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    rules = cm.Rules()
    stages: list[str] = []
    fired: list[dict[str, Any]] = []
    agg: list[dict[str, float]] = []
    sweep = det._AlphaSweep(rules)
    with tempfile.TemporaryDirectory() as home:
        mon = cm.CollapseMonitor(f"ext-{scenario}-{loop}-{seed}", reference=ref, sinks=[], home=home, rules=rules)
        for emb, pred, acc in chain:
            rep = mon.check(cm.Observation(embeddings=emb, predictions=pred))
            stages.append(rep.stage.value)
            if rep.stage.value != "healthy":
                fired.append(det.fired_entry(rep, len(stages) - 1))
            sweep.step(mon.last_panel)
            a = {"accuracy": acc}
            if "frechet_distance" in rep.metrics:
                a["frechet_distance"] = float(rep.metrics["frechet_distance"].value)
            if "rare_class_recall" in rep.metrics:
                a["rare_class_recall"] = float(rep.metrics["rare_class_recall"].value)
            agg.append(a)
    return {
        "scenario": scenario,
        "loop": loop,
        "options": opts,
        "label": det._label(scenario, loop, opts),
        "collapsing": collapsing,
        "seed": seed,
        "stages": stages,
        "ours": det._first([s != "healthy" for s in stages]),
        "aggregate": det._first(det._aggregate_flags(agg)),
        "evidently": None,
        "evidently_share": [None] * len(stages),
        "aggregates": agg,
        "false_alarms": 0 if collapsing else sum(s != "healthy" for s in stages),
        "fired": fired,
        "alpha_stages": {str(a): st for a, st in sweep.stages.items()},
        "sweep_matches_monitor": sweep.stages.get(rules.alpha) == stages,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", default=None, help="substring filter on chain labels")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--name", help="results file stem (default: external-chains[-gN] for N generations other than 10)")
    a = ap.parse_args(argv)
    if not 1 <= a.generations <= MAX_GENERATIONS:
        print(f"error: --generations must be 1-{MAX_GENERATIONS}, got {a.generations}", file=sys.stderr)
        return 2
    tasks = [
        (s, lp, o, c, seed, a.generations)
        for (s, lp, o, c) in CHAINS
        for seed in range(a.seeds)
        if a.only is None or a.only in det._label(s, lp, o)
    ]
    if not tasks:
        print(f"error: no chain matches --only {a.only!r}", file=sys.stderr)
        return 2
    from rich.progress import track

    t0 = time.perf_counter()
    if a.jobs <= 1:
        rows = list(track(map(run_one, tasks), total=len(tasks), description="chains"))
    else:
        with ProcessPoolExecutor(max_workers=a.jobs) as ex:
            rows = list(track(ex.map(run_one, tasks), total=len(tasks), description="chains"))
    table, summary = det.summarise(rows, a.generations)
    header = (
        "# Detection on chains this repository did not write (scikit-learn models on scikit-learn data)\n\n"
        f"Seeds 0-{a.seeds - 1} x {a.generations} generations per chain; {len(rows)} chains in "
        f"{time.perf_counter() - t0:.0f} s on {os.cpu_count()} cores; default `Rules()`; no Evidently. "
        "See `benchmarks/external_chains.py` for the chains. Columns as in `detection.md`; "
        "(a) = probe accuracy down 2 points.\n\n"
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = a.name or ("external-chains" + (f"-g{a.generations}" if a.generations != 10 else ""))
    (out / f"{stem}.md").write_text(header + table + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=str))
    print(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
