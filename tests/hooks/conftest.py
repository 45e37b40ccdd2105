"""Every hooks test runs inside its own ``tmp_path``: trainers (``lightning_logs/``, HF
``output_dir`` defaults) and MLflow's default artifact root (``./mlruns`` next to a sqlite store
given by an absolute path) write relative to the working directory, never into the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
