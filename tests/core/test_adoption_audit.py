"""Defects a read-only adoption audit (2026-12-08) found by following the README as a new user:
each test fails on the code before its fix."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

import collapse_monitor as cm
from collapse_monitor._redact import mask_credentials
from collapse_monitor.cli import main as cli_main
from collapse_monitor.config import read_yaml
from collapse_monitor.errors import ConfigError

_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"


def _cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(list(args))
    return rc, out.getvalue() + err.getvalue()


def test_one_sink_not_in_a_list_is_a_config_error_before_the_home_is_made(tmp_path) -> None:
    """``sinks=cm.MLflowSink()`` was ``TypeError: 'MLflowSink' object is not iterable``, which
    ``except cm.CollapseMonitorError`` misses, raised after the home was set up."""
    ref = cm.Reference(labels=[0, 1] * 10)
    home = tmp_path / "home"
    with pytest.raises(ConfigError, match=r"^sinks: expected a list of sinks, e.g. sinks=\[MLflowSink") as info:
        cm.CollapseMonitor("m", reference=ref, sinks=cm.MLflowSink(), home=home)  # type: ignore[arg-type]
    assert info.value.key == "sinks"
    assert not home.exists()
    with pytest.raises(ConfigError, match=r"^sinks: "):
        cm.CollapseMonitor("m", reference=ref, sinks="mlflow", home=home)  # type: ignore[arg-type]


def test_a_yaml_syntax_error_says_what_and_where_and_hints_at_quoting(tmp_path) -> None:
    """It said only "not valid YAML at line 4"; an unquoted ``${VAR}`` in a flow mapping is the
    usual cause. The snippet of the line (which may hold a secret) is still not shown."""
    p = tmp_path / "c.yaml"
    p.write_text("name: m\nsinks: []\nreference: {labels: l.npy}\nrules: {alpha: ${ALPHA}, note: hunter2x}\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(p)
    msg = str(info.value)
    assert "at line 4, column " in msg and "expected ',' or '}'" in msg
    assert 'quote a value that holds ${VAR}: "${VAR}"' in msg
    assert "hunter2x" not in msg
    p.write_text("alpha: [0.01\nmin_effect: 0.1\n")  # no ${...}: no hint
    with pytest.raises(ConfigError) as info:
        read_yaml(p)
    assert "not valid YAML at line" in str(info.value) and "quote" not in str(info.value)


def test_drop_replicates_errors_name_the_option_not_the_parameter(tmp_path, monkeypatch) -> None:
    """``check --drop-replicates 5`` said ``numbers: no replicate 5``: the Python parameter."""
    monkeypatch.setenv("COLLAPSE_MONITOR_HOME", str(tmp_path / "home"))
    np.save(tmp_path / "labels.npy", np.array([0, 1] * 20))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: m\nsinks: []\nreference: {labels: labels.npy}\n")
    cfg.chmod(0o600)
    rc, text = _cli("check", "--config", str(cfg), "--predictions", str(tmp_path / "labels.npy"))
    assert rc == 0, text
    for number in ("5", "0"):
        rc, text = _cli("check", "--config", str(cfg), "--drop-replicates", number)
        assert rc == 2 and "error: --drop-replicates: " in text and "numbers:" not in text, text


@pytest.mark.parametrize(
    ("source", "masked"),
    [
        (
            f"https://api.example.com/export Authorization: Bearer {_JWT}",
            "https://api.example.com/export Authorization: *** ***",
        ),
        (f"Bearer {_JWT}", "Bearer ***"),
        (f"authorization=Basic {_JWT}", "authorization=*** ***"),
        ("basic english-corpus", "basic english-corpus"),  # ordinary words of a name stay
        ("token classification-set", "token classification-set"),
    ],
)
def test_an_authorization_value_in_a_source_is_masked_whole(source, masked) -> None:
    """``Authorization: Bearer <jwt>`` masked the word ``Bearer`` and kept the token."""
    assert mask_credentials(source) == masked
    prov = cm.Provenance(sources=[source], parent_run_id=source)
    assert _JWT not in prov.sources[0] and _JWT not in str(prov.parent_run_id)


def test_a_jsonl_object_without_a_text_key_names_its_line(tmp_path, monkeypatch) -> None:
    """It was ``observation.texts: item 1 is NoneType, expected str``."""
    monkeypatch.setenv("COLLAPSE_MONITOR_HOME", str(tmp_path / "home"))
    (tmp_path / "ref.txt").write_text("\n".join(f"a human text number {i}" for i in range(30)))
    (tmp_path / "gen.jsonl").write_text('{"text": "one"}\n\n{"txt": "two", "id": 3}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: m\nsinks: []\nreference: {texts: ref.txt}\n")
    cfg.chmod(0o600)
    rc, text = _cli("check", "--config", str(cfg), "--texts", str(tmp_path / "gen.jsonl"))
    assert rc == 2, text
    assert 'gen.jsonl line 3: an object needs a "text" key (it has: id, txt)' in text
    assert "NoneType" not in text


def test_the_audit_inputs_still_load(tmp_path: Path) -> None:
    """The forms that worked keep working: plain values and {"text": ...} objects."""
    from collapse_monitor.config import _load_list

    p = tmp_path / "t.jsonl"
    p.write_text('"plain"\n{"text": "object", "id": 1}\n')
    assert _load_list(p, "texts", texts=True) == ["plain", "object"]


def test_replay_budget_seconds_from_the_config(tmp_path, monkeypatch) -> None:
    """The check's replay budget (a fault audit, 2026-12-08) is a config key too: a number,
    ``${VAR}``, or null for no limit; a bad value names the key; ``serve``'s monitor entries
    inherit it from the top level."""
    from collapse_monitor._service_config import load_serve_config

    np.save(tmp_path / "labels.npy", np.array([0, 1] * 20))
    cfg = tmp_path / "c.yaml"

    def build(value: str) -> cm.CollapseMonitor:
        cfg.write_text(f"name: m\nsinks: []\nreference: {{labels: labels.npy}}\nreplay_budget_seconds: {value}\n")
        cfg.chmod(0o600)
        return cm.CollapseMonitor.from_config(cfg)

    assert build("2.5").replay_budget_seconds == 2.5
    assert build("null").replay_budget_seconds is None
    monkeypatch.setenv("CM_REPLAY", "4")
    assert build('"${CM_REPLAY}"').replay_budget_seconds == 4.0
    for bad in ("0", "-1", "soon", "[1]"):
        with pytest.raises(ConfigError) as info:
            build(bad)
        assert info.value.key == "replay_budget_seconds", bad
    assert (
        cm.CollapseMonitor(
            "d", reference=cm.Reference(labels=[0, 1] * 5), sinks=[], home=tmp_path / "h"
        ).replay_budget_seconds
        == 10.0
    )
    np.save(tmp_path / "inputs.npy", np.zeros((40, 3), dtype=np.float32))
    cfg.write_text(
        "sinks: []\nreference: {labels: labels.npy}\nreplay_budget_seconds: 3\n"
        "monitors:\n  - {name: a, model: {registered_name: a}, probe: {inputs: inputs.npy},"
        " schedule: {interval_seconds: 60}}\n"
    )
    cfg.chmod(0o600)
    assert load_serve_config(cfg).monitors[0].monitor.replay_budget_seconds == 3.0
