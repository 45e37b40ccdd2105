"""Security: secrets never show (logs, reports, reprs, MLflow params/tags/artifacts, exception
messages, the spool, the history, the outbox); ``/metrics`` binds 127.0.0.1 unless told
otherwise; a world-readable config holding secrets is warned about; YAML is loaded safely;
nothing is unpickled from a path the user did not choose; TLS verification is on unless an
explicit flag turns it off, which logs a warning."""

from __future__ import annotations

import ast
import datetime as dt
import json
import logging
import os
import socket
import sqlite3
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from reliability.relkit import LABELS, REPO, collapsed, healthy, mlflow_runs, reference, unique
from servers import Response

import collapse_monitor as cm
from collapse_monitor._redact import MASK, mask_credentials

# every fragment below is a secret: none may appear anywhere the monitor writes or says
HOOK_SECRET = "whsec_c2VjcmV0LWZvci1yZWxpYWJpbGl0eS10ZXN0cw=="
PATH_TOKEN = "PathTok3nXyZ9876"
QUERY_TOKEN = "qsTok3n-55501"
HEADER_TOKEN = "hdrTok3n-77702"
ROUTING_KEY = "R0UT1NGk3y0123456789abcdef0123"
MLFLOW_PASSWORD = "mlfl0wPa55-33303"
PGW_PASSWORD = "pgwPa55-44404"
PRESIGNED = "presignedSig-66605"
SECRETS = [
    HOOK_SECRET,
    HOOK_SECRET[6:],
    PATH_TOKEN,
    QUERY_TOKEN,
    HEADER_TOKEN,
    ROUTING_KEY,
    MLFLOW_PASSWORD,
    PGW_PASSWORD,
    PRESIGNED,
]


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _dump_sqlite(path: Path) -> str:
    if not path.exists():
        return ""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(row) for t in tables for row in db.execute(f"SELECT * FROM {t}"))


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_secrets_never_show(mlflow_server, http_receiver, tmp_path, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    # each endpoint echoes back what it was sent (its own secrets) in its error body, as badly
    # written servers do; all of them echo credential-shaped strings
    shaped = f"token={QUERY_TOKEN} auth=Bearer {HEADER_TOKEN}"
    http_receiver.respond(*[Response(500, body=f"denied {PATH_TOKEN} {shaped}")] * 20, path=f"/hooks/{PATH_TOKEN}")
    http_receiver.respond(*[Response(500, body=f"bad key {ROUTING_KEY} {shaped}")] * 20, path="/v2/enqueue")
    http_receiver.respond(
        *[Response(500, body=f"no hook {PATH_TOKEN} {shaped}")] * 20, path=f"/services/T0/B0/{PATH_TOKEN}"
    )
    hook_url = http_receiver.url_for(f"/hooks/{PATH_TOKEN}") + f"?token={QUERY_TOKEN}"
    channels = [
        cm.Webhook(hook_url, secret=HOOK_SECRET, name="hook", headers={"Authorization": f"Bearer {HEADER_TOKEN}"}),
        cm.PagerDuty(ROUTING_KEY, url=http_receiver.url_for("/v2/enqueue"), name="pd"),
        cm.Slack(http_receiver.url_for(f"/services/T0/B0/{PATH_TOKEN}"), name="slack"),
    ]
    host, port = mlflow_server.url.split("://", 1)[1].split(":")
    sinks = [
        cm.MLflowSink(f"http://alice:{MLFLOW_PASSWORD}@{host}:{port}", evidently=False, timeout=5, max_retries=1),
        cm.PrometheusSink(pushgateway=f"http://bob:{PGW_PASSWORD}@127.0.0.1:{_dead_port()}", timeout=1),
    ]
    name = unique("secrets")
    mon = cm.CollapseMonitor(
        name,
        reference=reference(),
        sinks=sinks,
        alerts=channels,
        home=tmp_path / "home",
        alert_budget_seconds=1,
        links={"runbook": "https://runbooks.example.com/collapse"},
    )
    prov = cm.Provenance(synthetic_fraction=0.5, sources=[f"s3://corpus/gen3.parquet?X-Amz-Signature={PRESIGNED}"])
    reports = [mon.check(healthy(provenance=prov)), mon.check(collapsed(provenance=prov))]
    assert reports[1].alerts and reports[1].errors  # the Pushgateway is down: errors recorded
    strict = cm.CollapseMonitor(
        unique("secrets-strict"), reference=reference(), sinks=sinks[1:], strict=True, home=tmp_path / "strict"
    )
    with pytest.raises(cm.SinkError) as info:
        strict.check(healthy())

    said = [
        caplog.text,
        *capfd.readouterr(),
        *(json.dumps(r.to_dict()) for r in reports),
        repr(mon),
        repr(strict),
        *map(repr, sinks),
        *map(repr, channels),
        repr(prov),
        str(info.value),
        repr(info.value),
        _dump_sqlite(tmp_path / "home" / "history.db"),
        _dump_sqlite(tmp_path / "home" / "outbox.db"),
        *(p.read_text() for p in (tmp_path / "home").rglob("*.json")),
    ]
    for i, text in enumerate(said):
        assert not _leaks(text), f"secret(s) {_leaks(text)} in item {i}: {text[:3000]}"
    assert "X-Amz-Signature=***" in json.dumps(reports[0].to_dict())  # the source is kept, masked

    # MLflow: params, tags, metrics names, dataset inputs and the report artifact
    client = mlflow_server.client()
    runs = mlflow_runs(mlflow_server.url, name)
    assert len(runs) == 2
    for run in runs:
        stored = json.dumps(
            {
                "params": run.data.params,
                "tags": run.data.tags,
                "metrics": sorted(run.data.metrics),
                "inputs": [str(d) for d in run.inputs.dataset_inputs],
            }
        )
        local = client.download_artifacts(run.info.run_id, "collapse/report.json", str(tmp_path / run.info.run_id))
        stored += Path(local).read_text()
        assert not _leaks(stored), _leaks(stored)
    # what the receivers were sent carries no secret either (the request itself may: that is its job)
    for req in http_receiver.requests:
        body = req.body.decode()
        assert not [s for s in (MLFLOW_PASSWORD, PGW_PASSWORD, PRESIGNED, HOOK_SECRET) if s in body]


def test_config_errors_never_echo_secrets(monkeypatch) -> None:
    from collapse_monitor.alerting import channel_from_config

    monkeypatch.setenv("HOOK_SECRET", "whsec_!!not-base64-" + QUERY_TOKEN)
    cases = [
        {"type": "webhook", "url": "${HOOK_URL_MISSING}", "secret": HOOK_SECRET},
        {"type": "webhook", "url": f"ftp://x/{PATH_TOKEN}?token={QUERY_TOKEN}"},
        {"type": "webhook", "url": "http://127.0.0.1:9/h", "secret": "${HOOK_SECRET}"},
        {"type": "pagerduty", "routing_key": ROUTING_KEY, "bogus": HEADER_TOKEN},
        {"type": "slack", "url": f"https://hooks.slack.com/services/T/B/{PATH_TOKEN}", "timeout": "x"},
    ]
    for item in cases:
        with pytest.raises(cm.ConfigError) as info:
            channel_from_config(item)
        assert not _leaks(str(info.value)), (item, str(info.value))


# --- /metrics -----------------------------------------------------------------------------------


def _local_non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_metrics_endpoint_binds_loopback_by_default(tmp_path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from collapse_monitor.service import Service

    # the exposition the service serves: PrometheusSink(registry=...) with a report in it
    registry = CollectorRegistry()
    sink = cm.PrometheusSink(registry=registry)
    name = unique("metrics")
    mon = cm.CollapseMonitor(name, reference=reference(), sinks=[sink], home=tmp_path / "home")
    mon.check(healthy())
    mon.check(collapsed())
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    (stage,) = [s for s in fams["collapse_monitor_stage"].samples if s.labels.get("monitor") == name]
    assert stage.value == 1

    (tmp_path / "labels.json").write_text(json.dumps(LABELS))
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        f"name: {name}\nhome: home\nsinks: []\nreference: {{labels: labels.json}}\nserve: {{port: {_dead_port()}}}\n"
    )
    svc = Service.from_config(cfg)
    assert svc.settings.host == "127.0.0.1"
    svc.start()
    try:
        url = svc.metrics_url() if callable(svc.metrics_url) else svc.metrics_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        assert svc._http.server_address[0] == "127.0.0.1"
        session = requests.Session()
        session.trust_env = False
        text = session.get(url, timeout=10).text
        assert "collapse_monitor_serve_up 1.0" in text
        ip = _local_non_loopback_ip()
        if ip is not None:  # reachable on loopback only
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((ip, port)) != 0, f"/metrics answered on {ip}"
    finally:
        svc.stop()


# --- config files -------------------------------------------------------------------------------


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_world_readable_config_with_secrets_is_warned_about(tmp_path, caplog, monkeypatch) -> None:
    from collapse_monitor.config import load_config

    literal = f"name: m\nalerts:\n  - {{type: webhook, url: 'http://127.0.0.1:9/h', secret: '{HOOK_SECRET}'}}\n"
    by_env = "name: m\nalerts:\n  - {type: webhook, url: '${HOOK_URL}', secret: '${HOOK_SECRET}'}\n"
    slack = f"name: m\nalerts:\n  - {{type: slack, url: 'https://hooks.slack.com/services/T/B/{PATH_TOKEN}'}}\n"
    am_userinfo = f"name: m\nalerts:\n  - {{type: alertmanager, url: 'http://am:{HOOK_SECRET}@127.0.0.1:9093'}}\n"
    header = f"name: m\nalerts:\n  - {{type: alertmanager, url: 'http://127.0.0.1:9093', headers: {{Authorization: 'Bearer {HOOK_SECRET}'}}}}\n"
    header_env = "name: m\nalerts:\n  - {type: alertmanager, url: 'http://127.0.0.1:9093', headers: {Authorization: '${AM_AUTH}'}}\n"
    mlflow_query = (
        f"name: m\nsinks:\n  - {{type: mlflow, tracking_uri: 'https://mlflow.example.com/?token={HOOK_SECRET}'}}\n"
    )
    plain_uri = "name: m\nsinks:\n  - {type: mlflow, tracking_uri: 'http://127.0.0.1:5000/api/2.0'}\n"
    # the default of ${VAR:-default} is written in the file (a config audit)
    env_default = f"name: m\nalerts:\n  - {{type: slack, url: '${{SLACK_URL:-https://hooks.slack.com/services/T/B/{PATH_TOKEN}}}'}}\n"
    secret_default = f"name: m\nalerts:\n  - {{type: webhook, url: '${{U}}', secret: '${{S:-{HOOK_SECRET}}}'}}\n"
    empty_default = "name: m\nalerts:\n  - {type: webhook, url: '${U:-}', secret: '${S:-}'}\n"
    cases = [
        (literal, 0o644, True),
        (literal, 0o600, False),
        (by_env, 0o644, False),
        (slack, 0o604, True),
        (am_userinfo, 0o644, True),
        (header, 0o644, True),
        (header_env, 0o644, False),
        (mlflow_query, 0o644, True),
        (plain_uri, 0o644, False),
        (env_default, 0o644, True),
        (secret_default, 0o644, True),
        (empty_default, 0o644, False),
    ]
    for i, (text, mode, warned) in enumerate(cases):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="collapse_monitor.config"):
            load_config(_write(tmp_path / f"c{i}.yaml", text, mode))
        got = [r for r in caplog.records if "world-readable" in r.getMessage()]
        assert bool(got) is warned, (text, oct(mode), caplog.text)
        assert not _leaks(caplog.text)


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "!!python/name:os.system",
        "!!python/object:collapse_monitor.types.Provenance {{synthetic_fraction: 0.5}}",
    ],
)
def test_yaml_is_loaded_safely(tmp_path, payload) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "collapse.yaml"
    path.write_text(f"name: m\nrules: {payload.format(marker=marker)}\n")
    with pytest.raises(cm.ConfigError):
        cm.CollapseMonitor.from_config(path, reference=reference(), sinks=[])
    assert not marker.exists(), "YAML executed code"


