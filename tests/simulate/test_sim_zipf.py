"""Zipf bigram LM: top-p decoding in a replace loop erases the vocabulary's tail."""

from __future__ import annotations

import numpy as np
import pytest

from collapse_monitor._tokenize import tokenize
from collapse_monitor.simulate import make_scenario
from collapse_monitor.simulate.zipf_text import ZipfTextScenario, pseudo_words


def test_types_drop_under_replace_not_accumulate() -> None:
    rep = make_scenario("zipf_text", loop="replace", seed=0).run(6)
    acc = make_scenario("zipf_text", loop="accumulate", seed=0).run(6)
    r = [g.truth["obs_types"] for g in rep]
    a = [g.truth["obs_types"] for g in acc]
    assert r[0] == a[0]
    assert r[-1] < 0.5 * r[0]
    assert a[-1] > 0.6 * a[0]
    assert r[-1] < 0.5 * a[-1]
    assert rep[-1].truth["support_types"] < 0.5 * rep[0].truth["support_types"]
    # meanwhile the generated text looks *better* to the true model (lower NLL per token)
    assert rep[-1].aggregate["generation_nll"] < rep[0].aggregate["generation_nll"]
    # the aggregate Frechet distance (LSA sentence embeddings fitted on the reference) grows
    # under replace, faster than under accumulate (whose truncated synthetic sets dilute the tail)
    fd_r = [g.aggregate["frechet_distance"] for g in rep]
    fd_a = [g.aggregate["frechet_distance"] for g in acc]
    assert fd_r[0] == pytest.approx(fd_a[0])
    assert fd_r[-1] > 5 * fd_r[0]
    assert fd_r[-1] > 2 * fd_a[-1]


def test_sentence_embedding_is_fixed_and_zero_mean_on_the_reference() -> None:
    sc = ZipfTextScenario(seed=0, n_ref=400)
    _ = sc.reference
    emb = sc._embed(sc._ref_ids)
    assert emb.shape == (400, ZipfTextScenario._LSA_DIM)
    np.testing.assert_allclose(emb.mean(0), 0.0, atol=1e-9)  # centred on of the reference's TF-IDF rows
    first = sc._lsa
    sc._embed(sc._ref_ids[:5])
    assert sc._lsa is first  # fitted once, on the reference only


def test_no_truncation_no_collapse_under_accumulate() -> None:
    gens = make_scenario("zipf_text", loop="accumulate", seed=1, top_p=1.0).run(4)
    types = [g.truth["obs_types"] for g in gens]
    assert min(types) > 0.9 * types[0]
    fd = [g.aggregate["frechet_distance"] for g in gens]
    assert max(fd) < 1.6 * fd[0]


def _reference_top_p(row: np.ndarray, p: float) -> np.ndarray:
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))
    out = np.zeros_like(row)
    total = 0.0
    for i in order:
        if total >= p - 1e-12:
            break
        out[i] = row[i]
        total += row[i]
    return out / out.sum()


def test_top_p_and_top_k_decoding() -> None:
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.full(50, 0.3), size=20)
    sc = ZipfTextScenario(vocab_size=50, top_p=0.8)
    got = sc._decode(rows)
    want = np.array([_reference_top_p(r, 0.8) for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-12)
    sk = ZipfTextScenario(vocab_size=50, top_p=1.0, top_k=5)
    got = sk._decode(rows)
    assert ((got > 0).sum(1) == 5).all()
    np.testing.assert_allclose(got.sum(1), 1.0)
    top5 = np.argsort(-rows, axis=1)[:, :5]
    assert (np.take_along_axis(got, top5, axis=1) > 0).all()


def test_words_and_texts() -> None:
    words = pseudo_words(2000)
    assert len(set(words)) == 2000
    assert all(tokenize(w) == [w] for w in words)
    sc = make_scenario("zipf_text", seed=0)
    texts = sc.reference.texts
    assert len(texts) == 2000
    lengths = [len(tokenize(t)) for t in texts]
    assert min(lengths) >= 10 and max(lengths) <= 30
    # the true model is Zipfian: rank-frequency slope near -1.1 over the head
    counts = np.sort(np.unique(np.concatenate([tokenize(t) for t in texts]), return_counts=True)[1])[::-1]
    ranks = np.arange(1, 101)
    slope = np.polyfit(np.log(ranks), np.log(counts[:100]), 1)[0]
    assert slope == pytest.approx(-1.1, abs=0.25)
