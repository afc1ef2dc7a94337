"""Shopify: ``X-Shopify-Hmac-Sha256`` = base64(HMAC-SHA256(secret, raw body)).

Shopify's scheme has no timestamp, so there is no replay window; a replayed delivery
carries the same ``X-Shopify-Webhook-Id`` (or the same resource id) and is a duplicate.
Shopify sends no customer messages by webhook: order, refund and customer topics are
acknowledged and ignored (200, outcome ``ignored``). ``returns/request`` (a customer asks
to return items) becomes a customer message on a ticket per return.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from services.intake.adapters.base import (
    FieldError,
    Ignored,
    Inbound,
    InvalidPayload,
    SignatureError,
    SourceAdapter,
    match_any,
    validate_json,
)
from shared.events import AuthorRole, Channel, MessageKind, OrderInfo

HMAC_HEADER = "X-Shopify-Hmac-Sha256"
TOPIC_HEADER = "X-Shopify-Topic"
SHOP_HEADER = "X-Shopify-Shop-Domain"
WEBHOOK_ID_HEADER = "X-Shopify-Webhook-Id"
MESSAGE_TOPICS = frozenset({"returns/request"})


def shopify_signature(secret: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


class _Ref(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int | str


class _ReturnLine(BaseModel):
    model_config = ConfigDict(extra="ignore")
    quantity: int | None = None
    return_reason: str | None = Field(None, max_length=200)
    return_reason_note: str | None = Field(None, max_length=2000)
    customer_note: str | None = Field(None, max_length=2000)


class ShopifyReturnRequest(BaseModel):
    """The fields of a ``returns/request`` payload that intake reads."""

    model_config = ConfigDict(extra="ignore")
    id: int | str
    name: str | None = Field(None, max_length=200)
    order: _Ref | None = None
    return_line_items: list[_ReturnLine] = Field(default_factory=list, max_length=500)
    created_at: datetime | None = None


class ShopifyAdapter(SourceAdapter):
    name = "shopify"
    signature_headers = (HMAC_HEADER, TOPIC_HEADER, SHOP_HEADER)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        given = self._require(headers, HMAC_HEADER)
        if not match_any(self.secrets, lambda s: shopify_signature(s, body), given):
            raise SignatureError("signature does not match")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Inbound]:
        topic = headers.get(TOPIC_HEADER.lower(), "")
        if not topic:
            raise InvalidPayload(
                "the delivery names no topic", [FieldError(TOPIC_HEADER, "required")]
            )
        if topic not in MESSAGE_TOPICS:
            raise Ignored(f"shopify topic {topic[:64]!r} carries no customer-service activity")
        m = validate_json(ShopifyReturnRequest, body, "Shopify returns/request payload")
        shop = headers.get(SHOP_HEADER.lower()) or "shopify"
        event_id = headers.get(WEBHOOK_ID_HEADER.lower()) or f"{topic}:{m.id}"
        reasons = []
        for line in m.return_line_items:
            part = line.return_reason or "unspecified"
            note = line.customer_note or line.return_reason_note
            reasons.append(f"{part}: {note}" if note else part)
        order_id = str(m.order.id) if m.order else None
        text = "Return requested" + (f" for order {order_id}" if order_id else "")
        if reasons:
            text += " - " + "; ".join(reasons)
        return [
            Inbound(
                source_event_id=event_id[:200],
                kind=MessageKind.message_created,
                occurred_at=m.created_at or datetime.now(UTC),
                shop_id=shop[:200],
                channel=Channel.app,
                conversation_id=f"return-{m.id}"[:200],
                author_role=AuthorRole.customer,
                text=text[:20_000],
                order=OrderInfo(id=order_id[:200]) if order_id else None,
            )
        ]
