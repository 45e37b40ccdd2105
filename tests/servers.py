"""Real servers for integration tests: MLflow, Prometheus, Pushgateway, Alertmanager, HTTP receivers.

Every server is a real process (or, for :class:`HttpReceiver`, a real threaded HTTP server in this
process) bound to a free port on 127.0.0.1 with its own data directory. Each class is a context
manager and needs no pytest; the pytest fixtures in ``tests/conftest.py`` wrap them.

    with MLflowServer(tmp_path / "mlflow") as mlflow_srv:
        client = mlflow_srv.client()            # MlflowClient(tracking_uri=mlflow_srv.url)
        mlflow_srv.kill()                       # crash it mid-chain (SIGKILL)
        mlflow_srv.start()                      # same port, same sqlite db

    with Pushgateway(tmp_path / "pgw") as pgw, PrometheusServer(
        tmp_path / "prom", config_text=prometheus_config([pgw.address])
    ) as prom:
        ...
        prom.wait_for('collapse_monitor_stage{monitor="m"} == 2')

Processes run in their own session (process group) and are always killed on ``stop()``, at
context exit, and at interpreter exit. stdout/stderr go to ``<workdir>/<name>.log``; a server that
does not become ready raises :class:`ServerStartError` with the command and the log tail.

Binaries come from PATH (``prometheus``, ``promtool``, ``prometheus-pushgateway``,
``prometheus-alertmanager``, ``amtool``, ``chromium``) and, for ``mlflow``, from the running
interpreter's environment first. A missing one raises :class:`BinaryNotFound`;
:func:`require_binary` turns that into ``pytest.fail`` under ``CI=true`` and ``pytest.skip``
elsewhere.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import requests
import yaml

LOOPBACK = "127.0.0.1"

#: binaries the integration tests need, and the Debian package that provides each
BINARY_PACKAGES: dict[str, str] = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-pushgateway": "prometheus-pushgateway",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "chromium": "chromium",
    "mlflow": "mlflow (pip, in .venv)",
}


# --- binaries -----------------------------------------------------------------------------------


class BinaryNotFound(RuntimeError):
    """A server or tool binary is not installed."""

    def __init__(self, name: str) -> None:
        self.name = name
        package = BINARY_PACKAGES.get(name, name)
        fix = "`make venv-dev`" if name == "mlflow" else "`make servers` (apt-get install " + package + ")"
        super().__init__(f"{name!r} not found beside {sys.executable} or on PATH; provided by {package}: run {fix}")


def find_binary(name: str) -> str | None:
    """Path of ``name``: next to the running interpreter first (venv console scripts), then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which(name)


def binary(name: str) -> str:
    """Path of ``name`` or :class:`BinaryNotFound`."""
    path = find_binary(name)
    if path is None:
        raise BinaryNotFound(name)
    return path


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_binary(name: str) -> str:
    """Path of ``name``; when missing: ``pytest.fail`` under ``CI=true``, else ``pytest.skip``."""
    import pytest

    path = find_binary(name)
    if path is None:
        message = str(BinaryNotFound(name))
        if in_ci():
            pytest.fail(f"CI=true and a required binary is missing: {message}", pytrace=False)
        pytest.skip(message)
    return path


