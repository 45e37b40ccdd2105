"""Generic webhook, signed per the Standard Webhooks spec (standardwebhooks.com).

Every attempt carries::

    webhook-id:        the event id - the same on every retry (the receiver's idempotency key)
    webhook-timestamp: unix seconds of this attempt
    webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>

The secret: ``"whsec_<base64>"`` (the spec's format; the part after ``whsec_`` is base64-decoded
and the decoded bytes are the HMAC key) or any other string, whose UTF-8 bytes are used as
the key unchanged (or ``bytes``, used as they are). Without a secret the request is sent
unsigned (no ``webhook-signature`` header).

Body (JSON, the same bytes on every attempt)::

    {"type": "collapse_monitor.alert.firing" | "...resolved" | "...test",
     "timestamp": "<ISO 8601 of the alert>",
     "data": {"event_id", "test", "text", "alert": Alert.to_dict(), "report": report summary}}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from ..errors import ConfigError
from ._http import HttpChannel, Transport, dumps
from ._render import plain_text
from .base import AlertEvent

__all__ = ["Webhook", "webhook_signature"]


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
    ) -> None:
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
        return dumps(
            {
                "type": f"collapse_monitor.alert.{event.kind}",
                "timestamp": _iso(event.alert.timestamp),
                "data": {
                    "event_id": event.id,
                    "test": event.test,
                    "text": plain_text(event),
                    "alert": event.alert.to_dict(),
                    "report": event.report,
                },
            }
        )

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
