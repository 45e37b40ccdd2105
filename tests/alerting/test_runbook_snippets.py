"""The runbook's Python snippets run as written against a real MLflow store (sqlite) that a
monitor wrote: the chain's history in generation order, a generation checked again read once
(its newest check), and the rollback query finds the last healthy generation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import collapse_monitor as cm

RUNBOOK = Path(__file__).resolve().parents[2] / "integrations" / "runbook.md"
LABELS = np.repeat(np.arange(4), [300, 200, 100, 40])
RARE = np.flatnonzero(LABELS == 3)


def _preds(rare_right: int) -> np.ndarray:
    p = LABELS.copy()
    p[RARE[rare_right:]] = 0
    return p


def _snippets() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", RUNBOOK.read_text(), re.S)
    return ["\n".join(line[3:] if line.startswith("   ") else line for line in b.splitlines()) for b in blocks]


def test_the_runbook_queries_read_the_chain_a_monitor_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 4))
    mon = cm.CollapseMonitor(
        "digits-generator",
        reference=cm.Reference(embeddings=rng.normal(size=(300, 4)), labels=LABELS),
        sinks=[cm.MLflowSink(uri, evidently=False)],
        home=tmp_path / "home",
    )

    def obs(right: int, share: float, **kw: object) -> cm.Observation:
        return cm.Observation(
            embeddings=emb, predictions=_preds(right), provenance=cm.Provenance(synthetic_fraction=share), **kw
        )

    for right, share in ((40, 0.0), (39, 0.5), (38, 0.7)):
        assert mon.check(obs(right, share)).stage is cm.Stage.HEALTHY
    # generation 2 checked again (a retried job): now collapsed, the first check superseded
    assert mon.check(obs(5, 0.9, generation=2)).stage is not cm.Stage.HEALTHY
    mon.flush()
    mlflow.set_tracking_uri(uri)
    try:
        history, rollback = _snippets()[:2]
        ns: dict = {}
        exec(history, ns)
        runs = ns["runs"]
        assert runs["generation"].tolist() == [0, 1, 2]  # one row per generation, in order
        assert runs["tags.collapse.stage"].tolist()[-1] != "healthy"  # generation 2's newest check
        ns = {}
        exec(rollback.split("# the model version")[0], ns)  # the registry part needs a registered model
        assert int(ns["healthy"]["generation"]) == 1
    finally:
        mlflow.set_tracking_uri(None)  # MLflow keeps it process-wide: later tests read their own
