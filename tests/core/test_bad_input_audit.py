"""Bad input found by the 2026-12-06 input audit: each is a clear error naming its key, before
anything is written, and no secret is echoed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import collapse_monitor as cm
from collapse_monitor.cli import main

LABELS = np.array([0] * 30 + [1] * 20 + [2] * 10)


@pytest.mark.parametrize(
    "url",
    ["http://u:pw-SECRET9@gw:90x1", "http://[::1", "ftp://gw:9091", "http://"],
)
def test_a_malformed_pushgateway_url_is_a_config_error_without_its_password(url: str) -> None:
    with pytest.raises(cm.ConfigError) as err:
        cm.PrometheusSink(pushgateway=url)
    assert err.value.key == "PrometheusSink.pushgateway" and "http" in str(err.value)
    assert "pw-SECRET9" not in str(err.value)


def test_demo_with_a_malformed_pushgateway_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--generations", "2", "--no-mlflow", "--pushgateway", "http://[::1"]) == 2
    err = capsys.readouterr().err
    assert "pushgateway" in err and "Traceback" not in err


def test_bad_links_name_the_entry_and_never_echo_the_urls(tmp_path: Path) -> None:
    links = {"dashboard": "https://grafana.example/d/x?auth_token=SECRET42", "runbook": 5}
    with pytest.raises(cm.ConfigError) as err:
        cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path, links=links)
    assert err.value.key == "links.runbook" and "int" in str(err.value)
    assert "SECRET42" not in str(err.value)
    with pytest.raises(cm.ConfigError) as err:
        cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path, links=["x"])
    assert err.value.key == "links"


@pytest.mark.parametrize("device", ["tpu9", "meta", "cuda:x", 3])
def test_a_bad_device_is_refused_when_the_monitor_is_built(tmp_path: Path, device: object) -> None:
    """Not at the first check, when a hook's retrain has already run and its check is lost."""
    with pytest.raises(cm.ConfigError) as err:
        cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path, device=device)
    assert err.value.key == "device"
    assert not (tmp_path / "history.db").exists()  # nothing written


def test_good_devices_are_accepted(tmp_path: Path) -> None:
    import torch

    for device in (None, "cpu", "auto", "cuda", "cuda:1", torch.device("cpu")):
        cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path, device=device)
    from collapse_monitor.metrics.knn import resolve_device

    with pytest.raises(cm.ConfigError):
        resolve_device("meta")


@pytest.mark.parametrize(
    ("rules", "key"),
    [
        ({"drift_ratio": True}, "rules.drift_ratio"),
        ({"baseline_generation": True}, "rules.baseline_generation"),
        ({"repeat_every_generations": True}, "rules.repeat_every_generations"),
        ({"repeat_interval_seconds": False}, "rules.repeat_interval_seconds"),
        ({"n_boot": 10**12}, "rules.n_boot"),
        ({"drift_ratio": float("inf")}, "rules.drift_ratio"),
    ],
)
def test_rules_refuse_booleans_and_unbounded_values(rules: dict, key: str) -> None:
    with pytest.raises(cm.ConfigError) as err:
        cm.Rules.from_dict(rules)
    assert err.value.key == key


def test_an_unwritable_report_path_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mon = cm.CollapseMonitor(
        "m", reference=cm.Reference(labels=LABELS), sinks=[cm.MLflowSink(uri, evidently=False)], home=tmp_path
    )
    mon.check(cm.Observation(predictions=LABELS))
    mon.flush()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["report", "--monitor", "m", "--tracking-uri", uri, "--out", str(blocker / "h.png")])
    err = capsys.readouterr().err
    assert code == 2 and "collapse-monitor: error:" in err and "Traceback" not in err


def test_http_client_retry_warnings_do_not_print_the_tracking_uris_token(caplog: pytest.LogCaptureFixture) -> None:
    """urllib3 logs every retry with the request URL; a tracking URI's ``?token=`` rode along."""
    cm.MLflowSink("http://127.0.0.1:9/?token=TOKq1w2e3r4", evidently=False)
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        logging.getLogger("urllib3.connectionpool").warning(
            "Retrying (%r) after connection broken by '%r': %s",
            "Retry(total=1)",
            "NewConnectionError()",
            "/api/2.0/mlflow/experiments/get-by-name?token=TOKq1w2e3r4&experiment_name=x",
        )
    assert "Retrying" in caplog.text and "TOKq1w2e3r4" not in caplog.text


def test_string_prior_keys_match_integer_labels_by_their_string_form(tmp_path: Path) -> None:
    """A YAML ``class_priors: {"0": ...}`` against ``.npy`` int labels: the documented form,
    which failed with "has no prior for label(s) ['0', '1', '2']" although those keys were there."""
    ref = cm.Reference(labels=LABELS, class_priors={"0": 0.5, "1": 0.3, "2": 0.2})
    assert ref.class_priors == {0: 0.5, 1: 0.3, 2: 0.2}
    mon = cm.CollapseMonitor("m", reference=ref, sinks=[], home=tmp_path)
    assert mon.check(cm.Observation(predictions=LABELS)).metrics["accuracy"].value == 1.0
    with pytest.raises(cm.InputError) as err:  # a key that matches nothing is still an error
        cm.Reference(labels=LABELS, class_priors={"0": 0.5, "1": 0.3, "7": 0.2})
    assert err.value.field == "reference.class_priors"
    with pytest.raises(cm.InputError, match="infinity"):
        cm.Reference(labels=LABELS, class_priors={0: 1e308, 1: 1e308, 2: 1.0})


