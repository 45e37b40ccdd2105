"""Fixtures of the reliability suite (helpers live in ``relkit.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reliability.relkit import FaultProxy


@pytest.fixture
def fault_proxy(mlflow_server) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the session's real MLflow tracking server."""
    with FaultProxy(mlflow_server.url) as proxy:
        yield proxy
