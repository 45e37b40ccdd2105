"""`serve:` / `monitors:` configuration: every mistake is a ConfigError naming its key."""

from __future__ import annotations

import textwrap
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest

import collapse_monitor as cm
from collapse_monitor._service_config import load_serve_config
from collapse_monitor.cli import main

LABELS = np.array([0] * 30 + [1] * 20 + [2] * 10)


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    np.save(tmp_path / "labels.npy", LABELS)
    np.save(tmp_path / "inputs.npy", np.zeros((LABELS.size, 4), dtype=np.float32))
    np.save(tmp_path / "short.npy", np.zeros((5, 4), dtype=np.float32))
    (tmp_path / "probe_funcs.py").write_text("def sample(model):\n    return {'texts': ['a b c']}\nX = 3\n")
    return tmp_path


def _write(d: Path, text: str) -> Path:
    p = d / "collapse.yaml"
    p.write_text(textwrap.dedent(text))
    p.chmod(0o600)
    return p


GOOD = """
serve: {port: 9200, flush_interval_seconds: 5}
home: state
sinks: []
alerts: [{type: webhook, url: "http://127.0.0.1:9/hook"}]
reference: {labels: labels.npy}
monitors:
  - name: a
    model: {registered_name: digits, stage_or_alias: champion, tracking_uri: "sqlite:///x.db"}
    probe: {inputs: inputs.npy, sample: "probe_funcs:sample", classes: [2, 1, 0]}
    schedule: {cron: "*/5 * * * *", timezone: UTC}
    expected_interval_seconds: 3600
  - name: b
    home: other
    alerts: []
    expected_interval_seconds: 60
"""


def test_good_config_with_inherited_defaults(cfgdir: Path) -> None:
    cfg = load_serve_config(_write(cfgdir, GOOD), port=9300)
    assert cfg.settings.port == 9300 and cfg.settings.host == "127.0.0.1"  # the CLI's --port wins
    assert cfg.settings.flush_interval_seconds == 5 and cfg.settings.misfire_grace_time_seconds == 300
    a, b = cfg.monitors
    assert a.name == "a" and a.model.selector == "champion" and a.model.flavor == "pyfunc"
    assert a.model.only_new_versions and a.probe.inputs.shape == (60, 4) and a.probe.classes == (2, 1, 0)
    assert a.probe.sample(None) == {"texts": ["a b c"]} and a.schedule.describe() == "cron '*/5 * * * *'"
    assert a.monitor.home == cfgdir / "state" and len(a.monitor.channels) == 1 and a.monitor.sinks == []
    assert b.model is None and b.schedule is None and b.expected_interval_seconds == 60
    assert b.monitor.home == cfgdir / "other" and b.monitor.channels == []  # entry overrides
    assert b.monitor.reference.fingerprint == a.monitor.reference.fingerprint  # inherited


def test_single_monitor_form_is_served(cfgdir: Path) -> None:
    cfg = load_serve_config(_write(cfgdir, "name: solo\nsinks: []\nreference: {labels: labels.npy}\n"))
    (spec,) = cfg.monitors
    assert spec.name == "solo" and spec.model is None and cfg.settings.port == 9108