@pytest.mark.timeout(60)  # hang guard: without the cap this takes hours and tens of GB
def test_yaml_alias_bomb_is_refused(tmp_path) -> None:
    """A "billion laughs": 9 levels of aliases, 10**9 values once expanded, 2 kB on disk."""
    lines = ["name: m", "links:", "  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "collapse.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(cm.ConfigError, match="aliases"):
        cm.CollapseMonitor.from_config(path, reference=reference(), sinks=[])


# --- no unpickling ------------------------------------------------------------------------------

# (module, reason): the only places allowed to deserialise executable objects
_ALLOWED_MODEL_LOADS = {
    "collapse_monitor/_service_model.py": "serve loads the registered model the user configured (models:/<name>)",
}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            parts = []
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            yield ".".join(reversed(parts)), node


def _kw(node: ast.Call, name: str) -> object:
    for k in node.keywords:
        if k.arg == name and isinstance(k.value, ast.Constant):
            return k.value.value
    return "<missing>"


def test_nothing_is_unpickled_from_paths_the_user_did_not_choose() -> None:
    problems = []
    checked = 0
    for path in sorted((REPO / "collapse_monitor").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), filename=rel)
        for mod in (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)):
            names = [a.name for a in mod.names] + ([mod.module] if isinstance(mod, ast.ImportFrom) else [])
            for n in names:
                if n and n.split(".")[0] in {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}:
                    problems.append(f"{rel}:{mod.lineno}: imports {n}")
        for name, node in _calls(tree):
            where = f"{rel}:{node.lineno}: {name}"
            last = name.rsplit(".", 1)[-1]
            if name in {"np.load", "numpy.load"}:
                checked += 1
                if _kw(node, "allow_pickle") is not False:
                    problems.append(f"{where} without allow_pickle=False")
            elif name == "torch.load":
                checked += 1
                if _kw(node, "weights_only") is not True:
                    problems.append(f"{where} without weights_only=True")
            elif name in {"yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"}:
                problems.append(f"{where}: use yaml.safe_load")
            elif last in {"loads", "load"} and name.split(".")[0] in {"pickle", "dill", "cloudpickle", "joblib"}:
                problems.append(where)
            elif last == "load_model" and name.split(".")[0] in {"mlflow", "torch"} and rel not in _ALLOWED_MODEL_LOADS:
                problems.append(f"{where}: model loading outside {sorted(_ALLOWED_MODEL_LOADS)}")
            elif name in {"eval", "exec"}:
                problems.append(f"{where}: eval/exec")
    assert checked >= 3, "the scan found no np.load at all: is it looking at the package?"
    assert not problems, "\n".join(problems)


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_receiver(tmp_path_factory):
    """A real HTTPS server with a self-signed certificate for 127.0.0.1 (not trusted by anyone)."""
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as exc:  # pragma: no cover - openssl is in the image
        pytest.skip(f"openssl unavailable: {exc}")
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


