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
from shared.events import Category, MessageKind, Priority, RoutedEvent, Tier, dump
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
                await set_status_in(conn, ticket, resolved=resolved)


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
    # A redelivered reopen (the ticket is open) changes nothing a second time.
    async with pool.acquire() as conn, conn.transaction():
        again = await set_status_in(conn, ticket, resolved=False)
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
        await set_status_in(conn, busy, resolved=True)
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

    async def decided(ticket: str, n: int) -> list[asyncpg.Record]:
        deadline = time.monotonic() + 60
        while True:
            rows = await pool.fetch(
                "SELECT tier, priority, reasons FROM router_decisions WHERE ticket_id = $1"
                " ORDER BY decided_at",
                ticket,
            )
            if len(rows) >= n:
                return rows
            assert time.monotonic() < deadline, f"{ticket}: {len(rows)} of {n} decisions"
            await asyncio.sleep(0.1)

    async with serving(app) as url:
        await wait_ready(url)
        for ticket, times in ((stays, SECOND_LINE - 1), (moves, SECOND_LINE)):
            await send(
                service_env.bootstrap,
                ticket.encode(),
                [ev(ticket), *reopens(ticket, times), ev(ticket)],
            )
        got = {t: await decided(t, 2) for t in (stays, moves)}
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
