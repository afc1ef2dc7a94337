"""A conversation that keeps coming back (issue #4 item 1, the rules' ``context.reopen_*``)
against the real PostgreSQL and, for the live path, the real broker: the reopen that brings
``reopen_count`` to ``reopen_second_line`` moves the ticket to L2 and at least important, a
customer message on it is decided with its reopenings, a redelivered reopen counts once,
and capacity holds. Each test gives its agents and tickets a skill of its own (a uid), but
the broker test, whose skills the real decision picks: it reads the ticket, not agents."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from aiokafka import AIOKafkaProducer

from services.router.app import build
from services.router.domain import Decision, default_classifier
from services.router.roster import AgentIn, upsert_agent
from services.router.settings import RouterSettings
from services.router.store import record_decision_in, set_status_in
from shared.events import Category, MessageKind, Priority, RoutedEvent, Tier, dump, new_event_id
from shared.topics import MESSAGES
from tests.helpers import Infra, message_event, serving, uid, wait_ready

LIMITS = {Priority.urgent: 30.0, Priority.important: 30.0, Priority.normal: 30.0}
SECOND_LINE = default_classifier().rules.context.reopen_second_line


def decision(skill: str) -> Decision:
    return Decision(
        category=Category.logistics,
        priority=Priority.normal,
        tier=Tier.L1,
        reasons=["shipping question"],
        skills=(skill,),
    )


async def agent(pool: asyncpg.Pool, skill: str, tier: Tier, capacity: int = 1) -> str:
    agent_id = uid(f"ag-{tier.value}")
    async with pool.acquire() as conn:
        await upsert_agent(
            conn, agent_id, AgentIn(tier=tier, skills=[skill], capacity=capacity, presence="online")
        )
    return agent_id


async def cycle(pool: asyncpg.Pool, ticket: str, times: int) -> None:
    """Resolve and reopen ``ticket`` ``times`` times, each step its own transaction."""
    for _ in range(times):
        for resolved in (True, False):
            async with pool.acquire() as conn, conn.transaction():
                await set_status_in(conn, ticket, resolved=resolved, event_id=new_event_id())


async def routed_events(pool: asyncpg.Pool, ticket: str) -> list[RoutedEvent]:
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE key = $1 AND topic = 'cs.tickets.routed.v1' ORDER BY id",
        ticket,
    )
    return [RoutedEvent.model_validate_json(r["payload"]) for r in rows]


async def test_the_reopen_that_reaches_the_threshold_moves_the_ticket_to_l2(
    pool: asyncpg.Pool,
) -> None:
    skill = uid("sk").replace("-", "_")
    l1 = await agent(pool, skill, Tier.L1, capacity=5)
    l2 = await agent(pool, skill, Tier.L2, capacity=5)
    ticket = uid("tkr")
    async with pool.acquire() as conn, conn.transaction():
        await record_decision_in(conn, message_event(ticket, text="x"), decision(skill), LIMITS)
    await cycle(pool, ticket, SECOND_LINE - 1)
    row = await pool.fetchrow(
        "SELECT tier, priority, agent_id, reopen_count FROM router_tickets WHERE ticket_id = $1",
        ticket,
    )
    # Reopened once fewer than the rules' threshold: first line, normal, its agent again.
    assert dict(row or {}) == {
        "tier": "L1",
        "priority": "normal",
        "agent_id": l1,
        "reopen_count": SECOND_LINE - 1,
    }
    await cycle(pool, ticket, 1)
    row = await pool.fetchrow(
        "SELECT tier, priority, queue, agent_id, reopen_count FROM router_tickets"
        " WHERE ticket_id = $1",
        ticket,
    )
    assert dict(row or {}) == {
        "tier": "L2",
        "priority": "important",
        "queue": "L2.important",
        "agent_id": l2,
        "reopen_count": SECOND_LINE,
    }
    last = (await routed_events(pool, ticket))[-1]
    assert (last.tier, last.priority, last.agent_id) == (Tier.L2, Priority.important, l2)
    assert f"came back {SECOND_LINE} times" in last.reasons[-1]
    history = await pool.fetch(
        "SELECT action, tier, detail FROM router_history WHERE ticket_id = $1 ORDER BY id",
        ticket,
    )
    assert (history[-2]["action"], history[-2]["tier"]) == ("reopened", "L2")
    assert history[-2]["detail"] == f"came back {SECOND_LINE} times"
    # A reopen on an open ticket changes nothing.
    async with pool.acquire() as conn, conn.transaction():
        again = await set_status_in(conn, ticket, resolved=False, event_id=new_event_id())
    assert again.ignored
    assert (
        await pool.fetchval("SELECT reopen_count FROM router_tickets WHERE ticket_id = $1", ticket)
        == SECOND_LINE
    )
    assert (
        len(
            await pool.fetch(
                "SELECT 1 FROM router_history WHERE ticket_id = $1 AND action = 'reopened'", ticket
            )
        )
        == SECOND_LINE
    )
    await pool.execute(
        "UPDATE router_agents SET presence = 'offline' WHERE agent_id = ANY($1)", [l1, l2]
    )


async def test_status_events_are_applied_once_by_message_id(pool: asyncpg.Pool) -> None:
    """The batch ``reopen e1, resolve e2`` applied in one transaction, then again (its
    offsets were never committed): the second time both are duplicates, the ticket stays
    resolved, reopened once, and its agent's slot is taken and freed once."""
    skill = uid("sk").replace("-", "_")
    l1 = await agent(pool, skill, Tier.L1, capacity=5)
    ticket = uid("tkr")
    async with pool.acquire() as conn, conn.transaction():
        await record_decision_in(conn, message_event(ticket, text="x"), decision(skill), LIMITS)
        await set_status_in(conn, ticket, resolved=True, event_id=new_event_id())
    e1, e2 = new_event_id(), new_event_id()
    for _ in range(2):
        async with pool.acquire() as conn, conn.transaction():
            reopen = await set_status_in(conn, ticket, resolved=False, event_id=e1)
            resolve = await set_status_in(conn, ticket, resolved=True, event_id=e2)
        load = await pool.fetchval("SELECT load FROM router_agents WHERE agent_id = $1", l1)
        assert load == 0
    assert (reopen.duplicate, resolve.duplicate) == (True, True)
    row = await pool.fetchrow(
        "SELECT status, reopen_count FROM router_tickets WHERE ticket_id = $1", ticket
    )
    assert dict(row or {}) == {"status": "resolved", "reopen_count": 1}
    history = await pool.fetch(
        "SELECT action, agent_id, from_agent, detail FROM router_history WHERE ticket_id = $1"
        " ORDER BY id",
        ticket,
    )
    assert [(h["action"], h["agent_id"] or h["from_agent"], h["detail"]) for h in history] == [
        ("assigned", l1, ""),
        ("resolved", l1, ""),
        ("reopened", None, "came back 1 time"),
        ("assigned", l1, ""),
        ("resolved", l1, ""),
    ]
    await pool.execute("UPDATE router_agents SET presence = 'offline' WHERE agent_id = $1", l1)


