"""collapse_monitor.metrics.text: hand-worked values, naive re-implementations, scipy's entropy,
Zipf tails (Dohmatob et al. 2024) and the reference-cache round trip."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from collapse_monitor._tokenize import tokenize
from collapse_monitor.errors import ConfigError, InputError
from collapse_monitor.metrics.cache import ReferenceCache
from collapse_monitor.metrics.text import (
    RARE_ITEMS_KEY,
    TEXT_KEYS,
    TextRefState,
    TextResult,
    build_text_state,
    distinct_n,
    get_text_state,
    ngram_entropy,
    text_panel,
)
from collapse_monitor.types import Reference

# --------------------------------------------------------------------------- helpers


def naive_ngrams(token_lists, n):
    """Independent re-implementation: n-grams per list, never across lists."""
    out = []
    for toks in token_lists:
        out.extend(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    return out


def zipf_texts(rng, n_texts, *, vocab=4000, a=1.1, top_k=None, mean_len=20):
    """Texts of iid Zipf(a) words w0..w{vocab-1}; ``top_k`` keeps only the k most frequent
    words (renormalised): top-k truncation as in Dohmatob et al. 2024."""
    p = 1.0 / np.arange(1, vocab + 1) ** a
    if top_k is not None:
        p[top_k:] = 0.0
    p /= p.sum()
    lens = rng.poisson(mean_len - 1, n_texts) + 1
    toks = rng.choice(vocab, size=int(lens.sum()), p=p)
    out, i = [], 0
    for n in lens:
        out.append(" ".join(f"w{t}" for t in toks[i : i + n]))
        i += n
    return out


@pytest.fixture(scope="module")
def zipf_ref():
    rng = np.random.default_rng(11)
    texts = zipf_texts(rng, 6000)  # about 120k tokens
    return texts, build_text_state(texts)


# --------------------------------------------------------------------------- functional API


def test_distinct_n_hand_worked():
    lists = [["a", "b", "a", "b"], ["a", "b"]]
    assert distinct_n(lists, 1) == pytest.approx(2 / 6)
    # ab, ba, ab | ab : 2 distinct of 4 (0.4 if the bigram "b a" across the lists were counted)
    assert distinct_n(lists, 2) == pytest.approx(2 / 4)
    assert distinct_n(lists, 3) == pytest.approx(2 / 2)  # aba, bab
    assert distinct_n(lists, 4) == pytest.approx(1.0)  # abab
    assert distinct_n(lists, 5) == 0.0  # no 5-gram: defined as 0, not NaN
    assert distinct_n([], 1) == 0.0


def test_ngram_entropy_hand_worked():
    lists = [["a", "b", "a", "b"], ["a", "b"]]
    # bigrams ab x3, ba x1
    assert ngram_entropy(lists) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    # unigrams a x3, b x3 -> ln 2
    assert ngram_entropy(lists, n=1) == pytest.approx(math.log(2))
    assert ngram_entropy([["x", "y"]], n=3) == 0.0
    assert ngram_entropy([["same", "same", "same"]]) == 0.0  # one bigram type


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_functions_match_naive_and_scipy(seed, n):
    rnd = random.Random(seed)
    words = [f"t{i}" for i in range(rnd.randint(2, 30))]
    lists = [[rnd.choice(words) for _ in range(rnd.randint(0, 12))] for _ in range(rnd.randint(1, 40))]
    grams = naive_ngrams(lists, n)
    if not grams:
        assert distinct_n(lists, n) == 0.0
        return
    assert distinct_n(lists, n) == pytest.approx(len(set(grams)) / len(grams))
    counts = np.array(list(Counter(grams).values()), dtype=float)
    assert ngram_entropy(lists, n) == pytest.approx(stats.entropy(counts))  # nats


def test_function_input_errors():
    with pytest.raises(InputError):
        distinct_n(["not", "tokenised"], 1)
    with pytest.raises(InputError):
        ngram_entropy("a b c")
    with pytest.raises(ConfigError):
        distinct_n([["a"]], 0)
    with pytest.raises(ConfigError):
        ngram_entropy([["a"]], n=True)


# --------------------------------------------------------------------------- reference state


def test_rare_set_hand_worked():
    # counts: the 4, a 2, x 2, cat 1, dog 1  (10 tokens)
    s = build_text_state(["the cat the a", "the dog the a", "x x"], rare_tail_mass=0.2)
    vocab = {w: i for i, w in enumerate(s.vocab)}
    assert s.total_tokens == 10
    assert s.counts[vocab["the"]] == 4
    # count-1 types carry 2/10 >= 0.2 -> c* = 1
    assert s.rare_count_threshold == 1
    assert sorted(s.vocab[i] for i in s.rare_ids) == ["cat", "dog"]
    assert s.rare_p == pytest.approx([0.1, 0.1])
    # 0.3: count<=1 carries 0.2 < 0.3, count<=2 carries 0.6 -> c* = 2, ties kept whole
    s3 = build_text_state(["the cat the a", "the dog the a", "x x"], rare_tail_mass=0.3)
    assert s3.rare_count_threshold == 2
    assert sorted(s3.vocab[i] for i in s3.rare_ids) == ["a", "cat", "dog", "x"]
    s_all = build_text_state(["the cat the a", "the dog the a", "x x"], rare_tail_mass=1.0)
    assert s_all.n_rare == 5


def test_rare_bigrams_optional():
    s = build_text_state(["a b c", "a b d"], rare_tail_mass=0.5, rare_orders=(1, 2))
    # bigrams: ab x2, bc, bd -> count-1 bigrams carry 2/4 >= 0.5
    assert s.rare_bigram_count_threshold == 1
    assert s.rare_bigram_keys.size == 2
    assert s.n_rare == s.rare_ids.size + 2
    res = text_panel(s, ["a b c"], n_boot=0)
    assert res.items[RARE_ITEMS_KEY].size == s.n_rare


def test_state_param_errors():
    with pytest.raises(ConfigError):
        build_text_state(["a"], rare_tail_mass=0)
    with pytest.raises(ConfigError):
        build_text_state(["a"], rare_tail_mass=1.5)
    with pytest.raises(ConfigError):
        build_text_state(["a"], rare_orders=(2,))
    with pytest.raises(InputError):
        build_text_state([" ", ""])
    with pytest.raises(InputError):
        build_text_state("a single string")


def test_cache_round_trip(tmp_path):
    texts = ["Naïve café, 日本語 テキスト!", "emoji 🙂 and \x00 nul", "x" * 3000 + " long token", "the the the"]
    s = build_text_state(texts, rare_tail_mass=0.3, rare_orders=(1, 2), seed=3)
    assert "\x00" in s.vocab and "x" * 3000 in s.vocab
    arrays = s.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    np.savez(tmp_path / "s.npz", **arrays)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        s2 = TextRefState.from_arrays({k: z[k] for k in z.files})
    assert s2.vocab == s.vocab
    np.testing.assert_array_equal(s2.counts, s.counts)
    np.testing.assert_array_equal(s2.rare_ids, s.rare_ids)
    np.testing.assert_array_equal(s2.rare_bigram_keys, s.rare_bigram_keys)
    assert (s2.rare_tail_mass, s2.rare_orders, s2.seed) == (0.3, (1, 2), 3)
    gen = ["naïve 日本語 🙂", "the café the", "\x00 x"]
    r1, r2 = text_panel(s, gen, n_boot=20), text_panel(s2, gen, n_boot=20)
    assert r1.metrics == r2.metrics
    np.testing.assert_array_equal(r1.items[RARE_ITEMS_KEY], r2.items[RARE_ITEMS_KEY])


def test_from_arrays_rejects_inconsistent_arrays():
    arrays = build_text_state(["a b c"]).to_arrays()
    bad = dict(arrays, vocab_lengths=arrays["vocab_lengths"] + 1)
    with pytest.raises(ValueError):
        TextRefState.from_arrays(bad)
    with pytest.raises(ValueError):
        TextRefState.from_arrays(dict(arrays, version=np.asarray(99)))


def test_get_text_state_uses_disk_cache(tmp_path):
    ref = Reference(texts=["the cat sat", "a dog ran far", "the bird"])
    s1 = get_text_state(ref, ReferenceCache(tmp_path), seed=1)
    assert list(tmp_path.glob("*.npz"))
    fresh = ReferenceCache(tmp_path)
    s2 = get_text_state(ref, fresh, seed=1)  # loaded from disk, not rebuilt
    assert fresh.hits == 1 and fresh.misses == 0
    assert s2.vocab == s1.vocab
    s3 = get_text_state(ref, fresh, seed=1, rare_tail_mass=0.5)  # other params, other entry
    assert fresh.misses == 1 and s3.rare_tail_mass == 0.5
    with pytest.raises(InputError):
        get_text_state(Reference(labels=[0, 1]), fresh)


# --------------------------------------------------------------------------- panel


def test_panel_hand_worked():
    state = build_text_state(["a b c d", "e f"])  # 6 tokens, all count 1
    res = text_panel(state, ["a b c", "a b d"], budget=100, n_boot=0)
    assert isinstance(res, TextResult)
    assert set(res.metrics) == set(TEXT_KEYS)
    m = {k: v.value for k, v in res.metrics.items()}
    # budget = min(100, 6 generated, 6 reference) = 6
    assert all(v.n == 6 for v in res.metrics.values())
    assert m["distinct_1"] == pytest.approx(4 / 6)
    assert m["distinct_2"] == pytest.approx(3 / 4)  # ab, bc, ab, bd
    assert m["distinct_3"] == pytest.approx(2 / 2)
    assert m["distinct_4"] == 0.0 and res.metrics["distinct_4"].ci_high == 1.0  # no 4-gram
    assert m["ngram_entropy"] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert m["vocab_ratio"] == pytest.approx(4 / 6)  # 4 types vs the reference's 6 at 6 tokens
    # rare = all 6 reference types (count 1 each); seen: a, b, c, d. The budget covers the
    # whole reference, whose resample holds every rare type: E = 1
    assert res.info["rare_expected_share"] == 1.0
    assert m["rare_ngram_recall"] == pytest.approx(4 / 6)
    assert res.items[RARE_ITEMS_KEY].tolist() == [True, True, True, True, False, False]
    key, mask = res.paired["rare_ngram_recall"]
    assert key == RARE_ITEMS_KEY and mask.dtype == bool and mask.all() and mask.shape == (6,)


def test_budget_cut_never_makes_ngrams_across_the_cut():
    state = build_text_state(["p q r s t u v w"])
    res = text_panel(state, ["x y z w"], budget=2, n_boot=0)
    assert res.metrics["distinct_1"].n == 2
    assert res.metrics["distinct_2"].value == 1.0  # the single bigram "x y"
    assert res.metrics["distinct_3"].value == 0.0  # "x y z" would cross the cut
    # two texts of equal content order: budget 5 = one whole text + 1 token of the other
    res2 = text_panel(state, ["a b c d", "e f g h"], budget=5, n_boot=0)
    assert res2.metrics["distinct_2"].value == 1.0
    assert res2.metrics["distinct_4"].value == 1.0  # exactly one 4-gram inside the budget
    assert res2.metrics["ngram_entropy"].value == pytest.approx(math.log(3))


def test_panel_with_whole_budget_matches_functions():
    rng = np.random.default_rng(2)
    ref = zipf_texts(rng, 300, vocab=300)
    gen = zipf_texts(rng, 50, vocab=300)
    state = build_text_state(ref)
    res = text_panel(state, gen, budget=10**9, n_boot=0)
    lists = [tokenize(t) for t in gen]
    assert res.metrics["distinct_1"].n == sum(map(len, lists))
    for n in (1, 2, 3, 4):
        assert res.metrics[f"distinct_{n}"].value == pytest.approx(distinct_n(lists, n))
    assert res.metrics["ngram_entropy"].value == pytest.approx(ngram_entropy(lists, 2))
    res3 = text_panel(state, gen, budget=10**9, n_boot=0, entropy_n=3)
    assert res3.metrics["ngram_entropy"].value == pytest.approx(ngram_entropy(lists, 3))
    res6 = text_panel(state, gen, budget=10**9, n_boot=0, entropy_n=6)
    assert res6.metrics["ngram_entropy"].value == pytest.approx(ngram_entropy(lists, 6))


def test_panel_is_deterministic_and_order_invariant(zipf_ref):
    _, state = zipf_ref
    gen = zipf_texts(np.random.default_rng(5), 400)
    a = text_panel(state, gen, budget=3000, n_boot=30, seed=7)
    b = text_panel(state, list(reversed(gen)), budget=3000, n_boot=30, seed=7)
    assert a.metrics == b.metrics
    np.testing.assert_array_equal(a.items[RARE_ITEMS_KEY], b.items[RARE_ITEMS_KEY])
    c = text_panel(state, gen, budget=3000, n_boot=30, seed=8)  # another subsample
    assert c.metrics["distinct_2"].value != a.metrics["distinct_2"].value


def test_budget_invariance(zipf_ref):
    _, state = zipf_ref
    rng = np.random.default_rng(21)
    small, large = zipf_texts(rng, 200), zipf_texts(rng, 2000)  # ~4k and ~40k tokens
    rs = text_panel(state, small, budget=3000, n_boot=0)
    rl = text_panel(state, large, budget=3000, n_boot=0)
    assert rs.metrics["distinct_1"].n == rl.metrics["distinct_1"].n == 3000
    for n in (1, 2, 3):
        assert abs(rs.metrics[f"distinct_{n}"].value - rl.metrics[f"distinct_{n}"].value) < 0.03
    assert abs(rs.metrics["vocab_ratio"].value - rl.metrics["vocab_ratio"].value) < 0.08
    assert abs(rs.metrics["ngram_entropy"].value - rl.metrics["ngram_entropy"].value) < 0.1
    # without the budget the two sets differ far more than that tolerance
    naive_s = distinct_n([tokenize(t) for t in small], 1)
    naive_l = distinct_n([tokenize(t) for t in large], 1)
    assert naive_s - naive_l > 0.15


def test_zipf_truncation_lowers_tail_and_diversity(zipf_ref):
    _, state = zipf_ref
    rng = np.random.default_rng(3)
    full = text_panel(state, zipf_texts(rng, 1500), n_boot=50)
    cut = text_panel(state, zipf_texts(rng, 1500, top_k=800), n_boot=50)
    for key in ("rare_ngram_recall", "distinct_1", "distinct_2", "vocab_ratio", "ngram_entropy"):
        assert cut.metrics[key].ci_high < full.metrics[key].ci_low, key
    assert cut.metrics["rare_ngram_recall"].value < 0.25
    assert full.metrics["rare_ngram_recall"].value == pytest.approx(1.0, abs=0.15)
    assert full.metrics["vocab_ratio"].value == pytest.approx(1.0, abs=0.08)
    # the paired items see the same loss: fewer rare types seen
    assert cut.items[RARE_ITEMS_KEY].sum() < full.items[RARE_ITEMS_KEY].sum()


def test_rare_recall_is_one_for_a_same_size_reference_resample(zipf_ref):
    """DESIGN's definition: 1 for a same-size resample of the reference texts. Computed here
    independently of the state's own draws: the mean over 40 other resamples, with the rare
    types counted from the reference's token counts by hand."""
    texts, state = zipf_ref
    counts = Counter(t for text in texts for t in tokenize(text))
    rare = {w for w in counts if counts[w] <= state.rare_count_threshold}
    assert len(rare) == state.n_rare
    rng = np.random.default_rng(9)
    values, shares = [], []
    for _ in range(40):
        gen, n = [], 0
        for i in rng.permutation(len(texts)):
            gen.append(texts[i])
            n += len(tokenize(texts[i]))
            if n >= 20_000:
                break
        res = text_panel(state, gen, budget=20_000, n_boot=0)
        values.append(res.metrics["rare_ngram_recall"].value)
        toks = [t for text in gen for t in tokenize(text)][:20_000]
        shares.append(len(rare & set(toks)) / len(rare))
    assert res.info["rare_seen_share"] == pytest.approx(shares[-1])  # the metric's numerator, by hand
    assert np.mean(values) == pytest.approx(1.0, abs=0.01)
    assert res.info["rare_expected_share"] == pytest.approx(np.mean(shares), rel=0.02)


