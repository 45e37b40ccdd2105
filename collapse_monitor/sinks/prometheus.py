"""Prometheus sink: gauges for dashboards and alert rules, three ways out.

* **Pushgateway** (batch retrain jobs): a fresh ``CollectorRegistry`` per push,
  ``pushadd_to_gateway`` (POST: other metric families of the group stay; those of an earlier
  check that this one lacks are read from the gateway first and pushed as NaN), grouping key
  ``job`` + ``monitor`` (never an instance or run id). Prometheus must scrape the gateway with
  ``honor_labels: true``. The gateway never forgets a group: :meth:`PrometheusSink.delete`.
* **A caller's registry** (``collapse-monitor serve``'s ``/metrics``): one collector per registry,
  registered once, yielding the latest report of every monitor it has seen.
* **A textfile** for node_exporter's textfile collector, written atomically (``write_to_textfile``);
  the path may contain ``{monitor}`` for one file per monitor.

Series (label ``monitor`` on all of them; values are base units, ratios 0-1):

==============================================  ==============================================
``collapse_monitor_<key>``                      every metric of the report (``.`` -> ``_``)
``collapse_monitor_<key>_ci_low`` / ``_ci_high``  its 95 % interval
``collapse_monitor_class_recall{class}``        (+ ``_ci_low/_ci_high``) rare classes only,
                                                at most ``max_class_series`` (lowest support first)
``collapse_monitor_stage``                      0 healthy, 1 early collapse, 2 late collapse
``collapse_monitor_generation``                 generation number of the latest check
``collapse_monitor_baseline_generation``        generation the checks compare against
``collapse_monitor_drift``                      1 when the check saw a global shift (not collapse)
``collapse_monitor_synthetic_fraction``         share of synthetic training data (provenance;
                                                NaN when the check has none)
``collapse_monitor_last_check_timestamp_seconds``  when the check ran (unix seconds)
``collapse_monitor_check_duration_seconds``     how long the check took
``collapse_monitor_alert_firing{rule,severity}``  1 while a rule fires, 0 once resolved
==============================================  ==============================================

Redirects are never followed (pushes, deletes and the replay-ordering read alike): the
Pushgateway's credentials would go to wherever ``Location`` points. A 3xx fails the request
(the report is spooled) with an error that names the refused target, redacted.

``prometheus_client`` is imported lazily, when a sink is built.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import threading
import urllib.request
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._lifecycle import DRIFT_SEVERITY, RULE_DRIFT
from .._redact import Redactor, basic_auth_values, host_port, redact_text, redact_url
from ..errors import ConfigError, SinkError
from ..metrics._spec import MLFLOW_ONLY, spec_for
from ..types import Report, Stage, _encodable
from .base import EmitContext

__all__ = ["PrometheusSink", "ReportCollector", "report_samples"]

log = logging.getLogger(__name__)

NS = "collapse_monitor"
_BAD = re.compile(r"[^a-zA-Z0-9_]")
_LABEL_OK = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class Sample:
    name: str
    help: str
    labels: tuple[tuple[str, str], ...]
    value: float


def prom_name(key: str) -> str:
    """``collapse_monitor_<key>`` with every character Prometheus refuses replaced by ``_``.

    >>> prom_name("tail_coverage"), prom_name("distinct_2"), prom_name("a.b-c")
    ('collapse_monitor_tail_coverage', 'collapse_monitor_distinct_2', 'collapse_monitor_a_b_c')
    """
    return f"{NS}_" + _BAD.sub("_", key)


def rare_classes(report: Report, *, rare_threshold: float = 0.05) -> list[str]:
    """Labels of the report's rare classes, lowest probe support first.

    Taken from ``report.rare_classes`` when the report carries it, else from the detector's
    findings (rare per-class recalls are tested as ``tail``), else estimated from probe support
    (``class_recall.<c>.n / accuracy.n < rare_threshold``; exact when the priors are the label
    frequencies, the default)."""
    keys = {k[len("class_recall.") :]: mv for k, mv in report.metrics.items() if k.startswith("class_recall.")}
    if not keys:
        return []
    known = getattr(report, "rare_classes", None)
    if known:  # () also means "not recorded" (hand-made reports, reports rebuilt from MLflow tags)
        chosen = {str(c) for c in known}
    else:
        chosen = {
            f.key[len("class_recall.") :]
            for f in report.findings
            if f.key.startswith("class_recall.") and f.family == "tail"
        }
        if not chosen:
            acc = report.metrics.get("accuracy")
            total = acc.n if acc is not None and acc.n else None
            if total:
                chosen = {c for c, mv in keys.items() if mv.n is not None and mv.n / total < rare_threshold}
    return sorted((c for c in chosen if c in keys), key=lambda c: (keys[c].n or 0, c))


def _alert_rules(report: Report, book: dict[str, tuple[str, float]]) -> dict[str, tuple[str, float]]:
    """Update ``book`` (rule -> (severity, 0/1)) with this report and return it: the report's
    open incidents when it carries them (an alert waiting out ``Rules.resolve_after`` still
    reads 1), else the stage and the alert events."""
    if report.open_alerts is not None:
        # a rule resolved by this check reads 0 even in a process that never saw it fire (a batch
        # job pushes with POST: the 1 an earlier job pushed would otherwise stay for good)
        resolved = {a.rule: a.severity for a in report.alerts if a.status == "resolved"}
        # every rule the library fires reads 0 unless open: a fresh process (a restarted job, a
        # wiped home) knew none of them and pushed no alert_firing at all, so the gateway kept
        # the 1 of the process before it, "firing" on a healthy monitor for good
        known = {s.value: s.severity for s in Stage if s is not Stage.HEALTHY} | {RULE_DRIFT: DRIFT_SEVERITY}
        for rule in set(book) | set(report.open_alerts) | set(resolved) | set(known):
            if rule in report.open_alerts:
                book[rule] = (report.open_alerts[rule], 1.0)
            else:
                book[rule] = (book[rule][0] if rule in book else resolved.get(rule) or known[rule], 0.0)
        return book
    stage_rules = {s.value for s in Stage if s is not Stage.HEALTHY}
    for rule in stage_rules:
        if rule in book and rule != report.stage.value:
            book[rule] = (book[rule][0], 0.0)
    if report.stage is not Stage.HEALTHY:
        book[report.stage.value] = (report.stage.severity, 1.0)
    for a in sorted(report.alerts, key=lambda a: a.timestamp):
        book[a.rule] = (a.severity, 1.0 if a.status == "firing" else 0.0)
    return book


#: label names the sink's series carry (and Prometheus's own): not a grouping key
_RESERVED_LABELS = frozenset({"job", "monitor", "instance", "rule", "severity", "class"})


def report_samples(
    report: Report,
    *,
    max_class_series: int = 20,
    rare_threshold: float = 0.05,
    alert_book: dict[str, tuple[str, float]] | None = None,
) -> list[Sample]:
    """The gauge samples for one report (label ``monitor``)."""
    mon = (("monitor", report.monitor),)
    out: list[Sample] = []

    def add(name: str, help: str, value: float, labels: tuple[tuple[str, str], ...] = ()) -> None:
        if value is not None and math.isfinite(float(value)):
            out.append(Sample(name, help, mon + labels, float(value)))

    rare = set(rare_classes(report, rare_threshold=rare_threshold)[: max(0, max_class_series)])
    for key, mv in sorted(report.metrics.items()):
        if key in MLFLOW_ONLY:
            continue
        labels: tuple[tuple[str, str], ...] = ()
        if key.startswith("class_recall."):
            label = key[len("class_recall.") :]
            if label not in rare:
                continue
            # a label with a lone surrogate (a non-UTF-8 folder name) as escapes: prometheus_client
            # cannot encode it, and the whole exposition failed, for every monitor (an audit)
            name, labels = f"{NS}_class_recall", (("class", _encodable(label)),)
            help = spec_for(key, rare=True).help + " Rare classes only."
        else:
            name, help = prom_name(key), spec_for(key).help
        add(name, help, mv.value, labels)
        add(name + "_ci_low", f"Lower bound of the 95% interval of {name}.", mv.ci_low, labels)
        add(name + "_ci_high", f"Upper bound of the 95% interval of {name}.", mv.ci_high, labels)
    prov = report.provenance
    if "synthetic_fraction" not in report.metrics:
        # NaN when this check has no provenance: "unknown", not the share an earlier check pushed
        # (a Pushgateway POST keeps the families a push leaves out)
        share = None if prov is None else prov.synthetic_fraction
        name = prom_name("synthetic_fraction")
        out.append(Sample(name, spec_for("synthetic_fraction").help, mon, math.nan if share is None else float(share)))
    add(
        f"{NS}_stage",
        "Collapse stage of the latest check: 0 healthy, 1 early collapse, 2 late collapse.",
        report.stage.level,
    )
    add(f"{NS}_generation", "Generation number of the latest check.", report.generation)
    add(f"{NS}_baseline_generation", "Generation the checks compare against.", report.baseline_generation)
    add(
        f"{NS}_drift",
        "1 when the latest check saw a global distribution shift (drift, not collapse).",
        float(report.drift),
    )
    add(f"{NS}_last_check_timestamp_seconds", "Unix time of the latest check.", report.created_at)
    add(f"{NS}_check_duration_seconds", "Duration of the latest check.", report.duration_seconds)
    book = _alert_rules(report, {} if alert_book is None else alert_book)
    for rule, (severity, value) in sorted(book.items()):
        add(
            f"{NS}_alert_firing",
            "1 while an alert rule of the monitor fires, 0 once it resolved.",
            value,
            (("rule", rule), ("severity", severity)),
        )
    return out


def families(samples: list[Sample]) -> list[Any]:
    """Group samples into prometheus_client GaugeMetricFamily objects."""
    from prometheus_client.core import GaugeMetricFamily

    by_name: dict[str, Any] = {}
    label_names: dict[str, tuple[str, ...]] = {}
    for s in samples:
        names = tuple(k for k, _ in s.labels)
        fam = by_name.get(s.name)
        if fam is None:
            fam = by_name[s.name] = GaugeMetricFamily(s.name, s.help, labels=list(names))
            label_names[s.name] = names
        want = label_names[s.name]
        values = dict(s.labels)  # by name: a textfile read back has them sorted
        if values.keys() != set(want):
            continue  # another label set than the family's (a foreign series in a shared textfile)
        fam.add_metric([values[k] for k in want], s.value)
    return list(by_name.values())


def _write_samples(path: Path, samples: list[Sample]) -> None:
    from prometheus_client import CollectorRegistry, write_to_textfile

    class _Held:
        def collect(self) -> Iterator[Any]:
            yield from families(samples)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Held())
    write_to_textfile(str(path), reg)  # temp file + os.replace: atomic for the collector


def _read_textfile(path: Path) -> list[Sample]:
    """The collapse-monitor samples in a textfile (none when it is missing or unreadable: it
    is rewritten whole)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: list[Sample] = []
    try:
        for fam in text_string_to_metric_families(path.read_text(encoding="utf-8")):
            for smp in fam.samples:
                if smp.name.startswith(NS + "_") and "monitor" in smp.labels:
                    out.append(Sample(smp.name, fam.documentation, tuple(smp.labels.items()), float(smp.value)))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("collapse-monitor: textfile %s unreadable, rewritten with this process's series: %s", path, exc)
        return []
    return out


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def supersedes(
    held: tuple[float | None, float] | None, report: Report, *, live: bool = False, chain_start: float | None = None
) -> bool:
    """Whether an export ``held`` - (generation, created_at) of the check it came from; the
    generation None where unknown - is newer than ``report``, which must then not replace it.

    The generation decides first: a higher generation of a monitor is newer whatever the clocks
    say (a wall clock stepped back by NTP, a training host whose clock is behind the previous
    one's: ordering by ``created_at`` alone kept showing the older generation, and every later
    check went unexported without a word). Within one generation, the later check. A lower
    generation checked after a higher one (a backfill, an old checkpoint re-run, a late spool
    replay) does not replace it.

    One exception, as for the monitor's alerts: a baseline that starts a new chain (a chain
    re-run from scratch, a history that starts again) replaces a higher generation of the
    earlier one. It is a new chain when it was checked now (``live``), or when it is later
    than the held chain's own baseline (``chain_start``, its ``created_at``; unknown: than the
    held check). Re-exporting the held chain's own baseline (serve's refresh tick after a clock
    step back) is not a new chain; a re-run whose clock is behind the held chain's cannot be
    told from one, and waits until it passes the held generation.

    >>> from collapse_monitor.types import Report, Stage
    >>> r = Report("m", 2, Stage.HEALTHY, {}, created_at=100.0)
    >>> supersedes((1, 500.0), r), supersedes((3, 50.0), r), supersedes((2, 101.0), r)
    (False, True, True)
    >>> rerun = Report("m", 0, Stage.HEALTHY, {}, created_at=100.0)
    >>> supersedes((5, 50.0), rerun), supersedes((5, 150.0), rerun), supersedes((5, 150.0), rerun, live=True)
    (False, True, False)
    >>> supersedes((5, 50.0), rerun, chain_start=100.0)  # the held chain's own baseline again
    True
    """
    if held is None:
        return False
    gen, at = held
    if report.is_baseline and (live or report.created_at > (at if chain_start is None else chain_start)):
        return False
    if gen is None or gen == report.generation:
        return at > report.created_at
    return gen > report.generation


