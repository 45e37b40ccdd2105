"""Builders shared by the sink tests: hand-made reports and small synthetic chains."""

from __future__ import annotations

import itertools
import runpy
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import collapse_monitor as cm
from collapse_monitor.history import Baseline
from collapse_monitor.types import Alert, Finding, MetricValue, Report, Stage

_COUNTER = itertools.count()

# chain builders live in a plain file so a subprocess (a "new retrain process") can load them too
CHAINDATA = Path(__file__).with_name("chaindata.py")
_chain = runpy.run_path(str(CHAINDATA))
chain_reference = _chain["chain_reference"]
chain_observation = _chain["chain_observation"]


def unique(prefix: str) -> str:
    """A monitor name no other test uses (tests share one MLflow server and one Pushgateway)."""
    return f"{prefix}-{int(time.time() * 1000) % 10**8}-{next(_COUNTER)}"


def make_report(
    monitor: str,
    generation: int,
    *,
    stage: Stage = Stage.HEALTHY,
    tail: float = 0.8,
    synthetic_fraction: float | None = 0.5,
    created_at: float | None = None,
    alerts: tuple[Alert, ...] = (),
    declined: bool = False,
) -> Report:
    metrics = {
        "tail_coverage": MetricValue(tail, tail - 0.05, tail + 0.05, baseline=0.8, n=200),
        "accuracy": MetricValue(0.9, 0.87, 0.93, n=400),
        "class_recall.0": MetricValue(0.95, 0.9, 0.97, n=180),
        "class_recall.4": MetricValue(0.5, 0.3, 0.7, n=12),
        "class_recall.odd|label": MetricValue(0.6, 0.4, 0.8, n=8),
    }
    if synthetic_fraction is not None:
        metrics["synthetic_fraction"] = MetricValue(synthetic_fraction, synthetic_fraction, synthetic_fraction)
    findings: tuple[Finding, ...] = ()
    if declined:
        findings = (
            Finding(
                "tail_coverage",
                "tail",
                "baseline",
                tail,
                0.8,
                (tail - 0.8) / 0.8,
                1e-4,
                1e-3,
                True,
                "mcnemar-exact",
                tail - 0.05,
                tail + 0.05,
            ),
        )
    return Report(
        monitor=monitor,
        generation=generation,
        stage=stage,
        metrics=metrics,
        alerts=alerts,
        findings=findings,
        provenance=cm.Provenance(
            synthetic_fraction=synthetic_fraction,
            parent_run_id=f"parent-{generation}",
            sources=("s3://corpus/human-v1.parquet", f"generated-gen{generation}"),
            digest=f"d{generation:04d}",
        ),
        reference_fingerprint="f" * 16,
        created_at=time.time() if created_at is None else created_at,
        duration_seconds=0.25,
    )


def make_baseline(generation: int = 0, m: int = 400) -> Baseline:
    rng = np.random.default_rng(1)
    return Baseline(
        generation=generation,
        fingerprint="f" * 16,
        metrics={"tail_coverage": MetricValue(0.8, 0.75, 0.85, n=200), "accuracy": MetricValue(0.9, 0.87, 0.93)},
        items={"probe.correct": rng.random(m) < 0.9, "ref.covered": rng.random(50)},
        predictions=[int(v) for v in rng.integers(0, 5, size=m)],
    )


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


@pytest.fixture
def kit() -> SimpleNamespace:
    """The builders above, as one fixture (test modules do not import conftest)."""
    return SimpleNamespace(
        make_report=make_report,
        make_baseline=make_baseline,
        unique=unique,
        chain_reference=chain_reference,
        chain_observation=chain_observation,
        chaindata=CHAINDATA,
        wait_until=wait_until,
    )
