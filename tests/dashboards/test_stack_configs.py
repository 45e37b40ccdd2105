"""The docker compose stack's configuration, checked without a Docker engine (there is none in CI):
compose.yaml parses, mounts only repository files - the same files the end-to-end tests run with
native binaries - publishes ports on 127.0.0.1 only, and the Prometheus / Alertmanager configs
pass promtool / amtool."""

from __future__ import annotations

import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from servers import run_tool

from collapse_monitor import dashboards as D

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
PROMETHEUS_YML = REPO / "integrations" / "prometheus" / "prometheus.yml"
RULES_YML = REPO / "integrations" / "prometheus" / "collapse_rules.yml"
ALERTMANAGER_YML = REPO / "integrations" / "alertmanager" / "alertmanager.yml"


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _bind_mounts(service: dict[str, Any]) -> dict[str, tuple[Path, str]]:
    """container path -> (host path resolved against docker/, options) of every bind mount."""
    mounts = {}
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        parts = entry.split(":")
        source, target = parts[0], parts[1]
        if not source.startswith((".", "/")):
            continue  # a named volume
        mounts[target] = ((DOCKER / source).resolve(), ":".join(parts[2:]))
    return mounts


def test_compose_parses_and_has_the_stack() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"mlflow", "prometheus", "pushgateway", "alertmanager", "grafana", "trainer"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, f"{name}: pin the image tag"
        if "build" in svc:
            assert (DOCKER / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve().is_file()


def test_every_published_port_binds_loopback_only() -> None:
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port!r} is not loopback-only"


def test_every_mounted_file_exists_in_the_repository() -> None:
    for name, svc in _compose()["services"].items():
        for target, (source, options) in _bind_mounts(svc).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
            assert REPO in source.parents, f"{name}: {source} lies outside the repository"
            assert "ro" in options.split(","), f"{name}: mount {target} read-only"


def test_prometheus_mounts_the_files_the_e2e_tests_use() -> None:
    svc = _compose()["services"]["prometheus"]
    mounts = _bind_mounts(svc)
    config_arg = next(a for a in svc["command"] if a.startswith("--config.file="))
    config_target = PurePosixPath(config_arg.split("=", 1)[1])
    assert mounts[str(config_target)][0] == PROMETHEUS_YML
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    # relative paths resolve against the config file's folder, in the container as in the repository
    relative = list(config["rule_files"])
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            relative += [str(PurePosixPath(f).parent) for f in sd["files"]]
    for rel in relative:
        in_container = str(config_target.parent / rel)
        assert in_container in mounts, f"{rel} is not mounted next to prometheus.yml"
        assert mounts[in_container][0] == (PROMETHEUS_YML.parent / rel).resolve()
    assert RULES_YML.resolve() in {m[0] for m in mounts.values()}


