"""Taobao/Tmall TMC (消息服务) messages in their documented envelope:
``{topic, id, pub_time, pub_app_key, user_id, user_nick, content: "<JSON string>"}``.

TMC is pulled by the seller's application (WebSocket SDK or
``taobao.tmc.messages.consume``), not pushed as a signed HTTP webhook: the platform puts
no signature on a message. A TMC bridge (the small process that holds the TMC
connection) forwards each message body unchanged to ``/v1/webhooks/taobao``, signed with
the contract's scheme (``X-Timestamp``, ``X-Signature``) under ``INTAKE_TAOBAO_SECRET``,
and confirms it to TMC only after intake answered 2xx.

Refund topics become ticket activity, one ticket per refund (conversation
``refund-<refund_id>``): the buyer's request, changes, returned goods and refund
messages are customer messages; the seller's agreement or refusal is an agent reply
(it stops the first-response clock); success or closure resolves the ticket. Trade and
logistics topics are acknowledged and ignored. ``buyer_nick`` and ``seller_nick`` are
nicknames (personal data) and are dropped; ``buyer_open_uid`` (the platform's encrypted
buyer id) is the customer id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, Field

from services.intake.adapters.base import (
    CustomerIn,
    FieldError,
    Ignored,
    Inbound,
    InvalidPayload,
    validate_json,
)
from services.intake.adapters.generic import GenericSigned
from shared.events import AuthorRole, Channel, MessageKind, OrderInfo

CHINA = timezone(timedelta(hours=8))
PHASES = {"onsale": "售中", "aftersale": "售后"}
BILLS = {"refund_bill": "仅退款", "return_bill": "退货退款", "replace_bill": "换货"}

# topic -> (kind, author role, text template)
REFUND_TOPICS: dict[str, tuple[MessageKind, AuthorRole, str]] = {
    "taobao_refund_RefundCreated": (
        MessageKind.message_created,
        AuthorRole.customer,
        "买家申请退款",
    ),
    "taobao_refund_RefundBuyerModifyAgreement": (
        MessageKind.message_created,
        AuthorRole.customer,
        "买家修改退款协议",
    ),
    "taobao_refund_RefundBuyerReturnGoods": (
        MessageKind.message_created,
        AuthorRole.customer,
        "买家已退货",
    ),
    "taobao_refund_RefundCreateMessage": (
        MessageKind.message_created,
        AuthorRole.customer,
        "退款留言",
    ),
    "taobao_refund_RefundSellerAgreeAgreement": (
        MessageKind.message_created,
        AuthorRole.agent,
        "卖家同意退款协议",
    ),
    "taobao_refund_RefundSellerRefuseAgreement": (
        MessageKind.message_created,
        AuthorRole.agent,
        "卖家拒绝退款协议",
    ),
    "taobao_refund_RefundSuccess": (MessageKind.ticket_resolved, AuthorRole.agent, "退款成功"),
    "taobao_refund_RefundClosed": (MessageKind.ticket_resolved, AuthorRole.agent, "退款关闭"),
}


class TmcMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    topic: str = Field(min_length=1, max_length=200)
    id: int | str
    pub_time: str = Field(max_length=40)
    pub_app_key: str | int | None = None
    user_id: int | str
    content: str = Field(max_length=100_000)


class RefundContent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    refund_id: int | str
    tid: int | str | None = None
    oid: int | str | None = None
    refund_fee: str | float | None = None
    refund_phase: str | None = Field(None, max_length=40)
    bill_type: str | None = Field(None, max_length=40)
    buyer_open_uid: str | None = Field(None, max_length=200)
    modified: str | None = Field(None, max_length=40)


def china_time(value: str) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` in Beijing time, as TMC writes it."""
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)
    except ValueError:
        raise InvalidPayload(
            "pub_time is not yyyy-MM-dd HH:mm:ss", [FieldError("pub_time", "bad format")]
        ) from None


def yuan(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        d = Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None
    return d if Decimal(0) <= d < Decimal("1e12") else None


class TaobaoAdapter(GenericSigned):
    name = "taobao"

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Inbound]:
        msg = validate_json(TmcMessage, body, "Taobao TMC message")
        rule = REFUND_TOPICS.get(msg.topic)
        if rule is None:
            raise Ignored(f"TMC topic {msg.topic[:64]!r} carries no customer-service activity")
        kind, role, label = rule
        c = validate_json(RefundContent, msg.content, "TMC refund content")
        amount = yuan(c.refund_fee)
        details = [label]
        if amount is not None:
            details.append(f"退款金额 {amount} 元")
        extra = [x for x in (PHASES.get(c.refund_phase or ""), BILLS.get(c.bill_type or "")) if x]
        text = "，".join(details) + (f"（{'，'.join(extra)}）" if extra else "")
        order_id = c.tid if c.tid is not None else c.oid
        return [
            Inbound(
                source_event_id=str(msg.id)[:200],
                kind=kind,
                occurred_at=china_time(msg.pub_time),
                shop_id=str(msg.user_id)[:200],
                channel=Channel.app,
                conversation_id=f"refund-{c.refund_id}"[:200],
                author_role=role,
                author_id=c.buyer_open_uid if role is AuthorRole.customer else None,
                text=text if kind is MessageKind.message_created else None,
                customer=CustomerIn(c.buyer_open_uid) if c.buyer_open_uid else None,
                order=OrderInfo(id=str(order_id)[:200], amount=amount, currency="CNY")
                if order_id is not None
                else None,
            )
        ]
