"""Fixtures for the alerting tests: alert/report factories, a fast retry policy, a controllable
clock, the message-completeness check and an independent Standard Webhooks verifier.

Real servers (HTTP receivers, Alertmanager, promtool/amtool) come from ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from collapse_monitor.alerting import RetryPolicy
from collapse_monitor.types import Alert, Finding, MetricValue, Provenance, Report, Stage

MONITOR = "digits-generator"
LINKS = {
    "mlflow_run": "http://127.0.0.1:5000/#/experiments/1/runs/0123abcd",
    "dashboard": "http://127.0.0.1:3000/d/collapse-monitor-overview?var-monitor=digits-generator",
    "runbook": "https://example.invalid/collapse-monitor/runbook.md#early-collapse",
}
DETAIL = {
    "key": "tail_coverage",
    "value": 0.41,
    "baseline": 0.61,
    "ci_low": 0.38,
    "ci_high": 0.45,
    "relative_change": -0.328,
    "q_value": 0.0012,
}


@pytest.fixture
def make_alert() -> Callable[..., Alert]:
    def make(
        status: str = "firing",
        severity: str = "warning",
        stage: Stage = Stage.EARLY_COLLAPSE,
        rule: str = "early_collapse",
        monitor: str = MONITOR,
        **kw: Any,
    ) -> Alert:
        kw.setdefault("generation", 3)
        kw.setdefault("summary", f"{monitor}: early collapse at generation {kw['generation']} - tail_coverage -33%")
        kw.setdefault("details", (DETAIL,) if status == "firing" else ())
        kw.setdefault("synthetic_fraction", 0.6)
        kw.setdefault("links", LINKS)
        return Alert(monitor=monitor, rule=rule, status=status, severity=severity, stage=stage, **kw)

    return make


@pytest.fixture
def make_report(make_alert: Callable[..., Alert]) -> Callable[..., Report]:
    def make(**kw: Any) -> Report:
        finding = Finding(
            key="tail_coverage", family="tail", kind="baseline", value=0.41, baseline=0.61,
            relative_change=-0.328, p_value=0.0001, q_value=0.0012, significant=True, test="mcnemar-exact",
            ci_low=0.38, ci_high=0.45,
        )  # fmt: skip
        kw.setdefault(
            "provenance", Provenance(synthetic_fraction=0.6, parent_run_id="run-2", sources=["s3://bucket/gen2"])
        )
        return Report(
            monitor=MONITOR,
            generation=3,
            stage=Stage.EARLY_COLLAPSE,
            metrics={"tail_coverage": MetricValue(0.41, 0.38, 0.45, baseline=0.61)},
            findings=(finding,),
            run_id="0123abcd",
            **kw,
        )

    return make


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """Millisecond backoff so retry tests run in well under a second."""
    return RetryPolicy(base_seconds=0.01, cap_seconds=0.05, max_attempts=10)


class FakeClock:
    """A wall clock the test moves by hand (``clock.advance(3600)``)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def assert_complete_message() -> Callable[[str], None]:
    """Every message says: monitor, stage, severity, what fell by how much with its interval,
    the generation, the synthetic share and the links."""

    def check(text: str) -> None:
        for needle in (
            MONITOR,
            "early collapse",
            "warning",
            "tail_coverage",
            "0.41",  # value
            "0.38",  # interval
            "0.45",
            "0.61",  # baseline
            "-32.8%",  # by how much
            "generation 3",
            "60%",  # synthetic share
            LINKS["mlflow_run"],
            LINKS["dashboard"],
            LINKS["runbook"],
        ):
            assert needle in text, f"{needle!r} missing from message: {text[:2000]}"

    return check


def standard_webhooks_verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None, tolerance: int = 300
) -> bool:
    """Independent verifier written from the Standard Webhooks spec (not the library's code):
    the key is base64 of the part after ``whsec_``; signed content ``{id}.{timestamp}.{body}``;
    ``webhook-signature`` is a space-separated list of ``v1,<base64 HMAC-SHA256>``; the
    timestamp must be within ``tolerance`` seconds."""
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = hmac.new(key, f"{msg_id}.{timestamp}.{body.decode()}".encode(), hashlib.sha256).digest()
    for part in headers["webhook-signature"].split(" "):
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(sig), expected):
            return True
    return False


@pytest.fixture
def webhook_verifier() -> Callable[..., bool]:
    return standard_webhooks_verify
