"""Detection on chains this repository did not write: scikit-learn models on scikit-learn data,
and a bigram language model on human text that ships with Python.

Every chain of ``benchmarks/detection.py`` comes from ``collapse_monitor.simulate``, the code
the detection defaults were chosen on. The chains here use only the public API (``Reference``,
``CollapseMonitor``, ``Observation``, ``Rules``) and scikit-learn's models and data, written the
way a user writes a recursive-training loop. They were written after the defaults were fixed
(2026-12-05); the data's difficulty (``class_sep``) was set from the generation-0 classifier
alone (accuracy 0.85-0.92, rarest-class recall 0.6-0.85) before any check ran, and nothing in
the monitor was changed after seeing them (the text chain was added after the first two had
run, designed the same way: sizes fixed before any check).

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
* ``stdlib_text``: human text = the sentences of the docstrings of Python's own standard
  library (read with ``ast`` from the running interpreter's ``Lib/``, tests and IDLE left out:
  about 14,500 distinct sentences of 5-30 words, 7,600 word types), split per seed into a
  reference (3,000 sentences), a generation-0 training set (2,000, the size every later
  generation trains on) and a pool of unseen human
  sentences. The model is a word bigram model (maximum likelihood, no smoothing) refit each
  generation and sampled (2,000 sentences) with nucleus sampling (top-p, Holtzman et al. 2020).
  Loops: ``replace`` at top-p 1.0 (a refit on finite samples loses the bigrams it did not draw:
  the rare words go first) and at 0.9 (biased), ``accumulate`` and ``fresh`` (1,000 unseen
  human sentences + 1,000 of the previous generation's). The monitor gets the texts; (a) is the
  Frechet distance of TF-IDF + truncated-SVD sentence embeddings (scikit-learn, fitted on the
  reference) doubled against generation 0.

Judged as in ``detection.py``: the monitor's first non-healthy generation against (a) the
aggregate alert (probe accuracy down 2 points from generation 0; for text the Frechet distance
doubled) and (b) Evidently's DataDriftPreset (drift share >= 0.5), false alarms on the controls,
the operating curve over ``alpha``; the table and JSON go to
``benchmarks/results/external-chains.{md,json}`` (``-g20`` for 20 generations).

Run: ``.venv/bin/python benchmarks/external_chains.py`` (``--seeds``, ``--generations``,
``--jobs``, ``--only``, ``--no-evidently``, ``--replicates``, ``--out``, ``--name``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
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
    ("stdlib_text", "replace", {"top_p": 1.0}, True),
    ("stdlib_text", "replace", {"top_p": 0.9}, True),
    ("stdlib_text", "accumulate", {"top_p": 1.0}, False),
    ("stdlib_text", "fresh", {"top_p": 1.0}, False),
]
TEXT_REF, TEXT_TRAIN, TEXT_M = 3000, 2000, 2000  # every generation trains on 2,000 sentences


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
    """``(observation fields, aggregate numbers)`` per generation of an ``sk_gmm`` chain."""
    rng = np.random.default_rng(seed)
    X_tr, y_tr = d["X_train"], d["y_train"]
    acc_X, acc_y = [X_tr], [y_tr]  # accumulate: the real set and every generation's samples
    fresh_at = 0
    for _ in range(generations):
        gen = ClassGMM(X_tr, y_tr, rng)
        S, yS = gen.sample(M, rng, temperature)
        pred = _classifier(S, yS).predict(d["X_probe"])
        yield {"embeddings": S, "predictions": pred}, {"accuracy": float((pred == d["y_probe"]).mean())}
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
    """``(observation fields, aggregate numbers)`` per generation of an ``sk_pseudolabel`` chain."""
    rng = np.random.default_rng(seed)
    model = _classifier(d["X_train"], d["y_train"])
    for g in range(generations):
        pred = model.predict(d["X_probe"])
        yield {"predictions": pred}, {"accuracy": float((pred == d["y_probe"]).mean())}
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


@functools.lru_cache(maxsize=1)
def stdlib_sentences() -> tuple[str, ...]:
    """The distinct sentences (5-30 lower-case words) of the docstrings of the standard library
    of the running Python, in a fixed order: human-written text that needs no download."""
    import ast
    import re
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "lib2to3", "site-packages", "tkinter", "turtledemo", "ensurepip"}
    seen: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if set(path.relative_to(root).parts) & skip or path.parent.name.startswith("config-"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node)
            for para in re.split(r"\n\s*\n", doc or ""):
                for sent in re.split(r"(?<=[.!?])\s+", " ".join(para.split())):
                    words = re.findall(r"[a-z]+", sent.lower())
                    if 5 <= len(words) <= 30:
                        seen.setdefault(" ".join(words), None)
    return tuple(seen)


class Bigram:
    """A word bigram model (maximum likelihood counts, sentence start and end markers) sampled
    with nucleus (top-p) truncation (Holtzman et al. 2020, "The Curious Case of Neural Text
    Degeneration")."""

    END = "</s>"

    def __init__(self, sentences: list[str], top_p: float = 1.0) -> None:
        from collections import Counter, defaultdict

        self.top_p = top_p
        nxt: dict[str, Counter[str]] = defaultdict(Counter)
        for sent in sentences:
            words = ["<s>", *sent.split(), self.END]
            for a, b in itertools.pairwise(words):
                nxt[a][b] += 1
        self._dist: dict[str, tuple[list[str], np.ndarray]] = {}
        for a, cnt in nxt.items():
            words, counts = zip(*cnt.most_common(), strict=True)
            p = np.asarray(counts, dtype=float) / sum(counts)
            cum = np.cumsum(p)
            keep = int(np.searchsorted(cum, top_p - 1e-12)) + 1  # the smallest head with mass >= top_p
            self._dist[a] = (list(words[:keep]), cum[:keep] / cum[keep - 1])

    def sample(self, n: int, rng: np.random.Generator, max_len: int = 40) -> list[str]:
        out = []
        for _ in range(n):
            w, words = "<s>", []
            while len(words) < max_len:
                cand, cum = self._dist[w]
                w = cand[min(int(np.searchsorted(cum, rng.random(), side="right")), len(cand) - 1)]
                if w == self.END:
                    break
                words.append(w)
            out.append(" ".join(words))
        return out


def _sentence_embedding(reference: list[str]) -> Any:
    """TF-IDF + truncated SVD (latent semantic analysis) fitted on the reference sentences."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(), TruncatedSVD(n_components=32, random_state=0)).fit(reference)


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two samples (Heusel et al. 2017), by scipy."""
    from scipy import linalg

    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(ca @ cb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * covmean))


