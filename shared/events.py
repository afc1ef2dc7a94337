"""Every event schema that crosses a service boundary, defined once and versioned.

Each event is JSON with ``schema_version``, a unique ``event_id``, ``occurred_at`` and a
``correlation_id`` that follows the customer message through every service. Consumers
ignore fields they do not know (``extra="ignore"``), so adding an optional field is a
compatible change; removing or retyping one needs a new topic version (``.v2``).

No event carries a customer's name, phone number or address: ``CustomerRef`` holds the
platform's pseudonymous customer id, a masked display reference and the VIP level.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

# Namespace for deterministic ids (uuid5): the same input always gives the same id, so a
# redelivered webhook produces the same message id and ticket id everywhere downstream.
_ID_NAMESPACE = uuid.UUID("6f1d3c1e-7a0b-4c52-9c3e-2f9d6a1b8e40")
_NAMESPACE_BYTES = _ID_NAMESPACE.bytes

ShortText = Annotated[str, Field(min_length=1, max_length=200)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return str(uuid.uuid4())


def uuid5_str(name: str) -> str:
    """``str(uuid.uuid5(_ID_NAMESPACE, name))`` without building a ``UUID`` object (a
    third of the cost; intake derives two ids per webhook). Equal by test."""
    sha1 = hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False)  # RFC 4122
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def message_id_for(source: str, source_event_id: str) -> str:
    """The message id of a webhook event: stable across redeliveries."""
    return "msg-" + uuid5_str(f"msg:{source}:{source_event_id}")


def ticket_id_for(source: str, shop_id: str, conversation_id: str) -> str:
    """One ticket per conversation of a shop on a source; a reopen reuses it."""
    return "tkt-" + uuid5_str(f"tkt:{source}:{shop_id}:{conversation_id}")


def escalation_id_for(ticket_id: str, reason: str, occurrence: str) -> str:
    """Stable across retries so that receivers can drop repeats."""
    return "esc-" + uuid5_str(f"esc:{ticket_id}:{reason}:{occurrence}")


class Channel(StrEnum):
    chat = "chat"
    email = "email"
    phone = "phone"
    social = "social"
    app = "app"


class AuthorRole(StrEnum):
    customer = "customer"
    agent = "agent"
    bot = "bot"


class MessageKind(StrEnum):
    message_created = "message.created"
    ticket_resolved = "ticket.resolved"
    ticket_reopened = "ticket.reopened"


class Priority(StrEnum):
    urgent = "urgent"
    important = "important"
    normal = "normal"


PRIORITY_RANK: dict[Priority, int] = {Priority.urgent: 0, Priority.important: 1, Priority.normal: 2}


class Tier(StrEnum):
    bot = "bot"
    L1 = "L1"
    L2 = "L2"


class Category(StrEnum):
    presale = "presale"
    order_status = "order_status"
    logistics = "logistics"
    return_refund = "return_refund"
    product_quality = "product_quality"
    invoice = "invoice"
    complaint = "complaint"
    other = "other"


class ClockName(StrEnum):
    first_response = "first_response"
    resolution = "resolution"
    next_response = "next_response"


class SlaKind(StrEnum):
    started = "started"
    warning = "warning"
    breached = "breached"
    met = "met"
    stopped = "stopped"


class EscalationReason(StrEnum):
    first_response_breached = "first_response_breached"
    resolution_breached = "resolution_breached"
    next_response_breached = "next_response_breached"
    routed_to_l2 = "routed_to_l2"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False)


class Envelope(_Model):
    """Fields every event carries."""

    schema_version: int = Field(SCHEMA_VERSION, description="Schema version of this event.")
    event_id: str = Field(
        default_factory=new_event_id, description="Unique id of this event (uuid)."
    )
    occurred_at: AwareDatetime = Field(
        default_factory=utcnow, description="When the fact this event reports happened."
    )
    correlation_id: str = Field(
        description="Follows one customer message through every service.",
        examples=["msg-3a1f0c2e-..."],
    )
    producer: str = Field(
        description="Service that emitted the event.", examples=["intake", "router"]
    )


class CustomerRef(_Model):
    """What downstream needs of a customer, and nothing personal."""

    id: str = Field(max_length=200, description="The platform's pseudonymous customer id.")
    ref: str = Field(max_length=40, description="Masked reference fit for a notification.")
    vip_level: int = Field(0, ge=0, le=10, description="0 = none; higher is more valuable.")


class OrderInfo(_Model):
    id: str = Field(max_length=200)
    amount: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=2)
    currency: str | None = Field(None, max_length=8)
    status: str | None = Field(None, max_length=64)


class MessageEvent(Envelope):
    """``cs.messages.v1``: one normalised message or ticket activity from intake."""

    kind: MessageKind
    source: ShortText = Field(description="Source adapter that received it, e.g. `generic`.")
    source_event_id: ShortText = Field(description="The platform's event id (idempotency key).")
    message_id: str = Field(description="Stable id derived from (source, source_event_id).")
    ticket_id: str = Field(description="Stable id derived from (source, shop, conversation).")
    conversation_id: ShortText
    shop_id: ShortText
    channel: Channel
    author_role: AuthorRole
    author_id: str | None = Field(None, max_length=200)
    text: str | None = Field(None, max_length=20_000)
    customer: CustomerRef | None = None
    order: OrderInfo | None = None
    received_at: AwareDatetime = Field(description="When intake accepted the webhook.")


class RoutedEvent(Envelope):
    """``cs.tickets.routed.v1``: the router's decision for one message."""

    ticket_id: str
    conversation_id: str
    message_event_id: str = Field(description="The webhook's `event_id`.")
    message_id: str
    shop_id: str
    channel: Channel
    category: Category
    priority: Priority
    tier: Tier
    queue: str = Field(description="Queue the ticket waits in, e.g. `L2.urgent`.")
    agent_id: str | None = Field(None, description="Null while queued.")
    reasons: list[str] = Field(description="Why, in words a team lead understands.")
    risk_signals: list[str] = Field(default_factory=list)
    sentiment: float | None = Field(None, ge=-1, le=1, description="-1 angry .. +1 happy.")
    vip_level: int = 0
    customer_ref: str | None = None
    message_received_at: AwareDatetime | None = None


