"""A Zipfian bigram language model refit on its own truncated samples (Dohmatob et al. 2024,
"A Tale of Tails", arXiv 2402.07043).

World: ``vocab_size`` pseudo-word types (``"bako"``, ``"demu"``...) with Zipf unigram
weights ``rank^-exponent``; the true next-word distribution is the Zipf weights times an
affinity (x ``topic_boost`` within one of ``n_topics`` random topics), so text has bigram
structure. Sentences have 10-30 tokens.

Model: an interpolated bigram model (Jelinek-Mercer: ``(1-alpha)`` bigram MLE + ``alpha``
unigram MLE) fitted to the training sentences. A type absent from the training data has
probability 0 and never returns. Decoding truncates with ``top_p`` (nucleus) and/or
``top_k`` and may sharpen with ``temperature``: truncation cuts the tail at once, and under
``replace`` each generation cuts again, so the support, the tail's share of tokens and the
entropy shrink every generation (held-out perplexity rises with them). Measured (defaults, seed 0, distinct types in
the 1,000 observed sentences, generations 0/5/10): replace 1192/289/30; accumulate
1192/893/764 (the truncated synthetic sets still dilute the tail); fresh 1192/1041/1023;
stable about 1,210. With ``top_p=1`` the replace loop still loses types, slowly (1394 ->
842 in 10 generations), by sampling alone; accumulate and fresh stay near 1,390.

Observation: ``n_obs`` generated sentences; reference: ``n_ref`` human sentences of the true
model. Aggregate: ``perplexity`` of held-out human text under the model (untruncated, mixed
with 1e-4 uniform so unseen words stay finite; what teams watch) and ``generation_nll``
(mean per-token NLL of the generated text under the true model: lower looks "better").
Truth: ``support_types`` (types the model can still emit after truncation),
``obs_types`` (distinct types in the observation), ``tail_token_share`` (share of generated
tokens whose true rank is beyond 500).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError
from ..types import Reference
from ._stats import frechet_distance
from .base import GenerationResult, Scenario, TrainingSet, check_float, check_positive_int, digest, training_mix

__all__ = ["ZipfTextScenario", "pseudo_words"]

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def pseudo_words(n: int) -> list[str]:
    """``n`` distinct lower-case pseudo-words (consonant-vowel syllables), one token each.

    >>> pseudo_words(3)
    ['ba', 'be', 'bi']
    """
    syll = [c + v for c in _CONSONANTS for v in _VOWELS]
    out: list[str] = []
    length = 1
    while len(out) < n:
        idx = np.zeros(length, dtype=int)
        while len(out) < n:
            out.append("".join(syll[i] for i in idx))
            j = length - 1
            while j >= 0:
                idx[j] += 1
                if idx[j] < len(syll):
                    break
                idx[j] = 0
                j -= 1
            if j < 0:
                break
        length += 1
    return out


class ZipfTextScenario(Scenario):
    """Bigram LM on a Zipfian vocabulary, refit on its own (truncated) samples.

    Options: ``vocab_size=2000``, ``exponent=1.1``, ``n_topics=20``, ``topic_boost=5.0``,
    ``n_train=2000`` sentences per generation, ``n_obs=1000``, ``n_ref=2000``,
    ``n_heldout=500``, ``min_len=10``, ``max_len=30``, ``alpha=0.3``, ``top_p=0.95``,
    ``top_k=None``, ``temperature=1.0``, ``fresh_share=0.5``.
    """

    name = "zipf_text"

    def __init__(
        self,
        loop: str = "replace",
        seed: int = 0,
        *,
        vocab_size: int = 2000,
        exponent: float = 1.1,
        n_topics: int = 20,
        topic_boost: float = 5.0,
        n_train: int = 2000,
        n_obs: int = 1000,
        n_ref: int = 2000,
        n_heldout: int = 500,
        min_len: int = 10,
        max_len: int = 30,
        alpha: float = 0.3,
        top_p: float = 0.95,
        top_k: int | None = None,
        temperature: float = 1.0,
        world_seed: int = 0,
        fresh_share: float = 0.5,
    ) -> None:
        super().__init__(loop, seed, world_seed=world_seed, fresh_share=fresh_share)
        self.vocab_size = check_positive_int("vocab_size", vocab_size, 2)
        self.exponent = check_float("exponent", exponent, 0.0, 10.0)
        self.n_topics = check_positive_int("n_topics", n_topics)
        self.topic_boost = check_float("topic_boost", topic_boost, 0.0, 1e6, low_open=True)
        self.n_train = check_positive_int("n_train", n_train)
        # two texts at least: one has no Frechet distance (its covariance), so (a) read NaN
        self.n_obs = check_positive_int("n_obs", n_obs, 2)
        self.n_ref = check_positive_int("n_ref", n_ref, 2)
        self.n_heldout = check_positive_int("n_heldout", n_heldout)
        self.min_len = check_positive_int("min_len", min_len, 2)
        self.max_len = check_positive_int("max_len", max_len, 2)
        if self.max_len < self.min_len:
            raise ConfigError("max_len", f"must be >= min_len={self.min_len}, got {max_len}")
        self.alpha = check_float("alpha", alpha, 0.0, 1.0)
        self.top_p = check_float("top_p", top_p, 0.0, 1.0, low_open=True)
        self.top_k = None if top_k is None else check_positive_int("top_k", top_k)
        self.temperature = check_float("temperature", temperature, 0.0, 100.0, low_open=True)
        self._opts = {
            "vocab_size": self.vocab_size,
            "exponent": self.exponent,
            "n_topics": self.n_topics,
            "topic_boost": self.topic_boost,
            "n_train": self.n_train,
            "n_obs": self.n_obs,
            "n_ref": self.n_ref,
            "n_heldout": self.n_heldout,
            "min_len": self.min_len,
            "max_len": self.max_len,
            "alpha": self.alpha,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "temperature": self.temperature,
        }
        self.words = np.array(pseudo_words(self.vocab_size))
        self._ref_ids: list[np.ndarray] = []
        self._lsa: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._start, self._trans = self._true_model()

    # -- world -----------------------------------------------------------------------
    def _true_model(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng("world")
        v = self.vocab_size
        zipf = np.arange(1, v + 1, dtype=float) ** -self.exponent
        zipf /= zipf.sum()
        topic = rng.integers(self.n_topics, size=v)
        trans = np.where(topic[:, None] == topic[None, :], self.topic_boost, 1.0) * zipf[None, :]
        trans /= trans.sum(1, keepdims=True)
        return zipf, trans

    def _sample_ids(self, rng: np.random.Generator, start: np.ndarray, trans: np.ndarray, n: int) -> list[np.ndarray]:
        """``n`` sentences as arrays of type ids (rank order: id 0 is the most frequent)."""
        if n == 0:
            return []
        lengths = rng.integers(self.min_len, self.max_len + 1, size=n)
        v = self.vocab_size
        # one sorted array for all rows: row r's cumulative probabilities shifted by r, so a
        # draw from row r is a binary search for r + u (exact row ends: r + 1.0)
        cum = np.cumsum(np.vstack([start[None, :], trans]), axis=1)
        cum /= cum[:, -1:]
        cum[:, -1] = 1.0
        flat = (cum + np.arange(v + 1, dtype=float)[:, None]).ravel()
        ids = np.empty((n, self.max_len), dtype=np.int64)
        row = np.zeros(n, dtype=np.int64)  # row 0 = start distribution, row 1 + i = after type i
        for j in range(self.max_len):
            pos = np.searchsorted(flat, row + rng.random(n), side="right")
            ids[:, j] = np.minimum(pos - row * v, v - 1)
            row = ids[:, j] + 1
        return [ids[i, : lengths[i]] for i in range(n)]

    def _texts(self, sentences: list[np.ndarray]) -> list[str]:
        return [" ".join(self.words[s]) for s in sentences]

    def _build_reference(self) -> Reference:
        ref = self._sample_ids(self._rng("reference"), self._start, self._trans, self.n_ref)
        self._ref_ids = ref
        return Reference(texts=self._texts(ref), name="zipf_text:human")

    # -- a fixed sentence embedding for the aggregate Frechet distance --------------------
    _LSA_DIM = 32

    def _counts(self, sentences: list[np.ndarray]) -> np.ndarray:
        v = self.vocab_size
        rows = np.repeat(np.arange(len(sentences)), [len(s) for s in sentences])
        flat = np.bincount(rows * v + np.concatenate(sentences), minlength=len(sentences) * v)
        return flat.reshape(len(sentences), v).astype(float)

    def _lsa_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TF-IDF + truncated SVD (latent semantic analysis, Deerwester et al. 1990) fitted once
        on the reference sentences: the sentence embedding of the aggregate Frechet distance."""
        if self._lsa is None:
            _ = self.reference
            c = self._counts(self._ref_ids)
            idf = np.log((1 + len(c)) / (1 + (c > 0).sum(0))) + 1.0
            x = c * idf
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            mean = x.mean(0)
            _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
            self._lsa = (idf, mean, vt[: self._LSA_DIM].T)
        return self._lsa

    def _embed(self, sentences: list[np.ndarray]) -> np.ndarray:
        idf, mean, proj = self._lsa_map()
        x = self._counts(sentences) * idf
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return (x - mean) @ proj

    # -- model -----------------------------------------------------------------------
    def _fit(self, sentences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        v = self.vocab_size
        tokens = np.concatenate(sentences)
        uni = np.bincount(tokens, minlength=v).astype(float)
        uni /= uni.sum()
        prev = np.concatenate([s[:-1] for s in sentences])
        nxt = np.concatenate([s[1:] for s in sentences])
        counts = np.bincount(prev * v + nxt, minlength=v * v).astype(float).reshape(v, v)
        rows = counts.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            big = np.where(rows > 0, counts / rows, uni[None, :])
        trans = (1 - self.alpha) * big + self.alpha * uni[None, :]
        return uni, trans

    def _decode(self, p: np.ndarray) -> np.ndarray:
        """Apply temperature, top-k and top-p to each row of ``p`` (1-D or 2-D)."""
        p = np.atleast_2d(p).astype(float)
        if self.temperature != 1.0:
            with np.errstate(divide="ignore", over="ignore"):
                logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)) / self.temperature, -np.inf)
                p = np.exp(logp)
            sums = p.sum(1)
            bad = ~np.isfinite(sums) | (sums <= 0)
            if bad.any():  # a low temperature underflowed (or overflowed) a row: the same row,
                # scaled by its largest entry first (exact rows are unchanged, so seeds still agree)
                p[bad] = np.exp(logp[bad] - logp[bad].max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
        if self.top_k is None and self.top_p >= 1.0:
            return p
        order = np.argsort(-p, axis=1, kind="stable")
        sp = np.take_along_axis(p, order, axis=1)
        keep = np.ones_like(sp, dtype=bool)
        if self.top_k is not None:
            keep[:, self.top_k :] = False
        if self.top_p < 1.0:
            before = np.cumsum(sp, axis=1) - sp  # mass strictly before this token
            keep &= before < self.top_p - 1e-12
        out = np.zeros_like(p)
        np.put_along_axis(out, order, np.where(keep, sp, 0.0), axis=1)
        return out / out.sum(1, keepdims=True)

    def _nll(self, sentences: list[np.ndarray], start: np.ndarray, trans: np.ndarray, eps: float = 0.0) -> float:
        v = self.vocab_size
        first = np.array([s[0] for s in sentences])
        prev = np.concatenate([s[:-1] for s in sentences])
        nxt = np.concatenate([s[1:] for s in sentences])
        p = np.concatenate([start[first], trans[prev, nxt]])
        p = (1 - eps) * p + eps / v
        return float(-np.log(p).mean())

    # -- chain -----------------------------------------------------------------------
    def _chain(self) -> Iterator[GenerationResult]:
        rng = self._rng("chain")
        heldout = self._sample_ids(
            np.random.default_rng([self.world_seed, self.seed + 1, 77]), self._start, self._trans, self.n_heldout
        )
        human0 = self._sample_ids(self._rng("human0"), self._start, self._trans, self.n_train)
        _ = self.reference  # builds the reference sentences the embedding is fitted on
        ref_emb = self._embed(self._ref_ids)
        train = TrainingSet()
        start, trans = self._start, self._trans  # replaced by the generation-0 fit
        t = 0
        while True:
            mix = training_mix(self.loop, t, self.n_train, self.fresh_share)
            new = TrainingSet()
            if t == 0:
                new.add(human0, self.n_train, False, self._human_source(0))
            else:
                new.add(
                    self._sample_ids(rng, self._start, self._trans, mix.n_real),
                    mix.n_real,
                    False,
                    self._human_source(t),
                )
                synth = self._sample_ids(rng, start, trans, mix.n_synthetic)
                new.add(synth, mix.n_synthetic, True, self._source(t - 1))
            train = train if mix.keep_previous else TrainingSet()
            train.extend(new)
            sentences = [s for part in train.parts() for s in part]
            uni, model_trans = self._fit(sentences)
            start = self._decode(uni)[0]
            trans = self._decode(model_trans)
            obs = self._sample_ids(self._observation_rng(t), start, trans, self.n_obs)
            obs_tokens = np.concatenate(obs)
            support = int(((start > 0) | (trans[uni > 0] > 0).any(0)).sum())
            yield GenerationResult(
                generation=t,
                observation=self._observation(t, train, digest(np.concatenate(sentences)), texts=self._texts(obs)),
                aggregate={
                    "perplexity": float(np.exp(self._nll(heldout, uni, model_trans, eps=1e-4))),
                    "generation_nll": self._nll(obs, self._start, self._trans),
                    "frechet_distance": frechet_distance(ref_emb, self._embed(obs)),
                },
                truth={
                    "support_types": float(support),
                    "obs_types": float(len(np.unique(obs_tokens))),
                    "tail_token_share": float((obs_tokens >= 500).mean()),
                },
                train_size=train.size,
            )
            t += 1