def test_rare_recall_of_bursty_text_is_one_for_its_own_resamples():
    """Real text is bursty: a rare word recurs inside one text. Against the old token-level
    expectation half the reference scored about 1.18; against text resamples it scores 1."""
    rng = np.random.default_rng(21)
    vocab = [f"w{i}" for i in range(3000)]
    p = 1.0 / np.arange(1, 3001) ** 1.1
    p /= p.sum()
    texts = []
    for _ in range(1500):  # each text repeats a few of its own topic words
        topic = rng.choice(vocab, size=3, p=p)
        words = list(rng.choice(vocab, size=20, p=p)) + list(rng.choice(topic, size=10))
        texts.append(" ".join(words))
    state = build_text_state(texts)
    half = [texts[i] for i in rng.permutation(len(texts))[:750]]
    mv = text_panel(state, half, budget=20_000, n_boot=0).metrics["rare_ngram_recall"]
    assert mv.value == pytest.approx(1.0, abs=0.06)
    assert mv.ci_low <= 1.0 <= mv.ci_high


def test_bootstrap_spread_matches_fresh_samples(zipf_ref):
    """The interval's implied SE tracks the spread of the metric over fresh generations
    (with-replacement resampling of texts would overstate distinct_4's by ~10x)."""
    _, state = zipf_ref
    rng = np.random.default_rng(17)
    vals, ses = {k: [] for k in ("distinct_1", "distinct_4")}, {k: [] for k in ("distinct_1", "distinct_4")}
    for rep in range(16):
        r = text_panel(state, zipf_texts(rng, 300), budget=4000, n_boot=40, seed=rep)
        for k in vals:
            vals[k].append(r.metrics[k].value)
            ses[k].append((r.metrics[k].ci_high - r.metrics[k].ci_low) / 3.92)
    for k in vals:
        ratio = np.mean(ses[k]) / np.std(vals[k], ddof=1)
        assert 0.4 < ratio < 2.5, (k, ratio)