class ReportCollector:
    """A prometheus_client collector yielding the latest samples of every monitor it was given
    (the latest by :func:`supersedes`: generation first, then time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: monitor -> (generation, created_at, samples)
        self._latest: dict[str, tuple[int, float, list[Sample]]] = {}
        #: monitor -> created_at of the held chain's baseline, where this collector saw it
        self._chains: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.__dict__.setdefault("_chains", {})  # pickled by an older version

    def update(self, report: Report, samples: list[Sample], *, live: bool = False) -> bool:
        """Keep ``samples`` as the monitor's latest unless a newer check is already held
        (``live``: ``report`` was just made; see :func:`supersedes`)."""
        with self._lock:
            held = self._latest.get(report.monitor)
            chain = self._chains.get(report.monitor)
            if held is not None and supersedes(held[:2], report, live=live, chain_start=chain):
                return False
            self._latest[report.monitor] = (report.generation, report.created_at, samples)
            if report.is_baseline:
                self._chains[report.monitor] = report.created_at
            elif held is None or held[0] > report.generation:  # not a continuation of the held chain
                self._chains.pop(report.monitor, None)
            return True

    def note_chain(self, report: Report, start: float | None) -> None:
        """Record ``start`` (its baseline's ``created_at``) as the chain of ``report`` when
        ``report`` is the check held for its monitor and its chain is not known yet (the first
        export of a process was not a baseline): without it a baseline dated later than the held
        check reads as a new chain, which after a clock step back it need not be."""
        if start is None:
            return
        with self._lock:
            held = self._latest.get(report.monitor)
            if held is not None and held[:2] == (report.generation, report.created_at):
                self._chains.setdefault(report.monitor, start)

    def held(self, monitor: str) -> tuple[int, float] | None:
        """(generation, created_at) of the check held for ``monitor``."""
        with self._lock:
            held = self._latest.get(monitor)
        return None if held is None else (held[0], held[1])

    def supersedes(self, report: Report, *, live: bool = False) -> bool:
        """Whether the check held for ``report.monitor`` is newer than ``report``."""
        with self._lock:
            chain = self._chains.get(report.monitor)
        return supersedes(self.held(report.monitor), report, live=live, chain_start=chain)

    def forget(self, monitor: str) -> None:
        with self._lock:
            self._latest.pop(monitor, None)
            self._chains.pop(monitor, None)

    def monitors(self) -> list[str]:
        with self._lock:
            return sorted(self._latest)

    def samples(self, monitor: str | None = None) -> list[Sample]:
        with self._lock:
            held = sorted(self._latest.items()) if monitor is None else [(monitor, self._latest[monitor])]
        return [s for _, (_, _, ss) in held for s in ss]

    def collect(self) -> Iterator[Any]:
        yield from families(self.samples())

    def describe(self) -> list[Any]:
        return []  # no collect() at registration; names are checked by construction


_COLLECTORS: weakref.WeakKeyDictionary[Any, ReportCollector] = weakref.WeakKeyDictionary()
_COLLECTORS_LOCK = threading.Lock()


def collector_for(registry: Any) -> ReportCollector:
    """The one ReportCollector registered in ``registry`` (registered on first use)."""
    with _COLLECTORS_LOCK:
        col = _COLLECTORS.get(registry)
        if col is None:
            col = ReportCollector()
            registry.register(col)
            _COLLECTORS[registry] = col
        return col


def _family_value(fam: Any, monitor: str) -> float | None:
    """The value of ``monitor``'s series in a metric family of ``/api/v1/metrics``."""
    for m in (fam or {}).get("metrics", []):
        if m.get("labels", {}).get("monitor", monitor) == monitor:
            return float(m["value"])
    return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: following it would send the Basic credentials (and the metrics)
    to whatever URL the ``Location`` header names, another host included."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        with contextlib.suppress(Exception):
            fp.close()
        raise OSError(f"the Pushgateway answered {code} {msg}: redirect to {redact_url(newurl)} refused")


def _split_auth(url: str) -> tuple[str, str | None, str | None]:
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        parts.port  # noqa: B018 - raises for a port that is not a number
        why = None
    except ValueError:
        # not its text: "Port could not be cast to integer value as 'pw'" quotes a password
        # holding a "/" or "#" (user:pw/x@host), and raising here kept it as __context__
        why = "the port is not a number in 0-65535 (a password holding / # or ? must be percent-encoded)"
    if why is not None:
        raise ConfigError("PrometheusSink.pushgateway", f"not a valid http(s) URL: {redact_url(url)}: {why}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "PrometheusSink.pushgateway", f"expected an http(s) URL such as http://host:9091, got {redact_url(url)}"
        )
    if parts.fragment:
        raise ConfigError("PrometheusSink.pushgateway", f"a #fragment is not part of a gateway URL: {redact_url(url)}")
    if parts.username is None and parts.password is None:
        return urlunsplit(parts), None, None
    return (
        urlunsplit((parts.scheme, host_port(parts), parts.path, parts.query, parts.fragment)),
        parts.username,
        parts.password,
    )


class PrometheusSink:
    """Exports every check as Prometheus gauges (see the module docstring for the series).

    ``pushgateway``: URL of a Pushgateway (``http://host:9091``; ``user:password@`` in it becomes
    basic auth). ``textfile``: path of a node_exporter textfile (``{monitor}`` allowed).
    ``registry``: a ``CollectorRegistry`` to serve (e.g. ``/metrics`` of ``collapse-monitor serve``).
    Any combination works; with none the sink only keeps the latest samples (``.collector``).
    ``job`` and ``grouping_key`` form the push group together with ``monitor``.

    >>> PrometheusSink(pushgateway="http://u:secret@127.0.0.1:9091")
    PrometheusSink(pushgateway='http://127.0.0.1:9091', textfile=None, registry=False, job='collapse_monitor')
    """

    name = "prometheus"

    def __init__(
        self,
        pushgateway: str | None = None,
        textfile: str | Path | None = None,
        registry: Any = None,
        *,
        job: str = "collapse_monitor",
        max_class_series: int = 20,
        grouping_key: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        rare_threshold: float = 0.05,
    ) -> None:
        if pushgateway is not None and (not isinstance(pushgateway, str) or not pushgateway.strip()):
            raise ConfigError("PrometheusSink.pushgateway", "expected a URL such as http://127.0.0.1:9091")
        if not isinstance(job, str) or not job:
            raise ConfigError("PrometheusSink.job", "expected a non-empty str")
        if isinstance(max_class_series, bool) or not isinstance(max_class_series, int) or max_class_series < 0:
            raise ConfigError("PrometheusSink.max_class_series", f"expected an int >= 0, got {max_class_series!r}")
        if grouping_key is not None and not isinstance(grouping_key, Mapping):
            raise ConfigError(
                "PrometheusSink.grouping_key",
                f"expected a mapping of label -> value, got {type(grouping_key).__name__}",
            )
        gk = dict(grouping_key or {})
        for k, v in gk.items():
            if not isinstance(k, str) or not _LABEL_OK.fullmatch(k) or k in _RESERVED_LABELS:
                # the gateway rewrites a series' label of that name to the grouping key's value:
                # rule="x" on every alert series (the shipped rules never fired), class="x" made
                # every push a 400 (an audit)
                raise ConfigError(
                    "PrometheusSink.grouping_key",
                    f"invalid or reserved label name {k!r} (reserved: {', '.join(sorted(_RESERVED_LABELS))})",
                )
            if not isinstance(v, str) or not v:
                raise ConfigError("PrometheusSink.grouping_key", f"label {k!r} needs a non-empty str value")
        if isinstance(timeout, bool) or not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
            raise ConfigError("PrometheusSink.timeout", f"expected finite seconds > 0, got {timeout!r}")
        if isinstance(rare_threshold, bool) or not (
            isinstance(rare_threshold, (int, float)) and 0 < rare_threshold <= 1
        ):
            raise ConfigError("PrometheusSink.rare_threshold", f"expected a number in (0, 1], got {rare_threshold!r}")
        if textfile is not None and not isinstance(textfile, (str, os.PathLike)):
            raise ConfigError("PrometheusSink.textfile", f"expected a file path, got {type(textfile).__name__}")
        self.pushgateway: str | None = None
        self._query = ""
        self._shown: str | None = None
        self._auth: tuple[str | None, str | None] = (None, None)
        if pushgateway is not None:
            url, user, password = _split_auth(pushgateway.strip())
            # a query (an auth proxy's ?token=) goes after the path every request appends
            # (/metrics/job/..., /api/v1/metrics): appended to the URL, the path became part of
            # the query and every push failed with 405, spooled for ever
            base, _, self._query = url.partition("?")
            self.pushgateway = base.rstrip("/")
            self._shown = redact_url(url)
            self._auth = (user, password)
        auth_secrets = [v for v in self._auth if v]
        if self._auth != (None, None):  # the header it sends, should a receiver echo it back
            auth_secrets += basic_auth_values(self._auth[0] or "", self._auth[1] or "")
        self._redactor = Redactor(auth_secrets, urls=[pushgateway])
        self.textfile = None if textfile is None else str(textfile)
        self.registry = registry
        self.job = job
        self.max_class_series = max_class_series
        self.grouping_key = gk
        self.timeout = float(timeout)
        self.rare_threshold = float(rare_threshold)
        # one spool per export target: two Prometheus sinks (a Pushgateway that is down, a
        # textfile that is up) must not replay, and delete, each other's spooled reports
        target = json.dumps([self.pushgateway, job, sorted(gk.items()), self.textfile])
        self.spool_key = "prometheus-" + hashlib.sha256(target.encode()).hexdigest()[:10]
        #: the key every Prometheus sink spooled under before 2026-12-06: replayed too, so an
        #: upgrade does not strand what an older version spooled
        self.legacy_spool_keys: tuple[str, ...] = ("prometheus",)
        self._books: dict[str, dict[str, tuple[str, float]]] = {}
        self.collector = collector_for(registry) if registry is not None else ReportCollector()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (Lightning's ddp_spawn): a ``registry`` belongs to its process (its /metrics
        server), so a copy in another process exports through its own collector and the
        Pushgateway / textfile only."""
        state = dict(self.__dict__)
        if state.get("registry") is not None:
            state["registry"] = None
            state["collector"] = ReportCollector()
        return state

    def __repr__(self) -> str:
        return (
            f"PrometheusSink(pushgateway={self._shown!r}, textfile={self.textfile!r}, "
            f"registry={self.registry is not None}, job={self.job!r})"
        )

    # ------------------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return redact_text(self._redactor(text))

    def _authorization(self) -> str | None:
        """The Basic ``Authorization`` value from the URL's ``user:password@``, if any."""
        user, password = self._auth
        if user is None and password is None:
            return None
        return "Basic " + base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()

    def _open(self, req: urllib.request.Request, timeout: float | None) -> Any:
        """``req`` through an opener that refuses redirects (:class:`_NoRedirect`), with this
        sink's credentials; TLS is verified (urllib's default context)."""
        auth = self._authorization()
        if auth is not None:
            req.add_unredirected_header("Authorization", auth)
        if self._query:
            req.full_url = req.full_url + ("&" if "?" in req.full_url else "?") + self._query
        return urllib.request.build_opener(_NoRedirect()).open(req, timeout=timeout)

    def _handler(self) -> Any:
        """A prometheus_client push handler: its default handlers follow redirects (a POST
        answered 302 becomes a GET to the new URL, ``Authorization`` included)."""

        def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes) -> Any:
            def handle() -> None:
                req = urllib.request.Request(url, data=data, method=method)
                for k, v in headers:
                    req.add_header(k, v)
                with self._open(req, timeout) as resp:
                    if resp.status >= 400:
                        raise OSError(f"error talking to pushgateway: {resp.status} {resp.reason}")

            return handle

        return handler

    def _group(self, monitor: str) -> dict[str, str]:
        return {"monitor": monitor, **self.grouping_key}

    def samples(self, report: Report) -> list[Sample]:
        book = self._books.setdefault(report.monitor, {})
        return report_samples(
            report, max_class_series=self.max_class_series, rare_threshold=self.rare_threshold, alert_book=book
        )

    def emit(self, report: Report, context: EmitContext | None = None) -> dict[str, Any] | None:
        """Export ``report``. An older report than one already exported for the monitor (a lower
        generation, or an earlier check of the same one; see :func:`supersedes`) is not exported
        over it - a late spool replay, a backfill - unless it is a baseline checked now (a chain
        re-run from scratch). The skip is logged, and a check made now (``context`` given) also
        gets it among its ``errors``: its results are not on the dashboards. Raises SinkError on
        failure."""
        live = context is not None
        newer: tuple[float | None, float] | None
        if live:  # this process's newest only: a check made now is newer than anything elsewhere
            newer = self.collector.held(report.monitor) if self.collector.supersedes(report, live=True) else None
        else:
            newer = self._newer_exported(report)
        if newer is not None:
            return self._skipped(report, newer, live=live)
        samples = self.samples(report)
        if not self.collector.update(report, samples, live=live):  # another thread exported a newer one meanwhile
            return self._skipped(report, self.collector.held(report.monitor) or (None, math.nan), live=live)
        errors: list[str] = []
        if self.pushgateway is not None:
            try:
                self._push(report, samples)
            except Exception as exc:
                errors.append(f"Pushgateway at {self.pushgateway}: push failed: {type(exc).__name__}: {exc}")
        if self.textfile is not None:
            try:
                self._write_textfile(report.monitor)
            except Exception as exc:
                errors.append(f"textfile {self.textfile}: write failed: {type(exc).__name__}: {exc}")
        if errors:
            raise SinkError(self._scrub("; ".join(errors)))
        return None

    def _skipped(self, report: Report, newer: tuple[float | None, float], *, live: bool) -> dict[str, Any]:
        """Log (and for a check made now, report) an export skipped for a newer one."""
        gen, at = newer
        what = "a newer check" if gen is None else f"generation {gen:g}"
        when = "" if not math.isfinite(at) else f" (checked at unix time {at:.0f})"
        msg = (
            f"{self.name}: generation {report.generation} of {report.monitor!r} not exported: {what}{when} is already "
            "exported, and a lower generation (or an earlier check of the same one) never replaces it"
        )
        log.warning("%s", self._scrub(msg))
        out: dict[str, Any] = {"prometheus": "skipped: a newer check is already exported"}
        if live:
            out["warnings"] = [self._scrub(msg)]
        return out

    def _push(self, report: Report, samples: list[Sample]) -> None:
        from prometheus_client import CollectorRegistry, pushadd_to_gateway

        class _Once:
            def collect(self) -> Iterator[Any]:
                yield from families(samples)

        samples = samples + self._blanks(report.monitor, samples)
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Once())
        assert self.pushgateway is not None
        pushadd_to_gateway(
            self.pushgateway,
            job=self.job,
            registry=reg,
            grouping_key=self._group(report.monitor),
            timeout=self.timeout,
            handler=self._handler(),
        )

    def _blanks(self, monitor: str, samples: list[Sample]) -> list[Sample]:
        """NaN for every metric family the gateway holds for this monitor's group that this check
        does not push (a POST keeps them: a check without texts, or with an interval that is not
        finite, left the earlier job's text metrics on the dashboards as if current). Alert
        states are left alone: each push carries only the rules this process knows. Best
        effort: when the gateway answers without its groups, the push goes out without them."""
        import urllib.error

        try:
            group = self._gateway_group(monitor)
        except (urllib.error.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # the gateway answered, but not with the groups (a proxy that only passes pushes)
            log.debug("could not read the Pushgateway group of %s (%s)", monitor, type(exc).__name__)
            return []
        # no answer at all (refused, timed out, a refused redirect) raises: the push would only
        # wait as long again, and the report is spooled either way
        pushed = {x.name for x in samples}
        keep = {"job", "monitor", *self.grouping_key}
        out = []
        for name, fam in sorted((group or {}).items()):
            if not name.startswith(NS + "_") or name in pushed or name == f"{NS}_alert_firing":
                continue
            if not isinstance(fam, dict):
                continue
            for m in fam.get("metrics") or []:
                labels = (m.get("labels") or {}).items()
                own = tuple(sorted((k, str(v)) for k, v in labels if k not in keep and v != ""))
                out.append(Sample(name, str(fam.get("help") or name), (("monitor", monitor), *own), math.nan))
        return out

    def _gateway_group(self, monitor: str) -> dict[str, Any] | None:
        """This monitor's group in the gateway's ``/api/v1/metrics`` (metric name -> family)."""
        assert self.pushgateway is not None
        req = urllib.request.Request(self.pushgateway + "/api/v1/metrics", headers={"Accept": "application/json"})
        with self._open(req, self.timeout) as resp:
            data = json.loads(resp.read().decode())
        want = {"job": self.job, **self._group(monitor)}
        for group in data.get("data", []):
            if {k: v for k, v in (group.get("labels") or {}).items() if v} == want:
                return dict(group)
        return None

    def textfile_path(self, monitor: str) -> Path | None:
        if self.textfile is None:
            return None
        return Path(self.textfile.replace("{monitor}", monitor))

    def _write_textfile(self, monitor: str, *, forget: bool = False) -> None:
        """Write the textfile: one monitor's samples when the path holds ``{monitor}``; else every
        monitor's, this sink's merged into the file's (each retrain is a process of its own,
        with a sink of its own: writing only its own samples wiped the other monitors' series,
        which no staleness alert could see). ``forget``: drop ``monitor`` from a shared file."""
        path = self.textfile_path(monitor)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        if "{monitor}" in (self.textfile or ""):
            _write_samples(path, self.collector.samples(monitor))
            return
        with _file_lock(path.with_name(path.name + ".lock")):  # two jobs writing at once keep both
            picked = self.collector.samples()
            ours = {dict(smp.labels).get("monitor") for smp in picked} | {monitor}
            kept = [smp for smp in _read_textfile(path) if dict(smp.labels).get("monitor") not in ours]
            if forget:
                picked = [smp for smp in picked if dict(smp.labels).get("monitor") != monitor]
            # this sink's series first: they set each family's labels, so a foreign series with
            # another label set in the file cannot push them out
            _write_samples(path, picked + kept)

    # -- replay ordering -----------------------------------------------------------------------
    def _newer_exported(self, report: Report) -> tuple[float | None, float] | None:
        """The (generation, created_at) of a newer check of this monitor already out there
        (memory, else the gateway and the textfile), by :func:`supersedes`; None when there is
        none. The generation is None where only the check's time could be read."""
        held = self.collector.held(report.monitor)
        if held is not None:
            return held if self.collector.supersedes(report) else None
        found: list[tuple[float | None, float]] = []
        gen_name, at_name = f"{NS}_generation", f"{NS}_last_check_timestamp_seconds"
        with contextlib.suppress(Exception):
            if self.pushgateway is not None:
                group = self._gateway_group(report.monitor) or {}
                at = _family_value(group.get(at_name), report.monitor)
                if at is not None:
                    found.append((_family_value(group.get(gen_name), report.monitor), at))
        with contextlib.suppress(Exception):
            path = self.textfile_path(report.monitor)
            if path is not None and path.exists():
                mine = {
                    smp.name: smp.value
                    for smp in _read_textfile(path)
                    if smp.name in (gen_name, at_name) and dict(smp.labels).get("monitor") == report.monitor
                }
                if at_name in mine:
                    found.append((mine.get(gen_name), mine[at_name]))
        return next((f for f in found if supersedes(f, report)), None)

    def gateway_value(self, monitor: str, metric: str) -> float | None:
        """Current value of ``metric`` in this monitor's Pushgateway group (``/api/v1/metrics``)."""
        return _family_value((self._gateway_group(monitor) or {}).get(metric), monitor)

    # -- housekeeping --------------------------------------------------------------------------
    def delete(self, monitor: str) -> None:
        """Remove the monitor's group from the Pushgateway (it never forgets one by itself), its
        samples from the collector and its textfile (when per monitor)."""
        self.collector.forget(monitor)
        self._books.pop(monitor, None)
        if self.pushgateway is not None:
            from prometheus_client import delete_from_gateway

            failure: SinkError | None = None
            try:
                delete_from_gateway(
                    self.pushgateway,
                    job=self.job,
                    grouping_key=self._group(monitor),
                    timeout=self.timeout,
                    handler=self._handler(),
                )
            except Exception as exc:
                failure = SinkError(
                    self._scrub(f"Pushgateway at {self.pushgateway}: delete failed: {type(exc).__name__}: {exc}")
                )
            if failure is not None:  # outside the except block: the original is not its __context__
                raise failure
        path = self.textfile_path(monitor)
        if path is not None:
            if "{monitor}" in (self.textfile or ""):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            elif path.exists():
                self._write_textfile(monitor, forget=True)
