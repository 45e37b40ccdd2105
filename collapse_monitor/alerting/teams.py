"""Microsoft Teams through a Workflows (Power Automate) webhook with an Adaptive Card.

The old Office 365 connectors are retired; a Workflows "When a Teams webhook request is
received" trigger takes::

    {"type": "message",
     "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                      "contentUrl": null,
                      "content": {"type": "AdaptiveCard", "version": "1.4", "body": [...], "actions": [...]}}]}

and answers 202. The trigger URL carries its signature (``sig=``) in the query string: it is
a bearer token and is never shown unredacted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._http import HttpChannel, Transport, dumps
from ._render import detail_lines, facts, headline, is_http, links
from .base import AlertEvent

__all__ = ["Teams"]

_COLOR = {"critical": "attention", "error": "attention", "warning": "warning", "info": "accent"}


class Teams(HttpChannel):
    """Post alerts as Adaptive Cards to a Teams channel via a Workflows webhook URL."""

    kind = "teams"

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

    def card(self, event: AlertEvent) -> dict[str, Any]:
        a = event.alert
        color = "good" if a.status == "resolved" else _COLOR.get(a.severity, "default")
        body: list[dict[str, Any]] = [
            {
                "type": "TextBlock",
                "text": headline(event),
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
            },
        ]
        summary = a.summary if not event.test else "If you can read this, collapse-monitor can page you here."
        body.append({"type": "TextBlock", "text": summary, "wrap": True})
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts(event)]})
        lines = detail_lines(event)
        if lines:
            body.append({"type": "TextBlock", "text": "What fell", "weight": "Bolder", "wrap": True})
            body.extend({"type": "TextBlock", "text": f"- {ln}", "wrap": True, "spacing": "None"} for ln in lines)
        lk = links(event)
        other = [f"{label}: {u}" for label, u in lk if not is_http(u)]
        if other:
            body.append({"type": "TextBlock", "text": "; ".join(other), "wrap": True, "isSubtle": True})
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
            "msteams": {"width": "Full"},
        }
        actions = [{"type": "Action.OpenUrl", "title": label, "url": u} for label, u in lk if is_http(u)]
        if actions:
            card["actions"] = actions
        return card

    def payload(self, event: AlertEvent) -> dict[str, Any]:
        return {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": self.card(event),
                }
            ],
        }

    def _request(self, event: AlertEvent) -> tuple[str, bytes, dict[str, str]]:
        return self._url, dumps(self.payload(event)), {}