async def test_a_full_second_line_queues_the_reopened_ticket(pool: asyncpg.Pool) -> None:
    skill = uid("sk").replace("-", "_")
    l1 = await agent(pool, skill, Tier.L1, capacity=5)
    l2 = await agent(pool, skill, Tier.L2, capacity=1)
    busy, ticket = uid("tkb"), uid("tkr")
    async with pool.acquire() as conn, conn.transaction():
        l2_decision = decision(skill)
        l2_decision.tier = Tier.L2
        await record_decision_in(conn, message_event(busy, text="x"), l2_decision, LIMITS)
        await record_decision_in(conn, message_event(ticket, text="x"), decision(skill), LIMITS)
    await cycle(pool, ticket, SECOND_LINE)
    row = await pool.fetchrow(
        "SELECT tier, priority, agent_id FROM router_tickets WHERE ticket_id = $1", ticket
    )
    assert dict(row or {}) == {"tier": "L2", "priority": "important", "agent_id": None}
    loads = await pool.fetch(
        "SELECT agent_id, load, capacity FROM router_agents WHERE agent_id = ANY($1)", [l1, l2]
    )
    assert {r["agent_id"]: (r["load"], r["capacity"]) for r in loads} == {
        l1: (0, 5),
        l2: (1, 1),
    }
    last = (await routed_events(pool, ticket))[-1]
    assert (last.tier, last.agent_id) == (Tier.L2, None)
    assert last.reasons[-1].endswith("waiting for an L2 agent")
    # The L2 agent resolves the other ticket and takes this one from the queue.
    async with pool.acquire() as conn, conn.transaction():
        await set_status_in(conn, busy, resolved=True, event_id=new_event_id())
    assert (
        await pool.fetchval("SELECT agent_id FROM router_tickets WHERE ticket_id = $1", ticket)
        == l2
    )
    await pool.execute(
        "UPDATE router_agents SET presence = 'offline' WHERE agent_id = ANY($1)", [l1, l2]
    )


async def send(bootstrap: str, key: bytes, records: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(MESSAGES.name, r, key=key) for r in records])
    finally:
        await producer.stop()


