"""The text panel tokenises a pool of ``POOL_BUDGETS`` budgets of texts, not the whole
generation (a scale audit: 10M generated tokens took 25 s and 1.1 GB a check for a 20k budget)."""

from __future__ import annotations

import numpy as np
import pytest

import collapse_monitor.metrics.text as text_mod
from collapse_monitor.metrics.text import build_text_state, text_panel

V = 2000
_P = 1.0 / np.arange(1, V + 1) ** 1.1
_P /= _P.sum()
_WORDS = np.array([f"w{i}" for i in range(V)])


def _corpus(n_texts: int, seed: int) -> list[str]:
    r = np.random.default_rng(seed)
    lens = r.integers(20, 80, n_texts)
    toks = _WORDS[r.choice(V, int(lens.sum()), p=_P)]
    starts = np.cumsum(lens) - lens
    return [" ".join(toks[a : a + n]) for a, n in zip(starts, lens, strict=True)]


@pytest.fixture(scope="module")
def state():
    return build_text_state(_corpus(600, 1))


def _values(res):
    return {k: (v.value, v.ci_low, v.ci_high) for k, v in res.metrics.items()}


def test_only_the_pool_is_tokenised_and_the_point_estimates_are_unchanged(state, monkeypatch) -> None:
    gen = _corpus(12_000, 2)  # about 600k tokens
    budget = 400  # the pool: 32 budgets (12.8k tokens, about 260 texts), then 2,000 texts
    calls: list[str] = []
    real = text_mod.tokenize

    def counting(t: str) -> list[str]:
        calls.append(t)
        return real(t)

    monkeypatch.setattr(text_mod, "tokenize", counting)
    pooled = text_panel(state, gen, budget=budget, seed=3)
    assert len(calls) == text_mod.POOL_MIN_TEXTS == 2000  # every text here holds tokens
    assert sum(len(real(t)) for t in calls) >= text_mod.POOL_BUDGETS * budget
    monkeypatch.setattr(text_mod, "POOL_MIN_TEXTS", 1)
    calls.clear()
    by_tokens = text_panel(state, gen, budget=budget, seed=3)
    tokens = sum(len(real(t)) for t in calls)
    limit = text_mod.POOL_BUDGETS * budget
    # whole texts up to the first that reaches the limit
    assert limit <= tokens < limit + 80 and sum(len(real(t)) for t in calls[:-1]) < limit
    assert by_tokens.metrics["distinct_1"].value == pooled.metrics["distinct_1"].value
    monkeypatch.setattr(text_mod, "POOL_BUDGETS", 10**9)
    calls.clear()
    whole = text_panel(state, gen, budget=budget, seed=3)
    assert len(calls) == len(gen)
    # the point estimate reads the same first `budget` tokens of the same content order
    for key, (value, lo, hi) in _values(pooled).items():
        assert value == whole.metrics[key].value, key
        assert lo <= value <= hi
    # the replicates draw from a random sample of the texts instead of all of them: intervals of
    # the same width up to the replicates' Monte Carlo noise (a 120-generation simulation:
    # half-widths within 2 % of the whole corpus's on average, benchmarks quoted in the note)
    for key in ("distinct_1", "distinct_2", "distinct_3", "ngram_entropy"):
        w_pool = pooled.metrics[key].ci_high - pooled.metrics[key].ci_low
        w_all = whole.metrics[key].ci_high - whole.metrics[key].ci_low
        assert 0.6 < w_pool / w_all < 1.6, (key, w_pool, w_all)
    # the rare types' flags are read off the budget's tokens alone: identical
    assert pooled.metrics["rare_ngram_recall"] == whole.metrics["rare_ngram_recall"]


def test_a_generation_smaller_than_the_pool_gives_the_same_panel(state, monkeypatch) -> None:
    gen = _corpus(200, 5)  # about 10k tokens: under 32 budgets of 400
    pooled = _values(text_panel(state, gen, budget=400, seed=1))
    monkeypatch.setattr(text_mod, "POOL_BUDGETS", 10**9)
    assert _values(text_panel(state, gen, budget=400, seed=1)) == pooled


def test_leading_empty_texts_do_not_end_the_pool(state) -> None:
    """Empty texts hold no tokens: the pool goes on until it holds its tokens."""
    gen = [""] * 50 + _corpus(400, 7)
    res = text_panel(state, gen, budget=300, seed=0)
    assert res.metrics["distinct_1"].n == 300


def test_a_few_long_texts_are_all_pooled(state, monkeypatch) -> None:
    """30 texts of 2,000 tokens reach 32 budgets of 400 after 7 texts: a pool of 7 texts (under
    MIN_TEXTS) gave every subsampled metric its whole range as interval, where all 30 texts
    measure their spread."""
    r = np.random.default_rng(9)
    gen = [" ".join(_WORDS[r.choice(V, 2000, p=_P)]) for _ in range(30)]
    pooled = _values(text_panel(state, gen, budget=400, seed=2))
    assert pooled["distinct_2"][2] - pooled["distinct_2"][1] < 0.5  # not the whole range
    monkeypatch.setattr(text_mod, "POOL_BUDGETS", 10**9)
    assert _values(text_panel(state, gen, budget=400, seed=2)) == pooled