def test_intervals_contain_point_and_are_bounded(zipf_ref):
    _, state = zipf_ref
    res = text_panel(state, zipf_texts(np.random.default_rng(4), 120), n_boot=40)
    for key, mv in res.metrics.items():
        assert mv.ci_low <= mv.value <= mv.ci_high, key
        assert mv.ci_low >= 0.0
    for n in (1, 2, 3, 4):
        assert res.metrics[f"distinct_{n}"].ci_high <= 1.0


def test_tiny_inputs_give_finite_values():
    state = build_text_state(["hello world again"])
    res = text_panel(state, ["hello"], n_boot=10)  # one token in total
    m = res.metrics
    assert m["distinct_1"].value == 1.0 and m["distinct_1"].n == 1
    for n in (2, 3, 4):
        assert (m[f"distinct_{n}"].value, m[f"distinct_{n}"].ci_low, m[f"distinct_{n}"].ci_high) == (0.0, 0.0, 1.0)
    assert m["ngram_entropy"].value == 0.0
    assert all(math.isfinite(v) for mv in m.values() for v in (mv.value, mv.ci_low, mv.ci_high))
    # a single text: no between-text information -> the whole range, not a false zero width
    one = text_panel(build_text_state(["a b c d e f"]), ["a b a b a b"], n_boot=10).metrics["distinct_1"]
    assert (one.ci_low, one.ci_high) == (0.0, 1.0)