class SlaEvent(Envelope):
    """``cs.sla.v1``: one transition of one SLA clock of one ticket."""

    ticket_id: str
    conversation_id: str
    clock: ClockName
    kind: SlaKind
    deadline: AwareDatetime | None
    started_at: AwareDatetime | None = None
    limit_seconds: float | None = None
    lateness_seconds: float | None = Field(
        None, description="For `breached`: emit time minus deadline."
    )
    elapsed_seconds: float | None = Field(None, description="For `met`: time to the reply.")
    priority: Priority | None = None
    tier: Tier | None = None
    category: Category | None = None
    shop_id: str | None = None


class EscalationEvent(Envelope):
    """``cs.escalations.v1``: something second line must look at."""

    escalation_id: str = Field(description="Stable across retries; receivers dedupe on it.")
    ticket_id: str
    conversation_id: str
    reason: EscalationReason
    priority: Priority | None = None
    tier: Tier | None = None
    category: Category | None = None
    shop_id: str | None = None
    channel: Channel | None = None
    agent_id: str | None = None
    waiting_seconds: float | None = None
    deadline: AwareDatetime | None = None
    lateness_seconds: float | None = None
    customer_ref: str | None = None


class DeadLetterEvent(Envelope):
    """``cs.deadletter.v1``: what could not be processed, with the reason."""

    original_topic: str
    original_key: str | None
    service: str
    reason: str = Field(description="Short machine-readable reason, e.g. `invalid_schema`.")
    error: str = Field(max_length=4000, description="What went wrong, for a human.")
    payload: str = Field(max_length=1_000_000, description="The original value, as text.")


AnyEvent = MessageEvent | RoutedEvent | SlaEvent | EscalationEvent | DeadLetterEvent

E = TypeVar("E", bound=Envelope)


def dump(event: Envelope) -> bytes:
    """The wire form of an event (UTF-8 JSON)."""
    return event.model_dump_json().encode()


def load(model: type[E], raw: bytes | str | dict[str, Any]) -> E:
    """Parse and validate; raises ``pydantic.ValidationError`` on a bad payload."""
    if isinstance(raw, dict):
        return model.model_validate(raw)
    return model.model_validate_json(raw)
