"""sla_watch's batch path: a poll's records applied in one transaction with set-based
statements (``store.apply``), per message idempotent and in order per ticket; and the
consumer as users run it, where a poison record in a batch is dead-lettered while the
others of its batch commit."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer

from services.sla_watch import store
from services.sla_watch.app import build
from services.sla_watch.store import Kind
from shared.events import (
    AuthorRole,
    Category,
    MessageKind,
    Priority,
    RoutedEvent,
    SlaEvent,
    SlaKind,
    Tier,
    dump,
    load,
    utcnow,
)
from tests.helpers import TopicReader, serving, uid, wait_ready
from tests.integration.test_sla_clocks import DEFAULT, RICH, events, message, routed

pytestmark = pytest.mark.integration


async def clock(pool, ticket: str, name: str = "first_response"):
    return await pool.fetchrow(
        "SELECT * FROM sla_clocks WHERE ticket_id = $1 AND clock = $2", ticket, name
    )


async def test_a_batch_with_a_duplicate_applies_it_once_and_a_redelivered_batch_changes_nothing(
    pool,
):
    t, u = uid("tkt"), uid("tkt")
    now = utcnow()
    m = message(t, at=now - timedelta(seconds=3))
    reply = message(t, role=AuthorRole.agent, at=now)
    other = message(u, at=now - timedelta(seconds=1))
    batch = [m, m, other, reply, reply]
    b = await store.apply(pool, batch, DEFAULT)
    assert b.results == ["ok", "duplicate", "ok", "ok", "duplicate"]
    assert [(e.kind, e.clock) for e in b.emitted] == [
        (SlaKind.started, "first_response"),
        (SlaKind.started, "first_response"),
        (SlaKind.met, "first_response"),
    ]
    fr_t, fr_u = await clock(pool, t), await clock(pool, u)
    assert fr_t["state"] == "met" and fr_t["instance"] == 1
    assert fr_u["state"] == "running"
    # timers only for the clock still running when the batch committed
    assert {(d.id, d.kind) for d in b.due} == {
        (fr_u["id"], Kind.breach),
        (fr_u["id"], Kind.warning),
    }
    assert [e["kind"] for e in await events(pool, t)] == ["started", "met"]

    again = await store.apply(pool, batch, DEFAULT)  # the same poll redelivered
    assert again.results == ["duplicate"] * 5 and again.emitted == [] and again.due == []
    assert [e["kind"] for e in await events(pool, t)] == ["started", "met"]
    assert [e["kind"] for e in await events(pool, u)] == ["started"]
    assert dict(await clock(pool, t)) == dict(fr_t)


async def test_out_of_order_in_one_batch(pool):
    """A reply before its message's event (same batch): no clock. A reply before the
    routing event, in the messages batch, then routing in its own batch twice: the
    first-response clock is met and stays met, resolution starts once."""
    a, b = uid("tkt"), uid("tkt")
    now = utcnow()
    reply_a = message(a, role=AuthorRole.agent, at=now)
    msg_a = message(a, at=now - timedelta(seconds=2))
    msg_b = message(b, at=now - timedelta(seconds=2))
    reply_b = message(b, role=AuthorRole.agent, at=now)
    out = await store.apply(pool, [reply_a, msg_b, msg_a, reply_b], DEFAULT)
    assert out.results == ["ok"] * 4
    assert await clock(pool, a) is None
    assert (await clock(pool, b))["state"] == "met"

    r = routed(b, Category.complaint, received=now - timedelta(seconds=2))
    first = await store.apply(pool, [r, r], DEFAULT)  # twice in one batch
    assert first.results == ["ok", "duplicate"]
    assert (await clock(pool, b))["state"] == "met"
    res = await clock(pool, b, "resolution")
    assert res["state"] == "running" and res["instance"] == 1
    await store.apply(pool, [r], DEFAULT)  # and once more later
    assert [e["kind"] for e in await events(pool, b)] == ["started", "met", "started"]
    assert (await clock(pool, b, "resolution"))["instance"] == 1


async def test_started_met_and_stopped_payloads_are_sla_events_as_the_model_dumps_them(pool):
    """The consumer serialises these events from the rows, without the model: each must
    validate as ``SlaEvent``, carry the clock's values and the ticket's labels, and be
    byte for byte what ``dump`` of the validated model gives."""
    t, late = uid("tkt"), uid("tkt")
    now = utcnow()
    msg = message(t, at=now - timedelta(seconds=4))
    await store.apply(pool, [routed(t, Category.complaint, Priority.urgent, received=now)], DEFAULT)
    await store.apply(pool, [msg, message(t, role=AuthorRole.agent, at=now)], DEFAULT)
    await store.apply(pool, [message(late, at=now - timedelta(seconds=40))], DEFAULT)
    assert await store.fire(pool, Kind.breach, [(await clock(pool, late))["id"]])
    await store.apply(pool, [message(late, role=AuthorRole.agent, at=now)], DEFAULT)

    fr = await clock(pool, t)
    raw = await pool.fetch(
        "SELECT key, payload, correlation_id FROM outbox WHERE producer = 'sla_watch'"
        " AND topic = 'cs.sla.v1' AND key = ANY($1::text[]) ORDER BY id",
        [t, late],
    )
    evs = [(r["key"], load(SlaEvent, bytes(r["payload"])), bytes(r["payload"])) for r in raw]
    for key, ev, payload in evs:
        assert ev.ticket_id == key
        if ev.kind is not SlaKind.breached:  # (PostgreSQL builds that one, spaced its way)
            assert dump(ev) == payload
    by_ticket = [(key, ev.clock.value, ev.kind) for key, ev, _ in evs]
    assert by_ticket == [
        (t, "resolution", SlaKind.started),
        (t, "first_response", SlaKind.started),
        (t, "first_response", SlaKind.met),
        (late, "first_response", SlaKind.started),
        (late, "first_response", SlaKind.breached),
        (late, "first_response", SlaKind.stopped),
    ]
    started, met = evs[1][1], evs[2][1]
    for ev in (started, met):
        assert ev.correlation_id == msg.correlation_id == raw[1]["correlation_id"]
        assert ev.producer == "sla_watch" and ev.conversation_id == "conv-" + t
        assert ev.deadline == fr["deadline"] and ev.started_at == fr["started_at"]
        assert ev.limit_seconds == 30.0 and ev.shop_id == "shop-1"
        assert (ev.priority, ev.tier, ev.category) == (
            Priority.urgent,
            Tier.L2,
            Category.complaint,
        )
    assert started.elapsed_seconds is None and started.lateness_seconds is None
    assert met.elapsed_seconds == pytest.approx(4.0, abs=0.01)
    assert started.event_id != met.event_id
    stopped = evs[5][1]
    assert stopped.elapsed_seconds == pytest.approx(40.0, abs=0.01)
    assert stopped.priority is None and stopped.category is None  # never routed


async def test_a_clock_started_met_and_restarted_in_one_batch_keeps_every_event(pool):
    t = uid("tkt")
    now = utcnow()
    resolved = message(t, kind=MessageKind.ticket_resolved, role=AuthorRole.agent, at=now)
    batch = [
        message(t, at=now - timedelta(seconds=9)),
        message(t, role=AuthorRole.agent, at=now - timedelta(seconds=8)),
        message(t, at=now - timedelta(seconds=5)),  # a follow-up: a new run
        resolved,
    ]
    out = await store.apply(pool, batch, DEFAULT)
    assert out.results == ["ok"] * 4
    fr = await clock(pool, t)
    assert fr["instance"] == 2 and fr["state"] == "met"
    kinds = [e["kind"] for e in await events(pool, t)]
    assert kinds == ["started", "met", "started", "met"]
    assert out.due == []


async def test_the_consumer_dead_letters_a_poison_record_and_commits_the_rest_of_its_batch(
    service_env, pool, monkeypatch
):
    """Through Kafka: a record PostgreSQL refuses (a NUL in the ticket id) fails the
    batch's transaction; the consumer falls back to one transaction per message, dead-
    letters that one (``unprocessable``) and an undecodable one (``invalid_schema``), and
    the valid records of the same partition commit, their duplicate applied once."""
    monkeypatch.setenv("SLA_WATCH_GROUP_ID", uid("sla-batch"))
    monkeypatch.setenv("SLA_WATCH_BATCH_TIMEOUT_MS", "50")
    key = uid("tkt")
    good, other = key, uid("tkt")
    now = utcnow()
    m = message(good, at=now - timedelta(seconds=2))
    poison = message(good + "\x00bad", at=now)
    records = [
        dump(m),
        dump(m),
        dump(poison),
        b"{not json",
        dump(message(other, at=now)),
        dump(message(good, role=AuthorRole.agent, at=now)),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=service_env.bootstrap, linger_ms=50)
    await producer.start()
    try:  # one key: one partition, in this order, most likely one poll
        sent = [await producer.send("cs.messages.v1", r, key=key.encode()) for r in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    async with (
        TopicReader(service_env.bootstrap, "cs.deadletter.v1") as dlq,
        TopicReader(service_env.bootstrap, "cs.sla.v1") as sla_topic,
        serving(build()) as url,
    ):
        await wait_ready(url)
        dead = await dlq.wait_for(lambda r: r.get("original_key") == key, timeout=60, count=2)
        while True:  # the reply after the poison record commits too
            row = await clock(pool, good)
            if row is not None and row["state"] == "met":
                break
            await asyncio.sleep(0.1)
        sla = await sla_topic.wait_for(lambda r: r.get("ticket_id") == good, count=2)
    reasons = sorted(d["reason"] for d in dead if d["original_key"] == key)
    assert reasons == ["invalid_schema", "unprocessable"]
    assert any("bad" in json.dumps(d["payload"]) for d in dead if d["reason"] == "unprocessable")
    assert [e["kind"] for e in sla if e["ticket_id"] == good] == ["started", "met"]
    assert (await clock(pool, other))["state"] == "running"


async def test_routed_events_of_one_ticket_in_one_batch_leave_the_latest_agent(pool):
    t = uid("tkt")
    t0 = utcnow() - timedelta(seconds=40)
    newer = routed(t, agent="l1-bob", at=t0 + timedelta(seconds=2))
    older = routed(t, agent="l1-amy", at=t0 + timedelta(seconds=1))
    out = await store.apply(pool, [message(t, at=t0), newer, older, newer], DEFAULT)
    assert out.results == ["ok", "ok", "stale", "duplicate"]
    row = await pool.fetchrow("SELECT agent_id, agent_at FROM sla_tickets WHERE ticket_id = $1", t)
    assert (row["agent_id"], row["agent_at"]) == ("l1-bob", newer.occurred_at)
    assert await store.fire(pool, Kind.breach, [(await clock(pool, t))["id"]])
    [esc] = await events(pool, t, "cs.escalations.v1")
    assert esc["agent_id"] == "l1-bob"


async def test_an_older_routed_event_after_a_newer_one_in_one_batch_changes_nothing(pool):
    """In one batch, then the batch redelivered: a newer routed event (urgent/L2) and an
    older one (normal/L1) of the same ticket, newer first. Under ``RICH`` the older labels
    would select the default policy (60 s instead of the urgent 10 s); under ``DEFAULT``
    a logistics category would cancel the complaint's resolution clock (``stopped``). The
    older one is ``stale``: urgent/L2 stays, the deadlines and timers are the newer
    one's, no resolution clock is cancelled, nothing else is emitted."""
    fast, res = uid("tkt"), uid("tkt")
    t0 = utcnow() - timedelta(seconds=5)

    def pair(t: str, later: Category, earlier: Category) -> list[RoutedEvent]:
        return [
            routed(t, later, Priority.urgent, t0, at=t0 + timedelta(seconds=2), tier=Tier.L2),
            routed(t, earlier, Priority.normal, t0, at=t0 + timedelta(seconds=1), tier=Tier.L1),
        ]

    out = await store.apply(
        pool, [message(fast, at=t0), *pair(fast, Category.logistics, Category.logistics)], RICH
    )
    assert out.results == ["ok", "ok", "stale"]
    fr = await clock(pool, fast)
    assert (fr["policy"], fr["deadline"]) == ("urgent", t0 + timedelta(seconds=10))
    assert {d.at for d in out.due} == {fr["deadline"].timestamp(), fr["warn_at"].timestamp()}

    batch = [message(res, at=t0), *pair(res, Category.complaint, Category.logistics)]
    out = await store.apply(pool, batch, DEFAULT)
    assert out.results == ["ok", "ok", "stale"]
    again = await store.apply(pool, batch, DEFAULT)
    assert again.results == ["duplicate", "duplicate", "stale"]
    assert again.emitted == [] and again.due == []
    assert (await clock(pool, res, "resolution"))["state"] == "running"
    assert [(e["clock"], e["kind"]) for e in await events(pool, res)] == [
        ("first_response", "started"),
        ("resolution", "started"),
    ]
    for t in (fast, res):
        row = await pool.fetchrow("SELECT * FROM sla_tickets WHERE ticket_id = $1", t)
        assert (row["priority"], row["tier"]) == ("urgent", "L2")
        assert (await clock(pool, t))["state"] == "running"


