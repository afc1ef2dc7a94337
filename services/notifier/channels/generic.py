"""The contract's generic signed JSON webhook."""

from __future__ import annotations

import httpx
import orjson

from services.notifier.channels.base import Channel, Outcome, Result, classify_response
from shared.events import EscalationEvent
from shared.signing import signed_headers


def body_for(esc: EscalationEvent) -> bytes:
    return orjson.dumps(
        {
            "escalation_id": esc.escalation_id,
            "ticket_id": esc.ticket_id,
            "conversation_id": esc.conversation_id,
            "reason": esc.reason.value,
            "priority": esc.priority.value if esc.priority else None,
            "tier": esc.tier.value if esc.tier else None,
            "category": esc.category.value if esc.category else None,
            "shop_id": esc.shop_id,
            "agent_id": esc.agent_id,
            "waiting_seconds": esc.waiting_seconds,
            "lateness_seconds": esc.lateness_seconds,
            "deadline": esc.deadline.isoformat() if esc.deadline else None,
            "customer_ref": esc.customer_ref,
            "occurred_at": esc.occurred_at.isoformat(),
            "correlation_id": esc.correlation_id,
        }
    )


class GenericWebhook(Channel):
    kind = "generic_webhook"

    def __init__(self, name: str, url: str, secret: bytes) -> None:
        super().__init__(name)
        self.url = url
        self.secret = secret

    async def send(self, client: httpx.AsyncClient, esc: EscalationEvent, now: float) -> Result:
        body = body_for(esc)
        headers = {
            "Content-Type": "application/json",
            "X-Escalation-Id": esc.escalation_id,
            **signed_headers(self.secret, body, now),
        }
        try:
            resp = await client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return Result(Outcome.retry, f"timeout: {exc.__class__.__name__}")
        except httpx.HTTPError as exc:
            return Result(Outcome.retry, f"transport: {exc.__class__.__name__}")
        return classify_response(resp)
