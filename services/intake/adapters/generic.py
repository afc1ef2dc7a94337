"""The documented canonical format (contract, version 1) that any platform can send."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.intake.adapters.base import (
    CustomerIn,
    FieldError,
    Inbound,
    InvalidPayload,
    SourceAdapter,
    validate_json,
)
from shared.events import AuthorRole, Channel, MessageKind, OrderInfo
from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, Verifier

Id = Field(min_length=1, max_length=200)
_TS = TIMESTAMP_HEADER.lower()
_SIG = SIGNATURE_HEADER.lower()


class GenericCustomer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Id
    name: str | None = Field(None, max_length=200, description="Dropped on receipt; never stored.")
    phone: str | None = Field(None, max_length=64, description="Dropped on receipt; never stored.")
    vip_level: int = Field(0, ge=0, le=10)


class GenericAuthor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: AuthorRole
    id: str | None = Field(None, max_length=200)


class GenericOrder(OrderInfo):
    """An ``OrderInfo`` as the webhook body gives it: the validated value is the
    canonical order itself (no second validation)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Id
    amount: Decimal | None = Field(None, ge=0, le=Decimal("999999999999"), decimal_places=2)
    currency: str | None = Field(None, max_length=8)
    status: str | None = Field(None, max_length=64)


class GenericWebhookV1(BaseModel):
    """The generic webhook body, version 1."""

    model_config = ConfigDict(extra="ignore")
    event_id: str = Field(min_length=1, max_length=200, description="Idempotency key.")
    type: Literal["message.created", "ticket.resolved", "ticket.reopened"]
    occurred_at: AwareDatetime
    shop_id: str = Id
    channel: Channel
    conversation_id: str = Id
    customer: GenericCustomer | None = None
    author: GenericAuthor | None = None
    text: str | None = Field(None, max_length=20_000)
    order: GenericOrder | None = None


class GenericSigned(SourceAdapter):
    """The contract's scheme: ``X-Timestamp`` and ``X-Signature: sha256=<hex HMAC-SHA256(
    secret, "<timestamp>.<raw body>")>``, refused outside the replay window. Also used by
    bridges that forward events of platforms whose transport carries no signature."""

    signature_headers = (TIMESTAMP_HEADER, SIGNATURE_HEADER)

    def __init__(
        self, secrets: Sequence[bytes], replay_window: float = 300, pseudonym_key: bytes = b""
    ) -> None:
        super().__init__(secrets, replay_window, pseudonym_key)
        self._verify = Verifier(self.secrets, self.replay_window)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        self._verify(headers.get(_TS), headers.get(_SIG), body, now)


class GenericAdapter(GenericSigned):
    name = "generic"

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Inbound]:
        m = validate_json(GenericWebhookV1, body, "generic webhook (version 1)")
        kind = MessageKind(m.type)
        if kind is MessageKind.message_created and (m.author is None or not m.text):
            raise InvalidPayload(
                "a message.created event needs an author and a text",
                [
                    FieldError(
                        "author" if m.author is None else "text", "required for message.created"
                    )
                ],
            )
        author_role = m.author.role if m.author else AuthorRole.agent
        return [
            Inbound(
                source_event_id=m.event_id,
                kind=kind,
                occurred_at=m.occurred_at,
                shop_id=m.shop_id,
                channel=m.channel,
                conversation_id=m.conversation_id,
                author_role=author_role,
                author_id=m.author.id if m.author else None,
                text=m.text,
                customer=CustomerIn(m.customer.id, m.customer.vip_level) if m.customer else None,
                order=m.order,
            )
        ]