def _event():
    from collapse_monitor.alerting import AlertEvent

    alert = cm.Alert(
        monitor="m",
        rule="early_collapse",
        status="firing",
        severity="warning",
        stage=cm.Stage.EARLY_COLLAPSE,
        generation=1,
        summary="s",
        timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp(),
    )
    return AlertEvent(alert)


def test_tls_verification_is_on_by_default(tls_receiver, caplog) -> None:
    url, got = tls_receiver
    with caplog.at_level(logging.WARNING):
        hook = cm.Webhook(url, name="tls", timeout=5)
    assert hook.verify_tls is True and "TLS" not in caplog.text
    res = hook.send(_event())
    assert res.status == "retry" and "CERTIFICATE_VERIFY_FAILED" in (res.error or ""), res
    assert got == [], "a request went to an unverified server"


def test_disabling_tls_verification_needs_the_flag_and_warns(tls_receiver, caplog) -> None:
    url, got = tls_receiver
    from collapse_monitor.alerting import channel_from_config

    with caplog.at_level(logging.WARNING, logger="collapse_monitor.alerting"):
        hook = cm.Webhook(url, name="tls-off", timeout=5, verify_tls=False)
    assert [r for r in caplog.records if "TLS certificate verification is OFF" in r.getMessage()]
    assert hook.send(_event()).status == "delivered" and len(got) == 1
    for kind, extra in [
        ("slack", {}),
        ("teams", {}),
        ("alertmanager", {}),
        ("webhook", {}),
        ("pagerduty", {"routing_key": ROUTING_KEY}),
    ]:
        caplog.clear()
        item = {"type": kind, "url": url, "verify_tls": False, **extra}
        with caplog.at_level(logging.WARNING, logger="collapse_monitor.alerting"):
            ch = channel_from_config(item)
        assert ch.verify_tls is False
        assert "verification is OFF" in caplog.text, kind
        assert not _leaks(caplog.text)
        with pytest.raises(cm.ConfigError):  # only a real boolean turns it off
            channel_from_config({**item, "verify_tls": "false"})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception linked to it (``__cause__`` / ``__context__``)."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is not None and all(e is not o for o in out):
            out.append(e)
            todo += [e.__cause__, e.__context__]
    return out


