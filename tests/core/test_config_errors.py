"""Configuration mistakes are ConfigErrors that name the key, raised when the monitor is built
(never at the first alert), and file mistakes are one-line CLI errors, not tracebacks."""

from __future__ import annotations

import contextlib
import io
import socket
from pathlib import Path

import numpy as np
import pytest

import collapse_monitor as cm
from collapse_monitor.cli import main as cli_main
from collapse_monitor.config import monitor_from_config, sinks_from_config
from collapse_monitor.detection import Rules


@pytest.fixture
def ref() -> cm.Reference:
    return cm.Reference(labels=[0] * 90 + [1] * 10)


def _hook() -> cm.Webhook:
    return cm.Webhook("http://127.0.0.1:9/hook", name="team")


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"mutes": {"m": "tomorrow"}}, "mutes.m"),
        ({"routing": {"warning": ["slack-team"]}}, "routing.warning"),
        ({"routing": ["team"]}, "routing"),
        ({"alert_budget_seconds": -1}, "budget_seconds"),
        ({"strict": "false"}, "strict"),
        ({"links": ["a", "b"]}, "links"),
    ],
)
def test_alert_options_are_checked_when_the_monitor_is_built(tmp_path, ref, kw, key) -> None:
    with pytest.raises(cm.ConfigError) as err:
        cm.CollapseMonitor("m", ref, sinks=[], alerts=[_hook()], home=tmp_path, **kw)
    assert err.value.key == key
    assert not (tmp_path / "outbox.db").exists()  # nothing opened, nothing committed


def test_a_valid_monitor_still_builds_and_checks(tmp_path, ref) -> None:
    mon = cm.CollapseMonitor(
        "m", ref, sinks=[], alerts=[_hook()], home=tmp_path, routing={"warning": ["team"]}, mutes={"m": 4e9}
    )
    assert mon.check(cm.Observation(predictions=[0] * 90 + [1] * 10)).generation == 0


@pytest.mark.parametrize(
    ("rules", "key", "words"),
    [
        ({"tail": ["tail_coverge"]}, "rules.tail[0]", "unknown metric 'tail_coverge'"),
        ({"diversity": ["vendi_ratio", "nonsense"]}, "rules.diversity[1]", "unknown metric"),
        ({"tail": []}, "rules.tail", "at least one tail metric"),
        ({"trend": "no"}, "rules.trend", "true or false"),
        ({"alert_on_drift": 1}, "rules.alert_on_drift", "true or false"),
        ({"rare_class_tests": "yes"}, "rules.rare_class_tests", "true or false"),
        ({"seed": "abc"}, "rules.seed", "int"),
        ({"seed": -1}, "rules.seed", "int"),
    ],
)
def test_rules_reject_what_would_silently_change_detection(rules, key, words) -> None:
    with pytest.raises(cm.ConfigError) as err:
        Rules.from_dict(rules)
    assert err.value.key == key and words in str(err.value)


def test_rules_accept_class_recall_keys_and_empty_head() -> None:
    r = Rules.from_dict({"tail": ["tail_coverage", "class_recall.cat"], "head": []})
    assert r.tail == ("tail_coverage", "class_recall.cat") and r.head == ()


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "collapse.yaml"
    p.write_text(text)
    p.chmod(0o600)
    return p


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("name: m\nstrict: 'no'\n", "strict", "true or false"),  # 'false' and 'true' are read as booleans (${STRICT})
        ("name: 42\n", "name", "expected a string"),
        ("name: m\nmutes: {m: tomorrow}\n", "mutes.m", "ISO 8601"),
        ("name: m\nsinks: [{type: mlflow, trackin_uri: x}]\n", "sinks[0].trackin_uri", "tracking_uri"),
        ("name: m\nsinks: [{type: mlflow, timeout: -1}]\n", "sinks[0].timeout", "seconds"),
        ("name: m\nsinks: [{type: prometheus, job: ''}]\n", "sinks[0].job", "non-empty"),
        ("name: m\nsinks: [{type: mlflow, tracking_uri: '${NOT_SET_CM_TEST}'}]\n", "sinks[0].tracking_uri", "NOT_SET"),
    ],
)
def test_config_file_errors_name_the_key(tmp_path, ref, text, key, words) -> None:
    with pytest.raises(cm.ConfigError) as err:
        monitor_from_config(_yaml(tmp_path, text), reference=ref)
    assert err.value.key == key and words in str(err.value)


