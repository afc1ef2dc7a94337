from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared import asyncapi
from shared.events import (
    CustomerRef,
    MessageEvent,
    RoutedEvent,
    dump,
    escalation_id_for,
    load,
    message_id_for,
    ticket_id_for,
)
from shared.topics import ALL_TOPICS, BY_NAME

ROOT = Path(__file__).resolve().parents[2]


def _message(**kw: object) -> MessageEvent:
    base: dict[str, object] = dict(
        correlation_id="c1",
        producer="intake",
        kind="message.created",
        source="generic",
        source_event_id="evt-1",
        message_id="msg-1",
        ticket_id="tkt-1",
        conversation_id="conv-1",
        shop_id="shop-1",
        channel="chat",
        author_role="customer",
        text="hi",
        received_at="2026-11-11T00:00:03+08:00",
    )
    base.update(kw)
    return MessageEvent.model_validate(base)


def test_ids_are_deterministic_and_distinct() -> None:
    assert message_id_for("generic", "e1") == message_id_for("generic", "e1")
    assert message_id_for("generic", "e1") != message_id_for("shopify", "e1")
    assert ticket_id_for("generic", "s", "c") == ticket_id_for("generic", "s", "c")
    assert ticket_id_for("generic", "s1", "c") != ticket_id_for("generic", "s2", "c")
    assert escalation_id_for("t", "r", "1") != escalation_id_for("t", "r", "2")


def test_round_trip_and_envelope_defaults() -> None:
    ev = _message()
    again = load(MessageEvent, dump(ev))
    assert again == ev
    assert ev.schema_version == 1
    assert ev.event_id != _message().event_id  # unique per event


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = json.loads(dump(_message()))
    raw["added_in_a_later_minor_version"] = 42
    assert load(MessageEvent, raw).ticket_id == "tkt-1"


def test_naive_timestamps_and_bad_vocabulary_are_refused() -> None:
    with pytest.raises(ValidationError):
        _message(received_at="2026-11-11T00:00:03")
    with pytest.raises(ValidationError):
        _message(channel="fax")


def test_customer_ref_has_no_personal_fields() -> None:
    assert set(CustomerRef.model_fields) == {"id", "ref", "vip_level"}
    assert "name" not in MessageEvent.model_fields and "phone" not in MessageEvent.model_fields


def test_routed_event_carries_the_contract_fields() -> None:
    required = {
        "ticket_id",
        "conversation_id",
        "message_event_id",
        "category",
        "priority",
        "tier",
        "queue",
        "agent_id",
        "reasons",
    }
    assert required <= set(RoutedEvent.model_fields)


def test_topic_registry_matches_the_contract() -> None:
    assert [t.name for t in ALL_TOPICS] == [
        "cs.messages.v1",
        "cs.tickets.routed.v1",
        "cs.sla.v1",
        "cs.escalations.v1",
        "cs.deadletter.v1",
    ]
    assert BY_NAME["cs.sla.v1"].schema.__name__ == "SlaEvent"


def test_committed_asyncapi_document_is_current() -> None:
    committed = (ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8")
    assert committed == asyncapi.render(), "run `make asyncapi` and commit docs/asyncapi.json"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_fast_uuid5_equals_the_standard_library(name: str) -> None:
    from shared.events import _ID_NAMESPACE, uuid5_str

    assert uuid5_str(name) == str(uuid.uuid5(_ID_NAMESPACE, name))


def test_ids_are_the_ones_already_issued() -> None:
    """Ids are derived, not stored: a change of derivation would split a ticket in two."""
    assert message_id_for("generic", "e1") == "msg-" + str(
        uuid.uuid5(uuid.UUID("6f1d3c1e-7a0b-4c52-9c3e-2f9d6a1b8e40"), "msg:generic:e1")
    )
