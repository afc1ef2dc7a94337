"""What sla_watch does when the router moves a ticket to second line (issue #4): the router's
own routed events (from its store, against the real PostgreSQL) applied to sla_watch's store
with a policy that differs by tier, in either order against the messages topic's events (two
consumers: nothing orders them). The first-response clock keeps its start and takes the new
limit (the contract: 30 s from the customer's message, not from the move); a resolution clock
the new policy has runs from the reopen, or from the message, whichever order the events came
in; a complaint that comes back by a customer's message gets a new resolution clock."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import asyncpg
import pytest

from services.router.domain import Decision, default_classifier
from services.router.store import escalate, record_decision_in, set_status_in
from services.sla_watch import store as sla
from services.sla_watch.policy import Policies, parse_policies
from shared.events import (
    AuthorRole,
    Category,
    EscalationReason,
    MessageEvent,
    MessageKind,
    Priority,
    RoutedEvent,
    Tier,
    utcnow,
)
from tests.helpers import escalation_event, message_event, uid

pytestmark = pytest.mark.integration

LIMITS = {Priority.urgent: 30.0, Priority.important: 30.0, Priority.normal: 30.0}
SECOND_LINE = default_classifier().rules.context.reopen_second_line

TIERED = parse_policies(
    {
        "policies": [
            {
                "name": "second_line",
                "match": {"tier": ["L2"]},
                "clocks": {"first_response": {"limit": 15}, "resolution": {"limit": "8h"}},
            },
            {
                "name": "complaint",
                "match": {"category": ["complaint"]},
                "clocks": {"first_response": {"limit": 30}, "resolution": {"limit": "24h"}},
            },
            {"name": "default", "clocks": {"first_response": {"limit": 30}}},
        ]
    }
)


def decision(category: Category = Category.logistics, tier: Tier = Tier.L1) -> Decision:
    # A skill no agent has: the ticket waits, and every move publishes a routed event.
    return Decision(
        category=category,
        priority=Priority.normal,
        tier=tier,
        reasons=["test"],
        skills=(uid("sk").replace("-", "_"),),
    )


def status(ticket: str, kind: MessageKind, at: datetime) -> MessageEvent:
    return message_event(ticket, kind=kind, role=AuthorRole.customer, at=at, received_at=at)


def said(ticket: str, at: datetime) -> MessageEvent:
    """A customer message that happened and was received at ``at``."""
    return message_event(ticket, text="x", at=at, received_at=at)


async def routed(pool: asyncpg.Pool, ticket: str) -> list[RoutedEvent]:
    """The router's routed events of ``ticket``, in the order it wrote them."""
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE producer = 'router' AND key = $1"
        " AND topic = 'cs.tickets.routed.v1' ORDER BY id",
        ticket,
    )
    return [RoutedEvent.model_validate(json.loads(r["payload"])) for r in rows]


async def router_status(pool: asyncpg.Pool, ev: MessageEvent) -> None:
    async with pool.acquire() as conn, conn.transaction():
        resolved = ev.kind is MessageKind.ticket_resolved
        await set_status_in(conn, ev.ticket_id, resolved=resolved, event_id=ev.message_id)


async def router_message(pool: asyncpg.Pool, ev: MessageEvent, d: Decision) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await record_decision_in(conn, ev, d, LIMITS)


async def clocks(pool: asyncpg.Pool, ticket: str) -> dict[str, dict[str, object]]:
    rows = await pool.fetch(
        "SELECT clock, state, instance, started_at, deadline, limit_seconds, policy"
        " FROM sla_clocks WHERE ticket_id = $1",
        ticket,
    )
    return {r["clock"]: dict(r) for r in rows}


async def apply(pool: asyncpg.Pool, *events: sla.Event, policies: Policies = TIERED) -> None:
    for ev in events:  # each its own batch, as two consumers would apply them
        await sla.apply(pool, [ev], policies)