def text_data(seed: int) -> dict[str, list[str]]:
    """A per-seed split of the standard library's sentences: reference, training set, pool."""
    sents = list(stdlib_sentences())
    order = np.random.default_rng(2000 + seed).permutation(len(sents))
    shuffled = [sents[i] for i in order]
    a, b = TEXT_REF, TEXT_REF + TEXT_TRAIN
    return {"ref": shuffled[:a], "train": shuffled[a:b], "pool": shuffled[b:]}


def text_generations(d: dict[str, list[str]], loop: str, seed: int, generations: int, top_p: float = 1.0):
    """``(observation fields, aggregate numbers)`` per generation of a ``stdlib_text`` chain."""
    rng = np.random.default_rng(seed)
    embed = _sentence_embedding(d["ref"])
    ref_emb = embed.transform(d["ref"])
    train, everything = list(d["train"]), list(d["train"])
    for _ in range(generations):
        texts = Bigram(train, top_p).sample(TEXT_M, rng)
        yield {"texts": texts}, {"frechet_distance": _frechet(ref_emb, embed.transform(texts))}
        if loop == "replace":
            train = texts
        elif loop == "accumulate":
            everything += texts
            train = everything
        elif loop == "fresh":
            half = TEXT_M // 2
            fresh = rng.choice(len(d["pool"]), size=half, replace=False)
            keep = rng.choice(len(texts), size=half, replace=False)
            train = [d["pool"][i] for i in fresh] + [texts[i] for i in keep]
        else:
            raise ValueError(f"stdlib_text has no loop {loop!r}")


