"""HTTP plumbing shared by the channels: a stdlib transport (urllib) with explicit timeouts,
TLS verification on by default and redirects refused, the status classification every
channel uses, and ``Retry-After`` parsing (delta-seconds or HTTP-date, RFC 9110 10.2.3)."""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import http.client
import json
import logging
import math
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from .. import __version__
from .._redact import Redactor, redact_text, redact_url
from ..errors import ConfigError
from .base import AlertEvent, DeliveryResult

__all__ = ["HttpChannel", "HttpResponse", "Transport", "classify", "parse_retry_after", "urllib_transport"]

log = logging.getLogger("collapse_monitor.alerting")

USER_AGENT = f"collapse-monitor/{__version__}"
MAX_BODY = 64 * 1024  # we only read this much of a response (error text)
_SEVERITIES = frozenset({"info", "warning", "error", "critical"})


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class Transport(Protocol):
    """One HTTP request. Raises ``OSError`` (incl. ``TimeoutError``, ``URLError``) when no
    response came back; returns any response that did, whatever its status."""

    def __call__(
        self, method: str, url: str, *, body: bytes, headers: Mapping[str, str], timeout: float, verify_tls: bool
    ) -> HttpResponse: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it would forward signed payloads (and Authorization) elsewhere.
    The 3xx comes back as a response and counts as a permanent failure."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


def _ca_env() -> tuple[str | None, str | None]:
    return os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")


@functools.lru_cache(maxsize=8)
def _tls_context(verify_tls: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """One client context per setting (loading the system CA store costs ~30 ms, more than the
    whole POST to a local receiver); keyed on ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` so a changed
    CA bundle is picked up. Verification stays on unless the channel turned it off."""
    ctx = ssl.create_default_context()
    if not verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def urllib_transport(
    method: str, url: str, *, body: bytes, headers: Mapping[str, str], timeout: float, verify_tls: bool
) -> HttpResponse:
    """stdlib transport. ``timeout`` bounds connect and every socket read (not DNS).
    Credentials in the URL's userinfo become a Basic ``Authorization`` header (unless the
    headers already carry one)."""
    parts = urlsplit(url)
    hdrs = dict(headers)
    if parts.username is not None:
        if not any(k.lower() == "authorization" for k in hdrs):  # an explicit header wins
            cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            hdrs["Authorization"] = "Basic " + base64.b64encode(cred).decode()
        netloc = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    handlers: list[Any] = [_NoRedirect()]
    if parts.scheme.lower() == "https":
        handlers.append(urllib.request.HTTPSHandler(context=_tls_context(verify_tls, *_ca_env())))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
    try:
        with opener.open(req, timeout=timeout) as resp:
            try:
                data = resp.read(MAX_BODY)
            except Exception:
                data = b""  # (retrying a 200 whose body stalled posted it to Slack twice)
            return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, data)
    except urllib.error.HTTPError as err:
        try:
            data = err.read(MAX_BODY)
        except Exception:
            data = b""
        return HttpResponse(err.code, {k.lower(): v for k, v in (err.headers or {}).items()}, data)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    >>> parse_retry_after("120")
    120.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0)
    60.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        secs = float(value)
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if dt is None:
            return None
        secs = dt.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(secs):
        return None
    return max(0.0, secs)


def classify(status: int) -> str:
    """``delivered`` (2xx), ``gone`` (410), ``retry`` (408, 429, 5xx) or ``failed`` (the rest:
    other 4xx are the request's fault and will not get better; 3xx are not followed)."""
    if 200 <= status < 300:
        return "delivered"
    if status == 410:
        return "gone"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "failed"


def check_url(url: Any, key: str = "url") -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(key, f"expected an http(s) URL, got {type(url).__name__}")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"expected an http(s) URL, got {redact_url(url)!r}")
    try:
        _ = parts.port
        port_ok = True
    except ValueError:  # its text quotes the "port", which may be a password (user:pw/x@host)
        port_ok = False
    if not port_ok:  # raised outside the except: `from None` still kept it as __context__
        raise ConfigError(key, "the port is not a number in 0-65535")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        # refused here: every attempt failed before reaching the wire, retried for a day
        raise ConfigError(key, "has spaces, control or non-ASCII characters: percent-encode them (%20, %C3%A9)")
    return url


def check_severities(severities: Iterable[str] | None, key: str = "severities") -> frozenset[str] | None:
    if severities is None:
        return None
    if isinstance(severities, str):
        severities = [severities]
    if not isinstance(severities, Iterable) or isinstance(severities, Mapping | bytes):
        raise ConfigError(key, f"expected a severity or a list of them, got {type(severities).__name__}")
    out = frozenset(str(s).lower() for s in severities)
    bad = out - _SEVERITIES
    if bad or not out:
        raise ConfigError(key, f"expected a non-empty subset of {sorted(_SEVERITIES)}, got {sorted(bad) or '[]'}")
    return out


#: an HTTP timeout of at most an hour: 1e10 s made every direct send fail (a timestamp out of
#: range) and stretched the outbox's delivery lease to match
MAX_TIMEOUT = 3600.0


def seconds_setting(value: Any, key: str, maximum: float) -> float:
    """``value`` as seconds in (0, maximum], or :class:`ConfigError` naming ``key``. A bool is
    refused (Python's True is 1: ``resend_window: true`` read as one second), and a value that is
    not a number is named by its type only (a secret pasted into the wrong setting stays out)."""
    if isinstance(value, bool):
        raise ConfigError(key, "expected seconds > 0, got a bool")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected seconds > 0, got a {type(value).__name__} that is not a number") from None
    if not (0 < out <= maximum):  # NaN fails too
        raise ConfigError(key, f"expected seconds in (0, {maximum:g}], got {out:g}")
    return out