@pytest.mark.timeout(120)
def test_raised_errors_chain_no_credentialed_exception(tmp_path) -> None:
    """``raise SinkError(...) from None`` only hides the chain from printed tracebacks: its
    ``__context__`` still held MLflow's exception, whose message carries the tracking URI with
    its password. What we raise links to nothing (nor does anything it links to leak)."""
    import io
    import traceback

    from rich.console import Console

    from collapse_monitor.sinks.base import Spool
    from collapse_monitor.sinks.cli import gate_command

    mlflow_uri = f"http://alice:{MLFLOW_PASSWORD}@127.0.0.1:{_dead_port()}"
    pgw_uri = f"http://bob:{PGW_PASSWORD}@127.0.0.1:{_dead_port()}"
    mlflow_sink = cm.MLflowSink(mlflow_uri, evidently=False, timeout=1, max_retries=0)
    strict = cm.CollapseMonitor(
        unique("chain"), reference=reference(), sinks=[mlflow_sink], strict=True, home=tmp_path / "home"
    )
    (tmp_path / "file").write_text("not a directory")
    quiet = Console(file=io.StringIO())
    calls = {
        "strict check": lambda: strict.check(healthy()),
        "MLflowSink.latest": lambda: mlflow_sink.latest("chain"),
        "MLflowSink.load_history": lambda: mlflow_sink.load_history("chain"),
        "gate": lambda: gate_command("chain", tracking_uri=mlflow_uri, console=quiet),
        "PrometheusSink.emit": lambda: cm.PrometheusSink(pushgateway=pgw_uri, timeout=1).emit(strict.reports()[0]),
        "PrometheusSink.delete": lambda: cm.PrometheusSink(pushgateway=pgw_uri, timeout=1).delete("chain"),
        "Spool.put": lambda: Spool(tmp_path / "file" / "spool").put("k", strict.reports()[0]),
    }
    for what, call in calls.items():
        with pytest.raises(Exception) as info:
            call()
        err = info.value
        assert err.__cause__ is None and err.__context__ is None, (what, repr(err.__context__)[:300])
        text = "".join(traceback.format_exception(err)) + "".join(repr(e) + str(e) for e in _chain(err))
        assert not _leaks(text), (what, _leaks(text))


