"""What a user gets from ``pip install collapse-monitor``: the sdist and wheel, and import costs.

The distributions are built offline (the venv's setuptools, no build isolation) from a copy of
the checkout in which local run outputs (``mlflow.db``, ``mlruns/``, ``.collapse_monitor/``,
``__pycache__``) have been planted, the way a developer's tree looks after ``make demo``. The
wheel is built from the unpacked sdist, as ``python -m build`` does, so the sdist must be
complete enough to build.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import collapse_monitor as cm

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "collapse_monitor"
HEAVY = ("torch", "mlflow", "evidently", "matplotlib", "sklearn", "pandas", "scipy", "lightning", "transformers")

# what never goes into a copy of the checkout (the venv alone is gigabytes)
_COPY_IGNORE = shutil.ignore_patterns(
    ".venv", "venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "mlruns", "mlflow.db", ".collapse_monitor", "collapse-demo-out",
)  # fmt: skip


def _build(src: Path, kind: str, out: Path) -> Path:
    code = f"from setuptools import build_meta as b; print(b.build_{kind}({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # setuptools warns when a data folder inside a package is not listed as a package (a
    # configuration it announces it may stop honouring): pyproject lists every one
    assert "absent from the `packages` configuration" not in proc.stderr + proc.stdout
    return out / proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("setuptools", minversion="70.1")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_COPY_IGNORE)
    # a developer's tree after a demo and a test run
    (src / "mlflow.db").write_bytes(b"")
    (src / "mlruns" / "0").mkdir(parents=True)
    (src / "mlruns" / "0" / "meta.yaml").write_text("x")
    for d in (src, src / "integrations", src / "collapse_monitor"):
        (d / ".collapse_monitor").mkdir(exist_ok=True)
        (d / ".collapse_monitor" / "history.db").write_bytes(b"")
    (src / "collapse_monitor" / "__pycache__").mkdir()
    (src / "collapse_monitor" / "__pycache__" / "types.cpython-311.pyc").write_bytes(b"")
    (src / "integrations" / "mlflow.db").write_bytes(b"")

    out = tmp / "dist"
    out.mkdir()
    sdist = _build(src, "sdist", out)
    unpacked = tmp / "unpacked"
    with tarfile.open(sdist) as tf:
        tf.extractall(unpacked, filter="data")
    (top,) = unpacked.iterdir()
    wheel = _build(top, "wheel", out)
    return sdist, wheel


def _package_sources() -> set[str]:
    files = {p.relative_to(ROOT).as_posix() for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}
    return files | {"collapse_monitor/py.typed"}


def test_wheel_holds_the_package_and_nothing_else(dists: tuple[Path, Path]) -> None:
    from collapse_monitor.deploy import INTEGRATION_FILES

    _, wheel = dists
    zf = zipfile.ZipFile(wheel)
    info = f"collapse_monitor-{cm.__version__}.dist-info/"
    payload = {n for n in zf.namelist() if not n.startswith(info)}
    # every module of every subpackage (pyproject lists them: a new one left out fails here),
    # py.typed for the type checkers of users, the deployable integration files (not the
    # examples), and no tests, local stores or caches
    shipped = {f"collapse_monitor/integrations/{rel}": ROOT / "integrations" / rel for rel in INTEGRATION_FILES}
    assert payload == _package_sources() | set(shipped)
    for name, src in shipped.items():
        assert zf.read(name) == src.read_bytes(), name


def test_the_installed_wheel_exports_the_integration_files(dists: tuple[Path, Path], tmp_path: Path) -> None:
    """From the unpacked wheel alone (no checkout beside it), ``integrations export`` finds
    the package's copy and writes the repository's bytes."""
    from collapse_monitor.deploy import INTEGRATION_FILES

    _, wheel = dists
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    out = tmp_path / "out"
    code = "import sys; from collapse_monitor.cli import main; sys.exit(main(['integrations', 'export', sys.argv[1]]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = "import collapse_monitor.deploy as d; print(d.integrations_dir())"
    where = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)}, capture_output=True, text=True
    )
    assert where.stdout.strip() == str(site / "collapse_monitor" / "integrations"), where.stderr
    for rel in INTEGRATION_FILES:
        assert (out / rel).read_bytes() == (ROOT / "integrations" / rel).read_bytes(), rel


def test_wheel_metadata(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    zf = zipfile.ZipFile(wheel)
    info = f"collapse_monitor-{cm.__version__}.dist-info/"
    meta = email.message_from_bytes(zf.read(info + "METADATA"))
    assert meta["Name"] == "collapse-monitor"
    assert meta["Version"] == cm.__version__
    assert meta["Requires-Python"] == ">=3.11"
    requires = meta.get_all("Requires-Dist") or []
    base = {r.split(";")[0].replace(" ", "") for r in requires if "extra ==" not in r}
    # FACTS: a torch range that admits a release newer than the CPU build on disk pulls a
    # multi-GB CUDA build; evidently 0.7 does not import with pandas 3; APScheduler 4 is an alpha
    assert "torch<2.14,>=2.3" in base
    assert "pandas<3,>=2.0" in base
    assert "apscheduler<4,>=3.11" in base
    assert not any(r.startswith(("lightning", "transformers", "pytest")) for r in base)
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"lightning", "transformers", "all", "dev"} <= extras
    entry_points = zf.read(info + "entry_points.txt").decode()
    assert "collapse-monitor = collapse_monitor.cli:main" in entry_points


def test_sdist_holds_the_deployable_files_and_no_local_state(dists: tuple[Path, Path]) -> None:
    sdist, _ = dists
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    # no part of the test suite (it needs the whole repository), no local stores, no caches
    stray = sorted(
        n
        for n in names
        if n.split("/")[0] in {"tests", "benchmarks", ".venv", "mlruns", ".ci"}
        or n.endswith((".db", ".pyc"))
        or "/.collapse_monitor/" in f"/{n}"
        or "__pycache__" in n
    )
    assert stray == []
    # the files the README points to: rules (+ their promtool tests), Alertmanager, runbook,
    # examples, dashboards
    assert {
        "integrations/prometheus/collapse_rules.yml",
        "integrations/prometheus/collapse_rules_test.yml",
        "integrations/prometheus/prometheus.yml",
        "integrations/alertmanager/alertmanager.yml",
        "integrations/runbook.md",
        "integrations/examples/collapse.yaml",
        "dashboards/collapse-monitor-overview.json",
        "dashboards/collapse-monitor-detail.json",
        "dashboards/provisioning/dashboards/collapse-monitor.yaml",
    } <= names
    # the package and what builds it
    assert {"pyproject.toml", "README.md"} <= names
    assert _package_sources() <= names


def _heavy_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize(
    "code",
    [
        "import collapse_monitor",
        "import collapse_monitor.hooks",
        "import collapse_monitor.metrics",
        # the CLI's --help (top level and a subcommand) parses nothing heavy
        "import contextlib, io\nfrom collapse_monitor.cli import main\n"
        "for argv in (['--help'], ['--version'], ['demo', '--help'], ['gate', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)",
    ],
    ids=["package", "hooks", "metrics", "cli-help"],
)
def test_imports_stay_light(code: str) -> None:
    assert _heavy_after(code) == []


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("collapse_monitor.hooks.lightning", ("lightning", "pytorch_lightning"), "lightning"),
        ("collapse_monitor.hooks.transformers", ("transformers",), "transformers"),
    ],
)
def test_missing_extra_names_the_extra(module: str, blocked: tuple[str, ...], extra: str) -> None:
    # sys.modules[name] = None makes `import name` raise ImportError, as if it were not installed
    code = f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\nimport collapse_monitor.hooks\nimport {module}\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"pip install 'collapse-monitor[{extra}]'" in proc.stderr.strip().splitlines()[-1]


def test_the_console_script_prints_its_version() -> None:
    """``collapse-monitor --version``: the installed package's version (the one pip and the
    wheel's metadata report), exit status 0."""
    from importlib.metadata import version

    exe = Path(sys.executable).with_name("collapse-monitor")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"collapse-monitor {version('collapse-monitor')}"