async def test_the_live_router_decides_a_message_with_the_tickets_reopenings(
    service_env: Infra, pool: asyncpg.Pool
) -> None:
    """Through the broker: a conversation reopened once fewer than the threshold stays with
    first line, a redelivered reopen counts once, and after the threshold's reopen both the
    ticket and the next customer message's decision are L2 and say why."""
    group = uid("router-reopen")
    app = build(RouterSettings(group_id=group, escalations_group_id=group + "-esc"))
    stays, moves = uid("tks"), uid("tkm")

    def ev(ticket: str, kind: MessageKind = MessageKind.message_created) -> bytes:
        text = "where is my parcel" if kind is MessageKind.message_created else None
        return dump(message_event(ticket, kind=kind, text=text))

    def reopens(ticket: str, times: int) -> list[bytes]:
        out: list[bytes] = []
        for _ in range(times):
            out.append(ev(ticket, MessageKind.ticket_resolved))
            reopen = ev(ticket, MessageKind.ticket_reopened)
            out += [reopen, reopen]  # each reopen delivered twice
        return out

    async with serving(app) as url:
        await wait_ready(url)
        for ticket, times in ((stays, SECOND_LINE - 1), (moves, SECOND_LINE)):
            await send(
                service_env.bootstrap,
                ticket.encode(),
                [ev(ticket), *reopens(ticket, times), ev(ticket)],
            )
        got = {t: await decisions(pool, t, 2) for t in (stays, moves)}
    tickets = {
        r["ticket_id"]: r
        for r in await pool.fetch(
            "SELECT ticket_id, tier, priority, reopen_count FROM router_tickets"
            " WHERE ticket_id = ANY($1)",
            [stays, moves],
        )
    }
    # Reopened once fewer than the threshold: decided as its first message was (the bot or
    # first line, by its words), not second line.
    first_stays = got[stays][0]
    assert (tickets[stays]["tier"], tickets[stays]["reopen_count"]) == (
        first_stays["tier"],
        SECOND_LINE - 1,
    )
    assert first_stays["tier"] != "L2"
    assert (tickets[moves]["tier"], tickets[moves]["reopen_count"]) == ("L2", SECOND_LINE)
    assert tickets[moves]["priority"] in ("important", "urgent")
    last_stays, last_moves = got[stays][-1], got[moves][-1]
    assert (last_stays["tier"], last_stays["priority"]) == (first_stays["tier"], "normal")
    assert (last_moves["tier"], last_moves["priority"]) == ("L2", "important")
    reasons = " | ".join(orjson_loads(last_moves["reasons"]))
    assert f"came back {SECOND_LINE} times already" in reasons
    assert "came back" not in " | ".join(orjson_loads(last_stays["reasons"]))


def orjson_loads(value: object) -> list[str]:
    import json

    return json.loads(value) if isinstance(value, str) else list(value)  # type: ignore[arg-type]


async def ticket_rows(pool: asyncpg.Pool, tickets: list[str]) -> dict[str, dict[str, object]]:
    rows = await pool.fetch(
        "SELECT ticket_id, status, tier, priority, reopen_count FROM router_tickets"
        " WHERE ticket_id = ANY($1)",
        tickets,
    )
    return {r["ticket_id"]: dict(r) for r in rows}


async def actions(pool: asyncpg.Pool, ticket: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT action FROM router_history WHERE ticket_id = $1 AND action IN"
        " ('resolved', 'reopened') ORDER BY id",
        ticket,
    )
    return [r["action"] for r in rows]


async def decisions(pool: asyncpg.Pool, ticket: str, n: int) -> list[asyncpg.Record]:
    """The ticket's decisions once there are ``n`` (the last message sent is decided: every
    record before it on the partition was applied)."""
    deadline = time.monotonic() + 60
    while True:
        rows = await pool.fetch(
            "SELECT message_id, tier, priority, reasons FROM router_decisions"
            " WHERE ticket_id = $1 ORDER BY decided_at",
            ticket,
        )
        if len(rows) >= n:
            return rows
        assert time.monotonic() < deadline, f"{ticket}: {len(rows)} of {n} decisions"
        await asyncio.sleep(0.1)


def status(ticket: str, kind: MessageKind) -> bytes:
    return dump(message_event(ticket, kind=kind))


def said(ticket: str, text: str = "where is my parcel") -> bytes:
    return dump(message_event(ticket, text=text))