def test_panel_input_errors():
    state = build_text_state(["a b"])
    with pytest.raises(InputError):
        text_panel(state, ["", "  "])
    with pytest.raises(InputError):
        text_panel(state, "a b")
    with pytest.raises(InputError):
        text_panel(state, ["a", 3])
    with pytest.raises(InputError):
        text_panel(object(), ["a"])
    for kw in ({"budget": 0}, {"n_boot": -1}, {"seed": 1.5}, {"seed": -1}, {"entropy_n": 0}, {"confidence": 1.0}):
        with pytest.raises(ConfigError):
            text_panel(state, ["a"], **kw)


# --------------------------------------------------------------------------- property


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ref=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8),
    gen=st.lists(st.text(max_size=40), min_size=1, max_size=8),
    budget=st.integers(1, 60),
)
def test_values_finite_and_bounded_for_any_unicode(ref, gen, budget):
    if not any(tokenize(t) for t in ref):
        with pytest.raises(InputError):
            build_text_state(ref)
        return
    state = build_text_state(ref, rare_orders=(1, 2))
    if not any(tokenize(t) for t in gen):
        with pytest.raises(InputError):
            text_panel(state, gen)
        return
    res = text_panel(state, gen, budget=budget, n_boot=5)
    b = min(budget, sum(len(tokenize(t)) for t in gen), state.total_tokens)
    for key, mv in res.metrics.items():
        assert all(math.isfinite(v) for v in (mv.value, mv.ci_low, mv.ci_high)), key
        assert 0.0 <= mv.ci_low <= mv.value <= mv.ci_high, key
        assert mv.n == b
    for n in (1, 2, 3, 4):
        assert res.metrics[f"distinct_{n}"].ci_high <= 1.0
    assert res.metrics["ngram_entropy"].value <= math.log(max(b, 1)) + 1e-9
    assert res.metrics["vocab_ratio"].value <= b
    assert res.items[RARE_ITEMS_KEY].dtype == bool and res.items[RARE_ITEMS_KEY].size == state.n_rare
    # the state survives the no-pickle round trip exactly
    assert TextRefState.from_arrays(state.to_arrays()).vocab == state.vocab


