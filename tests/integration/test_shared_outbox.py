"""The transactional outbox against the real database and broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaMessage

from shared.kafka import RelayProducer, make_broker
from shared.localstack import Broker, free_port
from shared.outbox import OutboxRelay, OutboxRow, backlog, enqueue
from shared.topics import SLA
from tests.helpers import OutboxNotifications, TopicReader, relay_declared, sla_row, uid

pytestmark = pytest.mark.integration


def _events(ticket: str, n: int) -> Sequence[OutboxRow]:
    return [sla_row(ticket, i) for i in range(n)]


async def _run_relay(relay: OutboxRelay) -> asyncio.Task[None]:
    return asyncio.create_task(relay.run())


async def test_relay_publishes_in_order_and_empties_the_outbox(infra, pool):
    producer = uid("producer")
    ticket = uid("tkt")
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, producer, _events(ticket, 50))
    out = RelayProducer(infra.bootstrap, "test")
    relay = OutboxRelay(infra.dsn, producer, out.publish, batch_size=20)
    task = await _run_relay(relay)
    try:
        async with TopicReader(infra.bootstrap, SLA.name) as reader:
            got = await reader.wait_for(lambda e: e["ticket_id"] == ticket, count=50)
        assert [e["correlation_id"] for e in got] == [f"{ticket}-{i}" for i in range(50)]
        for _ in range(50):
            if await backlog(pool, producer) == 0:
                break
            await asyncio.sleep(0.1)
        assert await backlog(pool, producer) == 0
    finally:
        relay.stop()
        await task
        await out.stop()


async def test_relayed_records_read_as_faststream_messages(infra, pool):
    """The relay's plain producer writes the headers FastStream subscribers read: the
    correlation id and the JSON content type (the body decodes as the event)."""
    producer, ticket = uid("producer"), uid("tkt")
    seen: list[tuple[str, dict[str, object]]] = []
    done = asyncio.Event()
    broker = make_broker(infra.bootstrap, "test")

    @broker.subscriber(SLA.name, group_id=uid("g"), auto_offset_reset="earliest")  # type: ignore[untyped-decorator]
    async def on_sla(body: dict[str, object], message: KafkaMessage) -> None:
        if body.get("ticket_id") == ticket:
            seen.append((message.correlation_id, body))
            if len(seen) == 3:
                done.set()

    await broker.start()
    out = RelayProducer(infra.bootstrap, "test")
    relay = OutboxRelay(infra.dsn, producer, out.publish)
    task = await _run_relay(relay)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, producer, _events(ticket, 3))
        await asyncio.wait_for(done.wait(), 60)
        assert [cid for cid, _ in seen] == [f"{ticket}-{i}" for i in range(3)]
        assert all(body["kind"] == "started" for _, body in seen)
    finally:
        relay.stop()
        await task
        await out.stop()
        await broker.stop()


async def test_rolled_back_transaction_publishes_nothing(infra, pool):
    producer = uid("producer")

    class Boom(Exception):
        pass

    async def write_then_fail() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, producer, _events(uid("tkt"), 3))
            raise Boom

    with pytest.raises(Boom):
        await write_then_fail()
    assert await backlog(pool, producer) == 0


async def test_trigger_notifies_the_producers_whose_relay_wants_it(infra, pool):
    """A producer whose relay declared it polls gets no NOTIFY; one that asked for it, or
    that no relay declared, gets one per committing transaction, also when a statement
    holds rows of both."""
    polled, notified, undeclared = uid("polled"), uid("notified"), uid("undeclared")
    ours = {polled, notified, undeclared}
    await pool.execute(
        "INSERT INTO outbox_wakeup (producer, notify) VALUES ($1, false), ($2, true)",
        polled,
        notified,
    )
    try:
        async with OutboxNotifications(infra.dsn) as notifications:
            for producer in (polled, notified, undeclared, polled):
                async with pool.acquire() as conn, conn.transaction():
                    await enqueue(conn, producer, _events(uid("tkt"), 3))
            await pool.execute(
                "INSERT INTO outbox (producer, topic, payload)"
                " VALUES ($1, 'test.none', ''), ($2, 'test.none', '')",
                polled,
                notified,
            )
            sent = [p for p in await notifications.sent_before_now(pool) if p in ours]
        assert sent == [notified, undeclared, notified]
    finally:
        await pool.execute("DELETE FROM outbox WHERE producer = ANY($1::text[])", list(ours))
        await pool.execute("DELETE FROM outbox_wakeup WHERE producer = ANY($1::text[])", list(ours))


async def test_polling_relay_publishes_without_notify_and_a_notified_one_is_woken(infra, pool):
    """A relay with ``wake_on_notify=False`` declares it, its producer's commits send no
    NOTIFY, and its polls publish every row in order. The next leader of the producer wants
    waking: it declares so, and with hourly polls only the NOTIFY can bring it the rows
    committed after its first publish."""
    producer, ticket = uid("producer"), uid("tkt")
    out = RelayProducer(infra.bootstrap, "test")

    async def commit(first: int, n: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, producer, [sla_row(ticket, i) for i in range(first, first + n)])

    def expect(n: int) -> list[str]:
        return [f"{ticket}-{i}" for i in range(n)]

    polling = OutboxRelay(
        infra.dsn, producer, out.publish, poll_interval=0.05, wake_on_notify=False
    )
    notified = OutboxRelay(
        infra.dsn, producer, out.publish, poll_interval=3600, loss_check_interval=3600
    )
    tasks = [await _run_relay(polling)]
    try:
        async with (
            OutboxNotifications(infra.dsn) as notifications,
            TopicReader(infra.bootstrap, SLA.name) as reader,
        ):
            await relay_declared(pool, producer, notify=False)
            for first in (0, 10, 20):
                await commit(first, 10)
            got = await reader.wait_for(lambda e: e["ticket_id"] == ticket, count=30)
            assert [e["correlation_id"] for e in got] == expect(30)
            assert producer not in await notifications.sent_before_now(pool)
        polling.stop()
        await tasks[0]
        tasks.append(await _run_relay(notified))
        async with TopicReader(infra.bootstrap, SLA.name) as reader:
            await relay_declared(pool, producer, notify=True)
            await commit(30, 5)  # in its first fetch, or woken
            await reader.wait_for(lambda e: e["ticket_id"] == ticket, count=35, timeout=30)
            await commit(35, 5)  # it sleeps for an hour unless woken
            got = await reader.wait_for(lambda e: e["ticket_id"] == ticket, count=40, timeout=30)
            assert [e["correlation_id"] for e in got] == expect(40)
    finally:
        polling.stop()
        notified.stop()
        await asyncio.gather(*tasks)
        await out.stop()
        await pool.execute("DELETE FROM outbox_wakeup WHERE producer = $1", producer)


async def test_relay_waits_out_a_broker_outage_and_catches_up(infra, pool, tmp_path):
    """The broker is down while events are written; nothing is lost when it returns."""
    own = Broker(port=free_port(), log_file=tmp_path / "broker.log")
    own.start()
    producer, ticket = uid("producer"), uid("tkt")
    out = RelayProducer(own.bootstrap, "test")
    relay = OutboxRelay(infra.dsn, producer, out.publish, publish_timeout=2.0)
    task = await _run_relay(relay)
    try:
        own.stop()
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, producer, _events(ticket, 10))
        for _ in range(100):  # the relay tries and fails while the broker is away
            if relay.last_error:
                break
            await asyncio.sleep(0.1)
        assert relay.last_error is not None
        assert await backlog(pool, producer) == 10
        own.start()  # memory storage: the topics are gone; start() creates them again
        async with TopicReader(own.bootstrap, SLA.name) as reader:
            got = await reader.wait_for(lambda e: e["ticket_id"] == ticket, count=10, timeout=60)
        ids = [e["correlation_id"] for e in got]
        assert sorted(set(ids)) == sorted(f"{ticket}-{i}" for i in range(10))
    finally:
        relay.stop()
        await task
        await out.stop()
        own.stop()


async def test_relay_producer_stops_within_the_grace_period_while_the_broker_is_away(tmp_path):
    """Records in flight when the broker went away fail after the producer's request
    timeout (their rows stay in the outbox) instead of holding stop() for aiokafka's 40 s,
    which outlived a container's 30 s stop grace period."""
    own = Broker(port=free_port(), log_file=tmp_path / "broker.log")
    own.start()
    out = RelayProducer(own.bootstrap, "test")
    try:
        acked = [await out.publish(SLA.name, b"k", b"{}", None) for _ in range(5)]
        await asyncio.gather(*acked)
    finally:
        own.stop()
    in_flight = [await out.publish(SLA.name, b"k", b"{}", None) for _ in range(5)]
    async with asyncio.timeout(20):  # was about 37 s
        await out.stop()
    with pytest.raises(KafkaError):  # not acknowledged: the relay keeps the rows
        await asyncio.gather(*in_flight)


async def test_relay_producer_partitions_keys_as_aiokafka_does(infra):
    """RelayProducer picks a keyed record's partition itself (remembered per key): the
    partition a plain aiokafka producer gives the same key, for several partition counts."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topics = {f"test.parts{n}.{uid('t')}": n for n in (1, 5, 6)}
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    finally:
        await admin.close()
    keys = [uid("conv").encode() for _ in range(300)] + [b"", "会话-7".encode(), b"k" * 97]
    ours = RelayProducer(infra.bootstrap, "test")
    plain = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await plain.start()
    try:
        for topic in topics:
            for _ in range(2):  # the second time, every key's partition is remembered
                mine = [await ours.publish(topic, k, b"{}", None) for k in keys]
                theirs = [await plain.send(topic, b"{}", key=k) for k in keys]
                got = [m.partition for m in await asyncio.gather(*mine)]
                want = [m.partition for m in await asyncio.gather(*theirs)]
                assert got == want
                assert len(set(got)) == topics[topic]
    finally:
        await plain.stop()
        await ours.stop()