@pytest.mark.parametrize(
    ("source", "secret"),
    [
        ("jdbc:postgresql://db.local/train?user=bob&password=hunter2", "hunter2"),
        ("file:///data/train.parquet?token=tok3n-v4lue", "tok3n-v4lue"),
        ("data/train.csv?token=tok3n-v4lue", "tok3n-v4lue"),
        ("Server=db.local;Database=train;Password=hunter2", "hunter2"),
        ("bob:hunter2@data.local:/srv/train", "hunter2"),
        ("https://alice:hunter2@data.example.com/v1/corpus#sig=x", "hunter2"),
        ("jdbc:oracle:thin:scott/hunter2@dbhost:1521:orcl", "hunter2"),
        ("my_store://alice:hunter2@data.local/train", "hunter2"),
    ],
)
def test_provenance_sources_of_every_shape_are_masked(source, secret, http_receiver, tmp_path) -> None:
    """Provenance audit (2026-12-06): only absolute URIs with a host were masked; a JDBC URL,
    a file URI, a relative path with a query, a connection string or scp-style credentials kept
    their secret in reports, history.db, check --json and alert payloads."""
    prov = cm.Provenance(synthetic_fraction=0.5, sources=[source])
    assert secret not in repr(prov) and secret not in json.dumps(prov.to_dict())
    assert MASK in prov.sources[0]
    mon = cm.CollapseMonitor(
        unique("prov-mask"),
        reference=cm.Reference(labels=[0, 1] * 50),
        sinks=[],
        home=tmp_path,
        alerts=[cm.Webhook(http_receiver.url_for("/hook"), name="hook")],
    )
    mon.check(cm.Observation(predictions=[0, 1] * 50, provenance=prov))
    report = mon.check(cm.Observation(predictions=[0] * 100, provenance=prov))  # collapsed: an alert
    assert secret not in json.dumps(report.to_dict())
    bodies = [r.text for r in http_receiver.wait_for_requests(1, path="/hook")]
    assert MASK in bodies[0] and all(secret not in b for b in bodies)
    assert secret not in (tmp_path / "history.db").read_bytes().decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("source", "masked"),
    [
        # credentials the first masker missed (review of 2026-12-06)
        ("jdbc:oracle:thin:scott/tiger@//dbhost:1521/svc", "jdbc:oracle:thin:***@//dbhost:1521/svc"),
        ("jdbc:oracle:oci:scott/tiger@orcl", "jdbc:oracle:oci:***@orcl"),
        ("data/x.parquet?src=https://a:tiger@h/", "data/x.parquet?src=***"),
        ("my_store://alice:tiger@host/x", "my_store://***@host/x"),
        # scp passwords with ":" or "\\", users with "+", an Oracle password with "@" (review)
        ("user:ti:ger@host:/repo", "***@host:/repo"),
        ("deploy+ci:tiger@host:/repo", "***@host:/repo"),
        ("alice:ti\\ger@host:/x", "***@host:/x"),
        ("jdbc:oracle:thin:scott/ti@ger@host:1521:sid", "jdbc:oracle:thin:***@host:1521:sid"),
        ("u:tiger@sha1:" + "ab" * 20, "***@sha1:" + "ab" * 20),
        ("jdbc:postgresql://u:tiger@db/x", "jdbc:postgresql://***@db/x"),
        # names that hold no secret and were mangled
        ("python:3.11@sha256:" + "ab" * 32, "python:3.11@sha256:" + "ab" * 32),
        ("C:\\data\\x@2024.parquet", "C:\\data\\x@2024.parquet"),
        ("jdbc:oracle:thin:@dbhost:1521:orcl", "jdbc:oracle:thin:@dbhost:1521:orcl"),
        ("/data/token=tiger/part-0.parquet", "/data/token=***/part-0.parquet"),
        ("s3://corpus/sig=tiger/2026/part-0.parquet", "s3://corpus/sig=***/2026/part-0.parquet"),
        ("gs://b/p@2024/x", "gs://b/p@2024/x"),
    ],
)
def test_provenance_sources_mask_the_secret_and_only_the_secret(source: str, masked: str) -> None:
    assert mask_credentials(source) == masked
    assert cm.Provenance(0.5, sources=[source]).sources == (masked,)


