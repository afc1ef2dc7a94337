"""intake's event building without pydantic (``to_stored``) against the pydantic model it
replaces, the bounds it checks instead (``invalid_fields``), and its event ids."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.intake.adapters.base import CustomerIn, Inbound
from services.intake.domain import EventIds, invalid_fields, normalise, to_stored
from shared.events import AuthorRole, Channel, MessageEvent, MessageKind, OrderInfo

RECEIVED = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


def inbound(**changes: object) -> Inbound:
    base = Inbound(
        source_event_id="evt-1",
        kind=MessageKind.message_created,
        occurred_at=datetime(2026, 11, 30, 11, 59, 58, tzinfo=UTC),
        shop_id="shop-1",
        channel=Channel.chat,
        conversation_id="conv-1",
        author_role=AuthorRole.customer,
        author_id="cust-7",
        text="收到的杯子是碎的，要求退款！",
        customer=CustomerIn("cust-7", 3),
        order=OrderInfo(id="o-1", amount=Decimal("299.00"), currency="CNY", status="delivered"),
    )
    return replace(base, **changes)


CASES = {
    "full": inbound(),
    "bare": inbound(author_id=None, text=None, customer=None, order=None),
    "resolved by an agent": inbound(
        kind=MessageKind.ticket_resolved, author_role=AuthorRole.agent, channel=Channel.email
    ),
    "offset and microseconds": inbound(
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=8)))
    ),
    "negative offset": inbound(
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))
    ),
    "order without amount": inbound(order=OrderInfo(id="o-2")),
    "whole amount": inbound(order=OrderInfo(id="o-3", amount=Decimal("299"))),
    "exponent amount": inbound(order=OrderInfo(id="o-4", amount=Decimal("1E+2"))),
    "largest amount": inbound(order=OrderInfo(id="o-5", amount=Decimal("999999999999.99"))),
    "escapes": inbound(text='quote " backslash \\ newline \n tab \t \u2028 \x7f emoji 😀 '),
    "longest text": inbound(text="好" * 20_000),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_to_stored_writes_the_bytes_pydantic_writes_for_normalise(name: str) -> None:
    i = CASES[name]
    stored = to_stored("generic", i, RECEIVED, "0b7e7f52-3c3b-4e0e-9d8e-1f2a3b4c5d6e")
    event = normalise("generic", i, RECEIVED).model_copy(
        update={"event_id": "0b7e7f52-3c3b-4e0e-9d8e-1f2a3b4c5d6e"}
    )
    assert stored.payload == event.model_dump_json().encode()
    assert MessageEvent.model_validate_json(stored.payload) == event
    assert (stored.source, stored.source_event_id) == ("generic", i.source_event_id)
    assert (stored.message_id, stored.ticket_id) == (event.message_id, event.ticket_id)
    assert (stored.kind, stored.conversation_id) == (event.kind, event.conversation_id)
    assert stored.received_at == RECEIVED
    assert stored.correlation_id == event.correlation_id == event.message_id


def test_the_payload_keeps_no_name_or_phone() -> None:
    payload = to_stored("generic", inbound(), RECEIVED, "x").payload
    doc = MessageEvent.model_validate_json(payload).model_dump()
    assert doc["customer"] == {"id": "cust-7", "ref": doc["customer"]["ref"], "vip_level": 3}
    assert doc["customer"]["ref"].startswith("C-") and "cust-7" not in doc["customer"]["ref"]


def test_valid_events_have_no_invalid_fields() -> None:
    for i in CASES.values():
        assert invalid_fields(i) == []


BOUNDS = [  # MessageEvent (pydantic) refuses these too
    ({"source_event_id": ""}, "source_event_id"),
    ({"source_event_id": "e" * 201}, "source_event_id"),
    ({"shop_id": ""}, "shop_id"),
    ({"conversation_id": "c" * 201}, "conversation_id"),
    ({"author_id": "a" * 201}, "author_id"),
    ({"text": "t" * 20_001}, "text"),
    ({"customer": CustomerIn("c" * 201)}, "customer.id"),
    ({"customer": CustomerIn("c", 11)}, "customer.vip_level"),
    ({"customer": CustomerIn("c", -1)}, "customer.vip_level"),
    ({"occurred_at": datetime(2026, 11, 30, 12, 0)}, "occurred_at"),
]
UNSTORABLE = [  # pydantic takes these; PostgreSQL does not
    ({"text": "a\x00b"}, "text"),
    ({"text": "lone \udc80 surrogate"}, "text"),
    ({"shop_id": "shop\x00"}, "shop_id"),
    ({"customer": CustomerIn("c\ud800")}, "customer.id"),
    ({"order": OrderInfo(id="o", status="\x00")}, "order.status"),
]


@pytest.mark.parametrize(("changes", "field"), BOUNDS)
def test_invalid_fields_name_what_message_event_refuses(changes: dict[str, object], field: str):
    i = inbound(**changes)
    assert field in {e.field for e in invalid_fields(i)}
    with pytest.raises(ValidationError):
        normalise("generic", i, RECEIVED)


@pytest.mark.parametrize(("changes", "field"), UNSTORABLE)
def test_invalid_fields_name_what_postgresql_cannot_store(changes: dict[str, object], field: str):
    assert field in {e.field for e in invalid_fields(inbound(**changes))}


def test_event_ids_are_distinct_random_uuid4_strings() -> None:
    ids = EventIds(block=4)
    drawn = [ids.next() for _ in range(1000)]  # many blocks
    assert len(set(drawn)) == len(drawn)
    for s in drawn:
        u = uuid.UUID(s)
        assert str(u) == s
        assert u.version == 4 and u.variant == uuid.RFC_4122
