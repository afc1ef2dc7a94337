"""PostgreSQL adapter of the router: ticket state, decisions and outbox, atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.router.assignment import (
    AgentView,
    Presence,
    due_at,
    priority_rank,
    rank_agents,
    required_skills,
)
from services.router.domain import Decision
from shared.events import (
    PRIORITY_RANK,
    EscalationEvent,
    EscalationReason,
    MessageEvent,
    Priority,
    RoutedEvent,
    Tier,
    escalation_id_for,
    new_event_id,
    utcnow,
)
from shared.outbox import OutboxRow, enqueue
from shared.topics import ESCALATIONS, ROUTED

PRODUCER = "router"
Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection, direct or from a pool."""
_TIER_RANK = {Tier.bot: 0, Tier.L1: 1, Tier.L2: 2}


@dataclass(slots=True)
class Outcome:
    """What one transaction did, for metrics after commit."""

    routed: RoutedEvent | None = None
    assigned: list[tuple[str, str, Tier]] = field(default_factory=list)  # ticket, agent, tier
    reassigned: list[str] = field(default_factory=list)  # reasons
    ignored: bool = False


async def _history(
    conn: Conn,
    ticket_id: str,
    action: str,
    *,
    agent_id: str | None = None,
    from_agent: str | None = None,
    tier: Tier | None = None,
    detail: str = "",
) -> None:
    await conn.execute(
        "INSERT INTO router_history (ticket_id, action, agent_id, from_agent, tier, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        ticket_id,
        action,
        agent_id,
        from_agent,
        tier.value if tier else None,
        detail,
    )


async def try_assign(conn: Conn, tier: Tier, skills: list[str], sticky: str | None) -> str | None:
    """Take one slot of the best free agent; the conditional UPDATE is the capacity guard.

    Two routers may pick the same agent: the row lock serialises them and PostgreSQL
    re-checks ``load < capacity`` on the locked row, so the loser tries the next agent.
    """
    rows = await conn.fetch(
        "SELECT agent_id, tier, skills, capacity, load, presence FROM router_agents"
        " WHERE tier = $1 AND presence = 'online' AND load < capacity AND skills @> $2::text[]",
        tier.value,
        skills,
    )
    agents = [_agent_view(r) for r in rows]
    for agent_id in rank_agents(agents, tier, skills, sticky):
        got: str | None = await conn.fetchval(
            "UPDATE router_agents SET load = load + 1, updated_at = now()"
            " WHERE agent_id = $1 AND presence = 'online' AND load < capacity RETURNING agent_id",
            agent_id,
        )
        if got is not None:
            return got
    return None


def _agent_view(r: asyncpg.Record) -> AgentView:
    return AgentView(
        agent_id=r["agent_id"],
        tier=Tier(r["tier"]),
        skills=frozenset(r["skills"]),
        capacity=r["capacity"],
        load=r["load"],
        presence=Presence(r["presence"]),
    )


async def _release(conn: Conn, agent_id: str) -> None:
    await conn.execute(
        "UPDATE router_agents SET load = load - 1, updated_at = now()"
        " WHERE agent_id = $1 AND load > 0",
        agent_id,
    )


def _event_from(
    last_routed: Any,
    *,
    agent_id: str | None,
    tier: Tier,
    priority: Priority,
    note: str,
) -> RoutedEvent | None:
    if last_routed is None:
        return None
    data = json.loads(last_routed) if isinstance(last_routed, str) else dict(last_routed)
    base = RoutedEvent.model_validate(data)
    return base.model_copy(
        update={
            "event_id": new_event_id(),
            "occurred_at": utcnow(),
            "agent_id": agent_id,
            "tier": tier,
            "priority": priority,
            "queue": f"{tier.value}.{priority.value}",
            "reasons": [*base.reasons, note],
        }
    )


async def _publish_routed(conn: Conn, ticket_id: str, ev: RoutedEvent | None) -> None:
    if ev is None:
        return
    await conn.execute(
        "UPDATE router_tickets SET last_routed = $2 WHERE ticket_id = $1",
        ticket_id,
        ev.model_dump(mode="json"),
    )
    await enqueue(conn, PRODUCER, [OutboxRow(ROUTED, ticket_id, ev)])  # type: ignore[arg-type]