def test_single_monitor_form_with_a_model(cfgdir: Path) -> None:
    """The single-monitor form takes the service keys at the top level too, and schedules.
    (It used to patch config._TOP_KEYS to admit them: the test then passed whatever the
    product accepted. It reads the real config now.)"""
    text = (
        GOOD.split("monitors:")[0]
        + "name: solo\n"
        + textwrap.dedent("""
        model: {registered_name: digits}
        probe: {inputs: inputs.npy}
        schedule: {interval_seconds: 30}
        expected_interval_seconds: 600
    """)
    )
    (spec,) = load_serve_config(_write(cfgdir, text)).monitors
    assert spec.model.registered_name == "digits" and spec.schedule.interval_seconds == 30
    assert spec.expected_interval_seconds == 600 and spec.probe.inputs.shape == (60, 4)
    with pytest.raises(cm.ConfigError) as err:
        load_serve_config(_write(cfgdir, text.replace("interval_seconds: 30", "interval_seconds: -3")))
    assert err.value.key == "schedule.interval_seconds"


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("serve: {prot: 1}\nname: x\nreference: {labels: labels.npy}", "serve.prot", "unknown key"),
        ("serve: {port: 70000}\nname: x\nreference: {labels: labels.npy}", "serve.port", "1..65535"),
        # "²".isdigit() is true, and int("²") raised a ValueError traceback
        ('serve: {port: "\u00b2"}\nname: x\nreference: {labels: labels.npy}', "serve.port", "1..65535"),
        (
            "serve: {flush_interval_seconds: -1}\nname: x\nreference: {labels: labels.npy}",
            "serve.flush_interval_seconds",
            "seconds",
        ),
        ("sinks: []\nmonitors: []", "monitors", "non-empty"),
        ("sinks: []\nserve: {}", "monitors", "nothing to serve"),
        ("name: x\nsinks: []\nmonitors: [{name: y, reference: {labels: labels.npy}}]", "name", "not both"),
        ("sinks: []\nmonitors: [{name: y}]", "monitors[0].reference", "no reference"),
        (
            "sinks: []\nmonitors: [{name: y, reference: {labels: nope.npy}}]",
            "monitors[0].reference.labels",
            "not found",
        ),
        (
            "sinks: []\nreference: {labels: labels.npy}\nmonitors: [{name: y}, {name: y}]",
            "monitors[1].name",
            "duplicate",
        ),
        (
            "sinks: []\nreference: {labels: labels.npy}\nmonitors: [{name: y, cron: x}]",
            "monitors[0].cron",
            "unknown key",
        ),
        (
            "sinks: []\nreference: {labels: labels.npy}\nmonitors: [{name: y, expected_interval_seconds: 0}]",
            "monitors[0].expected_interval_seconds",
            "seconds",
        ),
        (
            "sinks: []\nreference: {labels: labels.npy}\nmonitors: [{name: y, sinks: [{type: kafka}]}]",
            "monitors[0].sinks[0].type",
            "unknown sink",
        ),
    ],
)
def test_bad_top_level_and_entries(cfgdir: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(cm.ConfigError) as err:
        load_serve_config(_write(cfgdir, text))
    assert err.value.key == key and words in str(err.value)


ENTRY = "sinks: []\nreference: {{labels: labels.npy}}\nmonitors:\n  - name: m\n{body}\n"
MODEL = "    model: {registered_name: digits}\n"
PROBE = "    probe: {inputs: inputs.npy}\n"
SCHED = "    schedule: {interval_seconds: 5}\n"


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        (MODEL + SCHED, "monitors[0].probe", "needs a probe"),
        (MODEL + PROBE, "monitors[0].schedule", "needs a schedule"),
        (PROBE + SCHED, "monitors[0].model", "without a model"),
        ("    model: {stage_or_alias: latest}\n" + PROBE + SCHED, "monitors[0].model.registered_name", "name"),
        (
            "    model: {registered_name: d, version: 2, stage_or_alias: x}\n" + PROBE + SCHED,
            "monitors[0].model.version",
            "not both",
        ),
        ("    model: {registered_name: d, flavor: onnx}\n" + PROBE + SCHED, "monitors[0].model.flavor", "pyfunc"),
        (MODEL + "    probe: {inputs: short.npy}\n" + SCHED, "monitors[0].probe.inputs", "5 rows"),
        (MODEL + "    probe: {}\n" + SCHED, "monitors[0].probe", "inputs"),
        (MODEL + "    probe: {sample: 'nomod_xyz:f'}\n" + SCHED, "monitors[0].probe.sample", "cannot import"),
        (MODEL + "    probe: {sample: 'probe_funcs:missing'}\n" + SCHED, "monitors[0].probe.sample", "no attribute"),
        (MODEL + "    probe: {sample: 'probe_funcs:X'}\n" + SCHED, "monitors[0].probe.sample", "not callable"),
        (MODEL + "    probe: {sample: 'justaname'}\n" + SCHED, "monitors[0].probe.sample", "module:function"),
        (MODEL + PROBE + "    schedule: {cron: '61 * * * *'}\n", "monitors[0].schedule.cron", "crontab"),
        (
            MODEL + PROBE + "    schedule: {cron: '* * * * *', interval_seconds: 3}\n",
            "monitors[0].schedule",
            "exactly one",
        ),
        (
            MODEL + PROBE + "    schedule: {interval_seconds: 5, timezone: Mars/Olympus}\n",
            "monitors[0].schedule.timezone",
            "unknown time zone",
        ),
        (
            MODEL + PROBE + "    schedule: {interval_seconds: 5, run_at_start: 'yes'}\n",
            "monitors[0].schedule.run_at_start",
            "true or false",
        ),
    ],
)
def test_bad_model_probe_schedule(cfgdir: Path, body: str, key: str, words: str) -> None:
    with pytest.raises(cm.ConfigError) as err:
        load_serve_config(_write(cfgdir, ENTRY.format(body=body)))
    assert err.value.key == key and words in str(err.value)


