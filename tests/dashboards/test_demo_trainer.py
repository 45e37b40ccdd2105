"""docker/demo_trainer.py (the compose stack's trainer) against a real Pushgateway: it checks one
generation at a time, pushes every check, and a new run starts again from a baseline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _trainer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_trainer", REPO / "docker" / "demo_trainer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("demo_trainer", module)
    spec.loader.exec_module(module)
    return module


def test_trainer_pushes_each_generation_and_restarts_from_a_baseline(pushgateway: Any, tmp_path: Path) -> None:
    trainer = _trainer()
    pushed: list[float | None] = []

    def sleep(seconds: float) -> None:  # between generations: what the gateway holds now
        assert seconds == 0.0
        pushed.append(pushgateway.value("collapse_monitor_generation", monitor="demo-gaussian-replace"))

    reports = trainer.run(
        scenarios=["gaussian"],
        loops=["replace"],
        generations=3,
        interval=0.0,
        runs=2,
        pushgateway=pushgateway.url,
        tracking_uri=None,
        home=tmp_path / "monitors",
        sleep=sleep,
    )
    assert [r.generation for r in reports] == [0, 1, 2, 0, 1, 2]
    assert all(r.monitor == "demo-gaussian-replace" for r in reports)
    assert reports[0].is_baseline and reports[3].is_baseline
    assert all(not r.errors for r in reports), [r.errors for r in reports]
    assert pushed == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert pushgateway.value("collapse_monitor_generation", monitor="demo-gaussian-replace") == 2.0
    groups = [g["labels"] for g in pushgateway.groups()]
    assert groups == [{"job": "collapse_monitor", "monitor": "demo-gaussian-replace"}]


def test_trainer_needs_a_pushgateway(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer()
    monkeypatch.delenv("COLLAPSE_MONITOR_PUSHGATEWAY", raising=False)
    with pytest.raises(SystemExit, match="COLLAPSE_MONITOR_PUSHGATEWAY"):
        trainer.main()


def test_trainer_rejects_bad_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer()
    monkeypatch.setenv("DEMO_GENERATIONS", "many")
    with pytest.raises(SystemExit, match="DEMO_GENERATIONS"):
        trainer._env_int("DEMO_GENERATIONS", 12, 2)
    monkeypatch.setenv("DEMO_GENERATIONS", "1")
    with pytest.raises(SystemExit, match=">= 2"):
        trainer._env_int("DEMO_GENERATIONS", 12, 2)
