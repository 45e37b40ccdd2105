"""Deterministic data for monitor chains in the sink tests; loaded with ``runpy.run_path`` by
the tests and by subprocesses that play a later retrain process."""

from __future__ import annotations

import numpy as np

import collapse_monitor as cm

PRIORS = (0.45, 0.30, 0.15, 0.07, 0.03)


def chain_reference(seed: int = 0, m: int = 400, n: int = 300, d: int = 8) -> tuple[cm.Reference, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(PRIORS), size=m, p=PRIORS)
    emb = rng.normal(size=(n, d))
    return cm.Reference(labels=labels, embeddings=emb), labels


def chain_observation(
    labels: np.ndarray, generation: int, *, seed: int = 0, with_embeddings: bool = False
) -> cm.Observation:
    """Generation g forgets a growing share of the rarest class (early collapse by gen 2-3)."""
    rng = np.random.default_rng(seed + 100 + generation)
    preds = labels.copy()
    forget = (labels == len(PRIORS) - 1) & (rng.random(len(labels)) < min(0.95, 0.4 * generation))
    preds[forget] = 0
    emb = None
    if with_embeddings:
        emb = rng.normal(size=(200, 8)) * (1.0 - 0.2 * generation)
    return cm.Observation(
        predictions=preds,
        embeddings=emb,
        provenance=cm.Provenance(synthetic_fraction=min(1.0, 0.25 * generation), sources=("s3://corpus/human-v1",)),
    )