def test_prometheus_config_scrapes_pushgateway_and_serve_and_alerts_alertmanager() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    services = _compose()["services"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    pgw = jobs["pushgateway"]
    assert pgw["honor_labels"] is True
    assert pgw["static_configs"][0]["targets"] == ["pushgateway:9091"]
    assert "pushgateway" in services
    # `collapse-monitor serve` hosts come from file-based discovery; the committed file is valid and empty
    (sd,) = jobs["collapse-monitor-serve"]["file_sd_configs"]
    files = [p for pattern in sd["files"] for p in PROMETHEUS_YML.parent.glob(pattern)]
    assert files, "commit an (empty) serve_targets file so promtool finds the discovery files"
    for f in files:
        groups = yaml.safe_load(f.read_text())
        assert isinstance(groups, list)
    (am,) = config["alerting"]["alertmanagers"]
    assert am["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert any(p.endswith(":9093") for p in services["alertmanager"]["ports"])


def test_alertmanager_mounts_the_repository_config() -> None:
    svc = _compose()["services"]["alertmanager"]
    config_target = next(a for a in svc["command"] if a.startswith("--config.file=")).split("=", 1)[1]
    assert _bind_mounts(svc)[config_target][0] == ALERTMANAGER_YML


def test_grafana_provisioning_matches_the_mounts() -> None:
    svc = _compose()["services"]["grafana"]
    mounts = _bind_mounts(svc)
    dashboards_dir = REPO / "dashboards"
    assert mounts["/etc/grafana/provisioning/datasources"][0] == dashboards_dir / "provisioning" / "datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"][0] == dashboards_dir / "provisioning" / "dashboards"
    provider = yaml.safe_load((dashboards_dir / "provisioning/dashboards/collapse-monitor.yaml").read_text())
    (prov,) = provider["providers"]
    path = prov["options"]["path"]
    assert path == D.DASHBOARDS_PATH
    assert mounts[path][0] == dashboards_dir
    for name in D.build_dashboards():
        assert (dashboards_dir / name).is_file()
    home = svc["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/{D.OVERVIEW_UID}.json"
    ds = yaml.safe_load((dashboards_dir / "provisioning/datasources/collapse-monitor.yaml").read_text())
    url = ds["datasources"][0]["url"]
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    assert host in _compose()["services"]
    assert any(p.endswith(":" + port) for p in _compose()["services"][host]["ports"])


def test_trainer_pushes_to_the_compose_pushgateway_and_mlflow() -> None:
    env = _compose()["services"]["trainer"]["environment"]
    assert env["COLLAPSE_MONITOR_PUSHGATEWAY"] == "http://pushgateway:9091"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert (DOCKER / "demo_trainer.py").is_file()


def test_dockerfile_pins_cpu_torch_and_copies_existing_paths() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "torch==${TORCH_VERSION}" in text and "ARG TORCH_VERSION=2.13.0" in text
    assert "download.pytorch.org/whl/cpu" in text
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for line in text.splitlines():
        if line.startswith("COPY "):
            sources = line.split()[1:-1]
            for src in sources:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which is missing"
                assert f"!{src.rstrip('/')}" in {i.rstrip("/") for i in ignore}, f"{src} is excluded by dockerignore"


def test_dockerfile_context_builds_the_wheel(tmp_path) -> None:
    """``pip install .`` in the image sees only what the Dockerfile copies before it: the wheel
    must build from exactly that (it failed when integrations/ was not copied)."""
    import subprocess
    import sys
    import zipfile

    text = (DOCKER / "Dockerfile").read_text()
    ctx = tmp_path / "src"
    ctx.mkdir()
    for line in text[: text.index("RUN pip install .")].splitlines():
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            for src in sources:
                target = ctx / dest / Path(src).name if dest.endswith("/") else ctx / dest
                if (REPO / src).is_dir():
                    shutil.copytree(REPO / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy(REPO / src, target)
    out = tmp_path / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ctx)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("collapse_monitor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for member in (
        "collapse_monitor/cli.py",
        "collapse_monitor/integrations/prometheus/collapse_rules.yml",
        "collapse_monitor/integrations/alertmanager/alertmanager.yml",
        "collapse_monitor/integrations/runbook.md",
    ):
        assert member in names, member


def test_promtool_check_config(promtool: str) -> None:
    assert RULES_YML.is_file(), "integrations/prometheus/collapse_rules.yml is missing"
    result = run_tool("promtool", "check", "config", PROMETHEUS_YML)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output and "WARNING" not in output, output


def test_amtool_check_config(amtool: str) -> None:
    result = run_tool("amtool", "check-config", ALERTMANAGER_YML)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_examples_link_real_dashboards_and_stale_thresholds_agree() -> None:
    """The example config's dashboard link named a uid no dashboard has; the overview's "Time
    since last check" turned red a day after CollapseMonitorStale fired."""
    uids = {D.OVERVIEW_UID, D.DETAIL_UID}
    for path in (REPO / "integrations" / "examples").iterdir():
        for uid in re.findall(r"/d/([\w-]+)", path.read_text()):
            assert uid in uids, f"{path.name} links /d/{uid}, not one of {sorted(uids)}"
    rules = yaml.safe_load(RULES_YML.read_text())
    (stale,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "CollapseMonitorStale"]
    days = re.search(r"> (\d+) \* 86400", stale["expr"])
    assert days, stale["expr"]
    seconds = int(days.group(1)) * 86400
    overview = D.build_dashboards()[f"{D.OVERVIEW_UID}.json"]
    (panel,) = [p for p in overview["panels"] if p.get("title") == "Time since last check"]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["color"] == "red" and steps[-1]["value"] == seconds


def test_the_compose_pushgateway_keeps_its_groups_across_a_restart(tmp_path: Path) -> None:
    """The compose Pushgateway ran without a persistence file: a restart dropped every group,
    so firing collapse alerts resolved silently. The compose flags, run by the real binary,
    keep a pushed group across a restart."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
    from servers import Pushgateway

    compose = _compose()
    svc = compose["services"]["pushgateway"]
    # the volume sits on the image's own /pushgateway (owned by the user it runs as): a new
    # volume on a path the image lacks belongs to root, and the gateway could not write there
    assert "pushgateway-data" in compose["volumes"] and "pushgateway-data:/pushgateway" in svc["volumes"]
    args = [a.replace("=/pushgateway/", f"={tmp_path}/data/") for a in svc["command"]]
    assert any(a.startswith(f"--persistence.file={tmp_path}/data/") for a in args), svc["command"]
    (tmp_path / "data").mkdir()

    class ComposePushgateway(Pushgateway):
        def command(self) -> list[str]:
            return [self.executable, f"--web.listen-address={self.address}", *args]

    with ComposePushgateway(tmp_path / "pg") as gateway:
        reg = CollectorRegistry()
        Gauge("collapse_monitor_stage", "stage", ["monitor"], registry=reg).labels("kept").set(2)
        push_to_gateway(gateway.url, job="collapse_monitor", grouping_key={"monitor": "kept"}, registry=reg)
        assert gateway.value("collapse_monitor_stage", monitor="kept") == 2
        gateway.restart()
        assert gateway.value("collapse_monitor_stage", monitor="kept") == 2


def test_the_compose_alertmanager_runs_without_a_gossip_port(tmp_path: Path) -> None:
    """The compose Alertmanager had no ``--cluster.listen-address=``: it listened for cluster
    gossip on 0.0.0.0:9094 (tcp and udp), unlike the tested setup. Its compose flags, run by the
    real binary, leave clustering off."""
    from servers import AlertmanagerServer as Alertmanager

    svc = _compose()["services"]["alertmanager"]
    args = [a for a in svc["command"] if not a.startswith(("--config.file=", "--storage.path="))]
    assert "--cluster.listen-address=" in args, svc["command"]

    class ComposeAlertmanager(Alertmanager):
        def command(self) -> list[str]:
            return [
                self.executable,
                f"--config.file={ALERTMANAGER_YML}",
                f"--storage.path={self.data_dir}",
                f"--web.listen-address={self.address}",
                *args,
            ]

    with ComposeAlertmanager(tmp_path / "am") as am:
        assert am.status()["cluster"]["status"] == "disabled"