def test_provenance_text_every_store_can_encode() -> None:
    """A file name read from a non-UTF-8 file system holds lone surrogates: the baseline check
    failed to reach MLflow on every retry. They become escapes; an empty or 65 kB source
    (MLflow dead-lettered the whole report) is an InputError naming the field; a float32 share
    is the number the user wrote."""
    import numpy as np

    prov = cm.Provenance(np.float32(0.4), parent_run_id="r\udce9", sources=["caf\udce9.parquet"], digest="d\udce9")
    assert prov.sources == ("caf\\xe9.parquet",) and prov.digest == "d\\xe9" and prov.parent_run_id == "r\\xe9"
    json.dumps(prov.to_dict()).encode("utf-8")
    assert prov.synthetic_fraction == 0.4
    # half of a broken UTF-16 pair (a JSON "\ud83d" cut short) is no surrogateescape byte: it
    # raised UnicodeEncodeError out of the constructor (and, on one rank, hung the others)
    broken = cm.Provenance(0.5, sources=["x\ud800y", "\udc7f"], digest="\ud83d")
    assert broken.sources == ("x\\ud800y", "\\udc7f") and broken.digest == "\\ud83d"
    json.dumps(broken.to_dict(), ensure_ascii=False).encode("utf-8")
    for bad in ([""], ["  "], ["s3://b/" + "x" * 70_000]):
        with pytest.raises(cm.InputError) as ei:
            cm.Provenance(0.5, sources=bad)
        assert ei.value.field == "provenance.sources"