# --------------------------------------------------------------------------- other scripts and forms


def test_the_same_text_in_another_unicode_form_or_case_scores_the_same() -> None:
    """A generator whose detokeniser writes NFD (e + U+0301) or other case used to score half the
    rare-n-gram recall of the same text in NFC: a false early-collapse signal."""
    import unicodedata

    rng = np.random.default_rng(3)
    words = ["café", "naïve", "Straße", "résumé", "İstanbul", "mañana", "über", "fiancée", "señor", "crème"]
    words += [f"w{i}" for i in range(300)]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()

    def texts(n):
        return [" ".join(rng.choice(words, size=12, p=p)) for _ in range(n)]

    state = build_text_state(texts(400))
    gen = texts(200)
    base = text_panel(state, gen, n_boot=0).metrics
    for form in (
        [unicodedata.normalize("NFD", t) for t in gen],
        [t.upper() for t in gen],
        [unicodedata.normalize("NFKD", t).replace("ss", "ß") for t in gen],
    ):
        other = text_panel(state, form, n_boot=0).metrics
        assert {k: v.value for k, v in other.items()} == pytest.approx({k: v.value for k, v in base.items()})
    assert tokenize("cafe\u0301 nai\u0308ve") == ["café", "naïve"]  # marks stay inside the word
    assert tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # Indic vowel signs too