async def fill_agent(conn: Conn, agent_id: str, out: Outcome) -> None:
    """Give a free agent the best waiting tickets they can take (inside a transaction)."""
    agent = await conn.fetchrow(
        "SELECT agent_id, tier, skills, capacity, load, presence FROM router_agents"
        " WHERE agent_id = $1 FOR UPDATE",
        agent_id,
    )
    if agent is None or agent["presence"] != Presence.online.value:
        return
    free = agent["capacity"] - agent["load"]
    if free <= 0:
        return
    tickets = await conn.fetch(
        "SELECT ticket_id, priority, tier, last_routed FROM router_tickets"
        " WHERE status = 'open' AND agent_id IS NULL AND tier = $1 AND skills <@ $2::text[]"
        " ORDER BY priority_rank DESC, due_at, queued_at LIMIT $3 FOR UPDATE SKIP LOCKED",
        agent["tier"],
        list(agent["skills"]),
        free,
    )
    for t in tickets:
        got = await conn.fetchval(
            "UPDATE router_agents SET load = load + 1, updated_at = now()"
            " WHERE agent_id = $1 AND load < capacity RETURNING agent_id",
            agent_id,
        )
        if got is None:
            break
        await conn.execute(
            "UPDATE router_tickets SET agent_id = $2, last_agent_id = $2, assigned_at = now(),"
            " updated_at = now() WHERE ticket_id = $1",
            t["ticket_id"],
            agent_id,
        )
        tier = Tier(t["tier"])
        await _history(
            conn, t["ticket_id"], "assigned", agent_id=agent_id, tier=tier, detail="from the queue"
        )
        ev = _event_from(
            t["last_routed"],
            agent_id=agent_id,
            tier=tier,
            priority=Priority(t["priority"]),
            note=f"assigned to {agent_id} from the queue",
        )
        await _publish_routed(conn, t["ticket_id"], ev)
        out.assigned.append((t["ticket_id"], agent_id, tier))


async def record_decision(
    pool: asyncpg.Pool,
    msg: MessageEvent,
    decision: Decision,
    limits: dict[Priority, float],
) -> Outcome | None:
    """Persist the decision, assign or queue the ticket, and queue its events atomically.

    None if this message was decided before (redelivery).
    """
    async with pool.acquire() as conn, conn.transaction():
        return await record_decision_in(conn, msg, decision, limits)


