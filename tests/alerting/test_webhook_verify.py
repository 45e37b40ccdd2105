"""The receiving side of signed webhooks: ``verify_webhook`` in a real HTTP receiver that answers
401 to what does not verify, replay protection by timestamp, secret rotation (several
signatures), tampering, and agreement with the independent Standard Webhooks verifier."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import collapse_monitor as cm
from collapse_monitor.alerting import AlertEvent, WebhookVerificationError, verify_webhook, webhook_signature
from collapse_monitor.errors import CollapseMonitorError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class VerifyingReceiver:
    """A real HTTP server that does what a receiver should: verify the raw body with
    ``verify_webhook`` before anything else, 204 when it holds, 401 with the reason when not."""

    def __init__(self, secret: str | bytes) -> None:
        self.secret = secret
        self.accepted: list[str] = []
        self.rejected: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    msg_id = verify_webhook(outer.secret, self.headers, body)
                except WebhookVerificationError as exc:
                    outer.rejected.append(str(exc))
                    status, text = 401, str(exc).encode()
                else:
                    outer.accepted.append(msg_id)
                    status, text = 204, b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def verifying_receiver(secret: str | bytes) -> Iterator[VerifyingReceiver]:
    rx = VerifyingReceiver(secret)
    try:
        yield rx
    finally:
        rx.close()


@pytest.mark.parametrize("secret", [SECRET, "plain-secret-string", b"\x00raw-key-bytes\xff"])
def test_receiver_accepts_what_the_channel_signs(make_alert, secret):
    with verifying_receiver(secret) as rx:
        event = AlertEvent(make_alert())
        r = cm.Webhook(rx.url, secret=secret).send(event)
        assert (r.status, r.http_status) == ("delivered", 204), r.error
        assert rx.accepted == [event.id] and rx.rejected == []


def test_receiver_with_another_secret_rejects_and_the_channel_does_not_retry(make_alert):
    with verifying_receiver("whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ==") as rx:
        r = cm.Webhook(rx.url, secret=SECRET).send(AlertEvent(make_alert()))
        assert (r.status, r.http_status) == ("failed", 401)
        assert rx.rejected == ["webhook-signature: no v1 signature matches"]
        # an unsigned request (a channel without a secret) is refused as well
        r = cm.Webhook(rx.url).send(AlertEvent(make_alert()))
        assert (r.status, r.http_status) == ("failed", 401)
        assert rx.rejected[-1] == "webhook-signature: header missing"


def _captured(http_receiver, make_alert, secret=SECRET):
    assert cm.Webhook(http_receiver.url, secret=secret).send(AlertEvent(make_alert())).ok
    (req,) = http_receiver.wait_for_requests(1)
    return req


def test_replay_outside_the_tolerance_is_rejected(http_receiver, make_alert):
    req = _captured(http_receiver, make_alert)
    ts = int(req.header("webhook-timestamp"))
    assert abs(ts - time.time()) < 60  # the timestamp of the attempt
    assert verify_webhook(SECRET, req.headers, req.body) == req.header("webhook-id")
    assert verify_webhook(SECRET, req.headers, req.body, now=ts + 300) == req.header("webhook-id")
    for now in (ts + 301, ts - 301, ts + 86400):  # replayed later, or stamped in the future
        with pytest.raises(WebhookVerificationError, match="tolerance"):
            verify_webhook(SECRET, req.headers, req.body, now=now)
    assert verify_webhook(SECRET, req.headers, req.body, now=ts + 3000, tolerance=3600)
    # moving the timestamp forward to dodge the check breaks the signature
    fresh = {**req.headers, "webhook-timestamp": str(ts + 1000)}
    with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
        verify_webhook(SECRET, fresh, req.body, now=ts + 1000)


def test_tampering_and_missing_headers_are_rejected(http_receiver, make_alert):
    req = _captured(http_receiver, make_alert)
    h = req.headers
    bad = [
        (h, req.body.replace(b"0.41", b"0.99"), "no v1 signature matches"),  # body
        ({**h, "webhook-id": "another-id"}, req.body, "no v1 signature matches"),  # id
        ({**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}, req.body, "no v1 signature matches"),
        ({**h, "webhook-signature": "v1,AAAA"}, req.body, "no v1 signature matches"),
        ({**h, "webhook-timestamp": "12.5"}, req.body, "integer unix seconds"),
        ({**h, "webhook-timestamp": "-1"}, req.body, "integer unix seconds"),
    ]
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        bad.append(({k: v for k, v in h.items() if k != name}, req.body, f"{name}: header missing"))
    for headers, body, why in bad:
        with pytest.raises(WebhookVerificationError, match=why) as exc:
            verify_webhook(SECRET, headers, body)
        assert isinstance(exc.value, CollapseMonitorError) and isinstance(exc.value, ValueError)
        assert SECRET not in str(exc.value) and h["webhook-signature"][3:] not in str(exc.value)


def test_header_names_any_case_body_as_text_and_rotated_secrets(http_receiver, make_alert):
    req = _captured(http_receiver, make_alert)
    title = {k.title(): v for k, v in req.headers.items()}  # Webhook-Id, as some frameworks give them
    assert verify_webhook(SECRET, title, req.body.decode()) == req.header("webhook-id")
    # rotation: the sender signs with old and new secrets, the receiver knows only one of them
    ts, msg_id = int(req.header("webhook-timestamp")), req.header("webhook-id")
    old = webhook_signature("whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ==", msg_id, ts, req.body)
    both = {**req.headers, "webhook-signature": f"{old} {req.header('webhook-signature')}"}
    assert verify_webhook(SECRET, both, req.body) == msg_id
    assert verify_webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ==", both, req.body) == msg_id


def test_helper_agrees_with_the_independent_verifier(http_receiver, make_alert, webhook_verifier):
    req = _captured(http_receiver, make_alert)
    assert webhook_verifier(SECRET, req.headers, req.body)
    assert verify_webhook(SECRET, req.headers, req.body)
    # and on the spec's published example
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = b'{"test": 2432232314}'
    assert webhook_verifier(SECRET, headers, body, now=1614265330)
    assert verify_webhook(SECRET, headers, body, now=1614265330) == "msg_p5jXN8AQM9LWM0D4loKWxJek"


def test_bad_tolerance_is_a_config_error(http_receiver, make_alert):
    req = _captured(http_receiver, make_alert)
    for tol in (-1, float("nan"), "soon"):
        with pytest.raises(cm.ConfigError):
            verify_webhook(SECRET, req.headers, req.body, tolerance=tol)  # type: ignore[arg-type]


@pytest.mark.parametrize("digits", [13, 400, 5000])
def test_an_absurd_timestamp_is_a_verification_error(digits: int) -> None:
    """A 400-digit timestamp raised OverflowError, a 5,000-digit one ValueError: a receiver
    that catches WebhookVerificationError answered 500 to an unauthenticated request."""
    from collapse_monitor.alerting import WebhookVerificationError, verify_webhook

    headers = {"webhook-id": "evt", "webhook-timestamp": "9" * digits, "webhook-signature": "v1,AAAA"}
    with pytest.raises(WebhookVerificationError, match="webhook-timestamp"):
        verify_webhook("secret", headers, b"{}")
