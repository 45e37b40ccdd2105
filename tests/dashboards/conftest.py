"""A real stack for the dashboard tests, started once per session.

A small recursive-training chain with every input family (embeddings with a rare mode, probe
predictions with rare classes, texts with a Zipf tail) collapses over five generations. A real
``CollapseMonitor`` checks every generation and a real ``PrometheusSink`` pushes each report to a
real Pushgateway; the same reports (renamed to a second monitor) go to a ``PrometheusSink`` with
its own registry behind an HTTP ``/metrics`` endpoint, as ``collapse-monitor serve`` exposes them.
A real Prometheus runs with the repository's ``integrations/prometheus/prometheus.yml`` - the
file docker/compose.yaml mounts - whose targets are pointed at these loopback ports, loading the
repository's ``collapse_rules.yml`` and alerting a real Alertmanager that runs the repository's
``integrations/alertmanager/alertmanager.yml``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from servers import AlertmanagerServer, PrometheusServer, Pushgateway, free_port, require_binary

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = REPO / "integrations" / "prometheus" / "prometheus.yml"
RULES_YML = REPO / "integrations" / "prometheus" / "collapse_rules.yml"
ALERTMANAGER_YML = REPO / "integrations" / "alertmanager" / "alertmanager.yml"

PUSH_MONITOR = "dash-e2e-push"
SERVE_MONITOR = "dash-e2e-serve"
GENERATIONS = 5


# --- the chain ------------------------------------------------------------------------------------


def _texts(rng: np.random.Generator, vocab: int, n: int, length: int = 16) -> list[str]:
    ranks = np.arange(1, vocab + 1)
    p = 1.0 / ranks**1.1
    p /= p.sum()
    words = rng.choice(vocab, size=(n, length), p=p)
    return [" ".join(f"w{w}" for w in row) for row in words]


def _embeddings(rng: np.random.Generator, n: int, scale: float, rare_share: float) -> np.ndarray:
    n_rare = round(n * rare_share)
    head = rng.normal(0.0, scale, size=(n - n_rare, 6))
    rare = rng.normal(0.0, 0.3, size=(n_rare, 6)) + np.array([7.0, 7.0, 0, 0, 0, 0])
    return np.vstack([head, rare])


def chain_inputs(seed: int = 0) -> tuple[Any, list[Any]]:
    """(Reference, [Observation] * GENERATIONS): healthy at generation 0, collapsing after."""
    import collapse_monitor as cm

    rng = np.random.default_rng(seed)
    # probe set: priors .5/.3/.15/.03/.02 -> "d" and "e" are rare (prior < 0.05)
    counts = {"a": 250, "b": 150, "c": 75, "d": 15, "e": 10}
    labels = np.array([c for c, k in counts.items() for _ in range(k)], dtype=object)
    reference = cm.Reference(
        embeddings=_embeddings(rng, 500, 1.0, 0.03),
        labels=labels,
        texts=_texts(rng, 600, 250),
    )
    scale = [1.0, 0.9, 0.7, 0.5, 0.3]
    rare_share = [0.03, 0.02, 0.005, 0.0, 0.0]
    rare_recall = [1.0, 0.7, 0.3, 0.1, 0.0]
    vocab = [600, 300, 120, 60, 30]
    synthetic = [0.0, 0.5, 0.75, 0.9, 1.0]
    observations = []
    for g in range(GENERATIONS):
        preds = labels.copy()
        head = np.flatnonzero(np.isin(labels, ["a", "b", "c"]))
        wrong = rng.choice(head, size=int(0.05 * len(head)), replace=False)
        preds[wrong] = "a"
        for c in ("d", "e"):
            idx = np.flatnonzero(labels == c)
            lost = idx[round(rare_recall[g] * len(idx)) :]
            preds[lost] = "a"
        observations.append(
            cm.Observation(
                embeddings=_embeddings(rng, 500, scale[g], rare_share[g]),
                predictions=preds,
                texts=_texts(rng, vocab[g], 250),
                generation=g,
                provenance=cm.Provenance(synthetic_fraction=synthetic[g], sources=["human://e2e", "model://e2e"]),
            )
        )
    return reference, observations


# --- Prometheus config from the repository file ---------------------------------------------------


def repo_prometheus_config(
    *, pushgateway: str, serve: str, alertmanager: str | None, sd_dir: Path, interval: str = "1s"
) -> str:
    """``integrations/prometheus/prometheus.yml`` with its targets moved to loopback ports.

    Only addresses, intervals and paths change: job names, ``honor_labels`` and the rule file
    (by absolute path, the very file compose mounts) stay as committed. The serve job keeps its
    file-based discovery; its target file (in ``sd_dir``) lists the ``serve`` endpoint.
    """
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    config["rule_files"] = [str((PROMETHEUS_YML.parent / f).resolve()) for f in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] == "prometheus":
            continue  # Prometheus scraping itself adds nothing here
        for sc in job.get("static_configs", []):
            assert sc["targets"] == ["pushgateway:9091"], f"unexpected static target in {job['job_name']}"
            sc["targets"] = [pushgateway]
        for sd in job.get("file_sd_configs", []):
            sd_dir.mkdir(parents=True, exist_ok=True)
            (sd_dir / "serve.yml").write_text(yaml.safe_dump([{"targets": [serve]}]))
            sd["files"] = [str(sd_dir / Path(f).name) for f in sd["files"]]
            sd["refresh_interval"] = interval
        jobs.append(job)
    config["scrape_configs"] = jobs
    if alertmanager is None:
        config.pop("alerting", None)
    else:
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Stack:
    prometheus: PrometheusServer
    pushgateway: Pushgateway
    alertmanager: AlertmanagerServer
    serve_url: str
    reports: list[Any]
    monitors: tuple[str, str] = (PUSH_MONITOR, SERVE_MONITOR)
    exported: set[str] = field(default_factory=set)

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.prometheus.query(promql)

    def query_range(self, promql: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        import requests

        session = requests.Session()
        session.trust_env = False
        response = session.get(
            self.prometheus.url + "/api/v1/query_range",
            params={"query": promql, "start": start, "end": end, "step": step},
            timeout=30,
        )
        payload = response.json()
        assert payload["status"] == "success", f"{promql}: {payload.get('error')}"
        return list(payload["data"]["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self.prometheus._api(f"label/{label}/values", {"match[]": match}))


@contextlib.contextmanager
def _serve_endpoint(registry: Any) -> Iterator[str]:
    """``/metrics`` of ``registry`` on a loopback port (what ``collapse-monitor serve`` exposes)."""
    from prometheus_client import start_http_server

    port = free_port()
    started = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if isinstance(started, tuple):
            server, thread = started
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@pytest.fixture(scope="session")
def chain_reports(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """Reports of the first three generations of the chain, checked with no sinks (no servers)."""
    import collapse_monitor as cm

    reference, observations = chain_inputs(seed=1)
    monitor = cm.CollapseMonitor("dash-html", reference=reference, sinks=[], home=tmp_path_factory.mktemp("home"))
    return [monitor.check(obs) for obs in observations[:3]]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for name in ("prometheus", "prometheus-pushgateway", "prometheus-alertmanager"):
        require_binary(name)
    from prometheus_client import CollectorRegistry

    import collapse_monitor as cm
    from collapse_monitor.sinks import PrometheusSink

    base = tmp_path_factory.mktemp("dash-stack")
    with contextlib.ExitStack() as es:
        pgw = es.enter_context(Pushgateway(base / "pushgateway"))
        am = es.enter_context(AlertmanagerServer(base / "alertmanager", config_text=ALERTMANAGER_YML.read_text()))
        registry = CollectorRegistry()
        serve = es.enter_context(_serve_endpoint(registry))

        reference, observations = chain_inputs()
        monitor = cm.CollapseMonitor(
            PUSH_MONITOR,
            reference=reference,
            sinks=[PrometheusSink(pushgateway=pgw.url)],
            home=base / "home",
            strict=True,
        )
        serve_sink = PrometheusSink(registry=registry)
        reports = []
        for obs in observations:
            report = monitor.check(obs)
            serve_sink.emit(dataclasses.replace(report, monitor=SERVE_MONITOR))
            reports.append(report)

        prom = es.enter_context(
            PrometheusServer(
                base / "prometheus",
                config_text=repo_prometheus_config(
                    pushgateway=pgw.address, serve=serve, alertmanager=am.address, sd_dir=base / "serve_targets"
                ),
            )
        )
        # both paths delivered the last generation
        for mon in (PUSH_MONITOR, SERVE_MONITOR):
            prom.wait_for(f'collapse_monitor_generation{{monitor="{mon}"}} == {GENERATIONS - 1}', timeout=60)
        time.sleep(1.5)  # one more scrape, so every series of the last scrape is in
        names = set(prom._api("label/__name__/values"))
        exported = {n for n in names if n.startswith("collapse_monitor_")}
        yield Stack(prom, pgw, am, serve, reports, exported=exported)