def test_scripts_without_spaces_are_measured_per_character() -> None:
    """A whole Chinese clause was one token: a collapse to 50 characters scored exactly the
    healthy text's metrics, and the rare n-grams were whole clauses."""
    rng = np.random.default_rng(5)
    chars = [chr(0x4E00 + i) for i in range(2000)]
    p = 1.0 / np.arange(1, 2001) ** 1.1
    p /= p.sum()

    def clauses(n, support):
        q = p[:support] / p[:support].sum()
        return ["".join(rng.choice(chars[:support], size=20, p=q)) + "。" for _ in range(n)]

    state = build_text_state(clauses(600, 2000))
    healthy = text_panel(state, clauses(300, 2000), n_boot=0).metrics
    collapsed = text_panel(state, clauses(300, 50), n_boot=0).metrics
    assert healthy["rare_ngram_recall"].value > 0.5
    assert collapsed["rare_ngram_recall"].value < 0.5 * healthy["rare_ngram_recall"].value
    assert collapsed["distinct_1"].value < 0.5 * healthy["distinct_1"].value
    assert tokenize("東京は日本の首都です。") == list("東京は日本の首都です。")
    assert tokenize("👨\u200d👩\u200d👧 ok 👍🏽!") == ["👨\u200d👩\u200d👧", "ok", "👍🏽", "!"]


def test_ascii_fast_path_gives_the_full_tokeniser_tokens() -> None:
    import string

    from collapse_monitor._tokenize import _pattern, normalize

    rnd = random.Random(0)
    for _ in range(500):
        t = "".join(rnd.choice(string.printable) for _ in range(80))
        assert tokenize(t) == _pattern().findall(normalize(t)), t


