"""Generic webhook, signed per the Standard Webhooks spec (standardwebhooks.com).

Every attempt carries::

    webhook-id:        the event id - the same on every retry (the receiver's idempotency key)
    webhook-timestamp: unix seconds of this attempt
    webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>

The secret: ``"whsec_<base64>"`` (the spec's format; the part after ``whsec_`` is base64-decoded
and the decoded bytes are the HMAC key) or any other string, whose UTF-8 bytes are used as
the key unchanged (or ``bytes``, used as they are). Without a secret the request is sent
unsigned (no ``webhook-signature`` header).

Receivers verify a request with :func:`verify_webhook` (or any Standard Webhooks library,
given a ``whsec_`` secret): it recomputes the HMAC over the *raw* body bytes, compares it in
constant time with every ``v1,`` signature in the header (several are allowed: secret
rotation), and rejects a ``webhook-timestamp`` more than ``tolerance`` seconds (default 300)
from the receiver's clock, so a captured request cannot be replayed later. Within the
tolerance, ``webhook-id`` is the idempotency key: a retry after a lost answer carries the same
id with a fresh timestamp and signature, and the outbox retries for up to a day
(``RetryPolicy.max_age_seconds``), so store the ids seen in the last 24 hours (not only the
last ``tolerance`` seconds) and drop repeats.
Note: Standard Webhooks libraries always base64-decode the secret; give them a ``whsec_``
secret, or use :func:`verify_webhook`, which treats a secret exactly as the sender does.

Body (JSON, the same bytes on every attempt)::

    {"type": "collapse_monitor.alert.firing" | "...resolved" | "...test",
     "timestamp": "<ISO 8601 of the alert>",
     "data": {"event_id", "test", "text", "alert": Alert.to_dict(), "report": report summary,
              "details_not_shown": 0}}

A body is at most ``max_body_bytes`` (default 512 KiB, under the 1 MiB that nginx and many
gateways accept by default): a firing with thousands of findings (1.2 MB at 5,000) keeps its
largest drops (``alert.details`` is sorted by relative change) and says in
``details_not_shown`` how many it left out; if the rest still does not fit, ``report`` is
replaced by a string saying so. The full findings stay in the report, MLflow and the dashboard.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import CollapseMonitorError, ConfigError
from ._http import HttpChannel, Transport, dumps
from ._render import plain_text
from .base import AlertEvent

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TOLERANCE_SECONDS",
    "MIN_MAX_BODY_BYTES",
    "Webhook",
    "WebhookVerificationError",
    "verify_webhook",
    "webhook_signature",
]

#: How far a ``webhook-timestamp`` may be from the receiver's clock (the Standard Webhooks
#: reference libraries use the same 5 minutes).
DEFAULT_TOLERANCE_SECONDS = 300.0

log = logging.getLogger("collapse_monitor.alerting")

#: Default cap on a request body (bytes); ``Webhook(max_body_bytes=...)`` changes it.
DEFAULT_MAX_BODY_BYTES = 512 * 1024
#: The smallest cap accepted (an alert's fixed part, without findings and report, is a few KB;
#: one whose links or names alone exceed the cap is sent without them, with a warning).
MIN_MAX_BODY_BYTES = 16 * 1024


class WebhookVerificationError(CollapseMonitorError, ValueError):
    """A webhook request failed verification: missing header, bad timestamp, wrong signature.
    The message says which check failed; it never contains the secret or a signature."""


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        key = secret
    elif isinstance(secret, str):
        if secret.startswith("whsec_"):
            try:
                key = base64.b64decode(secret[len("whsec_") :], validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError("secret", "a 'whsec_' secret must be followed by standard base64") from None
        else:
            key = secret.encode("utf-8")
    else:
        raise ConfigError(
            "secret", f"expected a string ('whsec_<base64>' or raw) or bytes, got {type(secret).__name__}"
        )
    if not key:
        raise ConfigError("secret", "is empty")
    return key


def webhook_signature(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt (``v1,<base64>``)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> str:
    """Verify one signed webhook request on the receiving side; returns its ``webhook-id``.

    ``headers``: the request headers (any mapping; names are matched case-insensitively);
    ``body``: the raw request body exactly as received (parse JSON only after verifying);
    ``secret``: the same value given to :class:`Webhook`. Raises
    :class:`WebhookVerificationError` when a header is missing, the timestamp is more than
    ``tolerance`` seconds away from ``now`` (default: the current time) or no ``v1``
    signature matches (compared in constant time).

    >>> secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    >>> sig = webhook_signature(secret, "msg_1", 1700000000, b'{"a":1}')
    >>> hdrs = {"Webhook-Id": "msg_1", "Webhook-Timestamp": "1700000000", "Webhook-Signature": sig}
    >>> verify_webhook(secret, hdrs, b'{"a":1}', now=1700000100)
    'msg_1'
    >>> verify_webhook(secret, hdrs, b'{"a":2}', now=1700000100)
    Traceback (most recent call last):
    ...
    collapse_monitor.alerting.webhook.WebhookVerificationError: webhook-signature: no v1 signature matches
    """
    key = _key(secret)
    try:
        tol = float(tolerance)
    except (TypeError, ValueError):
        raise ConfigError("tolerance", f"expected seconds >= 0, got {tolerance!r}") from None
    if not (tol >= 0 and math.isfinite(tol)):
        raise ConfigError("tolerance", f"expected seconds >= 0, got {tolerance!r}")
    lower = {str(k).lower(): v for k, v in headers.items()}
    fields = {}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        value = lower.get(name)
        if not isinstance(value, str) or not value.strip():
            raise WebhookVerificationError(f"{name}: header missing")
        fields[name] = value.strip()
    msg_id, ts_text, sig_header = fields["webhook-id"], fields["webhook-timestamp"], fields["webhook-signature"]
    if not ts_text.isascii() or not ts_text.isdigit() or len(ts_text) > 12:
        # a 400-digit value overflowed float(), a 5,000-digit one int(): a 500, not a 401
        raise WebhookVerificationError("webhook-timestamp: expected integer unix seconds")
    ts = int(ts_text)
    current = time.time() if now is None else float(now)
    if abs(current - ts) > tol:
        raise WebhookVerificationError(
            f"webhook-timestamp: {abs(current - ts):.0f} s from now, more than the {tol:g} s tolerance"
            " (a replayed or delayed request, or a skewed clock)"
        )
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    expected = webhook_signature(key, msg_id, ts, raw).encode()
    matched = False
    for candidate in sig_header.split():
        # no early exit: every candidate is compared, each in constant time
        matched |= candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected)
    if not matched:
        raise WebhookVerificationError("webhook-signature: no v1 signature matches")
    return msg_id


def _body_cap(value: Any) -> int:
    """``max_body_bytes`` as an int >= :data:`MIN_MAX_BODY_BYTES`, or :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError("max_body_bytes", f"expected a whole number of bytes, got {value!r}")
    if value != int(value) or int(value) < MIN_MAX_BODY_BYTES:
        raise ConfigError("max_body_bytes", f"expected a whole number of bytes >= {MIN_MAX_BODY_BYTES}, got {value!r}")
    return int(value)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


