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
    # two merge keys in one mapping: the last won silently (a config audit); a list merges both
    p.write_text("a: &a {alpha: 0.01}\nb: &b {alpha: 0.02}\nrules:\n  <<: *a\n  <<: *b\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(p)
    assert info.value.key == "rules.<<" and "lines 4 and 5" in str(info.value)
    p.write_text("a: &a {alpha: 0.01}\nb: &b {min_effect: 0.2}\nrules:\n  <<: [*a, *b]\n")
    assert read_yaml(p)["rules"] == {"alpha": 0.01, "min_effect": 0.2}


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


# --- config audit of 2026-12-06 (second): each case below failed on the code before it -------


def _labels_config(tmp_path: Path, body: str) -> Path:
    np.save(tmp_path / "labels.npy", np.array([0, 1, 2] * 20))
    p = tmp_path / "c.yaml"
    p.write_text(f"name: m\nhome: {tmp_path / 'home'}\nreference: {{labels: labels.npy}}\n{body}")
    p.chmod(0o600)
    return p


def test_alert_settings_are_expanded_once(tmp_path: Path, monkeypatch) -> None:
    """``$${`` is a literal ``${``, and a secret whose value holds ``${`` is used as it is: the
    alerts list was expanded a second time on the check / serve path (not on ``alerts test``)."""
    monkeypatch.setenv("CM_TEST_TOKEN", "from-the-environment")
    monkeypatch.setenv("CM_TEST_SECRET", "pa${ss}word")
    p = _labels_config(
        tmp_path,
        "sinks: []\nalerts:\n"
        "  - {type: webhook, url: 'https://h.example.com/x', headers: {X-Lit: '$${CM_TEST_TOKEN}'}}\n"
        "  - {type: webhook, url: 'https://h.example.com/y', secret: '${CM_TEST_SECRET}'}\n",
    )
    mon = cm.CollapseMonitor.from_config(p)
    literal, signed = mon.channels
    assert literal._headers == {"X-Lit": "${CM_TEST_TOKEN}"}
    assert signed._key == b"pa${ss}word"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("sinks: [{type: [mlflow]}]\n", "sinks[0].type"),
        ("sinks: [{type: prometheus, textfile: m.prom, grouping_key: team}]\n", "sinks[0].grouping_key"),
        ("sinks: [{type: prometheus, textfile: m.prom, timeout: .inf}]\n", "sinks[0].timeout"),
        ("sinks: [{type: prometheus, textfile: m.prom, timeout: yes}]\n", "sinks[0].timeout"),
        ("sinks: [{type: prometheus, textfile: m.prom, rare_threshold: abc}]\n", "sinks[0].rare_threshold"),
        ("sinks: [{type: prometheus, textfile: [a]}]\n", "sinks[0].textfile"),
        ("sinks: [{type: mlflow, nest: 'off'}]\n", "sinks[0].nest"),
        (
            "sinks: []\nalerts: [{type: slack, url: 'https://hooks.example.com/x', severities: 2}]\n",
            "alerts[0].severities",
        ),
        (
            "sinks: []\nalerts: [{type: alertmanager, url: 'http://127.0.0.1:9093', labels: [team]}]\n",
            "alerts[0].labels",
        ),
        ("sinks: []\nalerts: {}\n", "alerts"),
        ("sinks: []\nhome: [a, b]\n", "home"),
        ("sinks: []\nrules: " + "[" * 600 + "]" * 600 + "\n", "config"),
        ("sinks: []\nclass_priors: {0: 0.01, 1: 0.5, 2: 0.49, 0x0: 0.9}\n", "class_priors.0x0"),
    ],
)
def test_a_malformed_setting_is_a_config_error_naming_it(tmp_path: Path, body: str, key: str) -> None:
    """Each was a raw TypeError / ValueError / RecursionError traceback, a setting accepted and
    failing on every export, a folder named ``['a', 'b']`` or a key that silently won."""
    p = _labels_config(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        cm.CollapseMonitor.from_config(p)
    assert info.value.key == key, str(info.value)


def test_flags_and_numbers_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    """``${VAR}`` expands to text: ``"false"`` turned an MLflow sink's artifacts *on* (a truthy
    string) and an alert timeout of ``"5"`` was refused."""
    monkeypatch.setenv("CM_TEST_ARTIFACTS", "false")
    monkeypatch.setenv("CM_TEST_TIMEOUT", "2.5")
    p = _labels_config(
        tmp_path,
        "sinks: [{type: mlflow, tracking_uri: 'sqlite:///m.db', artifacts: '${CM_TEST_ARTIFACTS}', timeout: '${CM_TEST_TIMEOUT}'}]\n"
        "alerts: [{type: slack, url: 'https://hooks.example.com/x', timeout: '${CM_TEST_TIMEOUT}'}]\n",
    )
    mon = cm.CollapseMonitor.from_config(p)
    assert mon.sinks[0].artifacts is False and mon.sinks[0].timeout == 2.5
    assert mon.channels[0].timeout == 2.5


def test_an_alias_bomb_is_refused_by_alerts_test_too(tmp_path: Path) -> None:
    """``alerts test`` read the file without the expansion guard and ran out of memory."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(levels) + "\nalerts: [{type: webhook, url: 'https://h.example.com/x', headers: {X: *a7}}]\n")
    result = _cli(tmp_path, "alerts", "test", "--config", str(p))
    assert result.returncode == 2 and "expands to more than" in result.stderr + result.stdout, result.stderr


def test_an_empty_block_in_a_serve_entry_inherits_the_shared_one(tmp_path: Path) -> None:
    from collapse_monitor._service_config import load_serve_config

    np.save(tmp_path / "labels.npy", np.array([0, 1, 2] * 20))
    p = tmp_path / "serve.yaml"
    p.write_text(
        f"home: {tmp_path / 'home'}\nreference: {{labels: labels.npy}}\nrules: {{alpha: 0.001, min_effect: 0.3}}\n"
        "sinks: []\nmonitors:\n  - name: a\n    rules:\n      # alpha: 0.01\n    sinks:\n  - name: b\n"
    )
    cfg = load_serve_config(p)
    for spec in cfg.monitors:
        assert (spec.monitor.rules.alpha, spec.monitor.rules.min_effect) == (0.001, 0.3), spec.name
        assert spec.monitor.sinks == [], spec.name


def test_a_database_password_with_a_slash_is_masked(tmp_path: Path, caplog) -> None:
    """SQLAlchemy reads ``bob:hun/ter2@`` as user and password; urlsplit ends the netloc at the
    ``/``, so reprs, messages and the world-readable warning showed or missed it."""
    import logging

    from collapse_monitor._redact import mask_credentials, redact_text
    from collapse_monitor._service_config import ModelSpec
    from collapse_monitor.sinks import MLflowSink

    uri = "postgresql://bob:hun/ter2@db.example.com:5432/mlflow"
    shown = [
        repr(ModelSpec("m", tracking_uri=uri, registry_uri=uri)),
        repr(MLflowSink(uri)),
        redact_text(f"cannot connect to {uri}"),
        redact_text("redis://:s3cret-pw@cache:6379/0 refused"),
        mask_credentials(uri),
    ]
    for text in shown:
        assert "ter2" not in text and "s3cret" not in text, text
        assert "db.example.com:5432/mlflow" in text or "cache:6379" in text, text
    # paths with an "@" and http(s) URLs are read as before
    assert mask_credentials("s3://bucket/data@2024/x") == "s3://bucket/data@2024/x"
    p = _labels_config(tmp_path, f"sinks: [{{type: mlflow, tracking_uri: '{uri}'}}]\n")
    p.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="collapse_monitor"):
        cm.CollapseMonitor.from_config(p)
    assert "world-readable and holds secrets" in caplog.text


@pytest.mark.parametrize("kind", ["Slack", "TEAMS"])
def test_a_world_readable_literal_url_warns_whatever_the_type_case(tmp_path: Path, caplog, kind: str) -> None:
    import logging

    p = _labels_config(tmp_path, f"sinks: []\nalerts: [{{type: {kind}, url: 'https://hooks.example.com/T1/B2/xyz'}}]\n")
    p.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="collapse_monitor"):
        cm.CollapseMonitor.from_config(p)
    assert "world-readable and holds secrets" in caplog.text


def test_a_yes_prior_and_a_zero_serve_block_are_refused(tmp_path: Path) -> None:
    """Config audit (2026-12-06, second): `class_priors: {0: yes}` became a prior of 1.0 and
    `serve: 0` read as an empty block."""
    from collapse_monitor._service_config import parse_settings
    from collapse_monitor.errors import InputError

    with pytest.raises(InputError, match="prior of 0 is not a number"):
        cm.Reference(labels=[0, 1] * 10, class_priors={0: True, 1: 0.5})
    with pytest.raises(ConfigError) as info:
        parse_settings(0)
    assert info.value.key == "serve"
    assert parse_settings(None).port == parse_settings({}).port


# --- config audit of 2026-12-07: each case below failed on the code before it ---------------------


def test_a_pinned_baseline_generation_never_checked_does_not_blind_the_monitor(tmp_path: Path, caplog) -> None:
    """With ``baseline_generation: 2`` and generation 2 never checked (skipped, or its check
    failed), every later check stayed "healthy", waiting for it, with the rare class lost; the
    waiting reports also claimed to be baselines (``is_baseline``)."""
    ref = cm.Reference(labels=[0] * 240 + [1] * 10)
    mon = cm.CollapseMonitor("pin", reference=ref, sinks=[], home=tmp_path, rules={"baseline_generation": 2})
    good, lost = [0] * 240 + [1] * 10, [0] * 250
    r0 = mon.check(cm.Observation(predictions=good, generation=0))
    assert not r0.is_baseline and r0.baseline_generation == 2 and any("waiting" in n for n in r0.notes)
    r3 = mon.check(cm.Observation(predictions=good, generation=3))
    assert r3.is_baseline and any("rules.baseline_generation=2 was never checked" in n for n in r3.notes)
    assert "generation 3, the first checked after it, is the baseline" in caplog.text
    r4 = mon.check(cm.Observation(predictions=lost, generation=4))
    assert r4.baseline_generation == 3 and r4.stage is not cm.Stage.HEALTHY
    # a later monitor on the same home keeps that baseline
    again = cm.CollapseMonitor("pin", reference=ref, sinks=[], home=tmp_path, rules={"baseline_generation": 2})
    assert again.check(cm.Observation(predictions=lost, generation=5)).baseline_generation == 3


@pytest.mark.parametrize(
    ("block", "key", "words"),
    [
        ("{}", "reference", "give at least one of"),
        ("{labels: labels.txt, class_priors: [0.9, 0.1]}", "reference.class_priors", "mapping"),
        ("{labels: labels.txt, class_priors: {1: -0.1, 0: 1}}", "reference.class_priors", ">= 0"),
        ("{labels: [0, 1]}", "reference.labels", "expected a file path"),  # was: file not found: .../[0, 1]
        ("{labels: false, texts: labels.txt}", "reference.labels", "expected a file path"),  # was: ignored
        # was: file not found: <config folder>/s3:/bucket/ref.npy, a path nobody wrote
        ("{embeddings: 's3://bucket/ref.npy'}", "reference.embeddings", "is a URL (s3://...)"),
        ("{labels: ' https://example.org/l.txt'}", "reference.labels", "download it first"),
    ],
)
def test_reference_block_mistakes_are_config_errors(tmp_path: Path, block: str, key: str, words: str) -> None:
    from collapse_monitor.config import load_config, monitor_from_dict

    (tmp_path / "labels.txt").write_text("\n".join(["0"] * 9 + ["1"]))
    p = tmp_path / "c.yaml"
    p.write_text(f"name: m\nsinks: []\nreference: {block}\n")
    raw = load_config(p)
    with pytest.raises(ConfigError) as err:
        monitor_from_dict(raw, raw.pop("_dir"))
    assert err.value.key == key and words in str(err.value), str(err.value)


def test_metric_defining_rules_changed_after_the_baseline_are_not_compared(tmp_path: Path, caplog) -> None:
    """k 5 -> 2 between two checks of identical samples read tail_coverage -18 %, head_coverage
    -20 % and a drift alert: the metrics k defines are no longer compared with a baseline measured
    under another k (nor trended across the change); the others still are."""
    rng = np.random.default_rng(0)
    ref = cm.Reference(embeddings=rng.normal(size=(600, 8)), labels=[0] * 580 + [1] * 20)
    gen = cm.Observation(embeddings=rng.normal(size=(600, 8)), predictions=[0] * 580 + [1] * 20)
    lost = cm.Observation(embeddings=gen.embeddings, predictions=[0] * 600)

    def mon(**rules: object) -> cm.CollapseMonitor:
        return cm.CollapseMonitor("m", reference=ref, sinks=[], home=tmp_path, rules={"n_boot": 50, **rules})

    base = mon(k=5).check(gen)
    assert base.measure is not None and base.measure["k"] == 5
    again = mon(k=2).check(gen)
    assert again.stage is cm.Stage.HEALTHY and not again.drift
    assert not [f for f in again.findings if f.significant]
    assert again.metrics["tail_coverage"].baseline is None and again.metrics["vendi_score"].baseline is not None
    (note,) = [n for n in again.notes if "rules.k 5 -> 2" in n]
    assert "tail_coverage" in note and "vendi_score" not in note and "check the baseline generation again" in note
    assert "rules.k 5 -> 2" in caplog.text
    # the classifier metrics k does not define are still judged: a lost rare class is caught
    judged = mon(k=2).check(lost)
    assert judged.stage is not cm.Stage.HEALTHY and judged.metrics["rare_class_recall"].baseline == 1.0
    # the setting restored: compared again
    back = mon(k=5).check(gen)
    assert back.metrics["tail_coverage"].baseline is not None
    assert not [n for n in back.notes if "since the baseline" in n]
    # the report round-trips its measure
    assert cm.Report.from_dict(back.to_dict()).measure == back.measure


def test_tail_metrics_the_reference_cannot_give_are_warned_about(tmp_path: Path, caplog) -> None:
    """A labels-only reference with ``tail: [tail_coverage, rare_mode_coverage]`` and
    ``rare_class_tests: false`` read a rare class lost entirely as healthy, without a word."""
    from collapse_monitor.detection import METRICS_OF
    from collapse_monitor.metrics._spec import SPECS

    assert set(SPECS) - {"synthetic_fraction"} == set().union(*METRICS_OF.values())  # every metric has its data
    ref = cm.Reference(labels=[0] * 90 + [1] * 10)
    rules = {"rare_class_tests": False, "tail": ["tail_coverage", "rare_mode_coverage"]}
    mon = cm.CollapseMonitor("blind", reference=ref, sinks=[], home=tmp_path, rules=rules)
    assert "no metric of rules.tail (tail_coverage, rare_mode_coverage) can be measured" in caplog.text
    report = mon.check(cm.Observation(predictions=[0] * 90 + [1] * 10))
    assert any("early collapse (the tail falling) cannot be seen" in n for n in report.notes)
    caplog.clear()
    cm.CollapseMonitor("ok", reference=ref, sinks=[], home=tmp_path, rules={"rare_class_tests": False})
    cm.CollapseMonitor("ok2", reference=ref, sinks=[], home=tmp_path, rules={"tail": ["tail_coverage"]})
    assert "can be measured" not in caplog.text


@pytest.mark.parametrize(
    "secret",
    [
        "https://hooks.slack.com/services/T0AAAA1/B0BBBB2/ZZsecretZZsecretZZ1234",
        "0123456789abcdef0123456789abcdef",  # a PagerDuty integration key
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "https://alice:S3cr3tPassw0rd@mlflow.example.com",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    ],
)
def test_a_secret_in_the_wrong_setting_is_not_echoed(secret: str) -> None:
    """``knn: <a Slack URL>``, ``tail: [<a PagerDuty key>]``, a secret pasted as a key name:
    each ConfigError showed it whole (a config audit)."""
    from collapse_monitor.detection import Rules

    leaks = ("ZZsecret", "0123456789abcdef0123", "MfKQ9r8GK", "S3cr3tPassw0rd", "ghp_abcdef")
    for bad in ({"knn": secret}, {"tail": [secret]}, {secret: 1}, {"alpha": secret}, {"paired_test": secret}):
        with pytest.raises(ConfigError) as err:
            Rules.from_dict(bad)
        assert not any(x in str(err.value) for x in leaks), str(err.value)
    with pytest.raises(ConfigError) as err:
        cm.CollapseMonitor("m", reference=cm.Reference(labels=[0, 1] * 10), sinks=[], device=secret)
    assert not any(x in str(err.value) for x in leaks), str(err.value)


def test_a_tilde_in_home_and_reference_paths_is_the_users_home(tmp_path: Path, monkeypatch) -> None:
    from collapse_monitor.config import load_config, monitor_from_dict

    user = tmp_path / "user"
    (user / "data").mkdir(parents=True)
    (user / "data" / "labels.txt").write_text("0\n1\n" * 10)
    monkeypatch.setenv("HOME", str(user))
    cfgdir = tmp_path / "cfg"
    cfgdir.mkdir()
    p = cfgdir / "c.yaml"
    p.write_text("name: m\nsinks: []\nhome: ~/state\nreference: {labels: ~/data/labels.txt}\n")
    raw = load_config(p)
    mon = monitor_from_dict(raw, raw.pop("_dir"))
    assert mon.home == user / "state"  # was <config folder>/~/state


def test_the_masking_leaves_paths_labels_and_words_alone() -> None:
    """The first masking hid an MLflow run id in a path, a 'signature: expected' message and a
    date partition named session_id= (a review)."""
    from collapse_monitor._redact import mask_credentials

    path = "mlruns/1/0123456789abcdef0123456789abcdef/artifacts/reference.npy"
    assert path in str(ConfigError("reference.embeddings", f"file not found: {path}"))
    assert str(ConfigError("x", "signature: expected a str")) == "x: signature: expected a str"
    src = "s3://lake/chats/session_id=2024-05-01/part-0001.parquet"
    assert mask_credentials(src) == src
    assert "ABC123" not in mask_credentials("https://host/path;jsessionid=ABC123")


def test_settings_that_change_no_measurement_are_not_a_remeasure() -> None:
    """Raising text_budget (text is measured at the smaller of the two budgets) and nlist/nprobe
    under exact k-NN dropped every text or k-NN metric from the comparison (a review: a text
    collapse read healthy)."""
    from collapse_monitor.detection import Rules, remeasured

    base = Rules().measure
    assert remeasured(base, Rules(text_budget=40_000).measure) == ({}, set())
    assert remeasured(base, Rules(nprobe=16, nlist=64).measure) == ({}, set())
    lowered, keys = remeasured(base, Rules(text_budget=10_000).measure)
    assert lowered == {"text_budget": (20_000, 10_000)} and "distinct_2" in keys
    ivf, keys = remeasured(Rules(knn="ivf").measure, Rules(knn="ivf", nprobe=16).measure)
    assert ivf == {"nprobe": (None, 16)} and "coverage" in keys