def test_a_failed_cache_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """On a full disk every check left another partial ``*.npz.tmp`` behind."""
    cache = ReferenceCache(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    for i in range(3):
        ref = Reference(texts=[f"text number {i} with words", "another text here"])
        get_text_state(ref, cache=cache)  # built in memory, the write fails quietly
    assert list(tmp_path.rglob("*.tmp")) == []


def _fixed_length_texts(rng: np.random.Generator, n: int, length: int, vocab: int, a: float) -> list[str]:
    p = 1.0 / np.arange(1, vocab + 1) ** a
    p /= p.sum()
    return [" ".join(f"w{t}" for t in row) for row in rng.choice(vocab, size=(n, length), p=p)]


def test_intervals_at_a_budget_over_half_the_texts_are_not_too_narrow():
    """Budget = every generated token (a generation under the budget): the spread of half-size
    subsamples was taken as the spread at the budget (a mean's 1/size rule), and distinct_4's
    95 % interval was 0.79 of the width its spread over fresh generations needs (coverage
    0.86, an audit; here the old code gives 0.92 / 0.97 / 0.85 and the new 1.16 / 1.33 / 1.03,
    on the safe side). The rate is now estimated from a second subsample size."""
    rng = np.random.default_rng(9)
    state = build_text_state(_fixed_length_texts(rng, 4000, 15, 3000, 1.1))
    vals, widths = [], []
    for r in range(60):
        m = text_panel(state, _fixed_length_texts(rng, 400, 15, 3000, 1.1), budget=6000, n_boot=100, seed=r).metrics
        vals.append([m[k].value for k in ("distinct_3", "distinct_4", "ngram_entropy")])
        widths.append([m[k].ci_high - m[k].ci_low for k in ("distinct_3", "distinct_4", "ngram_entropy")])
    ratio = np.mean(widths, axis=0) / (2 * stats.norm.ppf(0.975) * np.std(vals, axis=0, ddof=1))
    assert np.all(ratio > 0.92) and np.all(ratio < 1.6), ratio


def test_fewer_than_ten_texts_get_the_whole_range():
    """With 2 texts every subsample was one text or the other: zero-width intervals read a
    sample of the reference's own distribution as a collapse (p = 9e-53, an audit)."""
    rng = np.random.default_rng(4)
    state = build_text_state(_fixed_length_texts(rng, 500, 30, 400, 1.0))
    for n in (2, 9):
        m = text_panel(state, _fixed_length_texts(rng, n, 30, 400, 1.0), n_boot=50).metrics
        for k in ("distinct_1", "distinct_2", "distinct_3", "distinct_4"):
            assert (m[k].ci_low, m[k].ci_high) == (0.0, 1.0), (n, k)
        assert m["ngram_entropy"].ci_low == 0.0
    m = text_panel(state, _fixed_length_texts(rng, 10, 30, 400, 1.0), n_boot=50).metrics
    assert 0.0 < m["distinct_2"].ci_low < m["distinct_2"].value < m["distinct_2"].ci_high < 1.0


def test_invisible_format_characters_are_not_tokens() -> None:
    """Soft hyphens, zero-width spaces, BOMs and word joiners each became a token that split
    its word: a generation equal to the reference but for a soft hyphen in each word read
    rare_ngram_recall 0.0 (an audit). A flag was two tokens."""
    assert tokenize("co\u00adoperation") == ["cooperation"]
    assert tokenize("a\u200bb c") == ["a", "b", "c"]  # a zero-width space separates words
    assert tokenize("\ufeffhello\u2060world \u200fok") == ["helloworld", "ok"]
    assert tokenize("I \u2764\ufe0f \U0001f1eb\U0001f1f7!") == ["i", "\u2764", "\U0001f1eb\U0001f1f7", "!"]
    assert tokenize("\U0001f468\u200d\U0001f469\u200d\U0001f467") == ["\U0001f468\u200d\U0001f469\u200d\U0001f467"]
    rng = np.random.default_rng(3)
    ref = _fixed_length_texts(rng, 300, 20, 500, 1.0)
    state = build_text_state(ref)
    plain = text_panel(state, ref, n_boot=0).metrics
    shy = text_panel(state, [" ".join(w[:1] + "\u00ad" + w[1:] for w in t.split()) for t in ref], n_boot=0).metrics
    for k in ("rare_ngram_recall", "vocab_ratio", "distinct_2"):
        assert shy[k].value == pytest.approx(plain[k].value), k
