"""Slack incoming webhook: ``{"text": ..., "blocks": [...]}``.

``text`` is always set (notifications and clients without Block Kit show it). Slack answers
``200 ok``; errors come back as plain-text bodies (``invalid_payload``, ``no_service``,
``channel_is_archived``) and are kept, redacted, as the error text. 429 carries
``Retry-After``, which the outbox honours; 410 (channel archived / hook removed) disables
the channel. The whole webhook URL is a bearer token: it is never shown unredacted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._http import HttpChannel, HttpResponse, Transport, dumps
from ._render import detail_lines, facts, headline, is_http, links, plain_text
from .base import AlertEvent

__all__ = ["Slack"]

_EMOJI = {
    "critical": ":rotating_light:",
    "error": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}


def _mrkdwn_escape(s: str) -> str:
    """Slack's three control characters as entities (Slack: "you must escape &, < and >")."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(s: str, limit: int) -> str:
    """``s`` cut to ``limit`` characters without splitting an ``&amp;`` / ``&lt;`` / ``&gt;``."""
    if len(s) <= limit:
        return s
    cut = s[:limit]
    amp = cut.rfind("&", max(0, limit - 4))
    return cut[:amp] if amp != -1 and ";" not in cut[amp:] else cut


class Slack(HttpChannel):
    """Post alerts to a Slack channel through an incoming-webhook URL."""

    kind = "slack"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        severities: Iterable[str] | None = None,
        verify_tls: bool = True,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            url,
            name=name,
            timeout=timeout,
            headers=headers,
            severities=severities,
            verify_tls=verify_tls,
            transport=transport,
        )

    def payload(self, event: AlertEvent) -> dict[str, Any]:
        a = event.alert
        icon = ":white_check_mark:" if a.status == "resolved" else _EMOJI.get(a.severity, ":bell:")
        title = headline(event)
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        ]
        summary = a.summary if not event.test else "If you can read this, collapse-monitor can page you here."
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _truncate(f"{icon} {_mrkdwn_escape(summary)}", 3000)},
            }
        )
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _truncate(f"*{k}*\n{_mrkdwn_escape(v)}", 2000)}
                    for k, v in facts(event)[:10]
                ],
            }
        )
        lines = detail_lines(event)
        if lines:
            text = "*What fell*\n" + "\n".join(f"• `{_mrkdwn_escape(ln)}`" for ln in lines)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _truncate(text, 3000)}})
        lk = links(event)
        buttons = [
            {"type": "button", "text": {"type": "plain_text", "text": label[:75]}, "url": url[:3000]}
            for label, url in lk
            if is_http(url)
        ][:5]
        if buttons:
            blocks.append({"type": "actions", "elements": buttons})
        other = [f"{label}: {_mrkdwn_escape(url)}" for label, url in lk if not is_http(url)]
        if other:
            blocks.append(
                {"type": "context", "elements": [{"type": "mrkdwn", "text": _truncate("; ".join(other), 3000)}]}
            )
        # ``text`` is mrkdwn too (it is the notification and the fallback): escaped like the
        # blocks, or a ``<unk>`` class label would vanish and ``<!channel>`` would ping everyone
        return {"text": _truncate(_mrkdwn_escape(plain_text(event)), 3900), "blocks": blocks}

    def _request(self, event: AlertEvent) -> tuple[str, bytes, dict[str, str]]:
        return self._url, dumps(self.payload(event)), {}

    def _error_text(self, resp: HttpResponse) -> str:
        # Slack's errors are short plain-text codes ("invalid_payload", "no_service")
        text = resp.body[:200].decode("utf-8", "replace").strip()
        return f"HTTP {resp.status} from Slack" + (f": {text}" if text else "")