async def record_decision_in(
    conn: Conn,
    msg: MessageEvent,
    decision: Decision,
    limits: dict[Priority, float],
) -> Outcome | None:
    current = await conn.fetchrow(
        "SELECT status, priority, tier, agent_id, last_agent_id, due_at, escalated"
        " FROM router_tickets WHERE ticket_id = $1 FOR UPDATE",
        msg.ticket_id,
    )
    priority, tier, category = decision.priority, decision.tier, decision.category
    reasons = list(decision.reasons)
    is_open = current is not None and current["status"] == "open"
    agent_id: str | None = None
    sticky: str | None = None
    due: datetime = due_at(msg.received_at, priority, limits)
    if current is not None:
        sticky = current["agent_id"] or current["last_agent_id"]
    if current is not None and is_open:
        # An open ticket never loses urgency or tier because of a calmer follow-up.
        if PRIORITY_RANK[Priority(current["priority"])] < PRIORITY_RANK[priority]:
            priority = Priority(current["priority"])
            reasons.append(f"kept priority {priority.value} of the open ticket")
        if _TIER_RANK[Tier(current["tier"])] > _TIER_RANK[tier]:
            tier = Tier(current["tier"])
            reasons.append(f"kept tier {tier.value} of the open ticket")
        agent_id = current["agent_id"]
        if current["due_at"] is not None:
            due = min(current["due_at"], due_at(msg.received_at, priority, limits))
    queue = f"{tier.value}.{priority.value}"
    inserted = await conn.fetchval(
        "INSERT INTO router_decisions (message_id, ticket_id, message_event_id, category,"
        " priority, tier, queue, agent_id, reasons) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
        " ON CONFLICT (message_id) DO NOTHING RETURNING 1",
        msg.message_id,
        msg.ticket_id,
        msg.source_event_id,
        category.value,
        priority.value,
        tier.value,
        queue,
        agent_id,
        reasons,
    )
    if inserted is None:
        return None
    out = Outcome()
    skills = list(required_skills(category, getattr(decision, "skills", ())))
    if agent_id is not None and tier is not Tier(current["tier"] if current else tier.value):
        # The ticket moved to another tier: its agent gives it up.
        await _release(conn, agent_id)
        await _history(
            conn,
            msg.ticket_id,
            "released",
            from_agent=agent_id,
            tier=tier,
            detail=f"moved to tier {tier.value}",
        )
        released: str | None = agent_id
        agent_id = None
    else:
        released = None
    newly_assigned = False
    if agent_id is None:
        agent_id = await try_assign(conn, tier, skills, sticky)
        newly_assigned = agent_id is not None
        if agent_id is not None:
            why = " (held the conversation before)" if agent_id == sticky else ""
            reasons.append(f"assigned to {agent_id}{why}")
        else:
            reasons.append(f"waiting in queue {queue}: no free {tier.value} agent with the skills")
    routed = RoutedEvent(
        correlation_id=msg.correlation_id,
        producer=PRODUCER,
        ticket_id=msg.ticket_id,
        conversation_id=msg.conversation_id,
        message_event_id=msg.source_event_id,
        message_id=msg.message_id,
        shop_id=msg.shop_id,
        channel=msg.channel,
        category=category,
        priority=priority,
        tier=tier,
        queue=queue,
        agent_id=agent_id,
        reasons=reasons,
        risk_signals=decision.risk_signals,
        sentiment=decision.sentiment,
        vip_level=msg.customer.vip_level if msg.customer else 0,
        customer_ref=msg.customer.ref if msg.customer else None,
        message_received_at=msg.received_at,
    )
    out.routed = routed
    await conn.execute(
        "INSERT INTO router_tickets (ticket_id, conversation_id, shop_id, channel, category,"
        " priority, tier, queue, agent_id, skills, priority_rank, due_at, queued_at,"
        " assigned_at, last_agent_id, last_routed)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12, now(),"
        " CASE WHEN $9::text IS NULL THEN NULL ELSE now() END, $9, $13)"
        " ON CONFLICT (ticket_id) DO UPDATE SET status = 'open', category = EXCLUDED.category,"
        " priority = EXCLUDED.priority, tier = EXCLUDED.tier, queue = EXCLUDED.queue,"
        " agent_id = EXCLUDED.agent_id, skills = EXCLUDED.skills,"
        " priority_rank = EXCLUDED.priority_rank, due_at = EXCLUDED.due_at,"
        " queued_at = CASE WHEN router_tickets.status = 'open' THEN router_tickets.queued_at"
        "   ELSE now() END,"
        " assigned_at = CASE WHEN EXCLUDED.agent_id IS DISTINCT FROM router_tickets.agent_id"
        "   THEN EXCLUDED.assigned_at ELSE router_tickets.assigned_at END,"
        " last_agent_id = COALESCE(EXCLUDED.agent_id, router_tickets.last_agent_id),"
        " last_routed = EXCLUDED.last_routed, updated_at = now()",
        msg.ticket_id,
        msg.conversation_id,
        msg.shop_id,
        msg.channel.value,
        category.value,
        priority.value,
        tier.value,
        queue,
        agent_id,
        skills,
        priority_rank(priority),
        due,
        routed.model_dump(mode="json"),
    )
    if newly_assigned and agent_id is not None:
        await _history(conn, msg.ticket_id, "assigned", agent_id=agent_id, tier=tier)
        out.assigned.append((msg.ticket_id, agent_id, tier))
    elif agent_id is None:
        await _history(conn, msg.ticket_id, "queued", tier=tier, detail=queue)
    rows = [OutboxRow(ROUTED, msg.ticket_id, routed)]
    if tier is Tier.L2 and priority is Priority.urgent:
        rows.append(
            OutboxRow(
                ESCALATIONS,
                msg.ticket_id,
                EscalationEvent(
                    correlation_id=msg.correlation_id,
                    producer=PRODUCER,
                    escalation_id=escalation_id_for(
                        msg.ticket_id, EscalationReason.routed_to_l2.value, msg.message_id
                    ),
                    ticket_id=msg.ticket_id,
                    conversation_id=msg.conversation_id,
                    reason=EscalationReason.routed_to_l2,
                    priority=priority,
                    tier=tier,
                    category=category,
                    shop_id=msg.shop_id,
                    channel=msg.channel,
                    agent_id=agent_id,
                    customer_ref=msg.customer.ref if msg.customer else None,
                ),
            )
        )
    await enqueue(conn, PRODUCER, rows)  # type: ignore[arg-type]
    if released is not None:
        await fill_agent(conn, released, out)
    return out


