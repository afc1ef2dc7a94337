"""Pinduoduo (拼多多) open-platform messages: ``{type, mallID, content: "<JSON string>"}``,
as the pop-sdk ``WsClient`` hands them to a ``MessageHandler``.

PDD pushes over the SDK's WebSocket, not as a signed HTTP webhook: a message carries no
signature. A PDD bridge (the process holding the WebSocket) forwards each message body
unchanged to ``/v1/webhooks/pinduoduo``, signed with the contract's scheme
(``X-Timestamp``, ``X-Signature``) under ``INTAKE_PINDUODUO_SECRET``.

A PDD message has no message id: the idempotency key is
``<type>:<refund_id>:<modified>`` (the same change redelivered gives the same key).
Refund types become ticket activity, one ticket per refund; ``refund_fee`` is in fen
(1990 = 19.90 元). Trade types (including the address change, which is personal data)
are acknowledged and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from services.intake.adapters.base import Ignored, Inbound, validate_json
from services.intake.adapters.generic import GenericSigned
from shared.events import AuthorRole, Channel, MessageKind, OrderInfo

BILLS = {1: "仅退款", 2: "退货退款", 3: "换货"}

REFUND_TYPES: dict[str, tuple[MessageKind, AuthorRole, str]] = {
    "pdd_refund_RefundCreated": (MessageKind.message_created, AuthorRole.customer, "买家申请退款"),
    "pdd_refund_RefundBuyerModifyAgreement": (
        MessageKind.message_created,
        AuthorRole.customer,
        "买家修改退款协议",
    ),
    "pdd_refund_RefundAgreeAgreement": (
        MessageKind.message_created,
        AuthorRole.agent,
        "商家同意退款协议",
    ),
    "pdd_refund_RefundClosed": (MessageKind.ticket_resolved, AuthorRole.agent, "退款关闭"),
}


class PddMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    type: str = Field(min_length=1, max_length=200)
    mall_id: int | str = Field(alias="mallID")
    content: str = Field(max_length=100_000)


class PddRefund(BaseModel):
    model_config = ConfigDict(extra="ignore")
    refund_id: int | str
    tid: str | int | None = Field(None)
    refund_fee: int | None = Field(None, ge=0, lt=10**14)
    bill_type: int | None = None
    modified: int = Field(ge=0, lt=10**14, description="Unix milliseconds.")


class PinduoduoAdapter(GenericSigned):
    name = "pinduoduo"

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Inbound]:
        msg = validate_json(PddMessage, body, "Pinduoduo message")
        rule = REFUND_TYPES.get(msg.type)
        if rule is None:
            raise Ignored(f"PDD type {msg.type[:64]!r} carries no customer-service activity")
        kind, role, label = rule
        c = validate_json(PddRefund, msg.content, "PDD refund content")
        amount = (Decimal(c.refund_fee) / 100).quantize(Decimal("0.01")) if c.refund_fee else None
        parts = [label]
        if amount is not None:
            parts.append(f"退款金额 {amount} 元")
        if c.bill_type in BILLS:
            parts.append(BILLS[c.bill_type])
        return [
            Inbound(
                source_event_id=f"{msg.type}:{c.refund_id}:{c.modified}"[:200],
                kind=kind,
                occurred_at=datetime.fromtimestamp(c.modified / 1000, UTC),
                shop_id=str(msg.mall_id)[:200],
                channel=Channel.app,
                conversation_id=f"refund-{c.refund_id}"[:200],
                author_role=role,
                text="，".join(parts) if kind is MessageKind.message_created else None,
                order=OrderInfo(id=str(c.tid)[:200], amount=amount, currency="CNY")
                if c.tid is not None
                else None,
            )
        ]