def test_cli_reports_config_errors_with_the_key(cfgdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(cfgdir, ENTRY.format(body=MODEL + PROBE + "    schedule: {cron: 'every hour'}\n"))
    assert main(["serve", "--config", str(path)]) == 2
    assert "monitors[0].schedule.cron" in capsys.readouterr().err


def test_port_in_use_is_a_config_error(cfgdir: Path) -> None:
    import socket

    from collapse_monitor.service import Service

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        svc = Service.from_config(_write(cfgdir, "name: x\nsinks: []\nreference: {labels: labels.npy}\n"), port=port)
        with pytest.raises(cm.ConfigError) as err:
            svc.start()
        svc.stop(timeout=1)
    assert err.value.key == "serve.port"


def test_specs_reprs_redact_model_uris(cfgdir: Path) -> None:
    from collapse_monitor._service_config import ModelSpec

    text = GOOD.replace(
        'tracking_uri: "sqlite:///x.db"',
        'tracking_uri: "https://bob:mlflowPASS-1@mlflow.example.com", registry_uri: "https://reg.example.com/?token=regTOK-2"',
    )
    cfg = load_serve_config(_write(cfgdir, text))
    model = cfg.monitors[0].model
    assert model.tracking_uri == "https://bob:mlflowPASS-1@mlflow.example.com"  # the value itself is kept
    shown = [repr(model), str(model), repr(cfg.monitors[0]), repr(cfg.monitors), repr(cfg)]
    for s in shown:
        assert "mlflowPASS-1" not in s and "regTOK-2" not in s and "bob" not in s, s
    assert "tracking_uri='https://***@mlflow.example.com'" in shown[0]
    assert "registry_uri='https://reg.example.com/?token=***'" in shown[0]
    assert "registered_name='digits'" in shown[0] and "name='a'" in shown[2]
    assert "probe=ProbeSpec({'sample': 'probe_funcs:sample'})" in shown[2]  # names, not the inputs array
    assert "sqlite:////db?k=***" in repr(ModelSpec("m", tracking_uri="sqlite:////db?k=v4lue"))


@pytest.mark.parametrize(
    ("cron", "weekdays"),
    [
        ("0 0 * * 1-5", {0, 1, 2, 3, 4}),  # Monday-Friday (datetime.weekday(): Monday = 0)
        ("0 0 * * 0", {6}),  # Sunday
        ("0 0 * * 7", {6}),  # Sunday too
        ("0 0 * * 6", {5}),  # Saturday
        ("0 0 * * sat,sun", {5, 6}),
        ("0 0 * * */2", {6, 1, 3, 5}),  # crontab: 0,2,4,6 = Sun, Tue, Thu, Sat
    ],
)
def test_cron_days_of_week_are_crontab_days(cron: str, weekdays: set[int]) -> None:
    """APScheduler 3 numbers days from Monday = 0; crontab from Sunday = 0 (and 7)."""
    from datetime import datetime, timedelta

    from collapse_monitor._service_config import parse_schedule

    trig = parse_schedule({"cron": cron, "timezone": "UTC"}, "schedule").trigger()
    t = datetime(2026, 12, 7, tzinfo=UTC)  # a Monday
    seen = set()
    prev = None
    for _ in range(14):
        t = trig.get_next_fire_time(prev, t + timedelta(seconds=1))
        prev = t
        seen.add(t.weekday())
    assert seen == weekdays


def test_a_cron_that_never_fires_is_a_config_error() -> None:
    from collapse_monitor._service_config import parse_schedule

    with pytest.raises(cm.ConfigError) as err:
        parse_schedule({"cron": "0 0 31 2 *"}, "monitors[0].schedule")
    assert err.value.key == "monitors[0].schedule.cron" and "never fires" in str(err.value)


@pytest.mark.parametrize(("grace", "want"), [(0.5, 1), (2.5, 3), (300, 300)])
def test_a_fractional_misfire_grace_time_starts(tmp_path, grace: float, want: int) -> None:
    """APScheduler takes whole seconds >= 1: a fractional setting is rounded up, not refused at
    start and not replaced by a default."""
    from servers import free_port

    from collapse_monitor._service_config import ServeConfig, parse_settings
    from collapse_monitor.service import Service

    settings = parse_settings({"misfire_grace_time_seconds": grace, "port": free_port()})
    svc = Service(ServeConfig(settings, (), tmp_path))
    try:
        svc.start()
        jobs = svc._scheduler.get_jobs()
        assert {j.id for j in jobs} >= {"flush", "staleness"}
        assert {j.misfire_grace_time for j in jobs} == {want}
    finally:
        svc.stop()


@pytest.mark.parametrize(("tag", "want"), [("0.4", 0.4), ("60", None), ("nan", None), ("inf", None), ("abc", None)])
def test_a_bad_synthetic_fraction_tag_is_ignored_not_a_failed_check(tag: str, want) -> None:
    from collapse_monitor._service_model import SYNTHETIC_TAG, ResolvedVersion

    prov = ResolvedVersion("m", "3", "run", {SYNTHETIC_TAG: tag}).provenance()
    assert prov.synthetic_fraction == want and prov.parent_run_id == "run"


def test_ticks_skipped_while_a_check_runs_are_counted_not_logged(tmp_path, caplog) -> None:
    import logging
    import time

    from apscheduler.triggers.interval import IntervalTrigger
    from servers import free_port

    from collapse_monitor._service_config import ServeConfig, parse_settings
    from collapse_monitor.service import Service

    svc = Service(ServeConfig(parse_settings({"port": free_port()}), (), tmp_path))
    svc.start(http=False)
    try:
        with caplog.at_level(logging.WARNING, logger="apscheduler"):
            svc._scheduler.add_job(lambda: time.sleep(1.5), IntervalTrigger(seconds=0.2), id="check:slow")
            time.sleep(2.0)
    finally:
        svc.stop()
    assert svc.c_checks.labels("slow", "skipped")._value.get() >= 3
    assert "maximum number of running instances" not in caplog.text


def test_a_flush_that_outlasts_its_interval_is_a_warning_and_counted(tmp_path, caplog) -> None:
    """A skipped flush or dead-man's-switch tick (redelivery or staleness paging running late)
    used to vanish with APScheduler's filtered warning."""
    import logging
    import time

    from apscheduler.triggers.interval import IntervalTrigger
    from prometheus_client import generate_latest
    from servers import free_port

    from collapse_monitor._service_config import ServeConfig, parse_settings
    from collapse_monitor.service import Service

    svc = Service(ServeConfig(parse_settings({"port": free_port()}), (), tmp_path))
    svc.start(http=False)
    try:
        svc._scheduler.remove_job("flush")
        with caplog.at_level(logging.WARNING, logger="collapse_monitor.service"):
            svc._scheduler.add_job(lambda: time.sleep(1.5), IntervalTrigger(seconds=0.2), id="flush")
            time.sleep(2.0)
    finally:
        svc.stop()
    assert svc.c_skipped.labels("flush")._value.get() >= 3
    assert "flush: the previous run is still going, tick skipped" in caplog.text
    assert 'collapse_monitor_serve_skipped_ticks_total{task="flush"}' in generate_latest(svc.registry).decode()


def test_cron_with_day_of_month_and_day_of_week_fires_on_either_as_crontab_does() -> None:
    """crontab: when both day fields are restricted, the job runs when *either* matches;
    ``0 9 1 * 1`` is the 1st of every month and every Monday (APScheduler's single
    CronTrigger used to require both: only a Monday that is the 1st)."""
    from datetime import datetime, timedelta

    from collapse_monitor._service_config import parse_schedule

    trig = parse_schedule({"cron": "0 9 1 * 1", "timezone": "UTC"}, "schedule").trigger()
    t = datetime(2026, 12, 6, tzinfo=UTC)  # a Sunday
    fires = []
    prev = None
    while len(fires) < 6:
        t = trig.get_next_fire_time(prev, t + timedelta(seconds=1))
        prev = t
        fires.append(t)
    assert [f.strftime("%Y-%m-%d %a %H:%M") for f in fires] == [
        "2026-12-07 Mon 09:00",
        "2026-12-14 Mon 09:00",
        "2026-12-21 Mon 09:00",
        "2026-12-28 Mon 09:00",
        "2027-01-01 Fri 09:00",
        "2027-01-04 Mon 09:00",
    ]
    # one restricted day field (or a */N one) keeps the plain meaning
    only_weekday = parse_schedule({"cron": "0 9 */1 * 1", "timezone": "UTC"}, "schedule").trigger()
    first = only_weekday.get_next_fire_time(None, datetime(2026, 12, 6, tzinfo=UTC))
    assert first.strftime("%a") == "Mon"


@pytest.mark.parametrize(
    ("schedule", "key", "words"),
    [
        ({"cron": "0 * * * *", "jitter_seconds": 30}, "schedule.jitter_seconds", "interval_seconds only"),
        ({"interval_seconds": 1e12}, "schedule.interval_seconds", "at most"),
        ({"interval_seconds": 60, "jitter_seconds": 60}, "schedule.jitter_seconds", "not below interval_seconds"),
        ({"interval_seconds": 60, "jitter_seconds": 59.5}, "schedule.jitter_seconds", "not below interval_seconds"),
    ],
)
def test_schedule_settings_that_would_be_ignored_or_crash_are_config_errors(schedule, key, words) -> None:
    from collapse_monitor._service_config import parse_schedule

    with pytest.raises(cm.ConfigError) as err:
        parse_schedule(schedule, "schedule")
    assert err.value.key == key and words in str(err.value)


def test_a_fractional_jitter_is_rounded_up_not_dropped() -> None:
    from collapse_monitor._service_config import parse_schedule

    assert parse_schedule({"interval_seconds": 60, "jitter_seconds": 0.5}, "schedule").trigger().jitter == 1


def test_huge_serve_intervals_are_config_errors_not_a_crash_at_start(cfgdir: Path) -> None:
    text = "serve: {flush_interval_seconds: 1e12}\nname: x\nsinks: []\nreference: {labels: labels.npy}\n"
    with pytest.raises(cm.ConfigError) as err:
        load_serve_config(_write(cfgdir, text))
    assert err.value.key == "serve.flush_interval_seconds" and "at most" in str(err.value)


@pytest.mark.parametrize("key", ["expected_interval_seconds", "schedule"])
def test_service_keys_at_the_top_are_not_silently_ignored_with_monitors(cfgdir: Path, key: str) -> None:
    """With ``monitors: [...]`` the top-level service keys are not inherited: giving one there
    (which used to load fine and leave, e.g., the dead-man's switch off) is an error."""
    value = "3600" if key == "expected_interval_seconds" else "{interval_seconds: 60}"
    text = f"{key}: {value}\nsinks: []\nreference: {{labels: labels.npy}}\nmonitors:\n  - name: a\n"
    with pytest.raises(cm.ConfigError) as err:
        load_serve_config(_write(cfgdir, text))
    assert err.value.key == key and "each entry" in str(err.value)


def test_a_second_signal_exits_at_once_while_stop_waits(cfgdir: Path) -> None:
    """SIGTERM starts a clean stop, which waits for running checks up to
    ``shutdown_timeout_seconds``; a second SIGTERM / SIGINT ends the process at once (exit 130)
    instead of being ignored until the wait is over."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from servers import free_port

    cfg = _write(
        cfgdir,
        f"serve: {{port: {free_port()}, shutdown_timeout_seconds: 60}}\nname: x\nsinks: []\n"
        "reference: {labels: labels.npy}\n",
    )
    # a check that would hold the stop for a minute: Service.stop sleeps before it returns
    code = (
        "import sys, time\n"
        "import collapse_monitor.service as s\n"
        "orig = s.Service.stop\n"
        "def slow(self, timeout=None):\n"
        "    time.sleep(60)\n"
        "    return orig(self, timeout)\n"
        "s.Service.stop = slow\n"
        "sys.exit(s.serve_command(sys.argv[1]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "metrics at" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "metrics at" in line, "serve did not start"
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None  # the first signal waits for running work
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert time.monotonic() - t0 < 5
        assert "second signal" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_data_in_a_second_monitor_names_the_entry(cfgdir: Path) -> None:
    np.save(cfgdir / "bad.npy", np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 3.0]]))
    text = "sinks: []\nmonitors:\n  - name: a\n    reference: {labels: labels.npy}\n  - name: b\n    reference: {embeddings: bad.npy}\n"
    with pytest.raises(cm.InputError) as err:
        load_serve_config(_write(cfgdir, text))
    assert err.value.field.startswith("monitors[1].") and "embeddings" in err.value.field


def test_a_host_that_does_not_resolve_is_the_hosts_error(cfgdir: Path) -> None:
    from servers import free_port

    from collapse_monitor.service import Service

    path = _write(cfgdir, "name: x\nsinks: []\nreference: {labels: labels.npy}\n")
    svc = Service.from_config(path, port=free_port(), host="no-such-host.invalid")
    with pytest.raises(cm.ConfigError) as err:
        svc.start()
    svc.stop(timeout=1)
    assert err.value.key == "serve.host"


@pytest.mark.parametrize(
    ("classes", "words"),
    [
        ("[cat, dog]", "cat, dog are not a label of reference.labels (its labels: 0, 1, 2)"),
        ("[0, 0, 1]", "lists 0 more than once"),
        ("[0, 1, .nan]", "NaN"),
        ("[0, [1]]", "labels must be str or int"),
    ],
)
def test_probe_classes_must_be_distinct_labels_of_the_reference(cfgdir: Path, classes: str, words: str) -> None:
    """``classes: [cat, dog]`` with labels 0-2 was accepted and every scheduled check failed;
    ``[0, 0, 1]`` mapped two output columns to one label (accuracy 0.9 for a model that is right)."""
    text = f"name: m\nsinks: []\nreference: {{labels: labels.npy}}\nprobe: {{inputs: inputs.npy, classes: {classes}}}\n"
    with pytest.raises(cm.ConfigError) as err:
        load_serve_config(_write(cfgdir, text))
    assert err.value.key == "probe.classes" and words in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("shared", "key"),
    [
        ("rules: {alpha: 5}", "rules.alpha"),
        ("rules: [1]", "rules"),
        ("alerts: [{type: x}]", "alerts[0].type"),
        ("alerts: {type: webhook}", "alerts"),
    ],
)
def test_a_shared_block_every_entry_overrides_is_still_checked(cfgdir: Path, shared: str, key: str) -> None:
    """Every entry overriding it, a bad shared block was accepted without a word (and
    ``alerts test`` reads the shared alerts)."""
    text = (
        f"{shared}\nsinks: []\nreference: {{labels: labels.npy}}\n"
        "monitors:\n  - {name: a, rules: {alpha: 0.01}, alerts: []}\n  - {name: b, rules: {}, alerts: []}\n"
    )
    with pytest.raises(cm.ConfigError) as err:
        load_serve_config(_write(cfgdir, text))
    assert err.value.key == key, str(err.value)


@pytest.mark.parametrize(
    ("schedule", "expected", "ok"),
    [
        ("{interval_seconds: 3600}", 600, False),
        ("{interval_seconds: 3600}", 7200, True),
        ("{cron: '0 9 * * 1-5', timezone: UTC}", 86400, False),  # Friday to Monday is 3 days
        ("{cron: '0 9 * * 1-5', timezone: UTC}", 4 * 86400, True),
    ],
)
def test_an_expected_interval_below_the_schedule_is_refused(cfgdir: Path, schedule: str, expected: int, ok: bool):
    """It was accepted, and the dead-man's switch reported the monitor stale between every two
    scheduled checks (a config audit)."""
    text = f"""
    name: m
    sinks: []
    reference: {{labels: labels.npy}}
    model: {{registered_name: digits, stage_or_alias: champion, tracking_uri: "sqlite:///x.db"}}
    probe: {{inputs: inputs.npy}}
    schedule: {schedule}
    expected_interval_seconds: {expected}
    """
    if ok:
        assert load_serve_config(_write(cfgdir, text)).monitors[0].expected_interval_seconds == expected
    else:
        with pytest.raises(cm.ConfigError) as err:
            load_serve_config(_write(cfgdir, text))
        assert err.value.key == "expected_interval_seconds" and "stale between every two checks" in str(err.value)
