"""The router writes its routed events with orjson, not through the pydantic model: the
bytes must be exactly what ``dump(RoutedEvent(...))`` gives for the same values (every
field, in order, with pydantic's forms of datetimes, floats and text)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.router.domain import Decision
from services.router.store import _Pending, _routed_json
from shared.events import (
    AuthorRole,
    Category,
    Channel,
    CustomerRef,
    MessageEvent,
    MessageKind,
    Priority,
    RoutedEvent,
    Tier,
    dump,
    uuid5_str,
)

NOW = datetime(2026, 11, 30, 16, 40, 1, 250_000, tzinfo=UTC)


def message(received: str, customer: CustomerRef | None) -> MessageEvent:
    # Parsed from JSON as the router receives it (pydantic's own tzinfo for the offset).
    return MessageEvent.model_validate_json(
        MessageEvent(
            correlation_id="corr-1",
            producer="intake",
            kind=MessageKind.message_created,
            source="generic",
            source_event_id="evt-1",
            message_id="msg-1",
            ticket_id="tk-1",
            conversation_id="conv-1",
            shop_id="shop-1",
            channel=Channel.email,
            author_role=AuthorRole.customer,
            text="收到的杯子是碎的",
            customer=customer,
            received_at=datetime.fromisoformat(received),
        ).model_dump_json()
    )


@pytest.mark.parametrize(
    "received",
    [
        "2026-11-30T16:40:00+00:00",
        "2026-11-30T16:40:00.000001+08:00",
        "2026-11-30T03:00:00.5-05:30",
    ],
)
@pytest.mark.parametrize("sentiment", [0.0, -1.0, 1.0, -0.333333333333, 0.30000000000000004, 1e-7])
@pytest.mark.parametrize(
    "customer", [None, CustomerRef(id="c-7", ref="c***7", vip_level=3)], ids=["anon", "vip"]
)
@pytest.mark.parametrize("agent_id", [None, "l2-dai"])
def test_routed_json_is_what_pydantic_writes(
    received: str, sentiment: float, customer: CustomerRef | None, agent_id: str | None
) -> None:
    msg = message(received, customer)
    decision = Decision(
        category=Category.complaint,
        priority=Priority.important,
        tier=Tier.L1,
        reasons=['said "差评" \\ twice', "line\nbreak \u2028 é"],
        risk_signals=["bad_review"],
        sentiment=sentiment,
        skills=("complaints", "zh"),
    )
    p = _Pending(
        msg=msg,
        decision=decision,
        priority=Priority.urgent,  # kept from the open ticket: differs from the decision's
        tier=Tier.L2,
        queue="L2.urgent",
        due=NOW + timedelta(seconds=30),
        reasons=[*decision.reasons, "assigned to l2-dai"],
        skills=list(decision.skills),
        sticky=None,
        agent_id=agent_id,
    )
    expected = RoutedEvent(
        event_id=uuid5_str(f"routed:{msg.message_id}"),
        occurred_at=NOW,
        correlation_id=msg.correlation_id,
        producer="router",
        ticket_id=msg.ticket_id,
        conversation_id=msg.conversation_id,
        message_event_id=msg.source_event_id,
        message_id=msg.message_id,
        shop_id=msg.shop_id,
        channel=msg.channel,
        category=decision.category,
        priority=p.priority,
        tier=p.tier,
        queue=p.queue,
        agent_id=agent_id,
        reasons=p.reasons,
        risk_signals=decision.risk_signals,
        sentiment=sentiment,
        vip_level=customer.vip_level if customer else 0,
        customer_ref=customer.ref if customer else None,
        message_received_at=msg.received_at,
    )
    assert _routed_json(p, NOW) == dump(expected)


def test_a_utc_time_of_another_tzinfo_is_written_with_z() -> None:
    msg = message("2026-11-30T16:40:00+00:00", None).model_copy(
        update={"received_at": datetime(2026, 11, 30, 16, 40, tzinfo=timezone(timedelta(0)))}
    )
    decision = Decision(category=Category.presale, priority=Priority.normal, tier=Tier.bot)
    p = _Pending(
        msg, decision, decision.priority, decision.tier, "bot.normal", NOW, [], [], None, None
    )
    ev = RoutedEvent.model_validate_json(_routed_json(p, NOW))
    assert dump(ev) == _routed_json(p, NOW)
