"""PostgreSQL adapter of the router: ticket state, decisions and outbox, atomically."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import orjson

from services.router.assignment import (
    AgentView,
    Presence,
    due_at,
    priority_rank,
    rank_agents,
    required_skills,
)
from services.router.domain import Decision, after_reopen
from shared.db import Conn
from shared.events import (
    PRIORITY_RANK,
    SCHEMA_VERSION,
    Category,
    EscalationEvent,
    EscalationReason,
    MessageEvent,
    Priority,
    RoutedEvent,
    Tier,
    dump,
    escalation_id_for,
    new_event_id,
    utcnow,
    uuid5_str,
)
from shared.outbox import OutboxRow, enqueue
from shared.topics import ESCALATIONS, ROUTED

PRODUCER = "router"
WROTE_AGAIN = "the customer wrote again"
_TIER_RANK = {Tier.bot: 0, Tier.L1: 1, Tier.L2: 2}
_PRIORITY_RANKS = {p: priority_rank(p) for p in Priority}


class Routed(NamedTuple):
    """What metrics and the log say of a routed message (without building its event)."""

    ticket_id: str
    category: Category
    priority: Priority
    tier: Tier
    queue: str
    agent_id: str | None


@dataclass(slots=True)
class Outcome:
    """What one transaction did, for metrics after commit."""

    decided: Routed | None = None  # a message decided in this transaction
    routed_json: bytes | None = None  # its routed event, as written to the outbox
    assigned: list[tuple[str, str, Tier]] = field(default_factory=list)  # ticket, agent, tier
    reassigned: list[str] = field(default_factory=list)  # reasons
    ignored: bool = False
    duplicate: bool = False  # a status event applied before (redelivery): nothing done

    @property
    def routed(self) -> RoutedEvent | None:
        """The routed event of the decided message (parsed on demand)."""
        if self.routed_json is None:
            return None
        return RoutedEvent.model_validate_json(self.routed_json)


def came_back(times: int) -> str:
    """The history's words for a ticket's ``times``-th reopening."""
    return f"came back {times} time{'' if times == 1 else 's'}"


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
    await enqueue(conn, PRODUCER, [OutboxRow(ROUTED, ticket_id, ev)])


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
    """One message inside the caller's transaction (``record_decisions_in`` of one)."""
    return (await record_decisions_in(conn, [(msg, decision)], limits))[0]


def _waves(tickets: Sequence[str]) -> list[list[int]]:
    """Split positions into waves in which each ticket appears once, keeping each ticket's
    order (its k-th message goes to wave k): a wave is applied as one set."""
    waves: list[list[int]] = []
    seen: dict[str, int] = {}
    for i, ticket in enumerate(tickets):
        k = seen.get(ticket, 0)
        seen[ticket] = k + 1
        if k == len(waves):
            waves.append([])
        waves[k].append(i)
    return waves


async def record_decisions_in(
    conn: Conn,
    items: Sequence[tuple[MessageEvent, Decision]],
    limits: dict[Priority, float],
) -> list[Outcome | None]:
    """Persist many decisions, assign or queue their tickets and queue their events, inside
    the caller's transaction, with a fixed number of statements per wave (not per message).

    The result is aligned with ``items``: None for a message decided before (redelivery).
    Messages of the same ticket are applied in order (one per wave), so the result is the
    same as applying the messages one by one.
    """
    results: list[Outcome | None] = [None] * len(items)
    for wave in _waves([m.ticket_id for m, _ in items]):
        outs = await _record_wave(conn, [items[i] for i in wave], limits)
        for i, out in zip(wave, outs, strict=True):
            results[i] = out
    return results


def _rows_json(rows: Iterable[dict[str, Any]]) -> str:
    """Rows for ``json_to_recordset``: one text parameter that PostgreSQL parses, instead
    of one array per column that the driver encodes element by element. Enums go as their
    values; an event already serialised goes in as ``orjson.Fragment`` (no second escaping)."""
    return orjson.dumps(list(rows)).decode()