def run_tool(name: str, *args: str | os.PathLike[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` / ``amtool`` / ... and capture text output (no check: read ``returncode``)."""
    return subprocess.run(
        [binary(name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- networking helpers -------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def run_ranks(commands: list[list[str]], timeout: float = 180) -> list[str]:
    """Run one process per rank of a gloo job (``OMP_NUM_THREADS=1``, this interpreter's
    ``sys.path``, no launcher's ``RANK``/``WORLD_SIZE``), wait for all of them, and return their
    output. A hang kills every rank and fails the test; a non-zero exit fails it with the logs."""
    import pytest

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for cmd in commands
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("distributed workers hung")
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(logs)[-4000:]
    return logs


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never route loopback traffic through a proxy from the environment
    return session


# --- managed processes --------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    """A server process exited or did not answer its readiness probe in time."""


_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for proc in leftovers:
        with contextlib.suppress(Exception):
            proc.kill()


class ManagedProcess:
    """A server process on ``127.0.0.1:<port>`` with its own working directory.

    Subclasses give the command line and a readiness probe. ``start()`` / ``stop()`` can be
    called repeatedly; after the first successful start the port is fixed, so a restarted server
    comes back at the same URL with the same data directory.
    """

    name: ClassVar[str] = "server"
    startup_timeout: float = 60.0
    stop_timeout: float = 15.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        port: int | None = None,
        startup_timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._port_pinned = port is not None
        self.port = port if port is not None else free_port()
        if startup_timeout is not None:
            self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0  # successful starts, for tests of restarts

    # subclass API ------------------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_path(self) -> str:
        return "/-/ready"

    def is_ready(self) -> bool:
        try:
            response = _http().get(self.url + self.ready_path(), timeout=2)
        except requests.RequestException:
            return False
        return response.status_code == 200

    # addresses ---------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` (what prometheus_client's push functions and scrape targets take)."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, no trailing slash."""
        return f"http://{self.address}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        """Start and wait until ready (no-op when already running). Returns self."""
        if self.running:
            return self
        attempts = 1 if (self._port_pinned or self.starts) else 3
        for attempt in range(attempts):
            try:
                self._start_once()
            except ServerStartError as exc:
                port_clash = "address already in use" in self.log_tail().lower()
                if port_clash and attempt + 1 < attempts:
                    self.port = free_port()  # lost a race for the port: try another one
                    continue
                raise exc from None
            break
        self._port_pinned = True
        self.starts += 1
        return self

    def _start_once(self) -> None:
        cmd = self.command()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # own process group: stop() takes workers down too
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._reap(wait_for_port=False)
                raise ServerStartError(self._failure_message(f"exited with code {code} before it was ready", cmd))
            if self.is_ready():
                return
            time.sleep(0.2)
        self.kill()
        raise ServerStartError(self._failure_message(f"not ready after {self.startup_timeout:.0f} s", cmd))

    def _failure_message(self, what: str, cmd: Sequence[str]) -> str:
        return (
            f"{self.name} on {self.address} {what}\ncommand: {' '.join(cmd)}\n"
            f"log: {self.log_path}\n--- log tail ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop (SIGTERM to the process group, SIGKILL after ``timeout``)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait(timeout=10)
        self._signal(signal.SIGKILL)  # stray children of the group (workers)
        self._reap()

    def kill(self) -> None:
        """Crash the server: SIGKILL to the whole process group, no shutdown hooks."""
        if self._proc is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        self._reap()

    def restart(self) -> ManagedProcess:
        self.stop()
        return self.start()

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _reap(self, *, wait_for_port: bool = True) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if not wait_for_port:
            return
        # wait until the listening socket is gone so that a restart can bind the same port
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    # logs --------------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # context manager ---------------------------------------------------------------------------
    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.url} {state} workdir={self.workdir}>"


# --- MLflow -------------------------------------------------------------------------------------


class MLflowServer(ManagedProcess):
    """``mlflow server`` with a sqlite backend store in ``workdir``.

    Artifacts are proxied by the server (``--serve-artifacts --artifacts-destination
    <workdir>/artifacts``), so clients upload and download over HTTP as against a remote server;
    ``proxy_artifacts=False`` uses ``--default-artifact-root <workdir>/artifacts`` instead (the
    client writes the directory itself).
    """

    name = "mlflow"
    startup_timeout = 120.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        port: int | None = None,
        proxy_artifacts: bool = True,
        workers: int = 1,
        startup_timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.executable = binary("mlflow")
        super().__init__(workdir, port=port, startup_timeout=startup_timeout, env=env)
        self.db_path = self.workdir / "mlflow.db"
        self.artifacts_dir = self.workdir / "artifacts"
        self.proxy_artifacts = proxy_artifacts
        self.workers = workers

    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def tracking_uri(self) -> str:
        return self.url

    def command(self) -> list[str]:
        cmd = [
            self.executable,
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        if self.proxy_artifacts:
            cmd += ["--serve-artifacts", "--artifacts-destination", str(self.artifacts_dir)]
        else:
            cmd += ["--no-serve-artifacts", "--default-artifact-root", str(self.artifacts_dir)]
        return cmd

    def is_ready(self) -> bool:
        # /health answers before the store is usable; a store query proves the schema exists.
        try:
            response = _http().get(
                self.url + "/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=5
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    def client(self) -> Any:
        """An ``mlflow.MlflowClient`` bound to this server."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url)


# --- Pushgateway --------------------------------------------------------------------------------


class Pushgateway(ManagedProcess):
    """``prometheus-pushgateway`` with a persistence file and the admin API (for ``wipe()``)."""

    name = "pushgateway"

    def __init__(self, workdir: str | os.PathLike[str], **kwargs: Any) -> None:
        self.executable = binary("prometheus-pushgateway")
        super().__init__(workdir, **kwargs)
        self.persistence_file = self.workdir / "pushgateway.data"

    def command(self) -> list[str]:
        return [
            self.executable,
            f"--web.listen-address={self.address}",
            f"--persistence.file={self.persistence_file}",
            "--persistence.interval=1s",
            "--web.enable-admin-api",
            "--log.level=info",
        ]

    def metrics_text(self) -> str:
        """The exposition text Prometheus would scrape from ``/metrics``."""
        response = _http().get(self.url + "/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """``(labels, value)`` of every sample named ``name`` whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        found = []
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    found.append((dict(sample.labels), float(sample.value)))
        return found

    def value(self, name: str, **labels: str) -> float | None:
        """The single sample ``name{labels}``; None when absent; AssertionError when ambiguous."""
        found = self.samples(name, **labels)
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples: {found}"
        return found[0][1] if found else None

    def groups(self) -> list[dict[str, Any]]:
        """``/api/v1/metrics``: one entry per group with its labels and metric families."""
        response = _http().get(self.url + "/api/v1/metrics", timeout=10)
        response.raise_for_status()
        return list(response.json()["data"])

    def wipe(self) -> None:
        """Delete every group (admin API)."""
        _http().put(self.url + "/api/v1/admin/wipe", timeout=10).raise_for_status()


# --- Prometheus ---------------------------------------------------------------------------------


def prometheus_config(
    targets: Iterable[str] = (),
    *,
    job: str = "collapse-monitor",
    honor_labels: bool = True,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    metrics_path: str = "/metrics",
    rule_files: Iterable[str | os.PathLike[str]] = (),
    alertmanagers: Iterable[str] = (),
) -> str:
    """prometheus.yml text that scrapes ``targets`` (``host:port``) every ``scrape_interval``.

    ``honor_labels: true`` keeps the ``job``/``instance`` labels a Pushgateway group carries;
    ``alertmanagers`` are ``host:port`` of Alertmanagers that receive the rules' alerts.
    """
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "scrape_configs": [],
    }
    target_list = list(targets)
    if target_list:
        config["scrape_configs"].append(
            {
                "job_name": job,
                "honor_labels": honor_labels,
                "metrics_path": metrics_path,
                "static_configs": [{"targets": target_list}],
            }
        )
    rules = [str(path) for path in rule_files]
    if rules:
        config["rule_files"] = rules
    managers = list(alertmanagers)
    if managers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": managers}]}]}
    return yaml.safe_dump(config, sort_keys=False)


class PromQLError(RuntimeError):
    """The Prometheus HTTP API answered a query with an error."""


class PrometheusServer(ManagedProcess):
    """``prometheus`` with ``config_text`` written to ``<workdir>/prometheus.yml``.

    The lifecycle API is on, so ``reload(new_config_text)`` applies a new config in place.
    """

    name = "prometheus"

    def __init__(self, workdir: str | os.PathLike[str], *, config_text: str | None = None, **kwargs: Any) -> None:
        self.executable = binary("prometheus")
        super().__init__(workdir, **kwargs)
        self.config_path = self.workdir / "prometheus.yml"
        self.data_dir = self.workdir / "data"
        self.write_config(config_text if config_text is not None else prometheus_config())

    def write_config(self, config_text: str) -> Path:
        self.config_path.write_text(config_text)
        return self.config_path

    def write_file(self, name: str, text: str) -> Path:
        """Write a file (e.g. a rule file) into the working directory; returns its path."""
        path = self.workdir / name
        path.write_text(text)
        return path

    def command(self) -> list[str]:
        return [
            self.executable,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]

    def reload(self, config_text: str | None = None) -> None:
        """Write ``config_text`` (when given) and make the running server load it."""
        if config_text is not None:
            self.write_config(config_text)
        _http().post(self.url + "/-/reload", timeout=30).raise_for_status()

    def _api(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = _http().get(self.url + "/api/v1/" + path, params=params, timeout=30)
        try:
            payload = response.json()
        except ValueError:
            response.raise_for_status()
            raise
        if payload.get("status") != "success":
            raise PromQLError(f"{path} {dict(params or {})}: {payload.get('errorType')}: {payload.get('error')}")
        return payload["data"]

    def query(self, promql: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list (``[{"metric": {...}, "value": [ts, "v"]}, ...]``)."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        data = self._api("query", params)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_value(self, promql: str) -> float | None:
        """Value of a query that returns at most one series; None when it returns none."""
        result = self.query(promql)
        assert len(result) <= 1, f"{promql!r} returned {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_for(
        self,
        promql: str,
        timeout: float = 30.0,
        *,
        predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
        interval: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns a non-empty result (that satisfies ``predicate``).

        Raises AssertionError with the last result and the scrape targets' health on timeout.
        """
        check = predicate or bool
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] | str = []
        while True:
            try:
                last = self.query(promql)
                if check(last):
                    return last
            except (PromQLError, requests.RequestException) as exc:
                last = f"error: {exc}"
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        targets = [(t.get("scrapeUrl"), t.get("health"), t.get("lastError")) for t in self.targets()]
        raise AssertionError(f"{promql!r} not satisfied within {timeout} s; last result: {last}; targets: {targets}")

    def targets(self) -> list[dict[str, Any]]:
        return list(self._api("targets", {"state": "active"})["activeTargets"])

    def wait_for_targets_up(self, timeout: float = 30.0) -> None:
        self.wait_for("up", timeout, predicate=lambda r: bool(r) and all(s["value"][1] == "1" for s in r))

    def rules(self) -> list[dict[str, Any]]:
        return list(self._api("rules")["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._api("alerts")["alerts"])


# --- Alertmanager -------------------------------------------------------------------------------

DEFAULT_ALERTMANAGER_CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


def alertmanager_webhook_config(
    url: str,
    *,
    receiver: str = "webhook",
    group_by: Sequence[str] = ("alertname", "monitor"),
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
    send_resolved: bool = True,
    resolve_timeout: str = "5m",
) -> str:
    """alertmanager.yml text that sends every alert to the webhook ``url`` (payload version 4)."""
    config = {
        "global": {"resolve_timeout": resolve_timeout},
        "route": {
            "receiver": receiver,
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [{"name": receiver, "webhook_configs": [{"url": url, "send_resolved": send_resolved}]}],
    }
    return yaml.safe_dump(config, sort_keys=False)


class AlertmanagerServer(ManagedProcess):
    """``prometheus-alertmanager`` with clustering disabled and ``config_text`` as its config."""

    name = "alertmanager"

    def __init__(self, workdir: str | os.PathLike[str], *, config_text: str | None = None, **kwargs: Any) -> None:
        self.executable = binary("prometheus-alertmanager")
        super().__init__(workdir, **kwargs)
        self.config_path = self.workdir / "alertmanager.yml"
        self.data_dir = self.workdir / "data"
        self.write_config(config_text if config_text is not None else DEFAULT_ALERTMANAGER_CONFIG)

    def write_config(self, config_text: str) -> Path:
        self.config_path.write_text(config_text)
        return self.config_path

    def command(self) -> list[str]:
        return [
            self.executable,
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_dir}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",  # no gossip port, no peers
            "--log.level=info",
        ]

    def reload(self, config_text: str | None = None) -> None:
        if config_text is not None:
            self.write_config(config_text)
        _http().post(self.url + "/-/reload", timeout=30).raise_for_status()

    def status(self) -> dict[str, Any]:
        response = _http().get(self.url + "/api/v2/status", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def alerts(self, *, active: bool = True, silenced: bool = True, inhibited: bool = True) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds (``GET /api/v2/alerts``)."""
        params = {"active": str(active).lower(), "silenced": str(silenced).lower(), "inhibited": str(inhibited).lower()}
        response = _http().get(self.url + "/api/v2/alerts", params=params, timeout=10)
        response.raise_for_status()
        return list(response.json())

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts`` (what a client that pages Alertmanager directly does)."""
        _http().post(self.url + "/api/v2/alerts", json=list(alerts), timeout=10).raise_for_status()

    def wait_for_alerts(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            current = self.alerts()
            if predicate(current):
                return current
            if time.monotonic() >= deadline:
                raise AssertionError(f"alertmanager alerts not as expected within {timeout} s: {current}")
            time.sleep(0.25)


# --- HTTP receiver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request the receiver got. Header names are lower-case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass(frozen=True)
class Response:
    """A programmed answer: status, headers, body (bytes, str, or JSON-able), optional delay.

    ``drop=True`` closes the connection without any response (a network failure).
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | list[Any] = b""
    delay: float = 0.0
    drop: bool = False

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            return self.body, headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode(), headers
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(self.body).encode(), headers


ResponseLike = Response | int | tuple[Any, ...]


def as_response(spec: ResponseLike) -> Response:
    """``Response`` from a Response, a status code, or a ``(status[, headers[, body[, delay]]])`` tuple."""
    if isinstance(spec, Response):
        return spec
    if isinstance(spec, int):
        return Response(status=spec)
    return Response(*spec)


class _ReceiverHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    receiver: HttpReceiver


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _ReceiverHTTPServer
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        receiver = self.server.receiver
        body = self._read_body()
        split = urlsplit(self.path)
        recorded = RecordedRequest(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=time.time(),
        )
        response = receiver._record_and_pick(recorded)
        if response.delay:
            time.sleep(response.delay)
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload, headers = response.encoded()
        try:
            self.send_response(response.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (e.g. its timeout was shorter than our delay)
        self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()  # trailing CRLF
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        return


class HttpReceiver:
    """A real threaded HTTP server on 127.0.0.1 that records requests and answers as programmed.

    ``respond(...)`` queues answers consumed one per request (optionally only for one path);
    when the queue is empty it answers ``default`` (200, empty body).

        receiver.respond(500, 500, 500, 200)                       # fail three times, then succeed
        receiver.respond((429, {"Retry-After": "1"}, "slow down"))  # status, headers, body
        receiver.respond(Response(410), path="/gone")
        receiver.respond(Response(200, delay=5.0))                  # a slow server
        receiver.respond(Response(drop=True))                       # connection closed, no answer
        reqs = receiver.wait_for_requests(4)
    """

    def __init__(self, *, default: ResponseLike = 200, port: int = 0) -> None:
        self.default = as_response(default)
        self._requested_port = port
        self._server: _ReceiverHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._queues: dict[str | None, deque[Response]] = {}

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> HttpReceiver:
        if self._server is not None:
            return self
        server = _ReceiverHTTPServer((LOOPBACK, self._requested_port), _ReceiverHandler)
        server.receiver = self
        self._requested_port = int(server.server_address[1])  # a restart keeps the port
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="http-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self._requested_port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, no trailing slash."""
        return f"http://{LOOPBACK}:{self.port}"

    def url_for(self, path: str) -> str:
        return self.url + "/" + path.lstrip("/")

    # programming -------------------------------------------------------------------------------
    def respond(self, *responses: ResponseLike, path: str | None = None) -> None:
        """Queue answers for the next requests (to ``path`` only, when given)."""
        with self._cond:
            self._queues.setdefault(path, deque()).extend(as_response(r) for r in responses)

    def _record_and_pick(self, request: RecordedRequest) -> Response:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()
            for key in (request.path, None):
                queue = self._queues.get(key)
                if queue:
                    return queue.popleft()
            return self.default

    # inspection --------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def wait_for_requests(
        self, count: int = 1, timeout: float = 10.0, *, path: str | None = None
    ) -> list[RecordedRequest]:
        """Block until ``count`` requests (to ``path``, when given) arrived; returns them all."""

        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if path is None or r.path == path]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout=timeout):
                got = [(r.method, r.path) for r in matching()]
                raise AssertionError(
                    f"expected {count} request(s) to {path or 'any path'} within {timeout} s, got {got}"
                )
            return matching()

    def clear(self) -> None:
        """Forget recorded requests and queued answers."""
        with self._cond:
            self._requests.clear()
            self._queues.clear()

    def __repr__(self) -> str:
        return f"<HttpReceiver {self.url} requests={len(self._requests)}>"
