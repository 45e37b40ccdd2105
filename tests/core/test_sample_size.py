"""Generations measured on more or fewer samples (or text tokens) than the baseline.

Metrics audit (2026-12-06): coverage, PRDC, the spectral statistics and the text metrics move
with the sample count (the amount of text) alone, and the baseline's was never matched: 300
healthy samples against a 2,000-sample baseline read as a late collapse, 20 healthy texts
against 2,000 as an entropy decline. Larger samples are now compared at the baseline's size;
smaller ones are still tested, with a note (not testing them let a collapsed smaller sample
resolve an open alert)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import collapse_monitor as cm

D = 64


def _monitor(tmp_path: Path, **ref) -> cm.CollapseMonitor:
    return cm.CollapseMonitor("size", reference=cm.Reference(**ref), sinks=[], home=tmp_path)


def test_fewer_samples_than_the_baseline_are_noted_and_still_tested(tmp_path: Path) -> None:
    """Leaving them untested judged a collapsed smaller sample healthy and resolved its open
    critical alert (review of 2026-12-06): they are tested, with a note on the size."""
    rng = np.random.default_rng(0)
    d = 4
    mon = _monitor(tmp_path, embeddings=rng.normal(size=(2000, d)))
    mon.check(cm.Observation(embeddings=rng.normal(size=(2000, d))))
    collapsed = mon.check(cm.Observation(embeddings=rng.normal(size=(2000, d)) * 0.6))
    assert collapsed.stage is cm.Stage.LATE_COLLAPSE
    small = mon.check(cm.Observation(embeddings=rng.normal(size=(300, d)) * 0.6))
    assert small.stage is cm.Stage.LATE_COLLAPSE and not any(a.status == "resolved" for a in small.alerts)
    assert any("300 sample embeddings where the baseline had 2000" in n for n in small.notes), small.notes
    assert small.metrics["tail_mass_ratio"].n == 300


def test_more_samples_than_the_baseline_are_compared_at_its_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    d = 4  # low dimension: coverage sees a narrowing at these sizes
    mon = _monitor(tmp_path, embeddings=rng.normal(size=(2000, d)))
    mon.check(cm.Observation(embeddings=rng.normal(size=(1000, d))))
    big = mon.check(cm.Observation(embeddings=rng.normal(size=(5000, d))))
    assert big.metrics["tail_mass_ratio"].n == 1000  # a random 1,000 of the 5,000
    assert big.stage is cm.Stage.HEALTHY and not any(f.significant for f in big.findings)
    # a real narrowing is still found at the matched size
    hit = mon.check(cm.Observation(embeddings=rng.normal(size=(5000, d)) * 0.6))
    assert hit.stage is cm.Stage.LATE_COLLAPSE and hit.metrics["tail_mass_ratio"].n == 1000
    assert {"tail_coverage", "head_coverage"} <= {f.key for f in hit.findings if f.significant}


def test_fewer_texts_than_the_baseline_are_noted_and_shorter_texts_tested(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vocab = [f"w{i}" for i in range(500)]
    p = 1 / np.arange(1, 501)
    p /= p.sum()

    def texts(n: int) -> list[str]:
        return [" ".join(rng.choice(vocab, size=20, p=p)) for _ in range(n)]

    mon = _monitor(tmp_path, texts=texts(3000))
    base = mon.check(cm.Observation(texts=texts(2000)))
    assert base.metrics["ngram_entropy"].n == 20000
    few = mon.check(cm.Observation(texts=texts(20)))
    assert any("20 texts where the baseline had 2000" in n for n in few.notes), few.notes
    # as many texts, shorter: a symptom of collapse, tested and not noted
    short = mon.check(cm.Observation(texts=[" ".join(t.split()[:3]) for t in texts(2000)]))
    assert not any("where the baseline had" in n for n in short.notes)
    assert short.stage is not cm.Stage.HEALTHY