def test_a_config_without_reference_says_how_to_add_one(tmp_path) -> None:
    with pytest.raises(cm.ConfigError) as err:
        monitor_from_config(_yaml(tmp_path, "name: m\n"))
    assert err.value.key == "reference" and "add a reference: block" in str(err.value)


def test_env_defaults_work_in_every_block(tmp_path, ref, monkeypatch) -> None:
    monkeypatch.delenv("NOT_SET_CM_TEST", raising=False)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    (sink,) = sinks_from_config([{"type": "mlflow", "tracking_uri": "${NOT_SET_CM_TEST:-" + uri + "}"}])
    # expanded by the config loader, not here: sinks_from_config takes expanded values
    mon = monitor_from_config(
        _yaml(tmp_path, "name: m\nsinks: [{type: mlflow, tracking_uri: '${NOT_SET_CM_TEST:-" + uri + "}'}]\n"),
        reference=ref,
    )
    assert mon.sinks[0].tracking_uri == uri
    del sink


def test_serve_block_expands_env(tmp_path, monkeypatch) -> None:
    from collapse_monitor._service_config import load_serve_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CM_TEST_PORT", str(port))
    np.save(tmp_path / "ref.npy", np.random.default_rng(0).normal(size=(50, 3)))
    cfg = _yaml(
        tmp_path,
        "name: m\nsinks: []\nreference: {embeddings: ref.npy}\nserve: {port: '${CM_TEST_PORT}'}\n",
    )
    assert load_serve_config(cfg).settings.port == port


def _cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(list(args))
    return rc, out.getvalue() + err.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "flag", "words"),
    [
        ("preds.json", b'["a", "b" "c"]', "--predictions", "JSONDecodeError"),
        ("preds.txt", b"\xff\xfe\x00bad", "--predictions", "UnicodeDecodeError"),
        ("texts.txt", b"\xff\xfe\x00bad", "--texts", "UnicodeDecodeError"),
        ("preds.jsonl", b'{"text": 1}\n{bad\n', "--predictions", "line 2 is not JSON"),
    ],
)
def test_cli_check_reports_unreadable_files_without_a_traceback(tmp_path, monkeypatch, name, content, flag, words):
    monkeypatch.setenv("COLLAPSE_MONITOR_HOME", str(tmp_path / "home"))
    (tmp_path / "labels.txt").write_text("\n".join(["0"] * 9 + ["1"]))
    cfg = _yaml(tmp_path, "name: m\nsinks: []\nreference: {labels: labels.txt, texts: labels.txt}\n")
    (tmp_path / name).write_bytes(content)
    rc, text = _cli("check", "--config", str(cfg), flag, str(tmp_path / name))
    assert rc == 2, text
    assert words in text and name in text and "Traceback" not in text


def test_cli_check_reports_a_pickled_npy_without_a_traceback(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COLLAPSE_MONITOR_HOME", str(tmp_path / "home"))
    (tmp_path / "labels.txt").write_text("\n".join(["0"] * 9 + ["1"]))
    cfg = _yaml(tmp_path, "name: m\nsinks: []\nreference: {labels: labels.txt}\n")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    rc, text = _cli("check", "--config", str(cfg), "--predictions", str(tmp_path / "obj.npy"))
    assert rc == 2 and "allow_pickle" in text and "no pickles" in text


def test_an_empty_csv_is_one_config_error_without_numpy_warnings(tmp_path, monkeypatch) -> None:
    import warnings

    monkeypatch.setenv("COLLAPSE_MONITOR_HOME", str(tmp_path / "home"))
    np.save(tmp_path / "ref.npy", np.random.default_rng(0).normal(size=(20, 3)))
    cfg = _yaml(tmp_path, "name: m\nsinks: []\nreference: {embeddings: ref.npy}\n")
    (tmp_path / "gen.csv").write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "input contained no data" is not shown first
        rc, text = _cli("check", "--config", str(cfg), "--embeddings", str(tmp_path / "gen.csv"))
    assert rc == 2, text
    assert "error: embeddings: gen.csv holds no numbers" in text
    assert "Traceback" not in text
