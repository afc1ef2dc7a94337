"""A broker that loses records it acknowledged (the local Tansu restarted with memory
storage; Kafka after an unclean leader election): the outbox relay re-publishes its kept
rows and a group consumer re-reads the new log, so every event reaches the topic and is
applied once per id. Runs on its own broker (restarted mid-flow) and a database of its
own in the session's PostgreSQL: the losses a relay records there are seen by every relay
of that database, and the session broker lost nothing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections import Counter
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaMessage

from shared import metrics
from shared.kafka import (
    AssignmentTracker,
    RelayProducer,
    ensure_topics,
    make_broker,
    subscriber_options,
    update_lag,
)
from shared.localstack import Broker, free_port
from shared.outbox import OutboxRelay, OutboxRow
from shared.topics import ALL_TOPICS, SLA
from tests.helpers import (
    TopicReader,
    generic_body,
    serving,
    signed,
    sla_row,
    uid,
    wait_ready,
)

pytestmark = pytest.mark.integration


def _event(ticket: str, i: int, key: str | None = None) -> OutboxRow:
    # several keys unless told: records spread over the partitions
    return sla_row(ticket, i, key or f"{ticket}-{i % 12}")


async def _ids_on_topic(bootstrap: str, ticket: str, expected: set[str]) -> set[str]:
    """The event ids of this run in the topic, read from the beginning (no group), until
    all expected ones are there (or 20 s passed)."""
    seen: set[str] = set()

    def all_there(e: dict[str, Any]) -> bool:
        if e.get("ticket_id") == ticket:
            seen.add(e["event_id"])
        return seen >= expected

    async with TopicReader(bootstrap, SLA.name) as reader:
        with contextlib.suppress(TimeoutError):
            await reader.wait_for(all_there, timeout=20)
    return seen


async def test_broker_restart_while_records_flow_loses_nothing(own_dsn, own_pool, tmp_path, sink):
    pool = own_pool
    own = Broker(port=free_port(), log_file=tmp_path / "broker.log")
    own.start()
    producer, ticket = uid("producer"), uid("tkt")
    total = 400
    applied: set[str] = set()  # what an idempotent consumer applied
    deliveries: Counter[str] = Counter()  # every delivery, repeats included
    all_applied = asyncio.Event()
    flowing = asyncio.Event()  # a share of the records was consumed before the restart

    kafka = make_broker(own.bootstrap, "test", graceful_timeout=2.0)
    tracker = AssignmentTracker()

    @kafka.subscriber(SLA.name, **subscriber_options(uid("g"), tracker))  # type: ignore[untyped-decorator]
    async def on_sla(body: dict[str, object], message: KafkaMessage) -> None:
        if body.get("ticket_id") != ticket:
            return
        event_id = str(body["event_id"])
        deliveries[event_id] += 1
        applied.add(event_id)  # idempotent by event id, as every service is
        if len(applied) >= 60:
            flowing.set()
        if len(applied) == total:
            all_applied.set()

    republished_before = metrics.OUTBOX_REPUBLISHED.labels(producer, SLA.name)._value.get()
    out = RelayProducer(own.bootstrap, "test")
    relay = await sink.relay(
        pool,
        own_dsn,
        producer,
        out.publish_batch,
        publish_timeout=3.0,
        loss_check_interval=0.3,
        retention_seconds=300,
    )
    relay_task = asyncio.create_task(relay.run())

    async def lag_loop() -> None:  # what every service runs (shared.service), faster
        while True:
            await update_lag(kafka, "test")
            await asyncio.sleep(0.5)

    lag_task = asyncio.create_task(lag_loop())
    try:
        await kafka.start()
        await asyncio.wait_for(tracker.assigned.wait(), 30)

        async def write(start: int, stop: int) -> None:
            for i in range(start, stop, 5):
                async with pool.acquire() as conn, conn.transaction():
                    await sink.write(conn, producer, [_event(ticket, j) for j in range(i, i + 5)])
                await asyncio.sleep(0.02)

        # Half the events flow; the broker stops once some of them were consumed (the
        # others are acknowledged but not consumed yet, or still in the outbox) ...
        writer = asyncio.create_task(write(0, total // 2))
        await asyncio.wait_for(flowing.wait(), 30)
        await asyncio.to_thread(own.stop)
        await writer
        # ... the other half is accepted while it is down, and it comes back empty.
        await write(total // 2, total)
        await asyncio.to_thread(own.start)
        await asyncio.wait_for(all_applied.wait(), 90)  # liveness bound; loaded CI is slow

        expected = {f"{ticket}-{i}" for i in range(total)}
        on_topic = await _ids_on_topic(own.bootstrap, ticket, expected)
        assert on_topic == expected, sorted(expected - on_topic)  # all in the new log
        assert applied == expected == set(deliveries)
        republished = (
            metrics.OUTBOX_REPUBLISHED.labels(producer, SLA.name)._value.get() - republished_before
        )
        assert republished >= 60  # at least what was consumed before the restart came again
        print(f"\nrepublished {republished:.0f}, redelivered {sum(deliveries.values()) - total}")
    finally:
        relay.stop()
        lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_task
        await relay_task
        await out.stop()
        await kafka.stop()
        own.stop()


async def _on_topic(bootstrap: str, topic: str, expected: set[str]) -> dict[str, set[str]]:
    """Event ids per message id of the expected messages in the topic, read from the
    beginning (no group) until every expected message is there (or 30 s passed), then
    2 s more for repeats."""
    seen: dict[str, set[str]] = {}

    def all_there(e: dict[str, Any]) -> bool:
        if e.get("message_id") in expected:
            seen.setdefault(e["message_id"], set()).add(e["event_id"])
        return set(seen) >= expected

    async with TopicReader(bootstrap, topic) as reader:
        with contextlib.suppress(TimeoutError):
            await reader.wait_for(all_there, timeout=30)
        for e in await reader.drain(2.0):
            all_there(e)
    return seen


async def _until(pool: Any, query: str, *args: object, timeout: float = 20) -> None:
    """Poll the database until the query answers true."""
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if await pool.fetchval(query, *args):
                return
            await asyncio.sleep(0.1)


async def test_a_loss_one_relay_finds_is_republished_by_every_relay_of_the_partition(
    own_dsn, own_pool, tmp_path, sink
):
    """Two producers write one partition (as router and sla_watch both write
    cs.escalations.v1). After the restart, B finds the loss and re-publishes so much that
    A's next acknowledgement lands above what A had before: A cannot see the loss itself
    and re-publishes because B recorded it."""
    pool = own_pool
    own = Broker(port=free_port(), log_file=tmp_path / "broker.log")
    own.start()
    a, b, ticket = uid("producer-a"), uid("producer-b"), uid("tkt")
    key = f"{ticket}-key"  # one key: one partition for both producers

    async def relay(producer: str, out: RelayProducer) -> OutboxRelay:
        return await sink.relay(
            pool,
            own_dsn,
            producer,
            out.publish_batch,
            publish_timeout=3.0,
            loss_check_interval=0.2,
        )

    async def write(producer: str, ids: range) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await sink.write(conn, producer, [_event(ticket, i, key) for i in ids])

    out_a, out_b = RelayProducer(own.bootstrap, "a"), RelayProducer(own.bootstrap, "b")
    relay_a, relay_b = await relay(a, out_a), await relay(b, out_b)
    tasks = [asyncio.create_task(relay_a.run()), asyncio.create_task(relay_b.run())]
    try:
        await write(a, range(0, 3))
        await sink.published(pool, a)
        relay_a.stop()  # A is away (its service restarts) while the broker loses its log
        await tasks[0]
        await write(b, range(100, 130))
        await sink.published(pool, b)

        await asyncio.to_thread(own.stop)
        await asyncio.to_thread(own.start)
        await write(b, range(130, 135))
        found = "SELECT count(*) > 0 FROM outbox_broker_losses WHERE detected_by = $1"
        await _until(pool, found, b)  # B finds the loss and re-publishes
        await sink.published(pool, b)

        relay_a = await relay(a, out_a)  # A's next leader
        tasks[0] = asyncio.create_task(relay_a.run())
        await write(a, range(3, 4))
        expected = {f"{ticket}-{i}" for i in [*range(0, 4), *range(100, 135)]}
        on_topic = await _ids_on_topic(own.bootstrap, ticket, expected)
        assert on_topic == expected, sorted(expected - on_topic)
        assert not await pool.fetchval(found, a)  # A did not see the loss on its own
        cursor = "SELECT last_id FROM outbox_loss_cursor WHERE producer = $1"
        assert await pool.fetchval(cursor, a) == await pool.fetchval(
            "SELECT max(id) FROM outbox_broker_losses"
        )
    finally:
        relay_a.stop()
        relay_b.stop()
        await asyncio.gather(*tasks)
        await out_a.stop()
        await out_b.stop()
        own.stop()


async def test_webhooks_accepted_around_a_broker_restart_are_routed_once(
    service_env, own_dsn, own_pool, monkeypatch, tmp_path
):
    """intake and router in this process, on a broker of their own that stops and comes
    back empty while webhooks arrive: every accepted message is on the new log of
    cs.messages.v1, and the router decides it once (one routed event id per message, one
    ticket per conversation)."""
    pool = own_pool
    own = Broker(port=free_port(), log_file=tmp_path / "broker.log")
    own.start()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", own.bootstrap)
    monkeypatch.setenv("DATABASE_URL", own_dsn)
    from services.intake.app import build as intake
    from services.router.app import build as router

    accepted: dict[str, str] = {}  # message id -> ticket id
    decided = "SELECT count(*) = $2 FROM router_decisions WHERE message_id = ANY($1::text[])"
    try:
        async with (
            serving(intake()) as intake_url,
            serving(router()) as router_url,
            httpx.AsyncClient() as client,
        ):
            for url in (intake_url, router_url):
                await wait_ready(url)

            async def send(n: int) -> None:
                for _ in range(n):
                    raw, headers = signed(generic_body(text="我的订单还没发货，什么时候到？"))
                    r = await client.post(
                        intake_url + "/v1/webhooks/generic", content=raw, headers=headers
                    )
                    assert r.status_code == 202, r.text
                    accepted[r.json()["message_id"]] = r.json()["ticket_id"]

            await send(20)
            await _until(pool, decided, list(accepted), len(accepted))  # routed before
            await asyncio.to_thread(own.stop)
            await send(20)  # accepted while the broker is away
            await asyncio.to_thread(own.start)  # back, empty
            await send(20)
            await _until(pool, decided, list(accepted), len(accepted), timeout=90)

            on_messages = await _on_topic(own.bootstrap, "cs.messages.v1", set(accepted))
            on_routed = await _on_topic(own.bootstrap, "cs.tickets.routed.v1", set(accepted))
        assert set(on_messages) == set(accepted)  # all of them in the new log
        assert set(on_routed) == set(accepted)
        # a re-published routed event has the same id; a second decision would not
        assert {m: ids for m, ids in on_routed.items() if len(ids) > 1} == {}
        tickets = await pool.fetchval(
            "SELECT count(DISTINCT ticket_id) FROM router_decisions"
            " WHERE message_id = ANY($1::text[])",
            list(accepted),
        )
        assert tickets == len(set(accepted.values())) == len(accepted)
    finally:
        own.stop()


async def test_a_new_leader_with_nothing_to_publish_sees_the_loss(
    own_dsn, own_pool, tmp_path, sink
):
    """The broker and the service restart together (a machine reboot): the new relay leader
    has nothing new to publish, yet finds from the kept rows that the broker lost them and
    re-publishes them."""
    own = Broker(port=free_port(), log_file=tmp_path / "broker.log")
    own.start()
    producer, ticket = uid("producer"), uid("tkt")
    out = RelayProducer(own.bootstrap, "test")

    async def relay() -> OutboxRelay:
        return await sink.relay(
            own_pool,
            own_dsn,
            producer,
            out.publish_batch,
            publish_timeout=3.0,
            loss_check_interval=0.2,
        )

    first = await relay()
    task = asyncio.create_task(first.run())
    try:
        for batch in (range(0, 20), range(20, 40)):  # two sends: two sent_at groups
            async with own_pool.acquire() as conn, conn.transaction():
                await sink.write(conn, producer, [_event(ticket, i) for i in batch])
            await sink.published(own_pool, producer)
        first.stop()
        await task
        await asyncio.to_thread(own.stop)
        await asyncio.to_thread(own.start)  # memory storage: back empty
        second = await relay()
        task = asyncio.create_task(second.run())
        expected = {f"{ticket}-{i}" for i in range(40)}
        on_topic = await _ids_on_topic(own.bootstrap, ticket, expected)
        assert on_topic == expected, sorted(expected - on_topic)
        found = "SELECT count(*) FROM outbox_broker_losses WHERE detected_by = $1"
        assert await own_pool.fetchval(found, producer) >= 1
        second.stop()
        await task
    finally:
        first.stop()
        with contextlib.suppress(Exception):
            task.cancel()
            await task
        await out.stop()
        own.stop()


class _BackWithFewerPartitions(Broker):
    """A broker that comes back with every topic on 2 partitions (a topic deleted and
    created again with another count; Tansu back empty, where a client names a topic
    before the topics are created again: it gets Tansu's default count, 4)."""

    def _create_topics(self) -> None:
        fewer = tuple(dataclasses.replace(t, partitions=2) for t in ALL_TOPICS)
        asyncio.run(ensure_topics(self.bootstrap, fewer))  # start() runs in a worker thread


async def test_a_broker_back_with_fewer_partitions_gets_every_event(
    own_dsn, own_pool, tmp_path, sink
):
    """The broker comes back empty, and without some of the partitions the relay wrote to.
    The relay does not wait for them (aiokafka's log-end request would, until the check
    gives up, at every check): what it wrote there is lost, so it re-publishes the kept
    rows to the partitions there are, then what was written meanwhile."""
    own = Broker(port=free_port(), log_file=tmp_path / "broker.log")
    own.start()
    back = _BackWithFewerPartitions(port=own.port, log_file=own.log_file)
    producer, ticket = uid("producer"), uid("tkt")
    out = RelayProducer(own.bootstrap, "test")
    relay = await sink.relay(
        own_pool, own_dsn, producer, out.publish_batch, publish_timeout=3.0, loss_check_interval=0.2
    )
    task = asyncio.create_task(relay.run())

    async def write(ids: range) -> None:
        async with own_pool.acquire() as conn, conn.transaction():
            # a key per event: records on every partition
            await sink.write(conn, producer, [_event(ticket, i, f"{ticket}-{i}") for i in ids])

    try:
        await write(range(0, 40))
        await sink.published(own_pool, producer)
        ends = await out.end_offsets([(SLA.name, p) for p in range(SLA.partitions)])
        assert any(ends[(SLA.name, p)] > 0 for p in range(4, SLA.partitions)), ends
        await asyncio.to_thread(own.stop)
        await asyncio.to_thread(back.start)
        await write(range(40, 50))
        expected = {f"{ticket}-{i}" for i in range(50)}
        on_topic = await _ids_on_topic(back.bootstrap, ticket, expected)
        assert on_topic == expected, sorted(expected - on_topic)
        found = "SELECT count(*) FROM outbox_broker_losses WHERE detected_by = $1"
        assert await own_pool.fetchval(found, producer) >= 1
    finally:
        relay.stop()
        await task
        await out.stop()
        back.stop()
        own.stop()