def _routed_json(p: _Pending, now: datetime) -> bytes:
    """The routed event of a new decision, byte for byte as pydantic serialises
    ``RoutedEvent`` (its fields in order; ``OPT_UTC_Z`` writes UTC as ``Z`` as pydantic
    does; ``tests/unit/test_router_routed_json.py`` holds the two equal) at a tenth of the
    cost of building the model and dumping it. The values are already validated (the
    message, the decision); the event id is derived from the message id (the routed event
    of a message is one event, whoever decides it)."""
    msg = p.msg
    customer = msg.customer
    return orjson.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "event_id": uuid5_str(f"routed:{msg.message_id}"),
            "occurred_at": now,
            "correlation_id": msg.correlation_id,
            "producer": PRODUCER,
            "ticket_id": msg.ticket_id,
            "conversation_id": msg.conversation_id,
            "message_event_id": msg.source_event_id,
            "message_id": msg.message_id,
            "shop_id": msg.shop_id,
            "channel": msg.channel,
            "category": p.decision.category,
            "priority": p.priority,
            "tier": p.tier,
            "queue": p.queue,
            "agent_id": p.agent_id,
            "reasons": p.reasons,
            "risk_signals": p.decision.risk_signals,
            "sentiment": p.decision.sentiment,
            "vip_level": customer.vip_level if customer else 0,
            "customer_ref": customer.ref if customer else None,
            "message_received_at": msg.received_at,
        },
        option=orjson.OPT_UTC_Z,
    )


@dataclass(slots=True)
class _Pending:
    """One new message of a wave while it is applied."""

    msg: MessageEvent
    decision: Decision
    priority: Priority
    tier: Tier
    queue: str
    due: datetime
    reasons: list[str]
    skills: list[str]
    sticky: str | None
    agent_id: str | None
    released: str | None = None
    newly_assigned: bool = False


