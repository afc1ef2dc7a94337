"""Pure intake logic: from a source's canonical ``Inbound`` to the published event."""

from __future__ import annotations

import hashlib
from datetime import datetime

from services.intake.adapters.base import FieldError, Inbound
from shared.events import CustomerRef, MessageEvent, message_id_for, ticket_id_for

PRODUCER = "intake"


def mask_ref(customer_id: str) -> str:
    """A short reference an agent can quote, that does not reveal the id itself."""
    digest = hashlib.sha256(customer_id.encode()).hexdigest()[:8].upper()
    return f"C-{digest}"


def normalise(source: str, inbound: Inbound, received_at: datetime) -> MessageEvent:
    message_id = message_id_for(source, inbound.source_event_id)
    return MessageEvent(
        correlation_id=message_id,
        producer=PRODUCER,
        occurred_at=inbound.occurred_at,
        kind=inbound.kind,
        source=source,
        source_event_id=inbound.source_event_id,
        message_id=message_id,
        ticket_id=ticket_id_for(source, inbound.shop_id, inbound.conversation_id),
        conversation_id=inbound.conversation_id,
        shop_id=inbound.shop_id,
        channel=inbound.channel,
        author_role=inbound.author_role,
        author_id=inbound.author_id,
        text=inbound.text,
        customer=CustomerRef(
            id=inbound.customer.id,
            ref=mask_ref(inbound.customer.id),
            vip_level=inbound.customer.vip_level,
        )
        if inbound.customer
        else None,
        order=inbound.order,
        received_at=received_at,
    )


def unstorable_fields(inbound: Inbound) -> list[FieldError]:
    """Strings that PostgreSQL cannot store (NUL characters, lone surrogates): the client's
    mistake, refused with 422 before anything is written."""
    out: list[FieldError] = []

    def check(name: str, value: object) -> None:
        if isinstance(value, str):
            if "\x00" in value:
                out.append(FieldError(name, "contains a NUL character"))
            else:
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    out.append(FieldError(name, "is not valid Unicode text"))

    for f in (
        "source_event_id",
        "shop_id",
        "conversation_id",
        "author_id",
        "text",
    ):
        check(f, getattr(inbound, f))
    if inbound.customer is not None:
        check("customer.id", inbound.customer.id)
    if inbound.order is not None:
        for f in ("id", "currency", "status"):
            check(f"order.{f}", getattr(inbound.order, f))
    return out