async def test_a_redelivered_batch_of_status_events_is_applied_once(
    service_env: Infra, pool: asyncpg.Pool
) -> None:
    """At-least-once: the router crashed after applying ``reopen e1, resolve e2`` but before
    committing the offsets, so the two records come again. Each status event is applied once
    by its message id: the reopen counts once and the resolve is not applied to the ticket a
    later reopen opened (``resolve e1, reopen e2`` again)."""
    group = uid("router-status-once")
    app = build(RouterSettings(group_id=group, escalations_group_id=group + "-esc"))
    a, b = uid("tka"), uid("tkb")
    resolve_a, reopen_a = (
        status(a, MessageKind.ticket_resolved),
        status(a, MessageKind.ticket_reopened),
    )
    reopen_a2 = status(a, MessageKind.ticket_reopened)
    resolve_b, reopen_b = (
        status(b, MessageKind.ticket_resolved),
        status(b, MessageKind.ticket_reopened),
    )
    async with serving(app) as url:
        await wait_ready(url)
        await send(
            service_env.bootstrap,
            a.encode(),
            [
                said(a),
                status(a, MessageKind.ticket_resolved),
                *(reopen_a, resolve_a),
                *(reopen_a, resolve_a),  # the batch again
                reopen_a2,
                said(a),  # the ticket is open: no reopen of its own
            ],
        )
        await send(
            service_env.bootstrap,
            b.encode(),
            [said(b), *(resolve_b, reopen_b), *(resolve_b, reopen_b), said(b)],
        )
        for t in (a, b):
            await decisions(pool, t, 2)
    got = await ticket_rows(pool, [a, b])
    assert (got[a]["status"], got[a]["reopen_count"]) == ("open", 2)
    assert await actions(pool, a) == ["resolved", "reopened", "resolved", "reopened"]
    assert (got[b]["status"], got[b]["reopen_count"]) == ("open", 1)
    assert await actions(pool, b) == ["resolved", "reopened"]


async def test_a_customer_writing_again_on_a_resolved_ticket_is_a_reopen_counted_once(
    service_env: Infra, pool: asyncpg.Pool
) -> None:
    """A conversation that comes back after resolution by a customer's message is reopened
    and counted as a reopen, once per message id (the same message delivered twice counts
    once); the message that brings the count to ``reopen_second_line`` is decided with it
    (L2, at least important, "came back N times already"). A platform that also sends
    ``ticket.reopened`` for the same return, before or after the message, counts once: the
    second finds the ticket open."""
    group = uid("router-came-back")
    app = build(RouterSettings(group_id=group, escalations_group_id=group + "-esc"))
    back, first, after = uid("tkc"), uid("tkf"), uid("tkl")
    resolved, reopened = MessageKind.ticket_resolved, MessageKind.ticket_reopened
    returns: list[bytes] = []
    for _ in range(SECOND_LINE):
        again = said(back)
        returns += [status(back, resolved), again, again]  # each message delivered twice
    async with serving(app) as url:
        await wait_ready(url)
        await send(service_env.bootstrap, back.encode(), [said(back), *returns])
        # The platform's reopen before the customer's message, and after it.
        await send(
            service_env.bootstrap,
            first.encode(),
            [said(first), status(first, resolved), status(first, reopened), said(first)],
        )
        await send(
            service_env.bootstrap,
            after.encode(),
            [
                said(after),
                status(after, resolved),
                said(after),
                status(after, reopened),
                said(after),
            ],
        )
        got_back = await decisions(pool, back, SECOND_LINE + 1)
        await decisions(pool, first, 2)
        await decisions(pool, after, 3)
    got = await ticket_rows(pool, [back, first, after])
    assert (got[back]["status"], got[back]["reopen_count"]) == ("open", SECOND_LINE)
    assert (got[back]["tier"], got[back]["priority"]) == ("L2", "important")
    assert await actions(pool, back) == ["resolved", "reopened"] * SECOND_LINE
    details = await pool.fetch(
        "SELECT detail FROM router_history WHERE ticket_id = $1 AND action = 'reopened'"
        " ORDER BY id",
        back,
    )
    assert [d["detail"] for d in details] == [
        f"came back {n} time{'s' if n > 1 else ''}: the customer wrote again"
        for n in range(1, SECOND_LINE + 1)
    ]
    # Decided with the count it brought: the last return is second line and says why; the
    # one before it (one fewer) is not.
    last, before = got_back[-1], got_back[-2]
    assert (last["tier"], last["priority"]) == ("L2", "important")
    assert f"came back {SECOND_LINE} times already" in " | ".join(orjson_loads(last["reasons"]))
    assert before["tier"] != "L2"
    for t in (first, after):
        assert (got[t]["status"], got[t]["reopen_count"]) == ("open", 1)
        assert await actions(pool, t) == ["resolved", "reopened"]