async def _record_wave(
    conn: Conn,
    items: Sequence[tuple[MessageEvent, Decision]],
    limits: dict[Priority, float],
) -> list[Outcome | None]:
    """Messages of distinct tickets as one set (see ``record_decisions_in``)."""
    # 1. The tickets' current state, locked in a fixed order (two instances never deadlock
    #    on each other's ticket locks).
    rows = await conn.fetch(
        "SELECT ticket_id, status, priority, tier, agent_id, last_agent_id, due_at,"
        " reopen_count FROM router_tickets WHERE ticket_id = ANY($1::text[])"
        " ORDER BY ticket_id FOR UPDATE",
        [m.ticket_id for m, _ in items],
    )
    current = {r["ticket_id"]: r for r in rows}
    pend: list[_Pending] = []
    for msg, decision in items:
        cur = current.get(msg.ticket_id)
        priority, tier = decision.priority, decision.tier
        reasons = list(decision.reasons)
        agent_id: str | None = None
        sticky: str | None = None
        due: datetime = due_at(msg.received_at, priority, limits)
        if cur is not None:
            sticky = cur["agent_id"] or cur["last_agent_id"]
        if cur is not None and cur["status"] == "open":
            # An open ticket never loses urgency or tier because of a calmer follow-up.
            if PRIORITY_RANK[Priority(cur["priority"])] < PRIORITY_RANK[priority]:
                priority = Priority(cur["priority"])
                reasons.append(f"kept priority {priority.value} of the open ticket")
            if _TIER_RANK[Tier(cur["tier"])] > _TIER_RANK[tier]:
                tier = Tier(cur["tier"])
                reasons.append(f"kept tier {tier.value} of the open ticket")
            agent_id = cur["agent_id"]
            if cur["due_at"] is not None:
                due = min(cur["due_at"], due_at(msg.received_at, priority, limits))
        pend.append(
            _Pending(
                msg=msg,
                decision=decision,
                priority=priority,
                tier=tier,
                queue=f"{tier.value}.{priority.value}",
                due=due,
                reasons=reasons,
                skills=list(required_skills(decision.category, decision.skills)),
                sticky=sticky,
                agent_id=agent_id,
            )
        )
    # 2. The decisions, deduplicated by message id: a redelivered message stops here.
    inserted = await conn.fetch(
        "INSERT INTO router_decisions (message_id, ticket_id, message_event_id, category,"
        " priority, tier, queue, agent_id, reasons)"
        " SELECT m, t, e, c, p, r, q, a, j FROM json_to_recordset($1::text::json)"
        " AS u(m text, t text, e text, c text, p text, r text, q text, a text, j jsonb)"
        " ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
        _rows_json(
            {
                "m": p.msg.message_id,
                "t": p.msg.ticket_id,
                "e": p.msg.source_event_id,
                "c": p.decision.category,
                "p": p.priority,
                "r": p.tier,
                "q": p.queue,
                "a": p.agent_id,
                "j": p.reasons,
            }
            for p in pend
        ),
    )
    new_ids = {r["message_id"] for r in inserted}
    todo = [p for p in pend if p.msg.message_id in new_ids]
    results: dict[str, Outcome] = {p.msg.message_id: Outcome() for p in todo}
    # 3. A ticket that moved to another tier: its agent gives it up (rare; one by one).
    for p in todo:
        cur = current.get(p.msg.ticket_id)
        if p.agent_id is not None and cur is not None and p.tier is not Tier(cur["tier"]):
            await _release(conn, p.agent_id)
            await _history(
                conn,
                p.msg.ticket_id,
                "released",
                from_agent=p.agent_id,
                tier=p.tier,
                detail=f"moved to tier {p.tier.value}",
            )
            p.released, p.agent_id = p.agent_id, None
    # 4. Assignment of every ticket without an agent against the roster.
    await _assign_many(conn, [p for p in todo if p.agent_id is None])
    # 5. The tickets, their history and their events, one statement each.
    routed: list[bytes] = []  # the events' JSON, kept as the ticket's last_routed
    now = utcnow()
    outbox: list[tuple[str, str, bytes, str]] = []
    history: list[tuple[str, str, str | None, Tier, str]] = []
    for p in todo:
        msg = p.msg
        cur = current.get(msg.ticket_id)
        if cur is not None and cur["status"] == "resolved":
            # The customer wrote again on a resolved ticket: it is reopened, and counted as
            # a reopen (once: this message is new), as a ticket.reopened event is.
            back = came_back(cur["reopen_count"] + 1)
            p.reasons.append(f"reopened: the customer wrote again ({back})")
            history.append((msg.ticket_id, "reopened", None, p.tier, f"{back}: {WROTE_AGAIN}"))
        if p.newly_assigned:
            why = " (held the conversation before)" if p.agent_id == p.sticky else ""
            p.reasons.append(f"assigned to {p.agent_id}{why}")
            history.append((msg.ticket_id, "assigned", p.agent_id, p.tier, ""))
        elif p.agent_id is None:
            p.reasons.append(
                f"waiting in queue {p.queue}: no free {p.tier.value} agent with the skills"
            )
            history.append((msg.ticket_id, "queued", None, p.tier, p.queue))
        payload = _routed_json(p, now)
        routed.append(payload)
        out = results[msg.message_id]
        out.decided = Routed(
            msg.ticket_id, p.decision.category, p.priority, p.tier, p.queue, p.agent_id
        )
        out.routed_json = payload
        if p.newly_assigned and p.agent_id is not None:
            out.assigned.append((msg.ticket_id, p.agent_id, p.tier))
        outbox.append((ROUTED.name, msg.ticket_id, payload, msg.correlation_id))
        if p.tier is Tier.L2 and p.priority is Priority.urgent:
            esc = EscalationEvent(
                event_id=uuid5_str(f"routed-esc:{msg.message_id}"),
                correlation_id=msg.correlation_id,
                producer=PRODUCER,
                escalation_id=escalation_id_for(
                    msg.ticket_id, EscalationReason.routed_to_l2.value, msg.message_id
                ),
                ticket_id=msg.ticket_id,
                conversation_id=msg.conversation_id,
                reason=EscalationReason.routed_to_l2,
                priority=p.priority,
                tier=p.tier,
                category=p.decision.category,
                shop_id=msg.shop_id,
                channel=msg.channel,
                agent_id=p.agent_id,
                customer_ref=msg.customer.ref if msg.customer else None,
            )
            outbox.append((ESCALATIONS.name, msg.ticket_id, dump(esc), msg.correlation_id))
    if todo:
        await conn.execute(
            "INSERT INTO router_tickets AS t (ticket_id, conversation_id, shop_id, channel,"
            " category, priority, tier, queue, agent_id, skills, priority_rank, due_at,"
            " queued_at, assigned_at, last_agent_id, last_routed)"
            " SELECT u.ticket_id, u.conversation_id, u.shop_id, u.channel, u.category,"
            " u.priority, u.tier, u.queue, u.agent_id, u.skills, u.rank, u.due,"
            " now(), CASE WHEN u.agent_id IS NULL THEN NULL ELSE now() END, u.agent_id,"
            " u.routed"
            " FROM json_to_recordset($1::text::json) AS u(ticket_id text,"
            " conversation_id text, shop_id text, channel text, category text, priority text,"
            " tier text, queue text, agent_id text, skills text[], rank int, due timestamptz,"
            " routed jsonb)"
            " ON CONFLICT (ticket_id) DO UPDATE SET status = 'open',"
            " reopen_count = t.reopen_count + (t.status = 'resolved')::int,"
            " category = EXCLUDED.category, priority = EXCLUDED.priority,"
            " tier = EXCLUDED.tier, queue = EXCLUDED.queue, agent_id = EXCLUDED.agent_id,"
            " skills = EXCLUDED.skills, priority_rank = EXCLUDED.priority_rank,"
            " due_at = EXCLUDED.due_at,"
            " queued_at = CASE WHEN t.status = 'open' THEN t.queued_at ELSE now() END,"
            " assigned_at = CASE WHEN EXCLUDED.agent_id IS DISTINCT FROM t.agent_id"
            "   THEN EXCLUDED.assigned_at ELSE t.assigned_at END,"
            " last_agent_id = COALESCE(EXCLUDED.agent_id, t.last_agent_id),"
            " last_routed = EXCLUDED.last_routed, updated_at = now()",
            _rows_json(
                {
                    "ticket_id": p.msg.ticket_id,
                    "conversation_id": p.msg.conversation_id,
                    "shop_id": p.msg.shop_id,
                    "channel": p.msg.channel,
                    "category": p.decision.category,
                    "priority": p.priority,
                    "tier": p.tier,
                    "queue": p.queue,
                    "agent_id": p.agent_id,
                    "skills": p.skills,
                    "rank": _PRIORITY_RANKS[p.priority],
                    "due": p.due,
                    "routed": orjson.Fragment(ev),
                }
                for p, ev in zip(todo, routed, strict=True)
            ),
        )
    if history:
        await conn.execute(
            "INSERT INTO router_history (ticket_id, action, agent_id, tier, detail)"
            " SELECT * FROM json_to_recordset($1::text::json)"
            " AS u(t text, a text, g text, r text, d text)",
            _rows_json(dict(zip("tagrd", h, strict=True)) for h in history),
        )
    if outbox:
        # One INSERT: the outbox trigger wakes the relay once per statement.
        await conn.execute(
            "INSERT INTO outbox (producer, topic, key, payload, correlation_id)"
            " SELECT $1, u.topic, u.key, convert_to(u.payload::text, 'UTF8'), u.cid"
            " FROM json_to_recordset($2::text::json)"
            " AS u(topic text, key text, payload json, cid text)",
            PRODUCER,
            _rows_json(
                {"topic": t, "key": k, "payload": orjson.Fragment(v), "cid": c}
                for t, k, v, c in outbox
            ),
        )
    for p in todo:
        if p.released is not None:
            await fill_agent(conn, p.released, results[p.msg.message_id])
    return [results.get(p.msg.message_id) for p in pend]