class Webhook(HttpChannel):
    """POST a signed JSON event to any HTTP endpoint.

    >>> w = Webhook("https://example.com/hooks/collapse", secret="whsec_c2VjcmV0LWtleS0xMjM0NTY3ODkw")
    >>> w  # doctest: +ELLIPSIS
    Webhook(name='webhook-...', url='https://example.com/hooks/collapse', severities=None, secret='***')
    """

    kind = "webhook"

    def __init__(
        self,
        url: str,
        secret: str | bytes | None = None,
        *,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        severities: Iterable[str] | None = None,
        verify_tls: bool = True,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.max_body_bytes = _body_cap(max_body_bytes)
        self._key = None if secret is None else _key(secret)
        super().__init__(
            url,
            name=name,
            timeout=timeout,
            headers=headers,
            severities=severities,
            verify_tls=verify_tls,
            transport=transport,
            secrets=[] if secret is None else [secret, self._key, base64.b64encode(self._key or b"").decode()],
        )
        self._clock = clock

    def body(self, event: AlertEvent) -> bytes:
        """The JSON body (the same bytes for the same event), at most ``max_body_bytes``: the
        findings that do not fit are left out from the end of ``alert.details`` (the smallest
        drops), then the report summary (module docstring). An alert whose own fields (links,
        names) exceed the cap by themselves is sent without findings and report, over the cap,
        with a warning in the log."""
        alert = event.alert.to_dict()
        details = list(alert.get("details") or [])
        data: dict[str, Any] = {
            "event_id": event.id,
            "test": event.test,
            "text": plain_text(event),
            "alert": alert,
            "report": event.report,
            "details_not_shown": 0,
        }
        doc = {"type": f"collapse_monitor.alert.{event.kind}", "timestamp": _iso(event.alert.timestamp), "data": data}

        def render(kept: int) -> bytes:
            alert["details"] = details[:kept]
            data["details_not_shown"] = len(details) - kept
            return dumps(doc)

        def fit() -> bytes:  # the most findings that fit (all of them, or down to none)
            lo, hi = 0, len(details)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if len(render(mid)) <= self.max_body_bytes:
                    lo = mid
                else:
                    hi = mid - 1
            return render(lo)

        out = render(len(details))
        if len(out) <= self.max_body_bytes:
            return out
        out = fit()
        if len(out) > self.max_body_bytes and data["report"] is not None:
            data["report"] = "not shown: the body would exceed max_body_bytes (the report is in the links)"
            out = fit()
        if len(out) > self.max_body_bytes:  # the alert's own fields (links, names) are that long
            log.warning(
                "webhook %s: the alert is %d bytes without its findings and report, over max_body_bytes (%d):"
                " sent without them",
                self.name,
                len(out),
                self.max_body_bytes,
            )
        return out

    def _request(self, event: AlertEvent) -> tuple[str, bytes, dict[str, str]]:
        body = self.body(event)
        ts = int(self._clock())
        headers = {"webhook-id": event.id, "webhook-timestamp": str(ts)}
        if self._key is not None:
            headers["webhook-signature"] = webhook_signature(self._key, event.id, ts, body)
        return self._url, body, headers

    def __repr__(self) -> str:
        r = super().__repr__()[:-1]
        return r + (", secret='***')" if self._key is not None else ")")
