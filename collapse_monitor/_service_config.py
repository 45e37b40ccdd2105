"""The ``serve:`` and ``monitors:`` blocks of the YAML config, validated into frozen specs.

Every error is a :class:`ConfigError` naming the key (``monitors[1].schedule.cron``). See
:mod:`collapse_monitor.service` for the format. Monitors are built here from the merged dict
(top-level defaults, then the entry's own keys) with the same helpers as
``CollapseMonitor.from_config``.
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._env import flag_from_text
from .config import MONITOR_KEYS, expand_env, load_config, monitor_from_dict
from .errors import ConfigError

if TYPE_CHECKING:
    from .monitor import CollapseMonitor
    from .types import Reference

__all__ = ["ModelSpec", "MonitorSpec", "ProbeSpec", "ScheduleSpec", "ServeConfig", "ServeSettings", "load_serve_config"]

# keys a monitor entry may override; the rest of the top level is shared
_INHERITED = MONITOR_KEYS
_SERVICE_KEYS = ("model", "probe", "schedule", "expected_interval_seconds")
_ENTRY_KEYS = {"name", *_INHERITED, *_SERVICE_KEYS}
_SERVE_KEYS = {
    "port",
    "host",
    "flush_interval_seconds",
    "staleness_check_interval_seconds",
    "misfire_grace_time_seconds",
    "max_workers",
    "shutdown_timeout_seconds",
    "alert_budget_seconds",
}
_MODEL_KEYS = {
    "registered_name",
    "stage_or_alias",
    "version",
    "tracking_uri",
    "registry_uri",
    "flavor",
    "only_new_versions",
}
_PROBE_KEYS = {"inputs", "predict", "sample", "classes", "batch_size"}
_SCHEDULE_KEYS = {"cron", "interval_seconds", "timezone", "jitter_seconds", "run_at_start"}
_STAGES = {"none", "staging", "production", "archived"}


@dataclass(frozen=True)
class ServeSettings:
    port: int = 9108
    host: str = "127.0.0.1"
    flush_interval_seconds: float = 60.0
    staleness_check_interval_seconds: float = 60.0
    misfire_grace_time_seconds: float = 300.0
    max_workers: int = 4
    shutdown_timeout_seconds: float = 3.0
    alert_budget_seconds: float = 10.0


@dataclass(frozen=True)
class ModelSpec:
    registered_name: str
    stage_or_alias: str = "latest"  # latest | a stage (Production, ...) | an alias (champion, ...)
    version: int | None = None  # pins a version instead
    tracking_uri: str | None = None
    registry_uri: str | None = None
    flavor: str = "pyfunc"  # pyfunc | pytorch
    only_new_versions: bool = True

    def __repr__(self) -> str:
        """Like the dataclass repr, with the URIs' credentials redacted (``user:pass@``, query
        values, token-like path segments of http(s) URIs).

        >>> ModelSpec("m", tracking_uri="https://bob:pw@mlflow.example.com", registry_uri="sqlite:////r.db?k=v")
        ModelSpec(registered_name='m', stage_or_alias='latest', version=None, tracking_uri='https://***@mlflow.example.com', registry_uri='sqlite:////r.db?k=***', flavor='pyfunc', only_new_versions=True)
        """
        return (
            f"ModelSpec(registered_name={self.registered_name!r}, stage_or_alias={self.stage_or_alias!r}, "
            f"version={self.version!r}, tracking_uri={self.safe_uri(self.tracking_uri)!r}, "
            f"registry_uri={self.safe_uri(self.registry_uri)!r}, flavor={self.flavor!r}, "
            f"only_new_versions={self.only_new_versions!r})"
        )

    @staticmethod
    def safe_uri(uri: str | None) -> str | None:
        """A tracking / registry URI safe to show: http(s) through ``redact_url``, anything else
        (``sqlite:///``, ``databricks://``, paths) with its userinfo and query values masked."""
        from urllib.parse import parse_qsl

        from ._redact import MASK, mask_credentials, redact_url

        if uri is None:
            return None
        if uri.lower().startswith(("http://", "https://")):
            return redact_url(uri)
        head, _, query = uri.partition("?")  # sqlite:////x.db?k=v has no netloc: mask it here
        head = mask_credentials(head.partition("#")[0])
        if not query:
            return head
        keys = [k for k, _ in parse_qsl(query.partition("#")[0], keep_blank_values=True)]
        return head + "?" + ("&".join(f"{k}={MASK}" for k in keys) or MASK)

    @property
    def selector(self) -> str:
        if self.version is not None:
            return str(self.version)
        return self.stage_or_alias


@dataclass(frozen=True)
class ProbeSpec:
    inputs: Any = None  # numpy array of probe inputs (loaded at start)
    predict: Callable[..., Any] | None = None  # (model, inputs) -> predictions
    sample: Callable[..., Any] | None = None  # model -> Observation | mapping | embeddings array
    classes: tuple[Any, ...] | None = None  # argmax index -> label
    batch_size: int = 1024
    names: Mapping[str, str] = field(default_factory=dict)  # "predict"/"sample" -> "module:function"


_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _crontab_days(item: str) -> list[int]:
    """Days (crontab numbering: 0 or 7 = Sunday) of one comma-separated day-of-week item."""
    base, _, step_text = item.partition("/")
    step = int(step_text) if step_text else 1
    if step < 1:
        raise ValueError(f"bad step in {item!r}")

    def day(tok: str) -> int:
        tok = tok.strip().lower()
        if tok[:3] in _DOW_NAMES and not tok.isdigit():
            return _DOW_NAMES.index(tok[:3])
        n = int(tok)
        if not 0 <= n <= 7:
            raise ValueError(f"day of week {n} is not in 0-7")
        return n

    if base == "*":
        lo, hi = 0, 6
    elif "-" in base:
        a, b = base.split("-", 1)
        lo, hi = day(a), day(b)
        if hi < lo:
            raise ValueError(f"range {base!r} runs backwards")
    else:
        lo = hi = day(base)
        if step_text:
            hi = 7 if lo > 0 else 6
    return sorted({d % 7 for d in range(lo, hi + 1, step)})


def crontab_for_apscheduler(expr: str) -> str:
    """``expr`` with its day-of-week field written as day names. APScheduler 3 numbers the days
    from Monday = 0 (its ``CronTrigger.from_crontab`` docstring warns about it), crontab from
    Sunday = 0 (and 7): ``0 0 * * 1-5`` must mean Monday to Friday, not Tuesday to Saturday.

    >>> crontab_for_apscheduler("0 0 * * 1-5")
    '0 0 * * mon,tue,wed,thu,fri'
    >>> crontab_for_apscheduler("30 6 * * 0,7")
    '30 6 * * sun'
    >>> crontab_for_apscheduler("*/15 * * * *")
    '*/15 * * * *'
    """
    fields = expr.split()
    if len(fields) != 5 or fields[4] == "*" or fields[4] == "?":
        return expr
    days: set[int] = set()
    for item in fields[4].split(","):
        days.update(_crontab_days(item))
    fields[4] = ",".join(_DOW_NAMES[d] for d in sorted(days, key=lambda d: (d + 6) % 7))
    return " ".join(fields)


def cron_trigger(expr: str, timezone: str | None = None) -> Any:
    """APScheduler trigger for a 5-field crontab expression, with crontab's day rule: when both
    day-of-month and day-of-week are restricted (neither starts with ``*``), the job runs when
    *either* matches (``0 9 1 * 1``: the 1st of the month and every Monday), where a single
    ``CronTrigger`` would require both (only a Monday the 1st)."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) == 5 and not fields[2].startswith("*") and not fields[4].startswith("*"):
        by_day = " ".join([*fields[:4], "*"])
        by_weekday = " ".join([*fields[:2], "*", fields[3], fields[4]])
        return OrTrigger(
            [
                CronTrigger.from_crontab(crontab_for_apscheduler(by_day), timezone=timezone),
                CronTrigger.from_crontab(crontab_for_apscheduler(by_weekday), timezone=timezone),
            ]
        )
    return CronTrigger.from_crontab(crontab_for_apscheduler(expr), timezone=timezone)


@dataclass(frozen=True)
class ScheduleSpec:
    cron: str | None = None
    interval_seconds: float | None = None
    timezone: str | None = None
    jitter_seconds: float | None = None
    run_at_start: bool = False

    def trigger(self) -> Any:
        from apscheduler.triggers.interval import IntervalTrigger

        # APScheduler takes whole seconds: round up, so 0.5 s is not silently no jitter
        jitter = None if self.jitter_seconds is None else math.ceil(self.jitter_seconds)
        if self.cron is not None:
            return cron_trigger(self.cron, self.timezone)
        return IntervalTrigger(seconds=self.interval_seconds, jitter=jitter, timezone=self.timezone)

    def describe(self) -> str:
        return f"cron {self.cron!r}" if self.cron is not None else f"every {self.interval_seconds:g} s"


@dataclass(frozen=True)
class MonitorSpec:
    name: str
    monitor: CollapseMonitor
    model: ModelSpec | None = None
    probe: ProbeSpec | None = None
    schedule: ScheduleSpec | None = None
    expected_interval_seconds: float | None = None

    def __repr__(self) -> str:
        """No secret in it: the model's URIs are redacted (:meth:`ModelSpec.__repr__`), the
        probe shows its function names, not its inputs."""
        probe = None if self.probe is None else f"ProbeSpec({dict(self.probe.names)!r})"
        return (
            f"MonitorSpec(name={self.name!r}, monitor={self.monitor!r}, model={self.model!r}, probe={probe}, "
            f"schedule={self.schedule!r}, expected_interval_seconds={self.expected_interval_seconds!r})"
        )


@dataclass(frozen=True)
class ServeConfig:
    settings: ServeSettings
    monitors: tuple[MonitorSpec, ...]
    base_dir: Path

    def __repr__(self) -> str:
        """The monitors' reprs (URIs redacted)."""
        return f"ServeConfig(settings={self.settings!r}, monitors={self.monitors!r}, base_dir={self.base_dir!r})"


# ---------------------------------------------------------------------------------------------
def _mapping(v: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ConfigError(key, f"expected a mapping, got {type(v).__name__}")
    return v


def _known(d: Mapping[str, Any], allowed: set[str], key: str) -> None:
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}", f"unknown key; known: {', '.join(sorted(allowed))}")


#: the longest interval any setting takes (about 3 years): larger values overflow the
#: scheduler's date arithmetic at start (OverflowError) rather than failing here
_MAX_SECONDS = 1e8


def _seconds(v: Any, key: str, *, minimum: float = 0.0, allow_zero: bool = False) -> float:
    try:
        if isinstance(v, bool):
            raise TypeError
        x = float(v)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected a number of seconds, got {v!r}") from None
    if not math.isfinite(x) or x < minimum or (x == 0 and not allow_zero):
        want = f"at least {minimum:g} seconds" if minimum > 0 else f"seconds > {minimum:g}"
        raise ConfigError(key, f"expected {want}, got {v!r}")
    if x > _MAX_SECONDS:
        raise ConfigError(key, f"expected at most {_MAX_SECONDS:g} seconds (about 3 years), got {v!r}")
    return x


def _int(v: Any, key: str, lo: int, hi: int) -> int:
    # a ${VAR} value: environment values are strings (ASCII digits only: "²".isdigit() is true)
    if isinstance(v, str) and v.strip().isascii() and v.strip().isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(key, f"expected an int in {lo}..{hi}, got {v!r}")
    return v


def _bool(v: Any, key: str) -> bool:
    v = flag_from_text(v)  # ${FLAG:-false}
    if not isinstance(v, bool):
        raise ConfigError(key, f"expected true or false, got {v!r}")
    return v


def parse_settings(raw: Any, *, port: int | None = None, host: str | None = None) -> ServeSettings:
    d = dict(_mapping({} if raw is None else raw, "serve"))  # `serve: 0` or `serve: ''` is no block
    _known(d, _SERVE_KEYS, "serve")
    if port is not None:
        d["port"] = port
    if host is not None:
        d["host"] = host
    kw: dict[str, Any] = {}
    if "port" in d:
        kw["port"] = _int(d["port"], "serve.port", 1, 65535)
    if "host" in d:
        if not isinstance(d["host"], str) or not d["host"].strip():
            raise ConfigError("serve.host", f"expected an address such as 127.0.0.1, got {d['host']!r}")
        kw["host"] = d["host"].strip()
    for k in (
        "flush_interval_seconds",
        "staleness_check_interval_seconds",
        "misfire_grace_time_seconds",
        "shutdown_timeout_seconds",
    ):
        if k in d:
            # a job's period: APScheduler turned 1e-6 into 1 s without a word (the dead-man's
            # switch every microsecond, had it not)
            kw[k] = _seconds(d[k], f"serve.{k}", minimum=1.0 if k.endswith("_interval_seconds") else 0.0)
    if "alert_budget_seconds" in d:
        kw["alert_budget_seconds"] = _seconds(d["alert_budget_seconds"], "serve.alert_budget_seconds", allow_zero=True)
    if "max_workers" in d:
        kw["max_workers"] = _int(d["max_workers"], "serve.max_workers", 1, 64)
    return ServeSettings(**kw)


def import_function(spec: Any, key: str, base_dir: Path) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function. The config's folder is importable, so a
    module next to the config file works without installing it."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(key, f"expected 'module:function', got {spec!r}")
    mod_name, attr = spec.split(":")
    if str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:
        raise ConfigError(key, f"cannot import module {mod_name!r}: {type(exc).__name__}: {exc}") from None
    fn: Any = mod
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(key, f"module {mod_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(key, f"{spec} is not callable")
    return fn


def parse_model(raw: Any, key: str) -> ModelSpec:
    d = _mapping(raw, key)
    _known(d, _MODEL_KEYS, key)
    name = d.get("registered_name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{key}.registered_name", "expected the name of a model in the MLflow Model Registry")
    kw: dict[str, Any] = {"registered_name": name.strip()}
    if "version" in d and "stage_or_alias" in d:
        raise ConfigError(f"{key}.version", "give version or stage_or_alias, not both")
    if "version" in d:
        kw["version"] = _int(d["version"], f"{key}.version", 1, 10**9)
    if "stage_or_alias" in d:
        s = d["stage_or_alias"]
        if not isinstance(s, str) or not s.strip() or any(c in s for c in "/@ "):
            raise ConfigError(f"{key}.stage_or_alias", f"expected latest, a stage or an alias name, got {s!r}")
        kw["stage_or_alias"] = s.strip()
    for k in ("tracking_uri", "registry_uri"):
        if d.get(k) is not None:
            if not isinstance(d[k], str) or not d[k].strip():
                raise ConfigError(f"{key}.{k}", "expected a URI string")
            kw[k] = d[k].strip()
    if "flavor" in d:
        if d["flavor"] not in ("pyfunc", "pytorch"):
            raise ConfigError(f"{key}.flavor", f"expected pyfunc or pytorch, got {d['flavor']!r}")
        kw["flavor"] = d["flavor"]
    if "only_new_versions" in d:
        kw["only_new_versions"] = _bool(d["only_new_versions"], f"{key}.only_new_versions")
    return ModelSpec(**kw)


def parse_probe(raw: Any, key: str, base_dir: Path, reference: Reference) -> ProbeSpec:
    from .config import _load_array

    d = _mapping(raw, key)
    _known(d, _PROBE_KEYS, key)
    if not d.get("inputs") and not d.get("sample"):
        raise ConfigError(key, "give inputs (a .npy/.npz/.csv of probe inputs) and/or sample ('module:function')")
    kw: dict[str, Any] = {}
    names: dict[str, str] = {}
    if d.get("inputs"):
        if reference.labels is None:
            raise ConfigError(f"{key}.inputs", "probe predictions need reference.labels (the probe's true labels)")
        arr = _load_array(base_dir / str(d["inputs"]), f"{key}.inputs")
        if arr.ndim == 0 or arr.shape[0] != len(reference.labels):
            raise ConfigError(
                f"{key}.inputs",
                f"has {arr.shape[0] if arr.ndim else 0} rows but reference.labels has "
                f"{len(reference.labels)}: one row per probe item",
            )
        kw["inputs"] = arr
    elif d.get("predict"):
        raise ConfigError(f"{key}.predict", "needs probe.inputs")
    for k in ("predict", "sample"):
        if d.get(k):
            kw[k] = import_function(d[k], f"{key}.{k}", base_dir)
            names[k] = str(d[k])
    if d.get("classes") is not None:
        if not isinstance(d["classes"], list) or not d["classes"]:
            raise ConfigError(f"{key}.classes", "expected a list: the label of each output column")
        import numpy as np

        from ._validate import _label_key
        from .errors import InputError

        classes = d["classes"]
        try:
            keys = [_label_key(c, f"{key}.classes", i) for i, c in enumerate(classes)]
        except InputError as exc:
            raise ConfigError(f"{key}.classes", exc.message) from None
        # compared by their text, as the check compares predictions with a reference of mixed
        # int and str labels (as_labels makes them all str there; a review)
        twice = sorted(text for text, n in Counter(str(k) for k in keys).items() if n > 1)
        if twice:
            # two output columns mapped to one label: accuracy read 0.9 for a model that is right
            raise ConfigError(f"{key}.classes", f"lists {', '.join(twice)} more than once: one label per output column")
        if reference.labels is not None:
            labels = dict.fromkeys(np.asarray(reference.labels, dtype=object).tolist())  # int and str mixed: no sort
            known = {str(_label_key(v, "reference.labels")) for v in labels}
            unknown = [str(c) for c in keys if str(c) not in known]
            if unknown:
                # every scheduled check then failed with an InputError
                raise ConfigError(
                    f"{key}.classes",
                    f"{', '.join(unknown[:5])} {'is' if len(unknown) == 1 else 'are'} not a label of reference.labels "
                    f"(its labels: {', '.join(map(str, sorted(known, key=str)[:10]))})",
                )
        kw["classes"] = tuple(keys)
    if "batch_size" in d:
        kw["batch_size"] = _int(d["batch_size"], f"{key}.batch_size", 1, 10**7)
    return ProbeSpec(names=names, **kw)


def parse_schedule(raw: Any, key: str) -> ScheduleSpec:
    d = _mapping(raw, key)
    _known(d, _SCHEDULE_KEYS, key)
    if ("cron" in d) == ("interval_seconds" in d):
        raise ConfigError(key, "give exactly one of cron ('0 * * * *') or interval_seconds")
    kw: dict[str, Any] = {}
    if d.get("timezone") is not None:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(str(d["timezone"]))
        except Exception:
            raise ConfigError(f"{key}.timezone", f"unknown time zone {d['timezone']!r}") from None
        kw["timezone"] = str(d["timezone"])
    if "cron" in d:
        if not isinstance(d["cron"], str):
            raise ConfigError(f"{key}.cron", f"expected a crontab string such as '0 * * * *', got {d['cron']!r}")
        try:
            trig = cron_trigger(d["cron"], kw.get("timezone"))
        except ValueError as exc:
            raise ConfigError(f"{key}.cron", f"not a valid 5-field crontab expression: {exc}") from None
        from datetime import UTC, datetime

        now = datetime.now(UTC)  # an instant: the trigger compares it in its own time zone
        if trig.get_next_fire_time(None, now) is None:
            raise ConfigError(f"{key}.cron", f"{d['cron']!r} never fires (e.g. 31 February)")
        kw["cron"] = d["cron"]
    else:
        kw["interval_seconds"] = _seconds(d["interval_seconds"], f"{key}.interval_seconds", minimum=1.0)
    if d.get("jitter_seconds") is not None:
        if "cron" in kw:
            raise ConfigError(f"{key}.jitter_seconds", "applies to interval_seconds only, not to a cron schedule")
        kw["jitter_seconds"] = _seconds(d["jitter_seconds"], f"{key}.jitter_seconds", allow_zero=True)
        if math.ceil(kw["jitter_seconds"]) >= kw["interval_seconds"]:
            # APScheduler delays each run by up to the jitter: at or past the interval, runs
            # land in the next one's slot, bunch up and are coalesced away
            raise ConfigError(
                f"{key}.jitter_seconds",
                f"{kw['jitter_seconds']:g} s is not below interval_seconds ({kw['interval_seconds']:g} s): "
                "runs would bunch up; use a jitter well under the interval",
            )
    if "run_at_start" in d:
        kw["run_at_start"] = _bool(d["run_at_start"], f"{key}.run_at_start")
    return ScheduleSpec(**kw)


def _longest_gap(sched: ScheduleSpec) -> float | None:
    """Seconds between scheduled checks: the interval (with its jitter), or the longest gap
    between a cron schedule's next 50 fires."""
    if sched.interval_seconds is not None:
        return float(sched.interval_seconds) + float(sched.jitter_seconds or 0)
    from datetime import UTC, datetime, timedelta

    trig = sched.trigger()
    at = datetime.now(UTC)
    fires: list[float] = []
    for _ in range(50):
        nxt = trig.get_next_fire_time(None, at)
        if nxt is None:
            break
        fires.append(nxt.timestamp())
        at = nxt + timedelta(seconds=1)
    return max((b - a for a, b in itertools.pairwise(fires)), default=None)


def load_serve_config(path: str | os.PathLike[str], *, port: int | None = None, host: str | None = None) -> ServeConfig:
    """Read the YAML file: the ``monitors:`` list (entries inherit the top-level keys) or the
    top-level single-monitor form."""
    raw = load_config(path)
    base = Path(raw.pop("_dir"))
    settings = parse_settings(expand_env(raw.get("serve"), "serve"), port=port, host=host)
    cfg = expand_env({k: v for k, v in raw.items() if k != "serve"})
    entries: list[tuple[str, dict[str, Any]]] = []
    if "monitors" in cfg:
        if "name" in cfg:
            raise ConfigError("name", "give either monitors: [...] or the top-level single-monitor form, not both")
        items = cfg["monitors"]
        if not isinstance(items, list) or not items:
            raise ConfigError("monitors", "expected a non-empty list of monitors")
        for k in _SERVICE_KEYS:
            if cfg.get(k) is not None:
                raise ConfigError(k, "is not inherited by the monitors: [...] entries; set it in each entry")
        shared = {k: cfg[k] for k in _INHERITED if k in cfg}
        # the shared blocks are checked even where every entry overrides them: an error in one
        # names it (not monitors[0], whose entry has no rules:), and `alerts test` reads the
        # shared alerts (a config audit found `rules: {alpha: 5}` accepted that way)
        if shared.get("rules") is not None:
            from .detection import Rules

            if not isinstance(shared["rules"], Mapping):
                raise ConfigError("rules", f"expected a mapping of rule settings, got {type(shared['rules']).__name__}")
            Rules.from_dict(shared["rules"])
        if shared.get("alerts") is not None:
            from .alerting.config import channels_from_config

            channels_from_config(shared["alerts"], expand=False)
        for i, item in enumerate(items):
            key = f"monitors[{i}]"
            item = _mapping(item, key)
            _known(item, _ENTRY_KEYS, key)
            # a key left empty in the entry (every line under it commented out) inherits the
            # shared value: it replaced shared rules with the defaults, shared sinks with MLflow
            entries.append((key, {**shared, **{k: v for k, v in item.items() if v is not None or k not in shared}}))
    else:
        if "name" not in cfg:
            raise ConfigError("monitors", "nothing to serve: give monitors: [...] or a top-level name + reference")
        entries.append(("config", dict(cfg)))
    specs: list[MonitorSpec] = []
    seen: set[str] = set()
    for key, entry in entries:
        mon = monitor_from_dict(entry, base, key=key, alert_budget_seconds=settings.alert_budget_seconds)
        if mon.name in seen:
            raise ConfigError(f"{key}.name", f"duplicate monitor name {mon.name!r}")
        seen.add(mon.name)
        k = "" if key == "config" else f"{key}."
        model = parse_model(entry["model"], f"{k}model") if entry.get("model") is not None else None
        probe = (
            parse_probe(entry["probe"], f"{k}probe", base, mon.reference) if entry.get("probe") is not None else None
        )
        sched = parse_schedule(entry["schedule"], f"{k}schedule") if entry.get("schedule") is not None else None
        if model is not None and probe is None:
            raise ConfigError(f"{k}probe", "a monitor with a model needs a probe (inputs and/or sample)")
        if model is not None and sched is None:
            raise ConfigError(f"{k}schedule", "a monitor with a model needs a schedule (cron or interval_seconds)")
        if model is None and (probe is not None or sched is not None):
            raise ConfigError(f"{k}model", "probe/schedule given without a model to load")
        expected = None
        if entry.get("expected_interval_seconds") is not None:
            expected = _seconds(entry["expected_interval_seconds"], f"{k}expected_interval_seconds")
            gap = None if sched is None else _longest_gap(sched)
            # an hour of slack: a daylight-saving change makes one gap of a daily cron 25 h, and
            # a config accepted all year was refused on the weeks before the change (a review)
            slack = 3600.0 if sched is not None and sched.cron is not None else 0.0
            if sched is not None and gap is not None and expected + slack < gap:
                # the dead-man's switch would page between every two scheduled checks
                raise ConfigError(
                    f"{k}expected_interval_seconds",
                    f"{expected:g} s is below the schedule's {gap:g} s between checks ({sched.describe()}): "
                    "the monitor would be reported stale between every two checks; give at least the interval",
                )
        specs.append(MonitorSpec(mon.name, mon, model, probe, sched, expected))
    return ServeConfig(settings, tuple(specs), base)
