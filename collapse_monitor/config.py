"""YAML configuration for ``CollapseMonitor.from_config`` and ``collapse-monitor serve``.

::

    name: digits-generator            # monitor name (required)
    home: .collapse_monitor           # local history / spool / outbox (optional)
    strict: false
    reference:                        # optional when passed in Python
      embeddings: ref_embeddings.npy  # .npy / .npz (first array) / .csv
      labels: probe_labels.npy        # .npy / .json (list) / .txt (one per line)
      texts: human_texts.txt          # .txt (one per line) / .jsonl ({"text": ...}) / .json (list)
      class_priors: {"0": 0.3, "1": 0.7}
    rules: {alpha: 0.005, min_effect: 0.1}        # see collapse_monitor.detection.Rules
    sinks:
      - {type: mlflow, tracking_uri: http://127.0.0.1:5000}
      - {type: prometheus, pushgateway: http://127.0.0.1:9091}
      - {type: evidently}
    alerts:
      - {type: slack, url: "${SLACK_WEBHOOK_URL}", severities: [warning]}
      - {type: pagerduty, routing_key: "${PD_ROUTING_KEY}", severities: [critical]}
    links: {dashboard: "http://grafana/d/collapse-monitor-overview", runbook: "https://..."}
    replay_budget_seconds: 10         # a check's time for a sink's spooled backlog (null: no limit)

Values of the form ``${VAR}`` are read from the environment, so secrets need not live in the
file. The file is parsed with ``yaml.safe_load``; arrays load with ``allow_pickle=False``.
A world-readable file that holds secrets draws a warning.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import re
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._env import ENV_REF, expand_env, flag_from_text, number_from_text
from ._redact import _db_userinfo, redact_text
from .errors import ConfigError, InputError
from .types import Reference

if TYPE_CHECKING:
    from .monitor import CollapseMonitor

__all__ = [
    "expand_env",
    "load_config",
    "load_reference",
    "monitor_from_config",
    "monitor_from_dict",
    "sinks_from_config",
]

log = logging.getLogger("collapse_monitor.config")

#: the keys of one monitor's settings (besides ``name``): a config's top level, and what each
#: entry of ``serve``'s ``monitors:`` list may override
MONITOR_KEYS = (
    "home",
    "strict",
    "reference",
    "rules",
    "sinks",
    "alerts",
    "links",
    "routing",
    "mutes",
    "device",
    "replay_budget_seconds",
)
_TOP_KEYS = {"name", *MONITOR_KEYS, "serve", "monitors", "model", "probe", "schedule", "expected_interval_seconds"}
_SECRET_KEYS = {"secret", "routing_key", "token", "password"}


def _is_literal(v: Any) -> bool:
    """Text written into the file: anything but a lone ``${VAR}``. The default of
    ``${VAR:-default}`` is written into the file too (a config audit found a Slack URL there
    without the world-readable warning)."""
    if not isinstance(v, str) or not v.strip():
        return False
    ref = ENV_REF.fullmatch(v.strip())
    return ref is None or bool((ref.group(3) or "").strip())


def _defaults(text: str) -> str:
    """The ``${VAR:-default}`` defaults of ``text`` in place of their references (the rest of a
    reference is not in the file)."""
    return ENV_REF.sub(lambda m: m.group(3) or "", text)


_SECRET_QUERY = re.compile(r"(?i)token|secret|passw|key|sig|auth|credential")


def _url_has_credentials(text: str) -> bool:
    """A URL written with a password (``https://user:pass@host``) or a secret-looking query
    parameter (``?token=...``); ``${VAR}`` references are not literal and are skipped."""
    from urllib.parse import parse_qsl, urlsplit

    for url in re.findall(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+", _defaults(text)):
        if _db_userinfo(url) != url:  # postgresql://bob:hun/ter2@db: a password with a "/"
            return True
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        if parts.password:
            return True
        if any(_SECRET_QUERY.search(k) and v for k, v in parse_qsl(parts.query)):
            return True
    return False


def _has_literal_secret(value: Any) -> bool:
    """Secrets written into the file itself: secret/routing_key/token/password values, header
    values (``Authorization: ...``), the URLs of Slack/Teams/webhook channels (their paths are
    bearer tokens) and any URL that carries a password or a token in its query."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in _SECRET_KEYS and _is_literal(v):
                return True
            if k == "url" and str(value.get("type")).lower() in {"slack", "teams", "webhook"} and _is_literal(v):
                return True
            if k == "headers" and isinstance(v, Mapping) and any(_is_literal(h) for h in v.values()):
                return True
            if _has_literal_secret(v):
                return True
    if isinstance(value, list):
        return any(_has_literal_secret(v) for v in value)
    if isinstance(value, str):
        return _url_has_credentials(value)
    return False


_MAX_VALUES = 200_000


#: a config larger than this is refused before parsing (a 3.5 MB list took 8 s and 244 MB)
MAX_CONFIG_BYTES = 5 * 1024 * 1024


def _yaml_problem(exc: Any, raw: bytes) -> str:
    """Where and what, for a YAML syntax error: line, column and PyYAML's problem (``expected
    ',' or '}', but got '{'``), never the snippet of the line, which may hold a secret; a line
    with an unquoted ``${VAR}`` gets the hint to quote it (``{alpha: ${ALPHA}}`` is the usual
    mistake: ``{`` opens a mapping in a flow context). The message said only the line."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return ""
    out = f" at line {mark.line + 1}, column {mark.column + 1}"
    problem = getattr(exc, "problem", None)
    if problem:
        out += f": {redact_text(str(problem))}"
    lines = raw.decode("utf-8", "replace").splitlines()
    line = lines[mark.line] if 0 <= mark.line < len(lines) else ""
    if re.search(r"""(?<!["'$])\$\{""", line):
        out += '; quote a value that holds ${VAR}: "${VAR}"'
    return out


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """One YAML file, parsed safely: UTF-8 (a BOM, UTF-16 and UTF-32 with their BOMs too), at
    most ``MAX_CONFIG_BYTES``, and a key given twice in one mapping is an error naming it and
    its line (the last one silently won: a pasted override changed a threshold). Every failure
    is a ``ConfigError("config", ...)``; used by every command that reads a config."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError("config", f"file not found: {p}")
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError("config", f"{p.name} is {size} bytes; a config is at most {MAX_CONFIG_BYTES}")
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {p.name}: {type(exc).__name__}: {exc.strerror or exc}") from None
    try:
        loader = _strict_loader()(raw)  # a SafeLoader subclass: no object construction
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except RecursionError:
        raise ConfigError("config", f"{p.name} is nested too deeply (at most {_MAX_DEPTH} levels)") from None
    except _DuplicateKey as exc:
        raise ConfigError(exc.key, f"given twice in {p.name} (lines {exc.first} and {exc.line}); keep one") from None
    except yaml.YAMLError as exc:
        if isinstance(exc, yaml.reader.ReaderError):  # not UTF-8/16/32 text
            raise ConfigError("config", f"{p.name} is not UTF-8 text ({exc.reason})") from None
        raise ConfigError("config", f"{p.name} is not valid YAML{_yaml_problem(exc, raw)}") from None
    _check_shape(data, p.name)
    return data


#: a config nested deeper than this is refused (no setting is more than a few levels deep)
_MAX_DEPTH = 64


def _check_shape(data: Any, name: str) -> None:
    """Refuse a document that expands to more than ``_MAX_VALUES`` values (YAML aliases nested
    into a "billion laughs": expanding ``${VAR}`` copies every one; the walk stops counting
    there) or that is nested more than ``_MAX_DEPTH`` levels (every walk over it recursed
    into ``RecursionError``)."""
    seen, stack = 0, [(data, 0)]
    while stack:
        v, depth = stack.pop()
        seen += 1
        if seen > _MAX_VALUES:
            raise ConfigError("config", f"{name} expands to more than {_MAX_VALUES} values (nested YAML aliases?)")
        if depth > _MAX_DEPTH:
            raise ConfigError("config", f"{name} is nested too deeply (at most {_MAX_DEPTH} levels)")
        if isinstance(v, Mapping):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, line: int) -> None:
        super().__init__(key)
        self.key, self.first, self.line = key, first, line


@functools.lru_cache(maxsize=1)
def _strict_loader() -> Any:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping, naming its path."""

        def construct_document(self, node: Any) -> Any:
            self._check_duplicates(node, "", set())
            return super().construct_document(node)

        def _check_duplicates(self, node: Any, path: str, visited: set[int]) -> None:
            if id(node) in visited:  # an alias: its node was checked where it was defined (and a
                return  # "billion laughs" of aliases would otherwise be walked 10**9 times)
            visited.add(id(node))
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                merged: int | None = None
                for knode, vnode in node.value:
                    name = str(knode.value) if isinstance(knode, yaml.ScalarNode) else "?"
                    if name == "<<":  # a merge key (YAML 1.1); two in one mapping: the last won
                        if merged is not None:  # (several merge as `<<: [*a, *b]`)
                            raise _DuplicateKey(f"{path}.<<" if path else "<<", merged, knode.start_mark.line + 1)
                        merged = knode.start_mark.line + 1
                        continue
                    key = f"{path}.{name}" if path else name
                    ident = self._key_value(knode)
                    if ident in seen:
                        raise _DuplicateKey(key, seen[ident], knode.start_mark.line + 1)
                    seen[ident] = knode.start_mark.line + 1
                    self._check_duplicates(vnode, key, visited)
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    self._check_duplicates(item, f"{path}[{i}]", visited)

        def _key_value(self, knode: Any) -> Any:
            """The key as the mapping will hold it: ``0`` and ``0x0``, or ``yes`` and ``true``,
            are one key (the last silently won), ``0`` and ``'0'`` two."""
            if not isinstance(knode, yaml.ScalarNode):
                return ("node", id(knode))
            build = self.yaml_constructors.get(knode.tag)
            try:
                value = build(self, knode) if build is not None else knode.value
                hash(value)
            except Exception:
                return ("text", knode.value)
            return ("value", value)

    return StrictLoader


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate the top level of a YAML config (no env expansion yet)."""
    p = Path(path)
    data = read_yaml(p)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("config", f"expected a mapping at the top of {p.name}, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(str(key), f"unknown key; known: {', '.join(sorted(_TOP_KEYS))}")
    mode = p.stat().st_mode
    if mode & stat.S_IROTH and _has_literal_secret(data):
        log.warning("%s is world-readable and holds secrets: chmod 600 it or use ${ENV_VAR} references", p.name)
    data = dict(data)
    data["_dir"] = str(p.parent.resolve())
    return data


def _unreadable(path: Path, key: str, exc: BaseException, what: str) -> ConfigError:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return ConfigError(key, f"could not read {path.name} ({type(exc).__name__}: {reason}); expected {what}")


_ARRAY_FILES = ".npy (numpy.save, no pickles), .npz (its first array) or .csv (comma-separated numbers)"
_LIST_FILES = (
    '.npy (numpy.save, no pickles), .json (a list), .jsonl (one value or {{"text": ...}} per line) '
    "or UTF-8 text ({} per line)"
)


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def _refuse_url(raw: str, key: str) -> None:
    """A data file named by a URL (``s3://``, ``https://``, ``gs://``, ``dbfs://``) was joined to
    the config's folder and reported as ``file not found: /conf/s3:/bucket/x.npy``, a path the
    user never wrote; say what is wrong and what to do instead."""
    if _URL.match(raw.strip()):
        scheme = raw.strip().split("://", 1)[0]
        raise ConfigError(
            key,
            f"is a URL ({scheme}://...); data files are read from the local disk only: download it first "
            "(e.g. `aws s3 cp`, `gsutil cp`, `mlflow artifacts download`) and give the local path",
        )


def _load_array(path: Path, key: str) -> np.ndarray:
    if not path.is_file():
        raise ConfigError(key, f"file not found: {path}")
    if path.suffix not in (".npy", ".npz", ".csv"):
        raise ConfigError(key, f"unsupported file type {path.suffix!r}; use {_ARRAY_FILES}")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise ConfigError(key, f"{path.name} holds no arrays")
                return z[z.files[0]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": said below, once
            arr = np.loadtxt(path, delimiter=",", ndmin=2)
        if arr.size == 0:
            raise ConfigError(key, f"{path.name} holds no numbers; write one comma-separated row per item")
        return arr
    except ConfigError:
        raise
    except Exception as exc:
        raise _unreadable(path, key, exc, _ARRAY_FILES) from None


def _load_list(path: Path, key: str, *, texts: bool) -> list[Any]:
    """A list of labels / predictions (``texts=False``: blank lines skipped) or of texts."""
    if not path.is_file():
        raise ConfigError(key, f"file not found: {path}")
    what = _LIST_FILES.format("one text" if texts else "one label")
    try:
        if path.suffix == ".npy":
            return list(np.load(path, allow_pickle=False).tolist())
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            val = json.loads(raw)
            if not isinstance(val, list):
                raise ConfigError(key, f"{path.name} must hold a JSON list, got {type(val).__name__}")
            return val
        if path.suffix == ".jsonl":
            out = []
            for n, line in enumerate(raw.splitlines(), 1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        raise ConfigError(key, f"{path.name} line {n} is not JSON ({exc})") from None
                    if isinstance(obj, dict):
                        if "text" not in obj:  # was "item 1 is NoneType, expected str"
                            keys = ", ".join(sorted(map(str, obj))[:5]) or "none"
                            raise ConfigError(
                                key, f'{path.name} line {n}: an object needs a "text" key (it has: {keys})'
                            )
                        obj = obj["text"]
                    out.append(obj)
            return out
    except ConfigError:
        raise
    except Exception as exc:
        raise _unreadable(path, key, exc, what) from None
    lines = raw.splitlines()
    return lines if texts else [ln for ln in lines if ln.strip()]


def load_reference(spec: Mapping[str, Any], base_dir: str | os.PathLike[str] = ".") -> Reference:
    """Build a Reference from the ``reference:`` block (paths relative to the config file)."""
    if not isinstance(spec, Mapping):
        raise ConfigError("reference", f"expected a mapping, got {type(spec).__name__}")
    allowed = {"embeddings", "labels", "texts", "class_priors", "name"}
    for k in spec:
        if k not in allowed:
            raise ConfigError(f"reference.{k}", f"unknown key; known: {', '.join(sorted(allowed))}")
    base = Path(base_dir)
    kw: dict[str, Any] = {}
    for k in ("embeddings", "labels", "texts"):
        v = spec.get(k)
        if v is None:
            continue
        if not isinstance(v, (str, os.PathLike)) or not str(v).strip():
            # [0, 1] read as the file "[0, 1]" and `labels: false` was dropped without a word
            raise ConfigError(f"reference.{k}", f"expected a file path (relative to this file), got {type(v).__name__}")
        _refuse_url(str(v), f"reference.{k}")
        path = base / os.path.expanduser(str(v))
        if k == "embeddings":
            kw[k] = _load_array(path, "reference.embeddings")
        else:
            kw[k] = _load_list(path, f"reference.{k}", texts=k == "texts")
    if spec.get("class_priors") is not None:
        kw["class_priors"] = spec["class_priors"]
    try:
        return Reference(**kw, name=spec.get("name"))
    except InputError as exc:
        if exc.field not in ("reference", "reference.class_priors"):
            raise  # bad data in a file the block names stays an InputError
        # an empty block, inline priors that do not fit: written in this file, a config mistake
        raise ConfigError(exc.field, exc.message) from None


def _relative_to(base_dir: str | os.PathLike[str] | None, kind: str, kw: dict[str, Any]) -> dict[str, Any]:
    """A sink's relative local paths read against the config's folder, as ``home:`` and
    ``reference:`` are (not the working directory, where a job started elsewhere would write
    a second, empty MLflow store): ``sqlite:///rel.db`` and a Prometheus ``textfile``."""
    if base_dir is None:
        return kw
    from .sinks.mlflow import absolute_sqlite

    uri = kw.get("tracking_uri")
    if kind == "mlflow" and isinstance(uri, str):
        kw = {**kw, "tracking_uri": absolute_sqlite(uri, base_dir)}
    tf = kw.get("textfile")
    if kind == "prometheus" and isinstance(tf, (str, os.PathLike)) and not os.path.isabs(str(tf)):
        kw = {**kw, "textfile": os.path.join(str(base_dir), str(tf))}
    return kw


def _from_text(param: inspect.Parameter | None, v: Any) -> Any:
    """A ``${VAR}`` setting expanded to text, as the bool or number the option defaults to."""
    if param is None:
        return v
    default = param.default
    if isinstance(default, bool) or param.name in ("evidently",):  # evidently: None = auto
        return flag_from_text(v)
    if isinstance(default, (int, float)):
        return number_from_text(v)
    return v


def sinks_from_config(items: Any, base_dir: str | os.PathLike[str] | None = None) -> list[Any]:
    """Sinks from the ``sinks:`` list; with ``base_dir`` (the config's folder) relative sqlite
    stores and textfiles are read against it."""
    from .sinks import EvidentlySink, MLflowSink, PrometheusSink

    if items is None:
        return [MLflowSink()]
    if not isinstance(items, list):
        raise ConfigError("sinks", f"expected a list, got {type(items).__name__}")
    kinds = {"mlflow": MLflowSink, "prometheus": PrometheusSink, "evidently": EvidentlySink}
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "type" not in item:
            raise ConfigError(f"sinks[{i}]", "expected a mapping with a 'type' key")
        kind = item["type"]
        if not isinstance(kind, str) or kind not in kinds:
            raise ConfigError(f"sinks[{i}].type", f"unknown sink {kind!r}; known: {', '.join(kinds)}")
        cls = kinds[kind]
        params = inspect.signature(cls).parameters
        kw = {k: _from_text(params.get(k), v) for k, v in item.items() if k != "type"}
        allowed = [p for p in params if not p.startswith("_")]
        for k in kw:
            if k not in allowed:
                raise ConfigError(f"sinks[{i}].{k}", f"unknown option for a {kind} sink; known: {', '.join(allowed)}")
        try:
            out.append(cls(**_relative_to(base_dir, kind, kw)))
        except ConfigError as exc:
            raise exc.under(f"sinks[{i}]", strip=cls.__name__ + ".") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"sinks[{i}]", f"bad option for {kind}: {redact_text(str(exc))}") from None
    return out


def channels_from_config(items: Any) -> list[Any]:
    """The ``alerts:`` list of an already-expanded config (``${VAR}`` are not read again)."""
    from .alerting import channels_from_config as build

    return build(items, expand=False)


def monitor_from_dict(
    cfg: Mapping[str, Any],
    base_dir: str | os.PathLike[str],
    *,
    reference: Reference | None = None,
    key: str = "config",
    **overrides: Any,
) -> CollapseMonitor:
    """Build a monitor from an env-expanded config mapping (paths relative to ``base_dir``).

    ``key`` prefixes ConfigError keys (e.g. ``monitors[0]``) for configs with several monitors.
    """
    try:
        return _monitor_from_dict(cfg, base_dir, reference, overrides)
    except ConfigError as exc:  # every error keyed as in the file: the entry, then its own key
        if key == "config" or exc.key.startswith(key):
            raise
        raise exc.under(key) from None
    except InputError as exc:  # bad data in a file the entry names: say which entry
        if key == "config" or exc.field.startswith(key):
            raise
        raise exc.under(key) from None


def _monitor_from_dict(
    cfg: Mapping[str, Any], base_dir: str | os.PathLike[str], reference: Reference | None, overrides: dict[str, Any]
) -> CollapseMonitor:
    from .detection import Rules
    from .monitor import CollapseMonitor

    name = overrides.pop("name", cfg.get("name"))
    if name is None or name == "":
        raise ConfigError("name", "the monitor needs a name: add name: my-model")
    if not isinstance(name, str):
        raise ConfigError("name", f"expected a string such as my-model, got {type(name).__name__} {name!r}")
    if reference is None:
        if "reference" not in cfg:
            raise ConfigError(
                "reference",
                "missing: no reference in the config; add a reference: block (embeddings: / labels: / texts: files, paths relative "
                "to the config) or pass reference=cm.Reference(...) to from_config",
            )
        reference = load_reference(cfg["reference"], base_dir)
    strict = flag_from_text(cfg.get("strict", False))  # ${STRICT:-false}
    if not isinstance(strict, bool):
        # the value is not echoed: it may come from an environment variable
        raise ConfigError("strict", f"expected true or false, got a {type(strict).__name__}")
    home = cfg.get("home")
    if home is not None and (not isinstance(home, str) or not home.strip()):
        raise ConfigError("home", f"expected a folder path, got {type(home).__name__}")
    if home is not None:
        home = os.path.expanduser(str(home))  # ~/state became <config folder>/~/state (an audit)
    if home is not None and not os.path.isabs(home):
        home = os.path.join(str(base_dir), home)
    kw: dict[str, Any] = dict(
        reference=reference,
        rules=Rules.from_dict(cfg.get("rules")),
        sinks=sinks_from_config(cfg.get("sinks"), base_dir) if "sinks" in cfg else None,
        alerts=channels_from_config(cfg.get("alerts")),
        home=home,
        strict=strict,
        links=cfg.get("links"),
        routing=cfg.get("routing"),
        mutes=cfg.get("mutes"),
        device=cfg.get("device"),
    )
    if "replay_budget_seconds" in cfg:  # a number (also "${REPLAY_BUDGET:-10}") or null
        kw["replay_budget_seconds"] = number_from_text(cfg["replay_budget_seconds"])
    kw.update(overrides)
    return CollapseMonitor(name, **kw)


def monitor_from_config(
    path: str | os.PathLike[str], *, reference: Reference | None = None, **overrides: Any
) -> CollapseMonitor:
    """Read a YAML file (``${VAR}`` expanded) and build its monitor."""
    raw = load_config(path)
    cfg = expand_env({k: v for k, v in raw.items() if k != "_dir"})
    return monitor_from_dict(cfg, raw["_dir"], reference=reference, **overrides)
