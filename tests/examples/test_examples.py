"""The training scripts in integrations/examples run (small sizes) and each produces reports and
MLflow runs. The three scripts start together (one module fixture) to share the import time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "integrations" / "examples"

SMALL = {
    "train_torch.py": ["--n-train", "600", "--n-probe", "600", "--epochs", "3", "--config", "{dir}/collapse.yaml"],
    "train_lightning.py": ["--n-train", "600", "--n-probe", "600", "--epochs", "3", "--home", "{dir}/home"],
    "train_hf.py": [
        "--n-train",
        "96",
        "--n-samples",
        "120",
        "--epochs",
        "1",
        "--vocab",
        "60",
        "--length",
        "12",
        "--home",
        "{dir}/home",
    ],
}
NEEDS = {"train_lightning.py": "lightning", "train_hf.py": "transformers"}


@dataclass
class Run:
    dir: Path
    uri: str
    proc: subprocess.Popen
    log: Path

    def finish(self) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=400)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.log.read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    out = {}
    for script, extra in SMALL.items():
        d = tmp_path_factory.mktemp(script.removesuffix(".py"))
        shutil.copy(EXAMPLES / "collapse.yaml", d / "collapse.yaml")  # its home: is relative to the file
        uri = f"sqlite:///{d / 'mlflow.db'}"
        cmd = [
            sys.executable,
            str(EXAMPLES / script),
            "--generations",
            "2",
            "--tracking-uri",
            uri,
            "--report-json",
            str(d / "reports.json"),
            *[a.format(dir=d) for a in extra],
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        log = d / "out.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=fh, stderr=subprocess.STDOUT)
        out[script] = Run(d, uri, proc, log)
    yield out
    for r in out.values():
        if r.proc.poll() is None:
            r.proc.kill()


def _check(run: Run, monitor: str, keys: set[str]) -> list[dict]:
    code, log = run.finish()
    assert code == 0, log[-4000:]
    reports = json.loads((run.dir / "reports.json").read_text())
    assert [r["generation"] for r in reports] == [0, 1], log[-2000:]
    assert all(r["monitor"] == monitor and not r["errors"] and r["run_id"] for r in reports)
    assert keys <= set(reports[1]["metrics"])
    assert reports[0]["provenance"]["synthetic_fraction"] == 0.0
    assert reports[1]["provenance"]["synthetic_fraction"] == 1.0

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=run.uri)
    exp = client.get_experiment_by_name(f"collapse-monitor/{monitor}")
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.run_id for r in runs} == {r["run_id"] for r in reports}
    assert sorted(r.data.tags["collapse.generation"] for r in runs) == ["0", "1"]
    return reports


def test_train_torch_with_watch_and_config(runs: dict[str, Run]) -> None:
    reports = _check(runs["train_torch.py"], "selftrain-torch", {"rare_class_recall", "accuracy", "class_recall.4"})
    assert (runs["train_torch.py"].dir / ".collapse_monitor").is_dir()  # the config's home, next to it
    assert reports[1]["metrics"]["accuracy"]["baseline"] == reports[0]["metrics"]["accuracy"]["value"]


def test_train_lightning_with_callback(runs: dict[str, Run]) -> None:
    pytest.importorskip(NEEDS["train_lightning.py"])
    _check(runs["train_lightning.py"], "selftrain-lightning", {"rare_class_recall", "worst_class_recall"})


def test_train_hf_with_callback(runs: dict[str, Run]) -> None:
    pytest.importorskip(NEEDS["train_hf.py"])
    reports = _check(runs["train_hf.py"], "gpt2-recursive", {"distinct_2", "vocab_ratio", "rare_ngram_recall"})
    assert reports[1]["provenance"]["sources"] == ["samples:gen0"]