async def set_status(pool: asyncpg.Pool, ticket_id: str, *, resolved: bool) -> Outcome:
    """Resolve (frees the agent's slot, which takes the next waiting ticket) or reopen."""
    async with pool.acquire() as conn, conn.transaction():
        return await set_status_in(conn, ticket_id, resolved=resolved)


async def set_status_in(conn: Conn, ticket_id: str, *, resolved: bool) -> Outcome:
    out = Outcome()
    if resolved:
        done = await conn.fetchrow(
            "WITH old AS (SELECT ticket_id, agent_id FROM router_tickets"
            " WHERE ticket_id = $1 AND status = 'open' FOR UPDATE)"
            " UPDATE router_tickets t SET status = 'resolved', agent_id = NULL,"
            " last_agent_id = COALESCE(old.agent_id, t.last_agent_id), updated_at = now()"
            " FROM old WHERE t.ticket_id = old.ticket_id RETURNING old.agent_id",
            ticket_id,
        )
        if done is None:
            out.ignored = True  # unknown or already resolved (redelivery)
            return out
        agent_id = done["agent_id"]
        await _history(conn, ticket_id, "resolved", from_agent=agent_id)
        if agent_id is not None:
            await _release(conn, agent_id)
            await fill_agent(conn, agent_id, out)
        return out
    row = await conn.fetchrow(
        "UPDATE router_tickets SET status = 'open', reopen_count = reopen_count + 1,"
        " queued_at = now(), updated_at = now() WHERE ticket_id = $1 AND status = 'resolved'"
        " RETURNING tier, priority, skills, last_agent_id, last_routed",
        ticket_id,
    )
    if row is None:
        out.ignored = True
        return out
    tier, priority = Tier(row["tier"]), Priority(row["priority"])
    agent_id = await try_assign(conn, tier, list(row["skills"]), row["last_agent_id"])
    await _history(conn, ticket_id, "reopened", tier=tier)
    if agent_id is not None:
        await conn.execute(
            "UPDATE router_tickets SET agent_id = $2, last_agent_id = $2,"
            " assigned_at = now() WHERE ticket_id = $1",
            ticket_id,
            agent_id,
        )
        await _history(conn, ticket_id, "assigned", agent_id=agent_id, tier=tier)
        out.assigned.append((ticket_id, agent_id, tier))
        ev = _event_from(
            row["last_routed"],
            agent_id=agent_id,
            tier=tier,
            priority=priority,
            note=f"reopened; assigned to {agent_id}",
        )
        await _publish_routed(conn, ticket_id, ev)
    return out


async def escalate(pool: asyncpg.Pool, ev: EscalationEvent) -> Outcome:
    """An SLA breach moves an open ticket below L2 up to L2 (reassigned or re-queued)."""
    out = Outcome()
    async with pool.acquire() as conn, conn.transaction():
        t = await conn.fetchrow(
            "SELECT status, tier, priority, agent_id, skills, last_routed FROM router_tickets"
            " WHERE ticket_id = $1 FOR UPDATE",
            ev.ticket_id,
        )
        if t is None or t["status"] != "open" or t["tier"] == Tier.L2.value:
            out.ignored = True
            return out
        old_agent: str | None = t["agent_id"]
        priority = Priority(t["priority"])
        if priority is Priority.normal:
            priority = Priority.important
        if old_agent is not None:
            await _release(conn, old_agent)
        skills = list(t["skills"])
        new_agent = await try_assign(conn, Tier.L2, skills, None)
        await conn.execute(
            "UPDATE router_tickets SET tier = 'L2', priority = $2, priority_rank = $3,"
            " queue = $4, agent_id = $5, last_agent_id = COALESCE($5, last_agent_id),"
            " escalated = true, assigned_at = CASE WHEN $5::text IS NULL THEN assigned_at"
            " ELSE now() END, updated_at = now() WHERE ticket_id = $1",
            ev.ticket_id,
            priority.value,
            priority_rank(priority),
            f"L2.{priority.value}",
            new_agent,
        )
        what = ev.reason.value.replace("_", " ")
        await _history(
            conn,
            ev.ticket_id,
            "escalated",
            agent_id=new_agent,
            from_agent=old_agent,
            tier=Tier.L2,
            detail=what,
        )
        if new_agent is not None:
            out.reassigned.append("escalation")
            out.assigned.append((ev.ticket_id, new_agent, Tier.L2))
        note = f"moved to L2: {what}; " + (
            f"reassigned to {new_agent}" if new_agent else "waiting for an L2 agent"
        )
        routed = _event_from(
            t["last_routed"], agent_id=new_agent, tier=Tier.L2, priority=priority, note=note
        )
        await _publish_routed(conn, ev.ticket_id, routed)
        if old_agent is not None:
            await fill_agent(conn, old_agent, out)
    return out