def test_tracking_uri_path_tokens_and_query_keys_stay_out_of_logs_and_errors(tmp_path, caplog, monkeypatch) -> None:
    """Secrets audit (2026-12-06, stop 36): requests and urllib3 print the request path without
    its host (``url: /<token>/api/2.0/...``, urllib3's retry warning ``...: /?key=<k>/api/...``),
    which the URL-shaped redaction did not recognise: a reverse proxy's secret path prefix or a
    ``?key=`` in the tracking or registry URI reached the default WARNING log, the SinkError and
    the CLI. The sink's repr showed the path token too."""
    path_token, query_key, registry_key = "Tok3nPathSeg9", "GcpApiKey777", "RegKey555x"
    port = _dead_port()
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"http://127.0.0.1:{port}/?key={registry_key}")
    sink = cm.MLflowSink(
        f"http://127.0.0.1:{port}/{path_token}/?key={query_key}", evidently=False, timeout=1, max_retries=1
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(cm.SinkError) as info:
        sink.load_history("chain")
    shown = [repr(sink), str(info.value), caplog.text]
    assert "Max retries exceeded" in caplog.text + str(info.value) or "Retrying" in caplog.text
    for secret in (path_token, query_key, registry_key):
        assert not any(secret in s for s in shown), (secret, next(s for s in shown if secret in s)[-300:])
    assert f"127.0.0.1:{port}" in str(info.value)  # the server is still named


@pytest.mark.parametrize(
    "uri", ["http://admin:Sup3rS3cretPw/x@127.0.0.1:5000", "http://admin:Sup3rS3cretPw#x@127.0.0.1:5000"]
)
def test_a_password_with_a_slash_or_hash_is_masked(uri, tmp_path) -> None:
    """urlsplit ends such a netloc at the "/" or "#", reads the password as a port and raises
    with it in the message; the sink's repr printed the whole URI."""
    from collapse_monitor._redact import redact_text
    from collapse_monitor.sinks.mlflow import safe_uri, shown_uri

    assert "Sup3rS3cretPw" not in repr(cm.MLflowSink(uri, evidently=False))
    assert "Sup3rS3cretPw" not in safe_uri(uri) + shown_uri(uri)
    assert "Sup3rS3cretPw" not in redact_text(f"error at {uri}: Port could not be cast")
    assert redact_text("http://127.0.0.1:8080/ok") == "http://127.0.0.1:8080/ok"  # a port is not a password
    for build in (lambda: cm.Webhook(uri), lambda: cm.PrometheusSink(pushgateway=uri.replace(":5000", ":9091"))):
        with pytest.raises(cm.ConfigError) as info:
            build()
        err = info.value
        assert err.__context__ is None and err.__cause__ is None  # `from None` kept the ValueError as context
        assert "Sup3rS3cretPw" not in str(err) and "port is not a number" in str(err)


def test_the_history_store_is_owner_only(tmp_path) -> None:
    """The stored reports hold the alerts' links (a dashboard link's auth_token); history.db was
    created world-readable (outbox.db and the spool are 0600)."""
    mon = cm.CollapseMonitor(unique("mode"), reference=reference(), sinks=[], home=tmp_path / "home")
    mon.check(healthy())
    for name in ("history.db", "history.db-wal"):
        path = tmp_path / "home" / name
        if path.exists():
            assert path.stat().st_mode & 0o777 == 0o600, (name, oct(path.stat().st_mode))


def test_a_password_that_reads_as_a_port_or_an_ipv6_host_is_handled() -> None:
    """Review of stop 36: http://alice:2024/Secret@host parses as host "alice", port 2024 and a
    path, so the masking of a password holding "/" let it through (the run link alerts carry
    included); an IPv6 literal before an "@" in the path lost its host to the mask."""
    from collapse_monitor._redact import redact_text, redact_url
    from collapse_monitor.sinks.mlflow import safe_uri, shown_uri

    uri = "https://alice:2024/Sup3rS3cretPw@mlflow.example.com/"
    for shown in (redact_text(uri), redact_url(uri), safe_uri(uri), shown_uri(uri), repr(cm.MLflowSink(uri))):
        assert "Sup3rS3cretPw" not in shown and "2024" not in shown and "mlflow.example.com" in shown, shown
    ipv6 = "http://[::1]:5000/api/users/bob@example.com"
    assert redact_text(ipv6).startswith("http://[::1]:5000/api/users/")


class _EchoAuth(BaseHTTPRequestHandler):
    """Answers every request 403 with the bare value of its Authorization header (no scheme
    word), as a badly written proxy or receiver does (a 403, as the clients retry no 4xx and
    keep its body in their errors)."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        auth = self.headers.get("Authorization", "")
        body = json.dumps({"error": "denied", "auth": auth.split(" ", 1)[-1]}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_credentials_echoed_back_bare_are_masked(tmp_path, caplog, monkeypatch) -> None:
    """Secrets audit (2026-12-07, stop 41): the Basic header built from a URL's ``user:pass@``
    (alert channels, the Pushgateway, MLflow) and MLflow's ``MLFLOW_TRACKING_TOKEN`` were sent
    but not registered as secrets; a receiver that echoed the bare header value (base64 of
    ``user:password``, which gives the password straight back, or the token) put it in the
    log, the report's errors, history.db, outbox.db and the spool."""
    import base64

    caplog.set_level(logging.DEBUG)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoAuth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    token = "EnvB3arerT0ken-99x"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    secrets = {
        "hook password": "AmPassw0rd9x",
        "pushgateway password": "PgwPassw0rd8y",
        "mlflow token": token,
        "hook basic": base64.b64encode(b"amuser:AmPassw0rd9x").decode(),
        "pushgateway basic": base64.b64encode(b"bob:PgwPassw0rd8y").decode(),
    }
    try:
        mon = cm.CollapseMonitor(
            unique("echo"),
            reference=reference(),
            sinks=[
                cm.MLflowSink(f"http://127.0.0.1:{port}", evidently=False, timeout=2, max_retries=0),
                cm.PrometheusSink(pushgateway=f"http://bob:PgwPassw0rd8y@127.0.0.1:{port}", timeout=2),
            ],
            alerts=[cm.Webhook(f"http://amuser:AmPassw0rd9x@127.0.0.1:{port}/hook", name="hook")],
            home=tmp_path / "home",
            alert_budget_seconds=2,
        )
        mon.check(healthy())
        report = mon.check(collapsed())
    finally:
        server.shutdown()
        server.server_close()
    assert report.alerts and report.errors  # every sink and the channel failed, with the echo
    said = {
        "log": caplog.text,
        "report": json.dumps(report.to_dict()),
        "history": _dump_sqlite(tmp_path / "home" / "history.db"),
        "outbox": _dump_sqlite(tmp_path / "home" / "outbox.db"),
        "spool": "".join(p.read_text() for p in (tmp_path / "home").rglob("*.json")),
    }
    assert "denied" in said["log"] + said["report"] + said["outbox"]  # the echo itself was recorded
    for where, text in said.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} in the {where}: {text[text.find(secret) - 200 :][:400]}"


