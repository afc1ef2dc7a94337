"""The set-based batch path against the real PostgreSQL (and, for poison, the real broker).

``record_decisions_in`` applies many messages with a fixed number of statements; these
tests pin down that it behaves like applying the messages one by one: capacity, order per
ticket, stickiness, queueing, idempotency of a redelivered batch, and valid events.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import asyncpg
from aiokafka import AIOKafkaProducer

from services.router.app import build
from services.router.domain import Decision
from services.router.roster import AgentIn, upsert_agent
from services.router.settings import RouterSettings
from services.router.store import record_decisions_in
from shared.events import (
    Category,
    EscalationReason,
    MessageEvent,
    Priority,
    RoutedEvent,
    Tier,
    dump,
    utcnow,
)
from shared.topics import DEADLETTER, ESCALATIONS, MESSAGES
from tests.helpers import (
    Infra,
    TopicReader,
    escalation_event,
    message_event,
    serving,
    uid,
    wait_ready,
)

LIMITS = {Priority.urgent: 30.0, Priority.important: 30.0, Priority.normal: 30.0}


def msg(ticket: str, *, text: str = "where is my parcel", ago: float = 0.0) -> MessageEvent:
    return message_event(
        ticket, text=text, shop="shop-batch", received_at=utcnow() - timedelta(seconds=ago)
    )


async def send(bootstrap: str, topic: str, key: bytes, records: list[bytes]) -> None:
    """Write ``records`` with one key (one partition, in order) and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, r, key=key) for r in records])
    finally:
        await producer.stop()


def decision(skill: str, priority: Priority = Priority.normal) -> Decision:
    return Decision(
        category=Category.logistics,
        priority=priority,
        tier=Tier.L1,
        reasons=["shipping question"],
        skills=(skill,),
    )


async def test_a_batch_is_applied_like_one_message_after_another(pool: asyncpg.Pool) -> None:
    skill = uid("sk").replace("-", "_")
    agents = [uid("agent") for _ in range(2)]
    async with pool.acquire() as conn:
        for a in agents:
            await upsert_agent(
                conn, a, AgentIn(tier=Tier.L1, skills=[skill], capacity=2, presence="online")
            )
    tickets = [uid("tk") for _ in range(6)]
    # Six tickets for four slots; the first ticket writes three times in the same batch.
    items = [(msg(t), decision(skill)) for t in tickets]
    items.insert(1, (msg(tickets[0]), decision(skill, Priority.urgent)))
    items.insert(3, (msg(tickets[0]), decision(skill)))
    async with pool.acquire() as conn, conn.transaction():
        outs = await record_decisions_in(conn, items, LIMITS)
    assert all(o is not None and o.routed is not None for o in outs)
    routed = [o.routed for o in outs if o is not None and o.routed is not None]
    # Follow-ups of the first ticket stay with its agent and keep its urgency (in order).
    first_agent = routed[0].agent_id
    assert first_agent in agents
    assert [r.agent_id for r in routed[:4] if r.ticket_id == tickets[0]] == [first_agent] * 3
    assert [r.priority for r in routed if r.ticket_id == tickets[0]] == [
        Priority.normal,
        Priority.urgent,
        Priority.urgent,
    ]
    # Four distinct tickets got the four slots (least loaded first), two wait in the queue.
    loads = await pool.fetch(
        "SELECT agent_id, load FROM router_agents WHERE agent_id = ANY($1)", agents
    )
    assert {r["load"] for r in loads} == {2}
    held = await pool.fetch(
        "SELECT ticket_id, agent_id FROM router_tickets WHERE ticket_id = ANY($1)", tickets
    )
    assert sum(r["agent_id"] is not None for r in held) == 4
    queued = await pool.fetchval(
        "SELECT count(*) FROM router_history WHERE ticket_id = ANY($1) AND action = 'queued'",
        tickets,
    )
    assert queued == 2
    # Every event in the outbox is a valid RoutedEvent equal to the one returned.
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE producer = 'router' AND key = ANY($1)"
        " AND topic = 'cs.tickets.routed.v1'",
        tickets,
    )
    stored = {
        e.message_id: e for e in (RoutedEvent.model_validate_json(r["payload"]) for r in rows)
    }
    assert len(stored) == len(items)
    for r in routed:
        assert stored[r.message_id].model_dump() == r.model_dump()
    # The outbox keeps each event as the router serialised it, byte for byte.
    assert {bytes(r["payload"]) for r in rows} == {o.routed_json for o in outs if o is not None}
    last = await pool.fetchval(
        "SELECT last_routed FROM router_tickets WHERE ticket_id = $1", tickets[0]
    )
    assert RoutedEvent.model_validate(last).message_id == items[3][0].message_id

    # The same batch delivered again changes nothing.
    before = await pool.fetchval("SELECT count(*) FROM outbox WHERE key = ANY($1)", tickets)
    async with pool.acquire() as conn, conn.transaction():
        again = await record_decisions_in(conn, items, LIMITS)
    assert again == [None] * len(items)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE key = ANY($1)", tickets) == before
    loads_after = await pool.fetch(
        "SELECT agent_id, load FROM router_agents WHERE agent_id = ANY($1)", agents
    )
    assert {r["load"] for r in loads_after} == {2}
    await pool.execute(
        "UPDATE router_agents SET presence = 'offline' WHERE agent_id = ANY($1)", agents
    )


