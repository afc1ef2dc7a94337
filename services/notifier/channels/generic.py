"""The contract's generic signed JSON webhook."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from services.notifier.channels.base import Channel, Result, classify_response, post
from services.notifier.messages import Notice
from shared.events import EscalationEvent
from shared.signing import signed_headers


def escalation_body(esc: EscalationEvent) -> dict[str, Any]:
    return {
        "escalation_id": esc.escalation_id,
        "ticket_id": esc.ticket_id,
        "conversation_id": esc.conversation_id,
        "reason": esc.reason.value,
        "priority": esc.priority.value if esc.priority else None,
        "tier": esc.tier.value if esc.tier else None,
        "category": esc.category.value if esc.category else None,
        "shop_id": esc.shop_id,
        "channel": esc.channel.value if esc.channel else None,
        "agent_id": esc.agent_id,
        "waiting_seconds": esc.waiting_seconds,
        "lateness_seconds": esc.lateness_seconds,
        "deadline": esc.deadline.isoformat() if esc.deadline else None,
        "customer_ref": esc.customer_ref,
        "occurred_at": esc.occurred_at.isoformat(),
        "correlation_id": esc.correlation_id,
    }


def body_for(notice: Notice) -> bytes:
    """One escalation: the contract's fields (plus level, text, links). A digest:
    ``kind: digest`` with its counts and top items."""
    links = {label: url for label, url in notice.links}
    if notice.esc is not None:
        body = escalation_body(notice.esc)
        body.update({"kind": "escalation", "level": notice.level, "text": notice.text()})
        body["links"] = links
        return orjson.dumps(body)
    return orjson.dumps(
        {
            "kind": "digest",
            "escalation_id": notice.key,
            "digest": notice.digest,
            "text": notice.text(),
        }
    )


class GenericWebhook(Channel):
    kind = "generic_webhook"

    def __init__(self, name: str, url: str, secret: bytes, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.url = url
        self.secret = secret

    async def send(self, client: httpx.AsyncClient, notice: Notice, now: float) -> Result:
        body = body_for(notice)
        headers = {
            "Content-Type": "application/json",
            "X-Escalation-Id": notice.key,
            **signed_headers(self.secret, body, now),
        }
        resp = await post(client, self.url, body, headers)
        return resp if isinstance(resp, Result) else classify_response(resp)
