"""Shared pieces of the reliability suite (imported as ``reliability.relkit``).

* a 400-item probe set whose two rare classes (3 % and 2 %) a "collapsed" model forgets:
  ``healthy()`` checks stay healthy, ``collapsed()`` fires ``early_collapse`` against a healthy
  baseline (24 paired flips, exact McNemar p < 1e-6) - labels only, so a check takes ~0.1 s;
* :class:`FaultProxy`: a real HTTP reverse proxy on 127.0.0.1 in front of a real server (the
  MLflow tracking server) whose answers can be made slow, wrong (500/503 + Retry-After) or
  dropped, per path prefix, while the rest is forwarded unchanged;
* :class:`Recorder`: a sink that records what it was given and fails on demand (for the spool
  tests, where the spool - not a server - is under test);
* ``run_child``: run a Python snippet in a fresh interpreter (a "new retrain process").
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import collapse_monitor as cm

LABELS: list[int] = [0] * 380 + [1] * 12 + [2] * 8
COLLAPSED: list[int] = [0] * 400
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
_COUNTER = itertools.count()


def unique(prefix: str) -> str:
    """A monitor name no other test uses (tests share one MLflow server)."""
    return f"rel-{prefix}-{os.getpid()}-{int(time.time() * 1000) % 10**8}-{next(_COUNTER)}"


def reference() -> cm.Reference:
    return cm.Reference(labels=LABELS)


def healthy(**kw: Any) -> cm.Observation:
    return cm.Observation(predictions=LABELS, **kw)


def collapsed(**kw: Any) -> cm.Observation:
    return cm.Observation(predictions=COLLAPSED, **kw)


class Timer:
    """``with Timer() as t: ...``; ``t.seconds`` afterwards."""

    seconds: float = 0.0

    def __enter__(self) -> Timer:
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._t0


def watched_check(mon: cm.CollapseMonitor, obs: cm.Observation) -> tuple[cm.Report | None, float]:
    """Run one check the way a training script does (``@mon.watch``) and prove that the training
    function's return value passes through unchanged. Returns (report, seconds); the report is
    None when the check failed (``mon.last_error`` says why)."""
    model = object()
    before = mon.last_report

    @mon.watch(evaluate=lambda m: obs)
    def retrain() -> object:
        return model

    with Timer() as t:
        got = retrain()
    assert got is model, "the training function's return value must pass through unchanged"
    report = mon.last_report
    return (None if report is before else report), t.seconds


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def mlflow_runs(tracking_uri: str, monitor: str) -> list[Any]:
    """Active (not deleted) check runs of ``monitor`` on the server."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(f"collapse-monitor/{monitor}")
    if exp is None:
        return []
    return list(client.search_runs([exp.experiment_id], "", max_results=1000))


# --- a sink that records (spool tests) ----------------------------------------------------------


class Recorder:
    """Records the generations it was given; raises ``ConnectionError`` while ``fail`` is set."""

    name = "recorder"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.got: list[int] = []

    def emit(self, report: cm.Report, context: Any = None) -> None:
        if self.fail:
            raise ConnectionError("recorder is down")
        self.got.append(report.generation)


# --- subprocesses -------------------------------------------------------------------------------


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(HERE.parent), **dict(env or {})}


def start_child(code: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``code`` (dedented) in a fresh interpreter; stdout/stderr piped, text mode."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(env),
    )


def run_child(
    code: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_child_env(env),
        cwd=cwd,
        check=False,
    )


# --- a fault-injecting reverse proxy ------------------------------------------------------------

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "upgrade"}


@dataclass
class Fault:
    """What the proxy does with a request whose path starts with one of ``paths`` (all: None).

    ``kind``: ``forward`` (pass through), ``status`` (answer ``status`` with ``headers`` without
    forwarding), ``slow`` (wait ``delay`` seconds, then forward - the server does the work late,
    after the client gave up) or ``drop`` (close the connection without an answer)."""

    kind: str = "forward"
    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    paths: tuple[str, ...] | None = None

    def applies(self, path: str) -> bool:
        return self.paths is None or any(path.startswith(p) for p in self.paths)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    proxy: FaultProxy


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        fault = proxy.fault if proxy.fault.applies(path) else Fault()
        with proxy._lock:
            proxy.log.append((self.command, path, fault.kind))
            proxy._in_flight += 1
        try:
            if fault.kind == "drop":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            if fault.kind == "status":
                self._answer(
                    fault.status, dict(fault.headers), b'{"error_code": "INTERNAL_ERROR", "message": "injected"}'
                )
                return
            if fault.kind == "slow":
                time.sleep(fault.delay)
            status, headers, payload = proxy._forward(self.command, self.path, self.headers.items(), body)
            self._answer(status, headers, payload)
        finally:
            with proxy._lock:
                proxy._in_flight -= 1

    def _answer(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (its timeout was shorter than our delay)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        return


class FaultProxy:
    """A real reverse proxy on ``127.0.0.1:<port>`` in front of ``target`` (``http://host:port``)."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fault = Fault()
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._port = 0
        self._server: _ProxyServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def up(self) -> None:
        """Listen (again, on the same port)."""
        if self._server is not None:
            return
        self._server = _ProxyServer(("127.0.0.1", self._port), _ProxyHandler)
        self._server.proxy = self
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: clients get "connection refused", as from a dead server."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None

    def set(self, kind: str = "forward", *, paths: Iterable[str] | None = None, **kw: Any) -> None:
        self.fault = Fault(kind, paths=None if paths is None else tuple(paths), **kw)

    def faulted(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [e for e in self.log if e[2] != "forward"]

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no request is being held or forwarded (late writes of slow requests land)."""
        wait_until(lambda: self._in_flight == 0, timeout=timeout, interval=0.05)

    def _forward(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self._target, timeout=60)
        try:
            hdrs = {k: v for k, v in headers if k.lower() not in _HOP and k.lower() != "host"}
            hdrs["Host"] = f"{self._target[0]}:{self._target[1]}"
            hdrs["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        except OSError as exc:
            return 502, {}, f"proxy: {exc}".encode()
        finally:
            conn.close()

    def close(self) -> None:
        self.down()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify_standard_webhook(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Independent Standard Webhooks verifier (spec, not the library's code): key = base64 of the
    part after ``whsec_``; signed content ``{id}.{timestamp}.{body}``; ``v1,<base64 HMAC-SHA256>``."""
    import base64
    import hashlib
    import hmac

    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    return any(
        v == "v1" and hmac.compare_digest(base64.b64decode(sig), expected)
        for v, _, sig in (p.partition(",") for p in headers.get("webhook-signature", "").split(" "))
    )