async def _assign_many(conn: Conn, pend: Sequence[_Pending]) -> None:
    """Give each ticket the best free agent, in order, like ``try_assign`` one by one.

    The roster rows of the tiers wanted are locked in agent-id order (so two router
    instances queue behind each other instead of deadlocking), the plan is made on the
    locked, current loads, and one conditional UPDATE takes the slots; PostgreSQL's
    ``load + n <= capacity`` guard and CHECK constraint still refuse any overshoot.
    """
    if not pend:
        return
    tiers = sorted({p.tier.value for p in pend})
    rows = await conn.fetch(
        "SELECT agent_id, tier, skills, capacity, load, presence FROM router_agents"
        " WHERE tier = ANY($1::text[]) AND presence = 'online' AND load < capacity"
        " ORDER BY agent_id FOR UPDATE",
        tiers,
    )
    if not rows:
        return
    agents = {r["agent_id"]: _agent_view(r) for r in rows}
    by_tier: dict[Tier, list[str]] = {}
    for a in agents.values():
        by_tier.setdefault(a.tier, []).append(a.agent_id)
    taken: dict[str, int] = {}
    for p in pend:
        ids = by_tier.get(p.tier)
        if not ids:
            continue
        ranked = rank_agents((agents[i] for i in ids), p.tier, p.skills, p.sticky)
        if not ranked:
            continue
        best = ranked[0]
        a = agents[best]
        agents[best] = AgentView(a.agent_id, a.tier, a.skills, a.capacity, a.load + 1, a.presence)
        taken[best] = taken.get(best, 0) + 1
        p.agent_id = best
        p.newly_assigned = True
    if not taken:
        return
    granted = await conn.fetch(
        "UPDATE router_agents a SET load = a.load + u.n, updated_at = now()"
        " FROM unnest($1::text[], $2::int[]) AS u(agent_id, n)"
        " WHERE a.agent_id = u.agent_id AND a.presence = 'online' AND a.load + u.n <= a.capacity"
        " RETURNING a.agent_id",
        list(taken),
        list(taken.values()),
    )
    if len(granted) != len(taken):  # pragma: no cover - the rows are locked above
        raise RuntimeError("roster changed under a lock; the batch is retried")


