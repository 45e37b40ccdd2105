"""Shared pytest fixtures: real servers on loopback ports (see ``tests/servers.py``).

Fixtures (all servers bind 127.0.0.1 on a free port, with their own temp data dir):

``mlflow_server``            one ``mlflow server`` (sqlite store) per session, started on first use.
                             ``.url`` / ``.tracking_uri``, ``.client()``, ``.stop()``, ``.kill()``,
                             ``.start()`` (same port, same db). A test may stop or kill it; the
                             next test that asks for it gets it running again. Isolate by
                             experiment name, not by server.
``mlflow_server_factory``    ``factory(**MLflowServer kwargs) -> MLflowServer``: a private one.
``pushgateway``              one Pushgateway per session, wiped before each test. ``.address``
                             (for ``pushadd_to_gateway``), ``.url``, ``.value(name, **labels)``,
                             ``.samples(...)``, ``.metrics_text()``, ``.groups()``, ``.wipe()``.
``prometheus_server``        ``factory(targets=(), *, config_text=None, rule_files=(), rules_text=(),
                             alertmanagers=(), **prometheus_config kwargs) -> PrometheusServer``
                             with ``.query()``, ``.query_value()``, ``.wait_for()``, ``.targets()``,
                             ``.rules()``, ``.alerts()``, ``.reload()``.
``alertmanager_server``      ``factory(config_text=None, *, webhook_url=None, **webhook kwargs)
                             -> AlertmanagerServer`` with ``.status()``, ``.alerts()``,
                             ``.post_alerts()``, ``.wait_for_alerts()``, ``.reload()``.
``http_receiver``            a started :class:`servers.HttpReceiver` (records requests, answers as
                             programmed with ``.respond(...)``).
``http_receiver_factory``    ``factory(**HttpReceiver kwargs) -> HttpReceiver`` for several at once.
``promtool`` / ``amtool`` / ``chromium``   absolute paths of the binaries.
``in_tmp_dir``               chdir into ``tmp_path`` with ``MLFLOW_TRACKING_URI`` unset, so default
                             sinks and local stores write there and not into the repository.

A missing binary skips the test, except under ``CI=true`` where it fails it; under ``CI=true``
every other skip (``pytest.importorskip``, ``pytest.skip``) is reported as a failure too. Any test that uses
a server fixture is marked ``e2e`` automatically. When such a test fails, the tail of each
server's log is attached to the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import (
    AlertmanagerServer,
    HttpReceiver,
    ManagedProcess,
    MLflowServer,
    PrometheusServer,
    Pushgateway,
    alertmanager_webhook_config,
    in_ci,
    prometheus_config,
    require_binary,
)

# Loopback traffic never goes through a proxy the environment may define; plots render headless.
_no_proxy = {h for h in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if h}
_no_proxy |= {"127.0.0.1", "localhost"}
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(sorted(_no_proxy))
os.environ.setdefault("MPLBACKEND", "Agg")

SERVER_FIXTURES = frozenset(
    {
        "mlflow_server",
        "mlflow_server_factory",
        "pushgateway",
        "prometheus_server",
        "alertmanager_server",
        "http_receiver",
        "http_receiver_factory",
    }
)


class _Factory:
    """Starts servers on demand for one test and stops all of them at teardown."""

    def __init__(self, make: Callable[..., Any]) -> None:
        self._make = make
        self.started: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        server = self._make(len(self.started), *args, **kwargs)
        self.started.append(server)
        server.start()
        return server

    def close(self) -> None:
        for server in reversed(self.started):
            server.stop()


# --- binaries -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_binary("amtool")


@pytest.fixture(scope="session")
def chromium() -> str:
    return require_binary("chromium")


# --- MLflow -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _mlflow_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLflowServer]:
    require_binary("mlflow")
    server = MLflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(_mlflow_session_server: MLflowServer) -> MLflowServer:
    """The session's MLflow server, running (restarted if an earlier test stopped it)."""
    _mlflow_session_server.start()
    return _mlflow_session_server


@pytest.fixture
def mlflow_server_factory(tmp_path: Path) -> Iterator[_Factory]:
    require_binary("mlflow")
    factory = _Factory(lambda i, **kw: MLflowServer(tmp_path / f"mlflow-{i}", **kw))
    try:
        yield factory
    finally:
        factory.close()


# --- Pushgateway --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _pushgateway_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    require_binary("prometheus-pushgateway")
    server = Pushgateway(tmp_path_factory.mktemp("pushgateway"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pushgateway(_pushgateway_session_server: Pushgateway) -> Pushgateway:
    """The session's Pushgateway, running and empty."""
    _pushgateway_session_server.start()
    _pushgateway_session_server.wipe()
    return _pushgateway_session_server


# --- Prometheus / Alertmanager ------------------------------------------------------------------


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[_Factory]:
    """Factory: ``prometheus_server([pushgateway.address])`` -> a started PrometheusServer."""
    require_binary("prometheus")

    def make(
        i: int,
        targets: Any = (),
        *,
        config_text: str | None = None,
        rule_files: Any = (),
        rules_text: Any = (),
        alertmanagers: Any = (),
        port: int | None = None,
        **config_kwargs: Any,
    ) -> PrometheusServer:
        workdir = tmp_path / f"prometheus-{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        if isinstance(targets, str):
            targets = [targets]
        if isinstance(rules_text, str):
            rules_text = [rules_text]
        rule_paths = [str(p) for p in rule_files]
        for j, text in enumerate(rules_text):
            path = workdir / f"rules-{j}.yml"
            path.write_text(text)
            rule_paths.append(str(path))
        if config_text is None:
            config_text = prometheus_config(
                targets, rule_files=rule_paths, alertmanagers=alertmanagers, **config_kwargs
            )
        return PrometheusServer(workdir, config_text=config_text, port=port)

    factory = _Factory(make)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def alertmanager_server(tmp_path: Path) -> Iterator[_Factory]:
    """Factory: ``alertmanager_server(webhook_url=http_receiver.url)`` -> a started Alertmanager."""
    require_binary("prometheus-alertmanager")

    def make(
        i: int,
        config_text: str | None = None,
        *,
        webhook_url: str | None = None,
        port: int | None = None,
        **webhook_kwargs: Any,
    ) -> AlertmanagerServer:
        if config_text is None and webhook_url is not None:
            config_text = alertmanager_webhook_config(webhook_url, **webhook_kwargs)
        return AlertmanagerServer(tmp_path / f"alertmanager-{i}", config_text=config_text, port=port)

    factory = _Factory(make)
    try:
        yield factory
    finally:
        factory.close()


# --- HTTP receivers -----------------------------------------------------------------------------


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def http_receiver_factory() -> Iterator[_Factory]:
    factory = _Factory(lambda i, **kw: HttpReceiver(**kw))
    try:
        yield factory
    finally:
        factory.close()


# --- isolation ----------------------------------------------------------------------------------


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside ``tmp_path`` with MLflow's default tracking URI (``sqlite:///mlflow.db``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


# --- hooks --------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under ``CI=true`` a skip is a failure: a missing server, binary or optional package
    (``pytest.importorskip``) must break the build, not hide the tests that need it."""
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"CI=true and the test was skipped (skips are failures in CI): {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    _fail_skip_in_ci(report)  # a module-level importorskip
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    _fail_skip_in_ci(report)
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            servers = value.started if isinstance(value, _Factory) else [value]
            for server in servers:
                if isinstance(server, ManagedProcess):
                    report.sections.append((f"{name}: {server.name} log ({server.log_path})", server.log_tail(40)))
    return report
