"""Configuration as users write it (from an audit): files in other encodings, keys given twice,
values from the environment, YAML 1.1's strings that look like numbers, numpy scalars, and rules
that the reference cannot honour. Each case used to be a raw traceback, a silent override or a
monitor blind to collapse."""

from __future__ import annotations

import codecs
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import collapse_monitor as cm
from collapse_monitor._env import expand_env
from collapse_monitor.config import MAX_CONFIG_BYTES, read_yaml
from collapse_monitor.errors import ConfigError


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collapse_monitor.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_a_config_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.yaml"
    bad.write_bytes(b"name: m\nrules: {alpha: \x80\xff\xfe}\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(bad)
    assert info.value.key == "config" and "not UTF-8 text" in str(info.value)
    for command in (["check", "--config", str(bad)], ["alerts", "test", "--config", str(bad)]):
        result = _cli(tmp_path, *command)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and "not UTF-8 text" in result.stderr


def test_bom_and_utf16_configs_read(tmp_path: Path) -> None:
    text = "name: m\nrules: {alpha: 0.01}\n"
    (tmp_path / "bom.yaml").write_bytes(codecs.BOM_UTF8 + text.encode())
    (tmp_path / "u16.yaml").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    for name in ("bom.yaml", "u16.yaml"):
        assert read_yaml(tmp_path / name) == {"name": "m", "rules": {"alpha": 0.01}}


def test_a_key_given_twice_names_it_and_its_lines(tmp_path: Path) -> None:
    p = tmp_path / "dup.yaml"
    p.write_text("name: m\nrules:\n  alpha: 0.01\n  min_effect: 0.1\n  alpha: 0.5\n")
    with pytest.raises(ConfigError) as info:
        cm.CollapseMonitor.from_config(p, reference=cm.Reference(labels=[0, 1] * 20))
    assert info.value.key == "rules.alpha" and "lines 3 and 5" in str(info.value)
    p.write_text("monitors:\n  - name: a\n    home: x\n    home: y\n")
    with pytest.raises(ConfigError, match=r"monitors\[0\]\.home"):
        read_yaml(p)
    p.write_text("base: &b {alpha: 0.01}\nrules:\n  <<: *b\n  min_effect: 0.1\n")  # merge keys are fine
    assert read_yaml(p)["rules"] == {"alpha": 0.01, "min_effect": 0.1}


def test_a_huge_config_is_refused_before_parsing(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    p.write_text("x: [" + "1, " * (MAX_CONFIG_BYTES // 3 + 10) + "1]\n")
    with pytest.raises(ConfigError, match="a config is at most"):
        read_yaml(p)


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${EMPTY:-dflt}", {"EMPTY": ""}, "dflt"),  # set but empty: the default, as in the shell
        ("${EMPTY-dflt}", {"EMPTY": ""}, ""),  # without the colon: only when unset
        ("${NOPE-dflt}", {}, "dflt"),
        ("a$${LIT}b", {}, "a${LIT}b"),  # $${ is a literal ${
        ("${A}", {"A": "x"}, "x"),
    ],
)
def test_env_references_follow_the_shell(value: str, env: dict[str, str], expected: str) -> None:
    assert expand_env(value, "k", env) == expected


@pytest.mark.parametrize("value", ["${NOPE:-${A}}", "${1BAD}", "x${", "${A:-${B:-c}}"])
def test_env_references_that_would_stay_unexpanded_are_errors(value: str) -> None:
    with pytest.raises(ConfigError, match="nested references are not expanded") as info:
        expand_env(value, "sinks[0].url", {"A": "x"})
    assert info.value.key == "sinks[0].url"


def test_rules_from_the_environment_and_yaml_11_numbers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ALPHA", "0.002")
    monkeypatch.setenv("STRICT", "true")
    p = tmp_path / "c.yaml"
    p.write_text(
        "name: m\nstrict: ${STRICT:-false}\nrules:\n  alpha: ${ALPHA:-0.01}\n  min_effect: 1e-1\n"
        "  k: ${K:-7}\n  trend: ${TREND:-false}\n"
    )
    mon = cm.CollapseMonitor.from_config(p, reference=cm.Reference(labels=[0, 1] * 20))
    assert mon.strict is True
    r = mon.rules
    assert (r.alpha, r.min_effect, r.k, r.trend) == (0.002, 0.1, 7, False)
    assert type(r.k) is int and type(r.alpha) is float
    with pytest.raises(ConfigError, match=r"rules\.k"):
        cm.Rules.from_dict({"k": "7.5"})


def test_a_refused_value_from_the_environment_is_not_echoed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LEAKY", "https://user:hunter2PASS@host/x?token=SEKRETVAL")
    p = tmp_path / "c.yaml"
    for body in ("strict: ${LEAKY}\n", "rules:\n  paired_test: ${LEAKY}\n"):
        p.write_text("name: m\n" + body)
        with pytest.raises(ConfigError) as info:
            cm.CollapseMonitor.from_config(p, reference=cm.Reference(labels=[0, 1] * 20))
        assert "hunter2PASS" not in str(info.value) and "SEKRETVAL" not in str(info.value), str(info.value)


def test_numpy_scalars_are_plain_numbers_and_serialise() -> None:
    r = cm.Rules(k=np.int64(7), alpha=np.float64(0.01), nlist=np.int64(16), trend=np.bool_(False))
    assert (type(r.k), type(r.alpha), type(r.nlist), type(r.trend)) == (int, float, int, bool)
    assert cm.Rules.from_dict(yaml.safe_load(yaml.safe_dump(r.to_dict()))) == r


@pytest.mark.parametrize(
    ("rules", "key", "words"),
    [
        ({"head": ["vendi_ratio"]}, "rules.head", "also in diversity (its default list"),
        ({"diversity": ["accuracy"]}, "rules.diversity", "also in head (its default list"),
    ],
)
def test_a_metric_in_two_families_names_the_list_the_user_set(rules, key, words) -> None:
    with pytest.raises(ConfigError) as info:
        cm.Rules.from_dict(rules)
    assert info.value.key == key and words in str(info.value)


def test_rules_the_reference_cannot_honour(tmp_path: Path, caplog) -> None:
    ref = cm.Reference(labels=[0, 1, 2] * 20)
    with pytest.raises(ConfigError) as info:  # a class the reference does not have: empty family
        cm.CollapseMonitor("m", reference=ref, sinks=[], home=tmp_path, rules={"tail": ["class_recall.7"]})
    assert info.value.key == "rules.tail[0]" and "its classes: 0, 1, 2" in str(info.value)

    x = np.random.default_rng(0).normal(size=(6, 2))
    with caplog.at_level("WARNING", logger="collapse_monitor"):
        mon = cm.CollapseMonitor("tiny", reference=cm.Reference(embeddings=x), sinks=[], home=tmp_path)
    assert "rules.k=5 needs a reference of more than 6 rows" in caplog.text
    collapsed = np.repeat(x.mean(0, keepdims=True), 6, axis=0)  # one point: total collapse
    report = mon.check(cm.Observation(embeddings=collapsed))
    assert report.metrics["coverage"].value == 1.0  # blind, and the report says so
    assert any("k-NN metrics" in n for n in report.notes), report.notes


def test_a_baseline_pin_set_after_the_baseline_says_it_is_not_used(tmp_path: Path) -> None:
    ref = cm.Reference(labels=[0, 1] * 30)
    cm.CollapseMonitor("pin", reference=ref, sinks=[], home=tmp_path).check(cm.Observation(predictions=[0, 1] * 30))
    mon = cm.CollapseMonitor("pin", reference=ref, sinks=[], home=tmp_path, rules={"baseline_generation": 3})
    report = mon.check(cm.Observation(predictions=[0, 1] * 30))
    assert report.baseline_generation == 0
    assert any("rules.baseline_generation=3 is not used" in n for n in report.notes), report.notes


def test_an_error_in_the_shared_rules_of_serve_names_the_shared_block(tmp_path: Path) -> None:
    """It was blamed on monitors[0].rules.alpha, though that entry has no rules: key."""
    from collapse_monitor._service_config import load_serve_config

    np.save(tmp_path / "labels.npy", np.array([0, 1] * 20))
    p = tmp_path / "serve.yaml"
    p.write_text("rules: {alpha: 2}\nreference: {labels: labels.npy}\nmonitors:\n  - name: a\n")
    with pytest.raises(ConfigError) as info:
        load_serve_config(p)
    assert info.value.key == "rules.alpha", str(info.value)
