"""The transactional outbox against the real database and broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaMessage

from shared import metrics
from shared.events import dump
from shared.kafka import RelayProducer, make_broker
from shared.localstack import Broker, free_port
from shared.outbox import OutboxRelay, OutboxRow, enqueue
from shared.topics import SLA
from tests.helpers import (
    OutboxNotifications,
    Sink,
    TopicReader,
    relay_declared,
    sla_row,
    uid,
)

pytestmark = pytest.mark.integration


def _events(ticket: str, n: int) -> Sequence[OutboxRow]:
    return [sla_row(ticket, i) for i in range(n)]


async def _run_relay(relay: OutboxRelay) -> asyncio.Task[None]:
    return asyncio.create_task(relay.run())


async def test_relay_publishes_in_order_and_empties_the_outbox(infra, pool, sink):
    producer = uid("producer")
    ticket = uid("tkt")
    out = RelayProducer(infra.bootstrap, "test")
    relay = await sink.relay(pool, infra.dsn, producer, out.publish_batch, batch_size=20)
    async with pool.acquire() as conn, conn.transaction():
        await sink.write(conn, producer, _events(ticket, 50))
    task = await _run_relay(relay)
    try:
        async with TopicReader(infra.bootstrap, SLA.name) as reader:
            got = await reader.wait_for(lambda e: e["ticket_id"] == ticket, count=50)
        assert [e["correlation_id"] for e in got] == [f"{ticket}-{i}" for i in range(50)]
        await sink.published(pool, producer, timeout=5)
    finally:
        relay.stop()
        await task
        await out.stop()


async def test_relayed_records_read_as_faststream_messages(infra, pool, sink):
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
    relay = await sink.relay(pool, infra.dsn, producer, out.publish_batch)
    task = await _run_relay(relay)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await sink.write(conn, producer, _events(ticket, 3))
        await asyncio.wait_for(done.wait(), 60)
        assert [cid for cid, _ in seen] == [f"{ticket}-{i}" for i in range(3)]
        assert all(body["kind"] == "started" for _, body in seen)
    finally:
        relay.stop()
        await task
        await out.stop()
        await broker.stop()


async def test_rolled_back_transaction_publishes_nothing(infra, pool, sink):
    producer = uid("producer")
    await sink.source(pool, producer)

    class Boom(Exception):
        pass

    async def write_then_fail() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await sink.write(conn, producer, _events(uid("tkt"), 3))
            raise Boom

    with pytest.raises(Boom):
        await write_then_fail()
    assert await sink.backlog(pool, producer) == 0


async def test_a_crash_between_the_acks_and_their_record_publishes_the_batch_again(
    infra, pool, sink
):
    """The relay loses its database connection after the broker acknowledged a batch and
    before it recorded that (the outbox move, the log's cursor): the next leader publishes
    the batch again (at least once), and everything after it once."""
    producer, ticket = uid("producer"), uid("tkt")
    out = RelayProducer(infra.bootstrap, "test")
    relay = await sink.relay(pool, infra.dsn, producer, out.publish_batch, batch_size=10)
    source = relay._source
    recorded = source.published
    crashes: list[int] = []

    async def crash_once(conn: Any, rows: Any, acks: Any) -> None:
        if not crashes:
            crashes.append(len(rows))
            raise ConnectionResetError("the relay's connection died after the acks")
        await recorded(conn, rows, acks)

    source.published = crash_once  # type: ignore[method-assign]
    async with pool.acquire() as conn, conn.transaction():
        await sink.write(conn, producer, _events(ticket, 25))
    task = await _run_relay(relay)
    try:
        async with TopicReader(infra.bootstrap, SLA.name) as reader:
            got = await reader.wait_for(lambda e: e["ticket_id"] == ticket, count=35, timeout=60)
        ids = [e["correlation_id"] for e in got]
        first = [f"{ticket}-{i}" for i in range(10)]
        assert crashes == [10]
        assert ids == first + first + [f"{ticket}-{i}" for i in range(10, 25)]
        await sink.published(pool, producer, timeout=5)
    finally:
        relay.stop()
        await task
        await out.stop()


async def test_a_log_is_published_in_the_order_of_its_transaction_ids(infra, pool):
    """Rows go out in (xid, seq) order with xid compared as a number: here transactions 10
    (the first seq) and 9, long ended (written with those ids): 9's row first, as text or
    seq order would not have it."""
    sink = Sink("log")
    producer, ticket = uid("producer"), uid("tkt")
    out = RelayProducer(infra.bootstrap, "test")
    relay = await sink.relay(pool, infra.dsn, producer, out.publish_batch)
    rows = [(10, sla_row(ticket, 1)), (9, sla_row(ticket, 0)), (10, sla_row(ticket, 2))]
    for xid, row in rows:
        await pool.execute(
            f"INSERT INTO {sink.tables[producer]} (xid, topic, key, payload, correlation_id)"
            " VALUES ($1::text::xid8, $2, $3, $4, $5)",
            str(xid),
            row.topic.name,
            row.key,
            dump(row.event),
            row.event.correlation_id,
        )
    task = await _run_relay(relay)
    try:
        async with TopicReader(infra.bootstrap, SLA.name) as reader:
            got = await reader.wait_for(lambda e: e["ticket_id"] == ticket, count=3)
        assert [e["correlation_id"] for e in got] == [f"{ticket}-{i}" for i in range(3)]
    finally:
        relay.stop()
        await task
        await out.stop()


async def test_a_log_row_behind_a_running_transaction_waits_for_it(infra, pool):
    """A log table's rows are published in (xid, seq) order and only once every older
    transaction has ended: a transaction that wrote first and commits last still gets its
    row out, before the row written and committed after it (a cursor past the later row
    would have skipped it for good). Meanwhile the relay reports what holds it back."""
    sink = Sink("log")
    producer, ticket = uid("producer"), uid("tkt")
    out = RelayProducer(infra.bootstrap, "test")
    relay = await sink.relay(pool, infra.dsn, producer, out.publish_batch)
    relay._source._held_back_warning = 0.0  # type: ignore[attr-defined]
    held = metrics.OUTBOX_HELD_BACK.labels(producer)
    task = await _run_relay(relay)
    try:
        async with TopicReader(infra.bootstrap, SLA.name) as reader:
            async with pool.acquire() as first:
                early = first.transaction()
                await early.start()
                await sink.write(first, producer, [sla_row(ticket, 0)])  # the lower xid
                async with pool.acquire() as conn, conn.transaction():
                    await sink.write(conn, producer, [sla_row(ticket, 1)])
                for _ in range(300):  # the relay sees the committed row wait behind it
                    if held._value.get() > 0:
                        break
                    await asyncio.sleep(0.1)
                assert held._value.get() > 0
                await early.commit()
            got = await reader.wait_for(lambda e: e["ticket_id"] == ticket, count=2, timeout=30)
            assert [e["correlation_id"] for e in got] == [f"{ticket}-0", f"{ticket}-1"]
            assert [e["correlation_id"] for e in await reader.drain(1.0)].count(f"{ticket}-0") == 1
        for _ in range(50):
            if held._value.get() == 0:
                break
            await asyncio.sleep(0.1)
        assert held._value.get() == 0
    finally:
        relay.stop()
        await task
        await out.stop()


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
        infra.dsn, producer, out.publish_batch, poll_interval=0.05, wake_on_notify=False
    )
    notified = OutboxRelay(
        infra.dsn, producer, out.publish_batch, poll_interval=3600, loss_check_interval=3600
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


async def test_relay_waits_out_a_broker_outage_and_catches_up(infra, pool, tmp_path, sink):
    """The broker is down while events are written; nothing is lost when it returns."""
    own = Broker(port=free_port(), log_file=tmp_path / "broker.log")
    own.start()
    producer, ticket = uid("producer"), uid("tkt")
    out = RelayProducer(own.bootstrap, "test")
    relay = await sink.relay(pool, infra.dsn, producer, out.publish_batch, publish_timeout=2.0)
    task = await _run_relay(relay)
    try:
        own.stop()
        async with pool.acquire() as conn, conn.transaction():
            await sink.write(conn, producer, _events(ticket, 10))
        for _ in range(100):  # the relay tries and fails while the broker is away
            if relay.last_error:
                break
            await asyncio.sleep(0.1)
        assert relay.last_error is not None
        assert await sink.backlog(pool, producer) == 10
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
    records = [(SLA.name, b"k", b"{}", None)] * 5
    try:
        assert len(await out.publish_batch(records)) == 5
    finally:
        own.stop()
    in_flight = asyncio.create_task(out.publish_batch(records))
    await asyncio.sleep(1.0)  # handed to the producer (metadata known), waiting for acks
    assert not in_flight.done()
    async with asyncio.timeout(20):  # was about 37 s
        await out.stop()
    with pytest.raises(KafkaError):  # not acknowledged: the relay keeps the rows
        await in_flight


async def _topic(bootstrap: str, partitions: int) -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"test.parts{partitions}.{uid('t')}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def test_relay_producer_partitions_keys_as_aiokafka_does(infra):
    """RelayProducer picks a keyed record's partition itself (remembered per key): the
    partition a plain aiokafka producer gives the same key, for several partition counts."""
    from aiokafka import AIOKafkaProducer

    topics = {await _topic(infra.bootstrap, n): n for n in (1, 5, 6)}
    keys = [uid("conv").encode() for _ in range(300)] + [b"", "会话-7".encode(), b"k" * 97]
    ours = RelayProducer(infra.bootstrap, "test")
    plain = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await plain.start()
    try:
        for topic in topics:
            for _ in range(2):  # the second time, every key's partition is remembered
                acks = await ours.publish_batch([(topic, k, b"{}", None) for k in keys])
                theirs = [await plain.send(topic, b"{}", key=k) for k in keys]
                got = [partition for _, partition, _ in acks]
                want = [m.partition for m in await asyncio.gather(*theirs)]
                assert got == want
                assert len(set(got)) == topics[topic]
    finally:
        await plain.stop()
        await ours.stop()


async def test_relay_producer_acks_are_where_the_records_are(infra):
    """publish_batch sends each partition's records as whole record batches (several when
    one fills up: 16 KiB) and acknowledges each record at its batch's base offset plus its
    index: the partition and offset a consumer reads it at, in the order given per key,
    with its headers; keyless records included."""
    from aiokafka import AIOKafkaConsumer

    topic = await _topic(infra.bootstrap, 3)
    out = RelayProducer(infra.bootstrap, "test")
    pad = "x" * 1500  # ~10 records fill a batch
    sent: list[tuple[str, bytes | None, bytes, str | None]] = []
    acks: list[tuple[str, int, int]] = []
    try:
        for round_ in range(3):
            records = [
                (
                    topic,
                    None if i % 7 == 0 else f"key-{i % 5}".encode(),
                    f'{{"n": "{round_}-{i}", "pad": "{pad}"}}'.encode(),
                    f"cid-{round_}-{i}" if i % 2 else None,
                )
                for i in range(60)
            ]
            acks += await out.publish_batch(records)
            sent += records
    finally:
        await out.stop()
    assert len(acks) == len(sent) == len(set(acks)) == 180
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=infra.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    read: dict[bytes, tuple[str, int, int, bytes | None, dict[str, bytes]]] = {}
    try:
        async with asyncio.timeout(30):
            while len(read) < len(sent):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for rec in records:
                        read[rec.value] = (
                            rec.topic,
                            rec.partition,
                            rec.offset,
                            rec.key,
                            dict(rec.headers),
                        )
    finally:
        await consumer.stop()
    for (_, key, value, cid), ack in zip(sent, acks, strict=True):
        assert read[value][:3] == ack
        assert read[value][3] == key
        headers = {"content-type": b"application/json"}
        if cid:
            headers["correlation_id"] = cid.encode()
        assert read[value][4] == headers
    for k in range(5):  # a key's records are in the order sent
        offsets = [
            a for (_, key, _, _), a in zip(sent, acks, strict=True) if key == f"key-{k}".encode()
        ]
        assert len({p for _, p, _ in offsets}) == 1
        assert offsets == sorted(offsets)
    assert max(n for n in Counter(p for _, p, _ in acks).values()) > 10  # several batches
