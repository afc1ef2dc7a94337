"""Assignment against the real PostgreSQL: queue, free, stickiness, escalation, manual moves.

Every test gives its agents and tickets a skill of its own (a uid), so no other test's
tickets or agents can take part.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from services.router.domain import Decision
from services.router.roster import AgentIn, upsert_agent
from services.router.store import (
    AdminError,
    Outcome,
    escalate,
    fill_agent,
    reassign,
    record_decision,
    set_status,
)
from shared.events import (
    Category,
    EscalationEvent,
    EscalationReason,
    MessageEvent,
    Priority,
    Tier,
    utcnow,
)
from tests.helpers import message_event, uid

LIMITS = {Priority.urgent: 30.0, Priority.important: 30.0, Priority.normal: 30.0}


def msg(ticket: str, *, ago: float = 0.0) -> MessageEvent:
    return message_event(
        ticket, text="where is my parcel", received_at=utcnow() - timedelta(seconds=ago)
    )


def decision(skill: str, tier: Tier = Tier.L1, priority: Priority = Priority.normal) -> Decision:
    return Decision(
        category=Category.logistics,
        priority=priority,
        tier=tier,
        reasons=["shipping question"],
        skills=(skill,),
    )


async def agent(
    pool: asyncpg.Pool,
    skill: str,
    *,
    tier: Tier = Tier.L1,
    capacity: int = 1,
    presence: str = "online",
) -> str:
    agent_id = uid("agent")
    async with pool.acquire() as conn:
        assert await upsert_agent(
            conn,
            agent_id,
            AgentIn(tier=tier, skills=[skill], capacity=capacity, presence=presence),
        )
    return agent_id


async def ticket_agent(pool: asyncpg.Pool, ticket: str) -> str | None:
    value: str | None = await pool.fetchval(
        "SELECT agent_id FROM router_tickets WHERE ticket_id = $1", ticket
    )
    return value


async def load(pool: asyncpg.Pool, agent_id: str) -> int:
    value: int = await pool.fetchval("SELECT load FROM router_agents WHERE agent_id = $1", agent_id)
    return value


async def actions(pool: asyncpg.Pool, ticket: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT action FROM router_history WHERE ticket_id = $1 ORDER BY id", ticket
    )
    return [r["action"] for r in rows]


async def test_queued_ticket_assigned_when_the_agent_resolves_one(pool: asyncpg.Pool) -> None:
    skill = uid("sk").replace("-", "_")
    a = await agent(pool, skill, capacity=1)
    first, second, third = uid("tk"), uid("tk"), uid("tk")
    out = await record_decision(pool, msg(first), decision(skill), LIMITS)
    assert out is not None and out.routed is not None and out.routed.agent_id == a
    # Two more wait; the urgent one is served first although it came later.
    await record_decision(pool, msg(second, ago=20), decision(skill), LIMITS)
    await record_decision(pool, msg(third), decision(skill, priority=Priority.urgent), LIMITS)
    assert await ticket_agent(pool, second) is None
    assert await ticket_agent(pool, third) is None
    assert await load(pool, a) == 1

    freed = await set_status(pool, first, resolved=True)
    assert [(t, ag) for t, ag, _ in freed.assigned] == [(third, a)]
    assert await ticket_agent(pool, third) == a
    assert await ticket_agent(pool, second) is None
    assert await load(pool, a) == 1
    # A resolve delivered twice frees nothing twice.
    again = await set_status(pool, first, resolved=True)
    assert again.ignored and await load(pool, a) == 1
    await set_status(pool, third, resolved=True)
    assert await ticket_agent(pool, second) == a
    assert "queued" in await actions(pool, second)
    assert (await actions(pool, second))[-1] == "assigned"


async def test_queue_order_is_priority_then_sla_due_time(pool: asyncpg.Pool) -> None:
    skill = uid("sk").replace("-", "_")
    late, early = uid("tk"), uid("tk")
    await record_decision(pool, msg(late, ago=1), decision(skill), LIMITS)
    await record_decision(pool, msg(early, ago=25), decision(skill), LIMITS)  # due sooner
    a = await agent(pool, skill, capacity=1)
    out = Outcome()
    async with pool.acquire() as conn, conn.transaction():
        await fill_agent(conn, a, out)
    assert [t for t, _, _ in out.assigned] == [early]


async def test_agent_coming_online_or_getting_capacity_takes_waiting_tickets(
    pool: asyncpg.Pool,
) -> None:
    skill = uid("sk").replace("-", "_")
    a = await agent(pool, skill, capacity=1, presence="offline")
    t1, t2 = uid("tk"), uid("tk")
    await record_decision(pool, msg(t1), decision(skill), LIMITS)
    await record_decision(pool, msg(t2), decision(skill), LIMITS)
    assert await ticket_agent(pool, t1) is None
    out = Outcome()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE router_agents SET presence = 'online' WHERE agent_id = $1", a)
        await fill_agent(conn, a, out)
    assert len(out.assigned) == 1 and await load(pool, a) == 1
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE router_agents SET capacity = 2 WHERE agent_id = $1", a)
        await fill_agent(conn, a, out)
    assert {await ticket_agent(pool, t1), await ticket_agent(pool, t2)} == {a}
    assert await load(pool, a) == 2


async def test_conversation_sticks_to_its_agent(pool: asyncpg.Pool) -> None:
    skill = uid("sk").replace("-", "_")
    # Three equally free agents; the one who held the conversation gets it back.
    agents = [await agent(pool, skill, capacity=3) for _ in range(3)]
    ticket = uid("tk")
    first = await record_decision(pool, msg(ticket), decision(skill), LIMITS)
    assert first is not None and first.routed is not None
    holder = first.routed.agent_id
    assert holder in agents
    # Other agents are now less loaded than the holder; a follow-up stays with the holder.
    follow = await record_decision(pool, msg(ticket), decision(skill), LIMITS)
    assert follow is not None and follow.routed is not None and follow.routed.agent_id == holder
    assert await load(pool, holder) == 1  # the follow-up took no second slot
    # Resolved, then the customer writes again: back to the same agent, not the least loaded.
    await set_status(pool, ticket, resolved=True)
    other = uid("tk")
    await record_decision(pool, msg(other), decision(skill), LIMITS)  # loads someone else
    back = await record_decision(pool, msg(ticket), decision(skill), LIMITS)
    assert back is not None and back.routed is not None and back.routed.agent_id == holder
    assert any("held the conversation" in r for r in back.routed.reasons)


async def test_least_loaded_agent_first(pool: asyncpg.Pool) -> None:
    skill = uid("sk").replace("-", "_")
    busy = await agent(pool, skill, capacity=4)
    idle = await agent(pool, skill, capacity=4)
    await pool.execute("UPDATE router_agents SET load = 2 WHERE agent_id = $1", busy)
    out = await record_decision(pool, msg(uid("tk")), decision(skill), LIMITS)
    assert out is not None and out.routed is not None and out.routed.agent_id == idle
    await pool.execute("UPDATE router_agents SET load = 0 WHERE agent_id = $1", busy)


async def test_sla_breach_moves_ticket_to_l2(pool: asyncpg.Pool) -> None:
    skill = uid("sk").replace("-", "_")
    l1 = await agent(pool, skill, tier=Tier.L1, capacity=1)
    l2 = await agent(pool, skill, tier=Tier.L2, capacity=1)
    ticket, waiting = uid("tk"), uid("tk")
    await record_decision(pool, msg(ticket), decision(skill), LIMITS)
    await record_decision(pool, msg(waiting), decision(skill), LIMITS)
    assert await ticket_agent(pool, ticket) == l1
    ev = EscalationEvent(
        correlation_id=ticket,
        producer="sla_watch",
        escalation_id=uid("esc"),
        ticket_id=ticket,
        conversation_id="conv-" + ticket,
        reason=EscalationReason.first_response_breached,
    )
    out = await escalate(pool, ev)
    assert (ticket, l2, Tier.L2) in out.assigned
    row = await pool.fetchrow(
        "SELECT tier, priority, agent_id, escalated FROM router_tickets WHERE ticket_id = $1",
        ticket,
    )
    assert row is not None
    assert dict(row) == {"tier": "L2", "priority": "important", "agent_id": l2, "escalated": True}
    # The L1 agent's freed slot went to the waiting ticket at once.
    assert await ticket_agent(pool, waiting) == l1
    assert "escalated" in await actions(pool, ticket)
    assert (await escalate(pool, ev)).ignored  # already L2: a redelivery changes nothing
    assert await load(pool, l2) == 1


async def test_manual_reassignment_is_recorded_and_respects_capacity(pool: asyncpg.Pool) -> None:
    skill = uid("sk").replace("-", "_")
    a = await agent(pool, skill, capacity=1)
    b = await agent(pool, skill, capacity=1)
    t1, t2 = uid("tk"), uid("tk")
    await record_decision(pool, msg(t1), decision(skill), LIMITS)
    await record_decision(pool, msg(t2), decision(skill), LIMITS)
    holder = await ticket_agent(pool, t1)
    target = b if holder == a else a
    with pytest.raises(AdminError) as refused:
        await reassign(pool, t1, target, "lead moved it")
    assert refused.value.status == 409  # target full
    await set_status(pool, t2, resolved=True)
    await reassign(pool, t1, target, "lead moved it")
    assert await ticket_agent(pool, t1) == target
    hist = await pool.fetchrow(
        "SELECT agent_id, from_agent, detail FROM router_history WHERE ticket_id = $1"
        " AND action = 'reassigned'",
        t1,
    )
    assert hist is not None
    assert dict(hist) == {"agent_id": target, "from_agent": holder, "detail": "lead moved it"}
    assert await load(pool, target) == 1 and await load(pool, holder or "") == 0