class HttpChannel:
    """Base of the built-in channels: one POST of a JSON body per attempt."""

    kind: ClassVar[str] = "http"

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        severities: Iterable[str] | None = None,
        verify_tls: bool = True,
        transport: Transport | None = None,
        secrets: Iterable[object] = (),
        fingerprint_extra: str = "",
    ) -> None:
        self._url = check_url(url)
        self.timeout = seconds_setting(timeout, "timeout", MAX_TIMEOUT)
        if headers is not None and not (
            isinstance(headers, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise ConfigError("headers", "expected a mapping of header name -> string value")
        for n, (k, v) in enumerate((headers or {}).items()):
            if not k.isascii() or not k.strip() or any(c in k for c in ":\r\n "):
                # the name is not echoed: a whole "Authorization: Bearer <token>" line written as
                # a key is the usual way to get here
                raise ConfigError(f"headers[{n}]", "expected a header name without ':' or spaces, values on one line")
            if any(c in v for c in "\r\n"):
                raise ConfigError(f"headers.{k!r}", "expected a header name without ':' or spaces, values on one line")
            try:
                v.encode("latin-1")
            except UnicodeEncodeError:
                raise ConfigError(f"headers.{k}", "HTTP header values must be Latin-1 text") from None
        self._headers = dict(headers or {})
        self.severities = check_severities(severities)
        if not isinstance(verify_tls, bool):
            raise ConfigError("verify_tls", f"expected true or false, got a {type(verify_tls).__name__}")
        self.verify_tls = verify_tls
        self._transport: Transport = transport or urllib_transport
        # header values may be tokens (Authorization: Bearer <t>, X-Api-Key): treat them, and
        # each of their words, as secrets
        header_secrets = [w for v in self._headers.values() for w in (v, *v.split())]
        self._redact = Redactor(secrets=[*secrets, *header_secrets], urls=[self._url])
        self.fingerprint = hashlib.sha256(f"{self.kind}\0{self._url}\0{fingerprint_extra}".encode()).hexdigest()[:16]
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError("name", f"expected a non-empty string, got {name!r}")
        self.name: str = name.strip() if name else f"{self.kind}-{self.fingerprint[:8]}"
        if not verify_tls:
            log.warning("alert channel %s: TLS certificate verification is OFF for %s", self.name, self.target)

    # -- what subclasses provide -----------------------------------------------------------
    def _request(self, event: AlertEvent) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, extra headers) for one attempt."""
        raise NotImplementedError

    def _error_text(self, resp: HttpResponse) -> str:
        text = resp.body[:500].decode("utf-8", "replace").strip()
        return f"HTTP {resp.status}" + (f": {text}" if text else "")

    # -- shared ----------------------------------------------------------------------------
    @property
    def target(self) -> str:
        """The receiver's URL with every secret part redacted."""
        return redact_url(self._url)

    def redact(self, text: object) -> str:
        """``text`` without this channel's secrets, nor anything shaped like a credential
        (``token=...``, ``Bearer ...``, URLs' secret parts) - e.g. a receiver echoing them back."""
        return redact_text(self._redact(text))

    def send(self, event: AlertEvent, *, timeout: float | None = None) -> DeliveryResult:
        try:
            url, body, extra = self._request(event)
        except Exception as exc:  # a rendering bug must not take the caller down
            err = self.redact(f"could not render the event: {type(exc).__name__}: {exc}")
            log.error("alert channel %s: %s", self.name, err)
            return DeliveryResult(self.name, event.id, "failed", None, 1, err, dedup_key=event.alert.dedup_key)
        return self._post(event, url, body, extra, timeout)

    def _post(
        self, event: AlertEvent, url: str, body: bytes, extra: Mapping[str, str], timeout: float | None
    ) -> DeliveryResult:
        t = self.timeout if timeout is None else max(0.05, min(self.timeout, float(timeout)))
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **self._headers, **extra}
        try:
            resp = self._transport("POST", url, body=body, headers=headers, timeout=t, verify_tls=self.verify_tls)
        except Exception as exc:  # network error, timeout, TLS failure
            err = self.redact(f"{type(exc).__name__}: {exc}")
            # a request that cannot be built (UnicodeEncodeError, http.client.InvalidURL) fails the
            # same way on every attempt: failed, not retried for a day; network errors are OSError
            local = isinstance(exc, (ValueError, http.client.InvalidURL)) and not isinstance(exc, OSError)
            log.warning("alert channel %s (%s): no response: %s", self.name, self.target, err)
            return DeliveryResult(
                self.name, event.id, "failed" if local else "retry", None, 1, err, dedup_key=event.alert.dedup_key
            )
        status = classify(resp.status)
        retry_after = parse_retry_after(resp.headers.get("retry-after")) if status == "retry" else None
        error = None if status == "delivered" else self.redact(self._error_text(resp))
        if error is not None:
            log.warning("alert channel %s (%s): %s (%s)", self.name, self.target, error, status)
        return DeliveryResult(
            self.name, event.id, status, resp.status, 1, error, retry_after, dedup_key=event.alert.dedup_key
        )

    def __repr__(self) -> str:
        sev = None if self.severities is None else sorted(self.severities)
        return f"{type(self).__name__}(name={self.name!r}, url={self.target!r}, severities={sev})"


def json_safe(obj: Any) -> Any:
    """NaN/inf become ``null`` (strict JSON receivers reject them); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any) -> bytes:
    """Compact, deterministic JSON (the same event renders to the same bytes on every attempt),
    always valid UTF-8: a lone surrogate (a file name decoded with ``surrogateescape``, e.g. a
    provenance source) becomes ``?`` instead of failing the render - and with it the alert."""
    text = json.dumps(json_safe(obj), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.encode("utf-8", "replace")