def test_the_run_link_masks_a_tracking_uri_path_token() -> None:
    """Secrets audit (stop 41): repr and messages masked a proxy's secret path prefix, but the
    MLflow run link every alert and report carries kept it."""
    sink = cm.MLflowSink("https://mlflow.example.com/Pr0xySecretPrefix9/")
    assert sink.run_url("7", "abc123") == "https://mlflow.example.com/***/#/experiments/7/runs/abc123"
    plain = cm.MLflowSink("https://mlflow.example.com/mlflow/")
    assert plain.run_url("7", "abc123") == "https://mlflow.example.com/mlflow/#/experiments/7/runs/abc123"


def test_config_errors_never_echo_a_value_from_the_environment(monkeypatch) -> None:
    """Secrets audit (stop 41): a secret from ``${VAR}`` given to the wrong setting was echoed by
    that setting's check (``got 'Zq9...'``, lower-cased by the severity check), and a whole
    ``Authorization: Bearer <token>`` line written as a header name was echoed as the key."""
    from collapse_monitor.alerting import channel_from_config
    from collapse_monitor.config import sinks_from_config

    secret = "Zq9SecretVal77"
    monkeypatch.setenv("SEC_ENV", secret)
    hook = "http://127.0.0.1:9/h"
    channels = [
        {"type": "webhook", "url": hook, "verify_tls": "${SEC_ENV}"},
        {"type": "webhook", "url": hook, "timeout": "${SEC_ENV}"},
        {"type": "webhook", "url": hook, "severities": ["${SEC_ENV}"]},
        {"type": "alertmanager", "url": hook, "resend_window": "${SEC_ENV}"},
        {"type": "webhook", "url": hook, "headers": {f"Authorization: Bearer {secret}": "x"}},
    ]
    for item in channels:
        with pytest.raises(cm.ConfigError) as info:
            channel_from_config(item)
        assert secret not in str(info.value) and secret.lower() not in str(info.value), str(info.value)
    with pytest.raises(cm.ConfigError) as info:
        sinks_from_config([{"type": "mlflow", "tracking_uri": "sqlite:///x.db", "history_plot": "${SEC_ENV}"}])
    assert secret not in str(info.value) and "history_plot" in str(info.value), str(info.value)
    # plain words, numbers and paths are still shown: messages need them
    monkeypatch.setenv("PLAIN_ENV", "criticalish")
    with pytest.raises(cm.ConfigError) as info:
        channel_from_config({"type": "webhook", "url": hook, "severities": ["${PLAIN_ENV}"]})
    assert "criticalish" in str(info.value)


def test_a_monitor_name_with_a_trailing_newline_is_refused(tmp_path) -> None:
    """Secrets audit (stop 41): ``^...$`` with ``match`` let ``"m9\\n"`` through, into file
    names, experiment names and label values."""
    with pytest.raises(cm.ConfigError, match="name"):
        cm.CollapseMonitor("m9\n", reference=reference(), sinks=[], home=tmp_path / "home")
    with pytest.raises(cm.ConfigError, match="grouping_key"):
        cm.PrometheusSink(textfile=tmp_path / "m.prom", grouping_key={"zone\n": "a"})


def test_lock_files_are_owner_only(tmp_path) -> None:
    mon = cm.CollapseMonitor(unique("locks"), reference=reference(), sinks=[], home=tmp_path / "home")
    mon.check(healthy())
    locks = list((tmp_path / "home" / "locks").rglob("*.lock"))
    assert locks
    for path in locks:
        assert path.stat().st_mode & 0o777 == 0o600, (path.name, oct(path.stat().st_mode))