async def test_the_consumer_gives_a_breach_escalation_the_routed_agent(
    service_env, pool, monkeypatch
):
    """Through Kafka, as ``make run`` does it: a ticket routed urgent/L2 to l2-evan and a
    queued one, then their customers' messages, already overdue: the breaches'
    escalations on ``cs.escalations.v1`` name l2-evan and nobody, with the channel and
    the customer's masked reference."""
    monkeypatch.setenv("SLA_WATCH_GROUP_ID", uid("sla-agent"))
    monkeypatch.setenv("SLA_WATCH_BATCH_TIMEOUT_MS", "50")
    held, queued = uid("tkt"), uid("tkt")
    t0 = utcnow() - timedelta(seconds=40)
    evs = {
        t: routed(t, Category.complaint, prio, agent=agent, at=t0, customer_ref="cu***" + t[-2:])
        for t, prio, agent in ((held, Priority.urgent, "l2-evan"), (queued, Priority.normal, None))
    }
    producer = AIOKafkaProducer(bootstrap_servers=service_env.bootstrap)
    await producer.start()
    try:
        async with (
            TopicReader(service_env.bootstrap, "cs.escalations.v1") as esc_topic,
            serving(build()) as url,
        ):
            await wait_ready(url)
            for t, ev in evs.items():
                await producer.send_and_wait("cs.tickets.routed.v1", dump(ev), key=t.encode())
            while True:  # both routed events applied (each started its resolution clock)
                applied = await pool.fetchval(
                    "SELECT count(*) FROM sla_clocks WHERE ticket_id = ANY($1::text[])"
                    " AND clock = 'resolution'",
                    list(evs),
                )
                if applied == len(evs):
                    break
                await asyncio.sleep(0.1)
            for t in evs:
                await producer.send_and_wait(
                    "cs.messages.v1", dump(message(t, at=t0)), key=t.encode()
                )
            got = await esc_topic.wait_for(lambda e: e.get("ticket_id") in evs, count=2, timeout=60)
    finally:
        await producer.stop()
    by_ticket = {e["ticket_id"]: e for e in got}
    assert by_ticket[held]["agent_id"] == "l2-evan"
    assert by_ticket[queued]["agent_id"] is None
    for t, e in by_ticket.items():
        assert e["reason"] == "first_response_breached" and e["channel"] == "chat"
        assert e["customer_ref"] == "cu***" + t[-2:]
        assert (e["priority"], e["tier"]) == (evs[t].priority.value, "L2")