@pytest.mark.parametrize("routed_first", [False, True])
async def test_a_reopen_that_moves_the_ticket_to_l2(pool: asyncpg.Pool, routed_first: bool) -> None:
    ticket = uid("tkm")
    now = utcnow()
    first = said(ticket, now - timedelta(minutes=10))
    await router_message(pool, first, decision())
    for _ in range(SECOND_LINE - 1):
        for kind in (MessageKind.ticket_resolved, MessageKind.ticket_reopened):
            await router_status(pool, status(ticket, kind, now - timedelta(minutes=9)))
    resolve = status(ticket, MessageKind.ticket_resolved, now - timedelta(minutes=5))
    reopen = status(ticket, MessageKind.ticket_reopened, now - timedelta(seconds=5))
    await router_status(pool, resolve)
    await router_status(pool, reopen)
    *_, before, moved = await routed(pool, ticket)
    assert (before.tier, moved.tier, moved.priority) == (Tier.L1, Tier.L2, Priority.important)
    # The move's routed event names the message it was decided on, received long before.
    assert moved.message_received_at == first.received_at

    await apply(pool, first, before, resolve)
    await apply(pool, *((moved, reopen) if routed_first else (reopen, moved)))
    got = await clocks(pool, ticket)
    fr, res = got["first_response"], got.get("resolution")
    # First response: awaited again from the reopen (by the customer), with L2's limit.
    assert (fr["state"], fr["instance"], fr["started_at"], fr["policy"]) == (
        "running",
        2,
        reopen.occurred_at,
        "second_line",
    )
    assert fr["deadline"] == reopen.occurred_at + timedelta(seconds=15)
    # Resolution: L2's policy has one; it runs from the reopen, whichever came first.
    assert res is not None, "no resolution clock for the ticket moved to L2"
    assert (res["state"], res["instance"], res["started_at"], res["limit_seconds"]) == (
        "running",
        1,
        reopen.occurred_at,
        8 * 3600.0,
    )


async def test_an_escalation_to_l2_leaves_the_breached_first_response_as_it_is(
    pool: asyncpg.Pool,
) -> None:
    ticket = uid("tke")
    now = utcnow()
    first = said(ticket, now - timedelta(seconds=40))
    await router_message(pool, first, decision())
    breach = escalation_event(ticket, EscalationReason.first_response_breached)
    assert not (await escalate(pool, breach)).ignored
    before, moved = await routed(pool, ticket)
    assert (moved.tier, moved.priority) == (Tier.L2, Priority.important)

    await apply(pool, first, before)
    fr_id = await pool.fetchval(
        "SELECT id FROM sla_clocks WHERE ticket_id = $1 AND clock = 'first_response'", ticket
    )
    assert len(await sla.fire(pool, sla.Kind.breach, [fr_id])) == 1  # 30 s passed: breached
    await apply(pool, breach, moved)
    got = await clocks(pool, ticket)
    fr, res = got["first_response"], got["resolution"]
    # The contract's first response runs from the customer's message to the first reply:
    # the move does not restart it (it stays breached until the reply, its start and
    # deadline as they were).
    assert (fr["state"], fr["instance"], fr["started_at"]) == ("breached", 1, first.occurred_at)
    assert fr["deadline"] == first.occurred_at + timedelta(seconds=30)
    # Resolution (L2's policy has one, the earlier had none): from the message.
    assert (res["state"], res["instance"], res["started_at"], res["policy"]) == (
        "running",
        1,
        first.received_at,
        "second_line",
    )


@pytest.mark.parametrize("routed_first", [False, True])
async def test_a_complaint_that_comes_back_by_a_message_gets_a_new_resolution_clock(
    pool: asyncpg.Pool, routed_first: bool
) -> None:
    ticket = uid("tkc")
    now = utcnow()
    first = said(ticket, now - timedelta(minutes=10))
    complaint = decision(Category.complaint, Tier.L2)
    await router_message(pool, first, complaint)
    resolve = status(ticket, MessageKind.ticket_resolved, now - timedelta(minutes=5))
    await router_status(pool, resolve)
    again = said(ticket, now - timedelta(seconds=5))
    await router_message(pool, again, complaint)
    routed_first_msg, routed_again = await routed(pool, ticket)
    assert routed_again.message_received_at == again.received_at

    await apply(pool, first, routed_first_msg, resolve)
    assert (await clocks(pool, ticket))["resolution"]["state"] == "met"
    await apply(pool, *((routed_again, again) if routed_first else (again, routed_again)))
    got = await clocks(pool, ticket)
    fr, res = got["first_response"], got["resolution"]
    assert (fr["state"], fr["instance"]) == ("running", 2)
    assert (res["state"], res["instance"], res["started_at"]) == (
        "running",
        2,
        again.received_at,
    )
    assert res["deadline"] == again.received_at + timedelta(hours=8)
