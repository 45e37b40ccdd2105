"""Keep secrets out of logs, reprs, exceptions and stored error text.

Alert channels and sinks carry secrets in three places: explicit values (webhook signing
secrets, PagerDuty routing keys, header values), the *path* of a webhook URL (Slack's
``/services/T.../B.../<token>``, a Teams Workflows trigger id) and its *query* or userinfo
(``?sig=...``, ``https://user:pass@host``). Two tools cover them:

- :func:`redact_url` renders a URL for humans: scheme, host and port stay, userinfo becomes
  ``***@``, every query value becomes ``***`` and every path segment that could be a token
  becomes ``***``. A segment survives only if it looks like a plain word (lower-case letters,
  ``-``, ``_``; up to 24 characters), a version (``v2``, ``v2.1``) or a short number: tokens
  are mixed-case or contain digits, so they never pass. The rule is deliberately an allow-list:
  an over-redacted log line costs nothing, a leaked Slack token costs a rotation.
- :func:`redact_text` scrubs free text of what *looks* like a secret without being told:
  every ``http(s)://`` URL in it goes through :func:`redact_url`; ``whsec_...`` secrets,
  ``Bearer``/``Basic`` credentials and ``token=``/``secret:``/``routing_key=``-style values
  become ``***``.
- :class:`Redactor` scrubs free text (an exception message, a response body) of every secret
  fragment it was told about: the exact secret values, the full URL and the URL's sensitive
  parts (as found by :func:`secret_fragments`), in raw and percent-decoded form.

>>> redact_url("https://hooks.slack.com/services/T0123/B0456/AbCdEf0123456789")
'https://hooks.slack.com/services/***/***/***'
>>> redact_url("https://u:p@am.example.com:9093/api/v2/alerts?token=s3cr3t")
'https://***@am.example.com:9093/api/v2/alerts?token=***'
>>> Redactor(["s3cr3t"])("401 for token s3cr3t")
'401 for token ***'
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "Redactor",
    "basic_auth_values",
    "mask_credentials",
    "redact_request_path",
    "redact_text",
    "redact_url",
    "register_secret_urls",
    "secret_fragments",
]

MASK = "***"
_SAFE_SEGMENT = re.compile(r"[a-z][a-z_-]{0,23}|v?\d{1,2}\.\d{1,2}|v\d{1,2}|\d{1,4}")
_URL = re.compile(r"""https?://[^\s"'<>`]+""", re.IGNORECASE)
_WHSEC = re.compile(r"whsec_[A-Za-z0-9+/=_-]+")
_AUTH = re.compile(r"\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_KV = re.compile(
    r"""(?i)\b((?:[a-z]+[_-]){0,3}(?:token|secret|password|passwd|api[_-]?key|routing[_-]?key|"""
    r"""integration[_-]?key|service[_-]?key|signature|sig|authorization|account[_-]?key|access[_-]?key|"""
    r"""shared[_-]?access[_-]?key|jsessionid))(["']?\s*[:=]\s*["']?)([^\s"'&,;}]+)"""
)
_MIN_FRAGMENT = 4  # shorter fragments ("api", "v2") are not secrets and would over-scrub


def _split(url: str):  # type: ignore[no-untyped-def]
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError on a malformed port
    except (ValueError, AttributeError):
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts


def host_port(parts: SplitResult) -> str:
    """The ``host[:port]`` of a split URL without its userinfo; an IPv6 literal keeps its
    brackets (``parts.hostname`` drops them)."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port is None else f"{host}:{parts.port}"


def redact_url(url: object) -> str:
    """A URL safe to show: host and port kept, userinfo, query values and token-like path
    segments replaced by ``***``. Anything that does not parse as an absolute URL becomes
    ``***`` entirely.

    >>> redact_url("http://127.0.0.1:8080/hook")
    'http://127.0.0.1:8080/hook'
    >>> redact_url("not a url")
    '***'
    """
    if not isinstance(url, str):
        return MASK
    parts = _split(_HTTP_USERINFO.sub(rf"\1{MASK}@", url))  # a password holding "/" (see there)
    if parts is None:
        return MASK
    netloc = host_port(parts)
    if parts.username is not None or parts.password is not None:
        netloc = f"{MASK}@{netloc}"
    segments = parts.path.split("/")
    path = "/".join(s if (s == "" or _SAFE_SEGMENT.fullmatch(s)) else MASK for s in segments)
    out = f"{parts.scheme}://{netloc}{path}"
    if parts.query:
        keys = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
        out += "?" + ("&".join(f"{k if _SAFE_SEGMENT.fullmatch(k) else MASK}={MASK}" for k in keys) or MASK)
    if parts.fragment:
        out += "#" + MASK
    return out


def mask_credentials(uri: str, *, _scp: bool = True) -> str:
    """``uri`` with its credentials masked - userinfo, every query value and ``password=``-style
    values - and the rest kept. For data-set URIs (provenance sources), whose paths are the
    point and rarely secret, unlike :func:`redact_url`, which also hides token-like path
    segments. Also for what is not an absolute URI: ``jdbc:`` URLs, ``file:///...?token=``,
    relative paths with a query, ``user:pw@host:/path`` and ``Key=value;`` connection strings.

    >>> mask_credentials("s3://bucket/data/part-0001.parquet?X-Amz-Signature=abc123&X-Amz-Date=20260101")
    's3://bucket/data/part-0001.parquet?X-Amz-Signature=***&X-Amz-Date=***'
    >>> mask_credentials("https://alice:pw@data.example.com/v1/corpus")
    'https://***@data.example.com/v1/corpus'
    >>> mask_credentials("jdbc:postgresql://db/train?user=bob&password=hunter2")
    'jdbc:postgresql://db/train?user=***&password=***'
    >>> mask_credentials("Server=db;Database=train;Password=hunter2")
    'Server=db;Database=train;Password=***'
    >>> mask_credentials("generated-gen3")
    'generated-gen3'
    """
    if not isinstance(uri, str):
        return uri
    if uri[:5].lower() == "jdbc:":  # jdbc:<driver>://... wraps a URL of its own
        # Oracle's thin/oci form puts user/password@ before the host: jdbc:oracle:thin:u/pw@h:1521:sid
        # (the rest is not scp-style: "oracle:thin:@host" has no password to mask)
        return uri[:5] + mask_credentials(_ORACLE_USERINFO.sub(rf"\1{MASK}@", uri[5:]), _scp=False)
    out = None
    uri = _db_userinfo(uri)
    if "://" in uri:
        try:
            parts = urlsplit(uri)
        except ValueError:
            return MASK
        if parts.scheme and uri[len(parts.scheme) : len(parts.scheme) + 3] == "://":
            netloc = parts.netloc
            if "@" in netloc:
                netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
            out = f"{parts.scheme}://{netloc}{parts.path}{_masked_query(parts.query)}"
            if parts.fragment:
                out += "#" + MASK
    if out is None:  # no scheme://: a path, a name, or a scheme urlsplit refuses (my_store://)
        head, sep, query = uri.partition("?")
        if sep:  # a relative path or a file name with a query: its values may be tokens
            head = head + _masked_query(query)
        head = _AUTHORITY_USERINFO.sub(rf"\1{MASK}@", head)
        # scp-style user:password@host:/path (only a password is a secret; a user name is not);
        # not a Windows path (C:\\x@y) nor an image digest (python:3.11@sha256:...)
        m = _SCP.match(head) if _scp else None
        if m and not _DIGEST.match(head, m.end()) and not _DRIVE.match(head):
            head = f"{MASK}@{head[m.end() :]}"
        out = head
    out = _HEADER_SCHEME.sub(lambda m: f"{m.group(1)}{MASK}", out)
    return _KV.sub(_mask_kv_in_path, out)


# an HTTP authorization value pasted into a source ("Authorization: Bearer <token>"): the key
# masked only the scheme's word and left the token; ``Bearer <token>`` alone is masked too
# ("basic" and "token" only after an authorization key: alone they are ordinary words of a name)
_HEADER_SCHEME = re.compile(
    r"""(?i)(\bauthorization["']?\s*[:=]\s*["']?(?:bearer|basic|token|digest|negotiate)\s+|\bbearer\s+)"""
    r"""(?=[A-Za-z0-9._~+/=-]{8,})[A-Za-z0-9._~+/=-]+"""
)


# user:password@ of a database URL, as SQLAlchemy reads it: the password runs to the "@" and may
# hold a "/" (postgresql://bob:hun/ter2@db/x), where urlsplit ends the netloc and keeps it all
# (possessive and bounded: the unbounded form was quadratic, 10 s on 100k characters of "http://a:")
_DB_USERINFO = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{0,64}+://)[^\s/?#@:]{0,256}+:[^\s@?#]{0,1024}+@")


def _db_userinfo(text: str, *, every: bool = False) -> str:
    """``scheme://user:password@`` masked where the password holds a ``/`` (not http(s): there
    the userinfo ends at the first ``/``, as urlsplit reads it); with ``every``, also every
    other ``user:password@`` (free text, where only http(s) URLs go through redact_url)."""

    def mask(m: re.Match[str]) -> str:
        slash = "/" in m.group(0)[len(m.group(1)) :]
        if (slash and m.group(1).lower() in ("http://", "https://")) or not (slash or every):
            return m.group(0)
        return f"{m.group(1)}{MASK}@"

    return _DB_USERINFO.sub(mask, text) if "://" in text else text


# user/password@ in Oracle's JDBC form, after the subprotocol (oracle:thin:, oracle:oci:)
_ORACLE_USERINFO = re.compile(r"^((?:[A-Za-z0-9_+.-]+:)+)[^:/@\s]+/\S*@")
# a scheme urlsplit does not accept (an underscore in it) still has an authority after ://
_AUTHORITY_USERINFO = re.compile(r"(://)[^/?#@\s]*@")
_SCP = re.compile(r"[^\s:/@\\]+:[^\s/@]+@")
_DIGEST = re.compile(r"(?:sha256|sha384|sha512):[0-9a-fA-F]{32,}")  # an OCI image digest
_DRIVE = re.compile(r"[A-Za-z]:\\")  # a Windows path (C:\data\x@2024.parquet)


def _mask_kv_in_path(m: re.Match[str]) -> str:
    """``token=value`` masked; in a path segment (``/token=abc/part-0``) only up to the next
    ``/``, so the rest of the path survives."""
    value = m.group(3)
    tail = ""
    if m.start() > 0 and m.string[m.start() - 1] == "/" and "/" in value:
        tail = value[value.index("/") :]
    return f"{m.group(1)}{m.group(2)}{MASK}{tail}"


def _masked_query(query: str) -> str:
    if not query:
        return ""
    keys = [k for k, _ in parse_qsl(query, keep_blank_values=True)]
    return "?" + ("&".join(f"{k}={MASK}" for k in keys) if keys else MASK)


_SECRET_PARAM = re.compile(r"(?i)token|secret|passw|api[_-]?key|^key$|sig|auth|credential|session")


def mask_link(url: object) -> str:
    """A link kept usable - path, fragment (MLflow's ``#/experiments/...``) and ordinary query
    values (Grafana's ``var-monitor=``) - with its userinfo and secret-looking query values
    (``auth_token=``, ``api_key=``, ``X-Amz-Signature=``) masked: for links stored where the
    reader needs to follow them (``report.json`` in MLflow).

    >>> mask_link("https://grafana.example.com/d/abc?var-monitor=m&auth_token=s3cr3t#x")
    'https://grafana.example.com/d/abc?var-monitor=m&auth_token=***#x'
    """
    if not isinstance(url, str):
        return MASK
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*/:,$")
    return urlunsplit((parts.scheme, netloc, _KV.sub(_mask_kv_in_path, parts.path), query, parts.fragment))


def redact_text(text: object, secrets: Iterable[object] = (), *, kv: bool = True) -> str:
    """Scrub free text (an exception message, a response body) of URLs' secret parts and of
    anything shaped like a credential; ``secrets`` are exact values to mask as well. A request
    path the HTTP clients print without its host (requests' ``Max retries exceeded with url:
    /prefix/api/...?key=...``) is masked like a URL's path and query.

    >>> redact_text("POST https://hooks.slack.com/services/T1/B2/xYz0123 failed: token=abc123")
    'POST https://hooks.slack.com/services/***/***/*** failed: token=***'
    >>> redact_text("Max retries exceeded with url: /Tok3n/api/2.0/mlflow/runs/search?key=K3y (Caused by ...)")
    'Max retries exceeded with url: /***/api/2.0/mlflow/runs/search?key=*** (Caused by ...)'
    """
    s = text if isinstance(text, str) else str(text)
    if secrets:
        s = Redactor(secrets)(s)
    s = _db_userinfo(s, every=True)  # postgresql://, redis://, amqp://: not only http(s)
    s = _HTTP_USERINFO.sub(rf"\1{MASK}@", s)
    s = _URL.sub(lambda m: _redact_url_in_text(m.group(0)), s)
    s = _REQUEST_PATH.sub(lambda m: m.group(1) + redact_request_path(m.group(2)), s)
    s = _WHSEC.sub(MASK, s)
    s = _AUTH.sub(lambda m: f"{m.group(1)} {MASK}", s)
    if not kv:  # ``key: value`` pairs are not masked (a ConfigError's "signature: expected a str")
        return s
    return _KV.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", s)


# the userinfo of an http(s) URL whose password holds a "/" (http://admin:pw/x@host): urlsplit
# ends the netloc at the "/" and reads "pw" as a port. An "@" before any "?" or "#" ends a
# userinfo, whatever the "port" looks like (http://alice:2024/Secret@host: the password was
# shown as a port and a path); a path holding "@" (rare in these URLs) is masked too. Bounded
# (a userinfo of up to 1,024 characters), so long texts stay linear; an IPv6 host ([::1]) is
# not a user name.
_HTTP_USERINFO = re.compile(r"(?i)\b(https?://)[^\s/?#@:\[]{0,256}+:[^\s@?#]{0,1024}+@")
# a request path after "url:" / "url=" (requests, urllib3), or quoted in a log line
_REQUEST_PATH = re.compile(r"""(?i)(\burl[:=]\s*['"]?)(/[^\s"'<>`]*)""")


def redact_request_path(path: str) -> str:
    """A request path (no scheme, no host) as :func:`redact_url` shows one: token-like segments
    and every query value masked.

    >>> redact_request_path("/?key=GcpKey777/api/2.0/mlflow/runs/search")
    '/?key=***'
    >>> redact_request_path("/metrics")
    '/metrics'
    """
    tail = ""
    while path and path[-1] in ".,;:)]}'":
        tail = path[-1] + tail
        path = path[:-1]
    head, sep, query = path.partition("?")
    head = "/".join(seg if (seg == "" or _SAFE_SEGMENT.fullmatch(seg)) else MASK for seg in head.split("/"))
    if sep:
        head += _masked_query(query)
    return head + tail


def _redact_url_in_text(url: str) -> str:
    tail = ""
    while url and url[-1] in ".,;:)]}":  # sentence punctuation after a URL
        tail = url[-1] + tail
        url = url[:-1]
    return redact_url(url) + tail


def basic_auth_values(user: str, password: str) -> list[str]:
    """The ``Authorization: Basic`` values the HTTP clients build from ``user`` and ``password``
    (RFC 7617: base64 of ``user:password``; UTF-8 as urllib and this package send it, Latin-1 as
    requests does), bare and with their scheme: a receiver that echoes the header back echoes
    the password in a form the plain fragments do not match.

    >>> basic_auth_values("u", "p")
    ['dTpw', 'Basic dTpw']
    """
    out: list[str] = []
    pair = f"{user}:{password}"
    for enc in ("utf-8", "latin-1"):
        try:
            b64 = base64.b64encode(pair.encode(enc)).decode()
        except UnicodeEncodeError:
            continue
        for v in (b64, "Basic " + b64):
            if v not in out:
                out.append(v)
    return out


def secret_fragments(url: object) -> list[str]:
    """The parts of ``url`` that :func:`redact_url` hides, for scrubbing free text: the whole
    URL, its userinfo, query string and values, and every token-like path segment (raw and
    percent-decoded)."""
    if not isinstance(url, str) or not url:
        return []
    frags = [url, url.strip()]
    parts = _split(url)
    if parts is None:
        return frags
    if parts.username:
        frags.append(parts.username)
    if parts.password:
        frags.append(parts.password)
    netloc_userinfo = parts.netloc.rpartition("@")[0]
    if netloc_userinfo:
        frags.append(netloc_userinfo)
        frags.extend(basic_auth_values(unquote(parts.username or ""), unquote(parts.password or "")))
    redacted_segments = [s for s in parts.path.split("/") if s and not _SAFE_SEGMENT.fullmatch(s)]
    frags.extend(redacted_segments)
    if redacted_segments:
        frags.append(parts.path)
    if parts.query:
        frags.append(parts.query)
        frags.extend(v for _, v in parse_qsl(parts.query, keep_blank_values=True))
    if parts.fragment:
        frags.append(parts.fragment)
    return frags


class Redactor:
    """Replace every known secret fragment in a text by ``***``.

    ``secrets`` are exact values (a signing secret, a routing key, a header value); ``urls``
    are URLs whose sensitive parts (see :func:`secret_fragments`) must not show. Fragments
    shorter than 4 characters are ignored (they are not secrets and would shred the text).
    The repr never shows a fragment.
    """

    __slots__ = ("_fragments",)

    def __init__(self, secrets: Iterable[object] = (), urls: Iterable[object] = ()) -> None:
        subs: dict[str, str] = {}
        for s in secrets:
            if isinstance(s, bytes):
                s = s.decode("utf-8", "replace")
            if isinstance(s, str):
                subs[s] = MASK
        for u in urls:
            for f in secret_fragments(u):
                subs[f] = MASK
            if isinstance(u, str) and u.strip():
                # the whole URL is shown as redact_url shows it (host and port are no secret)
                subs[u] = subs[u.strip()] = redact_url(u)
        for f, rep in list(subs.items()):
            subs.setdefault(unquote(f), rep)
        self._fragments: tuple[tuple[str, str], ...] = tuple(
            sorted(
                ((f, r) for f, r in subs.items() if len(f) >= _MIN_FRAGMENT), key=lambda fr: len(fr[0]), reverse=True
            )
        )

    def __call__(self, text: object) -> str:
        s = text if isinstance(text, str) else str(text)
        for f, rep in self._fragments:
            if f in s:
                s = s.replace(f, rep)
        return s

    def __or__(self, other: Redactor) -> Redactor:
        r = Redactor()
        merged = dict(other._fragments) | dict(self._fragments)
        r._fragments = tuple(sorted(merged.items(), key=lambda fr: len(fr[0]), reverse=True))
        return r

    def __repr__(self) -> str:
        return f"Redactor({len(self._fragments)} fragments)"


# urllib3's retry warning ends with the request path alone: "... broken by '...': /p?key=v"
_TRAILING_PATH = re.compile(r"""(:\s+)(/[^\s"'<>`]*)\s*$""")
#: fragments of the URLs the sinks were built with (a tracking URI's token path segment),
#: masked in the HTTP clients' log lines too (register_secret_urls)
_known = Redactor()


def register_secret_urls(urls: Iterable[object]) -> None:
    """Mask these URLs' secret parts (see :func:`secret_fragments`) in the HTTP clients' log
    lines as well, which print request paths without the host (a token path segment of a
    tracking URI would pass :func:`redact_text`)."""
    global _known
    _known = _known | Redactor(urls=[u for u in urls if isinstance(u, str) and u])


class _RedactingFilter(logging.Filter):
    """Rewrites a record's message through :func:`redact_text` (URLs' credentials and token
    query values masked), the request path that ends urllib3's retry warnings and the
    registered URLs' fragments, before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        clean = _TRAILING_PATH.sub(lambda m: m.group(1) + redact_request_path(m.group(2)), redact_text(_known(message)))
        if clean != message:
            record.msg, record.args = clean, None
        return True


#: the HTTP client loggers that print request URLs (urllib3's "Retrying (...) ... /path?token=..."
#: warnings carry the tracking URI's query string, secrets included)
_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry")


def redact_http_client_logs(urls: Iterable[object] = ()) -> None:
    """Mask secrets in the URLs that the HTTP client libraries log (idempotent); ``urls``:
    the caller's own URLs, whose token-like path segments are masked there too."""
    register_secret_urls(urls)
    for name in _URL_LOGGERS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, _RedactingFilter) for f in lg.filters):
            lg.addFilter(_RedactingFilter())