async def set_status(
    pool: asyncpg.Pool, ticket_id: str, *, resolved: bool, event_id: str | None = None
) -> Outcome:
    """Resolve (frees the agent's slot, which takes the next waiting ticket) or reopen;
    ``event_id``: the status event's message id (a new one unless told)."""
    async with pool.acquire() as conn, conn.transaction():
        return await set_status_in(
            conn, ticket_id, resolved=resolved, event_id=event_id or new_event_id()
        )


async def set_status_in(conn: Conn, ticket_id: str, *, resolved: bool, event_id: str) -> Outcome:
    """Apply a status event (``ticket.resolved`` or ``ticket.reopened``) inside the
    caller's transaction, once per ``event_id`` (its message id): one applied before
    (``router_status_events``) is a ``duplicate`` and changes nothing. So a redelivered
    ``reopen e1, resolve e2`` neither counts e1 again on the resolved ticket nor, the other
    way round, resolves again the ticket a later reopen opened."""
    out = Outcome()
    first = await conn.fetchval(
        "INSERT INTO router_status_events (message_id, ticket_id, kind) VALUES ($1, $2, $3)"
        " ON CONFLICT (message_id) DO NOTHING RETURNING true",
        event_id,
        ticket_id,
        "resolved" if resolved else "reopened",
    )
    if first is None:
        out.ignored = out.duplicate = True
        return out
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
        " RETURNING tier, priority, skills, last_agent_id, last_routed, reopen_count",
        ticket_id,
    )
    if row is None:
        out.ignored = True  # unknown or already open (e.g. the customer wrote first)
        return out
    was_tier, was_priority = Tier(row["tier"]), Priority(row["priority"])
    # A conversation that keeps coming back moves up by the rules' context thresholds.
    tier, priority, moved = after_reopen(row["reopen_count"], was_tier, was_priority)
    # The last agent stays preferred on the same tier; a move to L2 goes to an L2 agent.
    sticky = row["last_agent_id"] if tier is was_tier else None
    agent_id = await try_assign(conn, tier, list(row["skills"]), sticky)
    if moved:
        await conn.execute(
            "UPDATE router_tickets SET tier = $2, priority = $3, priority_rank = $4,"
            " queue = $5 WHERE ticket_id = $1",
            ticket_id,
            tier.value,
            priority.value,
            priority_rank(priority),
            f"{tier.value}.{priority.value}",
        )
    await _history(conn, ticket_id, "reopened", tier=tier, detail=came_back(row["reopen_count"]))
    if agent_id is not None:
        await conn.execute(
            "UPDATE router_tickets SET agent_id = $2, last_agent_id = $2,"
            " assigned_at = now() WHERE ticket_id = $1",
            ticket_id,
            agent_id,
        )
        await _history(conn, ticket_id, "assigned", agent_id=agent_id, tier=tier)
        out.assigned.append((ticket_id, agent_id, tier))
    if agent_id is not None or moved:
        note = "; ".join(
            [
                "reopened",
                *moved,
                f"assigned to {agent_id}" if agent_id else f"waiting for an {tier.value} agent",
            ]
        )
        ev = _event_from(
            row["last_routed"], agent_id=agent_id, tier=tier, priority=priority, note=note
        )
        await _publish_routed(conn, ticket_id, ev)
    return out


async def ticket_context(conn: Conn, ticket_ids: Sequence[str]) -> dict[str, tuple[int, bool]]:
    """Each known ticket's ``(reopen_count, escalated)`` as a customer message on it is
    decided, what ``decide`` weighs besides the text (one statement for a run of messages).
    A resolved ticket counts one reopen more: the message reopens it (``_record_wave``)."""
    rows = await conn.fetch(
        "SELECT ticket_id, reopen_count + (status = 'resolved')::int AS reopen_count,"
        " escalated FROM router_tickets WHERE ticket_id = ANY($1::text[])",
        list(set(ticket_ids)),
    )
    return {r["ticket_id"]: (r["reopen_count"], r["escalated"]) for r in rows}


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