class AdminError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def reassign(pool: asyncpg.Pool, ticket_id: str, agent_id: str, note: str) -> Outcome:
    """Manual reassignment by a team lead (capacity still holds)."""
    out = Outcome()
    async with pool.acquire() as conn, conn.transaction():
        t = await conn.fetchrow(
            "SELECT status, tier, priority, agent_id, last_routed FROM router_tickets"
            " WHERE ticket_id = $1 FOR UPDATE",
            ticket_id,
        )
        if t is None:
            raise AdminError(404, f"no ticket {ticket_id}")
        if t["status"] != "open":
            raise AdminError(409, f"ticket {ticket_id} is {t['status']}, not open")
        if t["agent_id"] == agent_id:
            raise AdminError(409, f"ticket {ticket_id} is already with {agent_id}")
        exists = await conn.fetchval("SELECT 1 FROM router_agents WHERE agent_id = $1", agent_id)
        if exists is None:
            raise AdminError(404, f"no agent {agent_id}")
        got = await conn.fetchval(
            "UPDATE router_agents SET load = load + 1, updated_at = now()"
            " WHERE agent_id = $1 AND presence <> 'offline' AND load < capacity"
            " RETURNING agent_id",
            agent_id,
        )
        if got is None:
            raise AdminError(409, f"agent {agent_id} is offline or has no free capacity")
        old: str | None = t["agent_id"]
        if old is not None:
            await _release(conn, old)
        await conn.execute(
            "UPDATE router_tickets SET agent_id = $2, last_agent_id = $2, assigned_at = now(),"
            " updated_at = now() WHERE ticket_id = $1",
            ticket_id,
            agent_id,
        )
        tier, priority = Tier(t["tier"]), Priority(t["priority"])
        await _history(
            conn,
            ticket_id,
            "reassigned",
            agent_id=agent_id,
            from_agent=old,
            tier=tier,
            detail=note or "by hand",
        )
        ev = _event_from(
            t["last_routed"],
            agent_id=agent_id,
            tier=tier,
            priority=priority,
            note=f"reassigned by hand to {agent_id}" + (f": {note}" if note else ""),
        )
        await _publish_routed(conn, ticket_id, ev)
        out.reassigned.append("manual")
        if old is not None:
            await fill_agent(conn, old, out)
    return out


async def fill_all(pool: asyncpg.Pool) -> Outcome:
    """Sweep: every online agent with free capacity takes waiting tickets (one tx each)."""
    out = Outcome()
    agents = await pool.fetch(
        "SELECT a.agent_id FROM router_agents a WHERE a.presence = 'online'"
        " AND a.load < a.capacity AND EXISTS (SELECT 1 FROM router_tickets t"
        " WHERE t.status = 'open' AND t.agent_id IS NULL AND t.tier = a.tier"
        " AND t.skills <@ a.skills)"
    )
    for a in agents:
        async with pool.acquire() as conn, conn.transaction():
            await fill_agent(conn, a["agent_id"], out)
    return out


async def queue_stats(conn: asyncpg.Pool | Conn) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT tier, count(*) AS depth,"
        " COALESCE(EXTRACT(EPOCH FROM now() - min(queued_at)), 0)::float8 AS oldest_seconds"
        " FROM router_tickets WHERE status = 'open' AND agent_id IS NULL GROUP BY tier"
    )
    return rows