async def test_poison_message_is_deadlettered_and_the_rest_of_the_batch_routed(
    service_env: Infra, pool: asyncpg.Pool
) -> None:
    group = uid("router-batch")
    app = build(RouterSettings(group_id=group, escalations_group_id=group + "-esc"))
    good = [uid("tkb") for _ in range(3)]
    bad = uid("tkbad") + "\x00"  # PostgreSQL text cannot hold a NUL: never storable
    async with (
        serving(app) as url,
        TopicReader(service_env.bootstrap, DEADLETTER.name) as dead,
    ):
        await wait_ready(url)
        records = [dump(msg(t)) for t in (good[0], bad, good[1], good[2])]
        await send(service_env.bootstrap, MESSAGES.name, b"same-partition", records)
        deadline = time.monotonic() + 30
        while await pool.fetchval(
            "SELECT count(*) FROM router_decisions WHERE ticket_id = ANY($1)", good
        ) < len(good):
            assert time.monotonic() < deadline, "good messages of the batch were not routed"
            await asyncio.sleep(0.1)
        found = await dead.wait_for(
            lambda r: r.get("service") == "router" and "tkbad" in r.get("payload", ""),
            timeout=30,
        )
    assert found[0]["reason"] == "unprocessable"
    # It went through the outbox (kept there, re-published if the broker loses it).
    kept = await pool.fetch(
        "SELECT payload FROM outbox_sent WHERE producer = 'router' AND topic = $1",
        DEADLETTER.name,
    )
    assert any(bad.rstrip("\x00").encode() in r["payload"] for r in kept)


async def test_escalations_in_one_batch_poison_deadlettered_and_the_breach_applied(
    service_env: Infra, pool: asyncpg.Pool
) -> None:
    """cs.escalations.v1 is read in batches: an unreadable record is dead-lettered, the
    router's own routed_to_l2 notice ignored and a breach after them (same partition, so
    in the same or a later batch) moves the ticket to L2."""
    group = uid("router-escb")
    app = build(RouterSettings(group_id=group, escalations_group_id=group + "-esc"))
    skill = uid("sk").replace("-", "_")
    l1, l2 = uid("l1"), uid("l2")
    ticket = uid("tke")
    async with pool.acquire() as conn:
        for agent_id, tier in ((l1, Tier.L1), (l2, Tier.L2)):
            await upsert_agent(
                conn, agent_id, AgentIn(tier=tier, skills=[skill], capacity=1, presence="online")
            )
        await record_decisions_in(conn, [(msg(ticket), decision(skill))], LIMITS)

    records = [
        b'{"not": "an escalation", "ticket": "' + ticket.encode() + b'"}',
        dump(escalation_event(ticket, EscalationReason.routed_to_l2)),
        dump(escalation_event(ticket, EscalationReason.first_response_breached)),
    ]
    async with (
        serving(app) as url,
        TopicReader(service_env.bootstrap, DEADLETTER.name) as dead,
    ):
        await wait_ready(url)
        await send(service_env.bootstrap, ESCALATIONS.name, ticket.encode(), records)
        found = await dead.wait_for(
            lambda r: r.get("original_topic") == ESCALATIONS.name and ticket in r["payload"],
            timeout=30,
        )
        deadline = time.monotonic() + 30
        while (
            await pool.fetchval("SELECT tier FROM router_tickets WHERE ticket_id = $1", ticket)
        ) != "L2":
            assert time.monotonic() < deadline, "the breach was not applied"
            await asyncio.sleep(0.1)
    assert found[0]["reason"] == "invalid_schema"
    row = await pool.fetchrow(
        "SELECT agent_id, priority FROM router_tickets WHERE ticket_id = $1", ticket
    )
    assert row is not None and row["agent_id"] == l2 and row["priority"] == "important"
    escalated = await pool.fetchval(
        "SELECT count(*) FROM router_history WHERE ticket_id = $1 AND action = 'escalated'",
        ticket,
    )
    assert escalated == 1  # the notice changed nothing, the breach once
    await pool.execute(
        "UPDATE router_agents SET presence = 'offline' WHERE agent_id = ANY($1)", [l1, l2]
    )