def replicate_fields(scenario: str, d: dict[str, Any], seed: int, r: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Replicate ``r`` of generation 0 (``--replicates``), the way a user retrains it: the same
    human training set with another seed (the class GMMs' fit and sampling, the bigram model's
    sampling); the logistic regression, deterministic given its data, on another draw of
    ``N_TRAIN`` human points, taken from the end of the pool, which no chain of up to
    ``MAX_GENERATIONS - 2`` generations reaches (a bootstrap resample, the first version, holds
    only ~63 % distinct points and made weaker replicates: accuracy 0.5 points lower on every one
    of 10). The chain itself is untouched."""
    rng = np.random.default_rng([seed, 7919, r])
    if scenario == "sk_gmm":
        S, yS = ClassGMM(d["X_train"], d["y_train"], rng).sample(M, rng, opts.get("temperature", 1.0))
        return {"embeddings": S, "predictions": _classifier(S, yS).predict(d["X_probe"])}
    if scenario == "sk_pseudolabel":
        end = len(d["y_pool"]) - (r - 1) * N_TRAIN
        X, y = d["X_pool"][end - N_TRAIN : end], d["y_pool"][end - N_TRAIN : end]
        return {"predictions": _classifier(X, y).predict(d["X_probe"])}
    if scenario == "stdlib_text":
        return {"texts": Bigram(list(d["train"]), opts.get("top_p", 1.0)).sample(TEXT_M, rng)}
    raise ValueError(f"unknown scenario {scenario!r}")


def run_one(args: tuple[Any, ...]) -> dict[str, Any]:
    """One chain ``(scenario, loop, options, collapsing, seed, generations[, with_evidently])``,
    judged like a ``detection.py`` chain (same row fields; baseline (b), Evidently's
    DataDriftPreset, on the reference's first 10 principal components, the text descriptors or
    the predicted labels, as there)."""
    scenario, loop, opts, collapsing, seed, generations = args[:6]
    with_evidently = bool(args[6]) if len(args) > 6 else False
    replicates = int(args[7]) if len(args) > 7 else 0
    import collapse_monitor as cm

    t0 = time.perf_counter()
    chain: Iterator[tuple[dict[str, Any], dict[str, float]]]
    if scenario == "sk_gmm":
        d = make_data(seed, generations)
        ref = cm.Reference(embeddings=d["X_ref"], labels=d["y_probe"])
        chain = gmm_generations(d, loop, seed, generations, **opts)
        data: dict[str, Any] = d
    elif scenario == "sk_pseudolabel":
        d = make_data(seed, generations)
        ref = cm.Reference(labels=d["y_probe"])
        chain = pseudolabel_generations(d, loop, seed, generations)
        data = d
    elif scenario == "stdlib_text":
        td = text_data(seed)
        ref = cm.Reference(texts=td["ref"])
        chain = text_generations(td, loop, seed, generations, **opts)
        data = dict(td)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    rules = cm.Rules()
    stages: list[str] = []
    fired: list[dict[str, Any]] = []
    agg: list[dict[str, float]] = []
    sweep = det._AlphaSweep(rules)
    ev: list[float | None] = []
    pca = None
    if with_evidently and ref.embeddings is not None:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(10, ref.embeddings.shape[1]), random_state=0).fit(ref.embeddings)
    with tempfile.TemporaryDirectory() as home:
        mon = cm.CollapseMonitor(f"ext-{scenario}-{loop}-{seed}", reference=ref, sinks=[], home=home, rules=rules)
        for fields, numbers in chain:
            obs = cm.Observation(**fields)
            rep = mon.check(obs)
            sweep.step(mon.last_panel)
            if len(stages) == 0:
                for r in range(1, replicates + 1):
                    mon.check_replicate(cm.Observation(**replicate_fields(scenario, data, seed, r, opts)))
                    sweep.add_replicate(mon.last_panel)
            frames = det._frames(ref, obs, pca) if with_evidently else None
            ev.append(None if frames is None else det._evidently_share(*frames))
            stages.append(rep.stage.value)
            if rep.stage.value != "healthy":
                fired.append(det.fired_entry(rep, len(stages) - 1))
            a = dict(numbers)  # (a) reads accuracy when there is one, else the Frechet distance
            for key in ("frechet_distance", "rare_class_recall", "rare_ngram_recall", "distinct_2"):
                if key in rep.metrics and key not in a:
                    a[key] = float(rep.metrics[key].value)
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
        "aggregate": det._first(det.aggregate_flags(agg)),
        "evidently": det._first([e is not None and e >= 0.5 for e in ev]),
        "evidently_share": ev,
        "aggregates": agg,
        "false_alarms": 0 if collapsing else sum(s != "healthy" for s in stages),
        "fired": fired,
        "alpha_stages": {str(a): st for a, st in sweep.stages.items()},
        "sweep_matches_monitor": sweep.stages.get(rules.alpha) == stages,
        "seconds": time.perf_counter() - t0,
        **({"replicates": replicates} if replicates else {}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", default=None, help="substring filter on chain labels")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-evidently", action="store_true", help="skip baseline (b) (faster)")
    ap.add_argument(
        "--replicates",
        type=int,
        default=0,
        help="retrain generation 0 this many more times (another seed; another draw of human data for the "
        "deterministic logistic regression) and add each to the baseline (CollapseMonitor.check_replicate)",
    )
    ap.add_argument(
        "--name", help="results file stem (default: external-chains[-gN][-repN]; -gN for N generations other than 10)"
    )
    a = ap.parse_args(argv)
    if not 1 <= a.generations <= MAX_GENERATIONS:
        print(f"error: --generations must be 1-{MAX_GENERATIONS}, got {a.generations}", file=sys.stderr)
        return 2
    if a.replicates < 0 or a.generations * POOL > (MAX_GENERATIONS + 1) * POOL - a.replicates * N_TRAIN:
        # the self-training replicates' human data comes from the end of the pool the chains use
        print(f"error: --replicates {a.replicates} with {a.generations} generations: too many", file=sys.stderr)
        return 2
    tasks = [
        (s, lp, o, c, seed, a.generations, not a.no_evidently, a.replicates)
        for (s, lp, o, c) in CHAINS
        for seed in range(a.seeds)
        if a.only is None or a.only in det._label(s, lp, o)
    ]
    if not tasks:
        print(f"error: no chain matches --only {a.only!r}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rows = det.run_chains(run_one, tasks, a.jobs)
    table, summary = det.summarise(rows, a.generations)
    header = (
        "# Detection on chains this repository did not write (scikit-learn models on scikit-learn data; "
        "a bigram model on the standard library's docstrings)\n\n"
        f"Seeds 0-{a.seeds - 1} x {a.generations} generations per chain; {len(rows)} chains in "
        f"{time.perf_counter() - t0:.0f} s on {os.cpu_count()} cores; default `Rules()`"
        f"{'; no Evidently' if a.no_evidently else ''}"
        f"{f'; baseline = generation 0 and {a.replicates} replicate retrain(s) of it' if a.replicates else ''}. "
        "See `benchmarks/external_chains.py` for the chains. Columns as in `detection.md`; "
        "(a) = probe accuracy down 2 points (text: the Frechet distance of TF-IDF + SVD sentence embeddings "
        "doubled).\n\n"
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = a.name or (
        "external-chains"
        + (f"-g{a.generations}" if a.generations != 10 else "")
        + (f"-rep{a.replicates}" if a.replicates else "")
    )
    (out / f"{stem}.md").write_text(header + table + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=str))
    print(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