@pytest.mark.parametrize("rows", [np.ones((50, 4)), np.tile([[0.5, -2.0, 3.0]], (70_000, 1))])
def test_a_reference_whose_rows_are_all_identical_is_refused(rows: np.ndarray) -> None:
    """A constant (or already collapsed) reference has no neighbourhoods, tail or diversity: every
    sample used to score precision 0, coverage 0 against it, silently."""
    from collapse_monitor.metrics.generator import build_generator_state

    with pytest.raises(cm.InputError) as err:
        cm.Reference(embeddings=rows)
    assert err.value.field == "reference.embeddings" and f"all {rows.shape[0]} rows are identical" in str(err.value)
    with pytest.raises(cm.InputError, match="identical"):
        build_generator_state(rows)
    rows = rows.copy()
    rows[-1, 0] += 1e-3  # one row that differs, in the last block: a reference (if a poor one)
    assert cm.Reference(embeddings=rows).embeddings.shape == rows.shape


def test_gate_version_without_a_model_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` tags a version of `--model-name`; alone it used to be ignored silently."""
    with pytest.raises(SystemExit) as exc:
        main(["gate", "--monitor", "digits", "--version", "3"])
    assert exc.value.code == 2
    assert "--version names a version of --model-name" in capsys.readouterr().err


def test_texts_as_a_mapping_and_a_home_that_is_not_a_path_are_refused(tmp_path: Path) -> None:
    """A dict of texts used to be read as its keys; a list as home was a raw TypeError."""
    with pytest.raises(cm.InputError) as err:
        cm.Observation(texts={"id-1": "a generated text"})
    assert err.value.field == "observation.texts" and "got dict" in str(err.value)
    ref = cm.Reference(labels=LABELS)
    with pytest.raises(cm.ConfigError) as cerr:
        cm.CollapseMonitor("m", reference=ref, sinks=[], home=[str(tmp_path)])
    assert cerr.value.key == "home" and "got list" in str(cerr.value)
    assert cm.CollapseMonitor("m", reference=ref, sinks=[], home=tmp_path).home == tmp_path


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"on_evaluate": "no"}, "on_evaluate"),
        ({"on_train_end": 0}, "on_train_end"),
        ({"eval_mode": "false"}, "eval_mode"),
    ],
)
def test_hook_flags_must_be_booleans(tmp_path: Path, kw: dict, key: str) -> None:
    """`on_evaluate="no"` used to switch per-evaluation checks *on* (bool("no") is True)."""
    from collapse_monitor.hooks.transformers import CollapseMonitorCallback

    mon = cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path)
    with pytest.raises(cm.ConfigError) as err:
        CollapseMonitorCallback(mon, lambda model: None, **kw)
    assert err.value.key == f"CollapseMonitorCallback.{key}"
    cb = CollapseMonitorCallback(mon, lambda model: None, on_evaluate=np.bool_(True))
    assert cb.check_on_evaluate is True


@pytest.mark.parametrize("how", ["watch", "retrain"])
def test_watch_and_retrain_strict_must_be_a_boolean(tmp_path: Path, how: str) -> None:
    """strict="false" is true: every failed check would be raised into the training job."""
    mon = cm.CollapseMonitor("m", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path)
    with pytest.raises(cm.ConfigError) as err:
        if how == "watch":
            mon.watch(evaluate=lambda result: cm.Observation(predictions=LABELS), strict="false")
        else:
            with mon.retrain(strict="false"):
                pass
    assert err.value.key == f"{how}.strict"


def test_bfloat16_and_float16_tensors_are_checked_like_float32(tmp_path: Path) -> None:
    """numpy has no bfloat16: `.numpy()` raised a TypeError naming no field, so bf16 models
    (`torch_dtype=bfloat16`, Lightning `bf16-true`) were never checked."""
    import torch

    rng = np.random.default_rng(0)
    ref = cm.Reference(embeddings=rng.normal(size=(200, 4)).astype(np.float32), labels=LABELS)
    x = torch.from_numpy(rng.normal(size=(80, 4)).astype(np.float32))
    values = {}
    for dtype in (torch.bfloat16, torch.float16):
        lowered = x.to(dtype)
        mon = cm.CollapseMonitor(f"m-{dtype}", reference=ref, sinks=[], home=tmp_path / str(dtype))
        got = mon.check(cm.Observation(embeddings=lowered, predictions=torch.from_numpy(LABELS)))
        want = cm.CollapseMonitor(f"w-{dtype}", reference=ref, sinks=[], home=tmp_path / f"w{dtype}").check(
            cm.Observation(embeddings=lowered.float().numpy(), predictions=LABELS)
        )
        values[dtype] = got.metrics["precision"].value
        assert {k: v.value for k, v in got.metrics.items()} == {k: v.value for k, v in want.metrics.items()}
    assert all(0 < v <= 1 for v in values.values())
