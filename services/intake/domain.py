"""Pure intake logic: from a source's canonical ``Inbound`` to the published event."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from services.intake.adapters.base import FieldError, Inbound
from shared.events import (
    SCHEMA_VERSION,
    CustomerRef,
    MessageEvent,
    MessageKind,
    message_id_for,
    ticket_id_for,
)

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


class EventIds:
    """Random (version 4) uuids as strings, drawn from ``os.urandom`` a block at a time:
    one system call per ``block`` ids instead of one per id (``uuid.uuid4`` costs a fifth
    of building an event otherwise). Same randomness source, same format."""

    def __init__(self, block: int = 256) -> None:
        self._block = block
        self._buf = b""
        self._at = 0

    def next(self) -> str:
        if self._at >= len(self._buf):
            self._buf, self._at = os.urandom(16 * self._block), 0
        b = bytearray(self._buf[self._at : self._at + 16])
        self._at += 16
        b[6] = (b[6] & 0x0F) | 0x40  # version 4
        b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = b.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A ``MessageEvent`` as intake stores and publishes it: the columns of
    ``intake_events`` and the outbox, and the event itself serialised once (``payload``,
    the bytes the relay publishes unchanged)."""

    source: str
    source_event_id: str
    message_id: str
    ticket_id: str
    kind: MessageKind
    conversation_id: str
    received_at: datetime
    payload: bytes

    @property
    def correlation_id(self) -> str:
        return self.message_id


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)  # as pydantic writes a Decimal in JSON
    raise TypeError(type(value).__name__)


def to_stored(source: str, inbound: Inbound, received_at: datetime, event_id: str) -> StoredEvent:
    """``normalise`` without building the pydantic model: the same event, written once as
    JSON (``MessageEvent.model_validate_json(payload)`` equals ``normalise``'s event, by
    test). The adapter has validated every value against its own model and
    ``invalid_fields`` has checked the canonical bounds, so validating them again would
    only cost time (two-thirds of intake's pydantic time per webhook)."""
    message_id = message_id_for(source, inbound.source_event_id)
    ticket_id = ticket_id_for(source, inbound.shop_id, inbound.conversation_id)
    customer = inbound.customer
    order = inbound.order
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "occurred_at": inbound.occurred_at,
        "correlation_id": message_id,
        "producer": PRODUCER,
        "kind": inbound.kind,
        "source": source,
        "source_event_id": inbound.source_event_id,
        "message_id": message_id,
        "ticket_id": ticket_id,
        "conversation_id": inbound.conversation_id,
        "shop_id": inbound.shop_id,
        "channel": inbound.channel,
        "author_role": inbound.author_role,
        "author_id": inbound.author_id,
        "text": inbound.text,
        "customer": {
            "id": customer.id,
            "ref": mask_ref(customer.id),
            "vip_level": customer.vip_level,
        }
        if customer is not None
        else None,
        "order": {
            "id": order.id,
            "amount": order.amount,
            "currency": order.currency,
            "status": order.status,
        }
        if order is not None
        else None,
        "received_at": received_at,
    }
    return StoredEvent(
        source,
        inbound.source_event_id,
        message_id,
        ticket_id,
        inbound.kind,
        inbound.conversation_id,
        received_at,
        orjson.dumps(doc, default=_json_default, option=orjson.OPT_UTC_Z),
    )


# The bounds of MessageEvent's fields (shared/events.py) that an adapter's value could
# pass: checked here because ``to_stored`` does not run pydantic over the event.
_BOUNDS: tuple[tuple[str, int, int], ...] = (
    ("source_event_id", 1, 200),
    ("shop_id", 1, 200),
    ("conversation_id", 1, 200),
    ("author_id", 0, 200),
    ("text", 0, 20_000),
)


def invalid_fields(inbound: Inbound) -> list[FieldError]:
    """What the canonical event cannot hold: text PostgreSQL cannot store (NUL, lone
    surrogates, ``unstorable_fields``), values outside MessageEvent's bounds and a time
    without a zone."""
    out = unstorable_fields(inbound)
    for name, low, high in _BOUNDS:
        value = getattr(inbound, name)
        if value is not None and not low <= len(value) <= high:
            out.append(FieldError(name, f"length must be between {low} and {high}"))
    if inbound.occurred_at.utcoffset() is None:  # MessageEvent's AwareDatetime
        out.append(FieldError("occurred_at", "must carry a time zone offset"))
    if inbound.customer is not None:
        c = inbound.customer
        if len(c.id) > 200:
            out.append(FieldError("customer.id", "length must be at most 200"))
        if not 0 <= c.vip_level <= 10:
            out.append(FieldError("customer.vip_level", "must be between 0 and 10"))
    return out


def unstorable_fields(inbound: Inbound) -> list[FieldError]:
    """Strings that PostgreSQL cannot store (NUL characters, lone surrogates): the client's
    mistake, refused with 422 before anything is written."""
    values = [inbound.source_event_id, inbound.shop_id, inbound.conversation_id]
    if inbound.author_id is not None:
        values.append(inbound.author_id)
    if inbound.text is not None:
        values.append(inbound.text)
    if inbound.customer is not None:
        values.append(inbound.customer.id)
    if inbound.order is not None:
        values.append(inbound.order.id)
        values.extend(v for v in (inbound.order.currency, inbound.order.status) if v)
    joined = "\n".join(v for v in values if isinstance(v, str))
    if "\x00" not in joined and joined.isascii():  # the common case, in one pass
        return []
    try:
        if "\x00" not in joined:
            joined.encode("utf-8")
            return []
    except UnicodeEncodeError:
        pass
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
