"""``collapse-monitor integrations export DIR``: the deployable Prometheus / Alertmanager files for
users who installed the wheel. What it writes is the repository's files byte for byte, and they
pass the real promtool and amtool where they land (the wheel's copy: tests/core/test_packaging.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from collapse_monitor.cli import main
from collapse_monitor.deploy import INTEGRATION_FILES, export_integrations, integrations_dir

ROOT = Path(__file__).resolve().parents[2]


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def test_the_list_is_the_deployable_part_of_integrations() -> None:
    src = ROOT / "integrations"
    assert integrations_dir() == src
    deployable = {
        p.relative_to(src).as_posix()
        for p in src.rglob("*")
        if p.is_file() and p.parts[len(src.parts)] in {"prometheus", "alertmanager", "runbook.md"}
    }
    assert deployable == set(INTEGRATION_FILES)


def test_export_writes_the_files_and_promtool_and_amtool_accept_them(
    tmp_path: Path, promtool: str, amtool: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "monitoring"
    assert main(["integrations", "export", str(out)]) == 0
    printed = capsys.readouterr().out
    for rel in INTEGRATION_FILES:
        assert (out / rel).read_bytes() == (ROOT / "integrations" / rel).read_bytes(), rel
        assert f"wrote {out / rel}" in printed.replace("\n", "")
    assert "promtool check rules" in printed and "amtool check-config" in printed
    p = run(promtool, "check", "rules", str(out / "prometheus" / "collapse_rules.yml"))
    assert p.returncode == 0, p.stdout + p.stderr
    p = run(promtool, "test", "rules", "collapse_rules_test.yml", cwd=out / "prometheus")
    assert p.returncode == 0, p.stdout + p.stderr
    p = run(promtool, "check", "config", str(out / "prometheus" / "prometheus.yml"))
    assert p.returncode == 0, p.stdout + p.stderr
    p = run(amtool, "check-config", str(out / "alertmanager" / "alertmanager.yml"))
    assert p.returncode == 0, p.stdout + p.stderr

    # again: nothing changes
    assert main(["integrations", "export", str(out)]) == 0
    assert all(state == "unchanged" for _, state in export_integrations(out))


def test_an_edited_deployment_is_not_overwritten_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_integrations(tmp_path)
    am = tmp_path / "alertmanager" / "alertmanager.yml"
    edited = am.read_text().replace("http://127.0.0.1:9096/slack/webhook", "https://hooks.slack.example/T0/B0/x")
    am.write_text(edited)
    (tmp_path / "runbook.md").unlink()
    assert main(["integrations", "export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(am) in err and "--force" in err
    assert am.read_text() == edited  # left alone
    assert not (tmp_path / "runbook.md").exists()  # nothing written when one file clashes

    assert main(["integrations", "export", str(tmp_path), "--force"]) == 0
    printed = capsys.readouterr().out.replace("\n", "")
    assert f"replaced {am}" in printed and f"wrote {tmp_path / 'runbook.md'}" in printed
    assert am.read_bytes() == (ROOT / "integrations" / "alertmanager" / "alertmanager.yml").read_bytes()
    assert not list(tmp_path.rglob(".*.tmp"))


@pytest.mark.parametrize("what", ["integrations", "dashboards"])
def test_export_into_a_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([what, "export", str(blocker)]) == 2
    err = capsys.readouterr().err
    # one line on stderr that says what is wrong (it was the OS's "File exists" / "Not a directory")
    assert f"{blocker} is a file, not a folder" in err.replace("\n", "") and "Errno" not in err
    assert blocker.read_text() == "x"
