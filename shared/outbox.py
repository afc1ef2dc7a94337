"""Transactional outbox: write events with the state change, publish them afterwards.

A service writes the event row in the same PostgreSQL transaction as the change it
reports (``enqueue``). ``OutboxRelay`` publishes rows to Kafka in id order, in batches,
and once the broker has acknowledged every one moves them, with the partition and offset
of their acknowledgement, to ``outbox_sent`` (or deletes them when retention is off). A
crash between publish and move re-publishes the batch: delivery is at least once, and
every consumer is idempotent on the event's ids, so the effect is exactly once.

A broker can lose records it acknowledged: a memory-only broker restarted (the local
Tansu), an unclean leader election in Kafka. The relay keeps published rows for
``retention_seconds`` (the services' ``OUTBOX_RETENTION_SECONDS``, 300 by default; 0
turns retention off) and watches for loss on the partitions it wrote (``LossDetector``):
an acknowledgement whose offset is not above the previous one on that partition, or a
partition whose log end offset fell below an offset the broker acknowledged. It then
re-publishes the kept rows of those partitions in id order before anything newer.
Consumers drop the repeats by event id. A relay records each loss it finds in
``outbox_broker_losses``, and every other relay re-publishes its kept rows of that
partition too: where several producers write one partition, the others' next
acknowledgements can land above what they had before, so they may not see the loss
themselves. Kept rows are not purged while the broker does not answer, so an outage
longer than the retention does not make the rows it lost unrecoverable.

Only one relay per producer runs at a time (a PostgreSQL advisory lock), which keeps the
order per key. If the broker is down the rows wait; the relay retries with backoff and
catches up when it is back.

A relay learns of new rows in one of two ways, which it declares in ``outbox_wakeup`` when
it takes the lead (shared migration 0003): woken by the outbox trigger's NOTIFY as each
writing transaction commits, with a poll every ``poll_interval`` as the safety net (the
default), or, with ``wake_on_notify=False``, by polling every ``poll_interval`` alone; the
trigger then sends no NOTIFY for the producer's rows, and its writers' commits do not
queue one behind the other for PostgreSQL's notify lock. For a producer with many small
transactions whose relay gathers rows for tens of milliseconds anyway.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import asyncpg

from shared import metrics
from shared.db import Conn
from shared.events import Envelope, dump
from shared.logging import get_logger
from shared.topics import TopicSpec

log = get_logger(__name__)

CHANNEL = "ticketflow_outbox"
DEFAULT_RETENTION_SECONDS = 300.0
ENDS_WARNING_INTERVAL = 30.0
"""While the log-end check fails, a warning at once and then this often (seconds)."""

Record = tuple[str, bytes | None, bytes, str | None]
"""(topic, key, value, correlation_id)"""

Ack = tuple[str, int, int]
"""(topic, partition, offset) of one acknowledged record"""

PublishBatch = Callable[[Sequence[Record]], Awaitable[Sequence[Ack]]]
"""Publishes records in order per partition and resolves once the broker acknowledged
every one: to one ``Ack`` per record, in the order given, or to [] when the broker gives no
offsets; raises when it did not take them all (``RelayProducer.publish_batch``)."""

Partition = tuple[str, int]
"""(topic, partition)"""


@runtime_checkable
class EndOffsets(Protocol):
    """What the relay needs to see that a broker lost data: the log end offsets."""

    async def end_offsets(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]: ...


@dataclass(frozen=True, slots=True)
class OutboxRow:
    topic: TopicSpec
    key: str | None
    event: Envelope


async def enqueue(conn: Conn, producer: str, rows: Sequence[OutboxRow]) -> None:
    """Insert events into the outbox inside the caller's transaction."""
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO outbox (producer, topic, key, payload, correlation_id)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(producer, r.topic.name, r.key, dump(r.event), r.event.correlation_id) for r in rows],
    )


class LossDetector:
    """Per partition, what the broker acknowledged to this relay; says which partitions
    lost acknowledged records. Offsets on a partition only grow while the log keeps what
    it acknowledged, so an acknowledgement at or below an earlier one means the log was
    truncated or replaced. The log end is compared with a lower bound only, the first
    offset acknowledged in the latest batch written to the partition: some brokers answer
    a log end that trails the last record (Tansu 0.6 gives the last produce batch's base
    offset + 1), and a log end at or below that bound is a loss on any broker."""

    def __init__(self) -> None:
        self.acked: dict[Partition, int] = {}
        self.floor: dict[Partition, int] = {}

    def observe(self, acks: Iterable[tuple[str, int, int]]) -> set[Partition]:
        """Record one batch's acknowledgements in the order they were sent; the partitions
        where one went backwards (the broker lost what it had acknowledged before)."""
        lost: set[Partition] = set()
        first: set[Partition] = set()
        for topic, partition, offset in acks:
            tp = (topic, partition)
            if offset <= self.acked.get(tp, -1):
                lost.add(tp)
                self.floor[tp] = offset
            elif tp not in first:
                self.floor[tp] = offset
            first.add(tp)
            self.acked[tp] = offset
        return lost

    def remember(self, acked: Iterable[tuple[str, int, int, int]]) -> None:
        """What earlier leaders were acknowledged, per partition: (topic, partition, highest
        offset, lowest offset of their last batch to it). The highest is checked against
        later acks; the lowest is the log-end bound (the last produce batch the broker took
        starts at or after it), so a new leader with nothing to publish still sees a log
        that lost what its predecessors wrote (the broker restarted while no relay led)."""
        for topic, partition, highest, last_batch_first in acked:
            self.acked[(topic, partition)] = highest
            self.floor[(topic, partition)] = last_batch_first

    def check(self, end_offsets: Mapping[Partition, int]) -> set[Partition]:
        """The partitions whose log ends at or below an offset acknowledged to us."""
        return {tp for tp, end in end_offsets.items() if tp in self.floor and end <= self.floor[tp]}

    def forget(self, partitions: Iterable[Partition]) -> None:
        for tp in partitions:
            self.acked.pop(tp, None)
            self.floor.pop(tp, None)


_MOVE = """
WITH moved AS (
    DELETE FROM outbox WHERE id = ANY($2::bigint[])
    RETURNING id, topic, key, payload, correlation_id
)
INSERT INTO outbox_sent (producer, id, topic, key, payload, correlation_id,
                         kafka_partition, kafka_offset, sent_at)
SELECT $1, m.id, m.topic, m.key, m.payload, m.correlation_id, a.p, a.o, now()
FROM moved m JOIN unnest($2::bigint[], $3::int[], $4::bigint[]) AS a(id, p, o) USING (id)
ON CONFLICT (producer, id) DO UPDATE
    SET kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset,
        sent_at = EXCLUDED.sent_at
"""

_KEPT = """
SELECT s.id AS page, s.id, s.topic, s.key, s.payload, s.correlation_id
FROM outbox_sent s JOIN unnest($2::text[], $3::int[]) AS l(topic, part)
    ON s.topic = l.topic AND s.kafka_partition = l.part
WHERE s.producer = $1 AND s.id > $4
ORDER BY s.id LIMIT $5
"""


# Per partition: the highest offset kept, and the lowest of the last send there. Every send
# (a batch, or a chunk of a re-publish) is recorded by one statement (_MOVE, _REACKED), so
# its rows share one sent_at (now(), not the column's per-row default), and no produce
# batch holds records of two sends (the relay waits for every ack before the next): the
# last produce batch starts at or after the lowest offset of the last send.
def acked_query(table: str, highest: str, lowest: str) -> str:
    """Per partition of ``table``'s kept sends: the highest offset kept, and the lowest of
    the last send there (``highest``/``lowest``: its columns for a row's last and first
    offset)."""
    return f"""
WITH last AS (
    SELECT topic, kafka_partition, max(sent_at) AS t, max({highest}) AS highest
    FROM {table} WHERE producer = $1 GROUP BY topic, kafka_partition
)
SELECT l.topic, l.kafka_partition, l.highest, min(s.{lowest}) AS last_batch_first
FROM last l JOIN {table} s ON s.producer = $1 AND s.topic = l.topic
    AND s.kafka_partition = l.kafka_partition AND s.sent_at = l.t
GROUP BY l.topic, l.kafka_partition, l.highest
"""


_ACKED = acked_query("outbox_sent", "kafka_offset", "kafka_offset")

_REACKED = """
UPDATE outbox_sent s SET kafka_partition = a.p, kafka_offset = a.o, sent_at = now()
FROM unnest($2::bigint[], $3::int[], $4::bigint[]) AS a(id, p, o)
WHERE s.producer = $1 AND s.id = a.id
"""


class RowSource(Protocol):
    """Where a relay's rows come from and where what it published is recorded: the shared
    ``outbox`` (``OutboxSource``) or a producer's own append-only log table
    (``shared.outbox_log.LogSource``). Rows carry ``id``, ``topic``, ``key``, ``payload``,
    ``correlation_id`` and ``created_at``; kept rows also ``page`` (re-publish paging)."""

    producer: str
    notifies: bool
    """Whether a commit can wake the relay with a NOTIFY (the outbox trigger)."""

    async def lead(self, conn: asyncpg.Connection, wake_on_notify: bool) -> None:
        """The relay took the lead: declare how it is woken, load what it needs."""

    async def fetch(self, conn: asyncpg.Connection, limit: int) -> Sequence[asyncpg.Record]:
        """The next rows to publish, in order (at most ``limit``)."""

    async def published(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], acks: Sequence[Ack]
    ) -> None:
        """``rows`` were acknowledged: never fetch them again; keep them with their acks
        (one per row) for re-publishing, unless ``acks`` is empty (retention off)."""

    async def acked(self, conn: asyncpg.Connection) -> Sequence[tuple[str, int, int, int]]:
        """Per partition kept: (topic, partition, highest offset, lowest offset of the
        last send there) (``LossDetector.remember``)."""

    async def kept(
        self, conn: asyncpg.Connection, lost: Sequence[Partition], after: int, limit: int
    ) -> Sequence[asyncpg.Record]:
        """The kept rows of ``lost`` partitions in the order first sent, from page
        ``after`` on (the next call's ``after`` is the last row's ``page``)."""

    async def reacked(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], acks: Sequence[Ack]
    ) -> None:
        """Kept rows were published again: record their new acks (one per row)."""

    async def purge(self, conn: asyncpg.Connection, retention: float) -> None:
        """Forget what was kept longer than ``retention`` seconds."""

    async def backlog(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], limit: int
    ) -> tuple[int, float]:
        """Rows waiting and the oldest one's age, given the last fetch (``rows``)."""


class KeptSends:
    """What both row sources keep of their sends in a table of their own (``kept_table``:
    ``producer``, ``topic``, ``kafka_partition``, ``sent_at``): the acks per partition for
    a new leader, the kept rows of lost partitions, the purge."""

    producer: str
    kept_table: str
    acked_sql: str
    kept_sql: str
    kept_limit: int | None = None
    """Sends read per page of ``kept`` (None: the relay's batch size)."""

    async def acked(self, conn: asyncpg.Connection) -> Sequence[tuple[str, int, int, int]]:
        rows = await conn.fetch(self.acked_sql, self.producer)
        return [
            (r["topic"], r["kafka_partition"], r["highest"], r["last_batch_first"]) for r in rows
        ]

    async def kept(
        self, conn: asyncpg.Connection, lost: Sequence[Partition], after: int, limit: int
    ) -> Sequence[asyncpg.Record]:
        topics, parts = [t for t, _ in lost], [p for _, p in lost]
        return await conn.fetch(
            self.kept_sql, self.producer, topics, parts, after, self.kept_limit or limit
        )

    async def purge(self, conn: asyncpg.Connection, retention: float) -> None:
        await conn.execute(
            f"DELETE FROM {self.kept_table} WHERE producer = $1"
            " AND sent_at < now() - make_interval(secs => $2)",
            self.producer,
            retention,
        )


class OutboxSource(KeptSends):
    """The shared ``outbox`` table: a row is moved to ``outbox_sent`` with its ack (or
    deleted when retention is off) once published."""

    notifies = True
    kept_table = "outbox_sent"
    acked_sql = _ACKED
    kept_sql = _KEPT

    def __init__(self, producer: str) -> None:
        self.producer = producer

    async def lead(self, conn: asyncpg.Connection, wake_on_notify: bool) -> None:
        # Declared after listening and before the first fetch. Rows another leader left
        # are in that fetch; only a writer whose trigger read the old flag and that
        # commits after the fetch goes unannounced: its rows wait for the next poll.
        await conn.execute(
            "INSERT INTO outbox_wakeup (producer, notify) VALUES ($1, $2)"
            " ON CONFLICT (producer) DO UPDATE SET notify = EXCLUDED.notify,"
            " updated_at = now()",
            self.producer,
            wake_on_notify,
        )

    async def fetch(self, conn: asyncpg.Connection, limit: int) -> Sequence[asyncpg.Record]:
        return await conn.fetch(
            "SELECT id, topic, key, payload, correlation_id, created_at FROM outbox"
            " WHERE producer = $1 ORDER BY id LIMIT $2",
            self.producer,
            limit,
        )

    async def published(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], acks: Sequence[Ack]
    ) -> None:
        ids = [r["id"] for r in rows]
        if acks:
            await conn.execute(
                _MOVE, self.producer, ids, [a[1] for a in acks], [a[2] for a in acks]
            )
        else:
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)

    async def reacked(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], acks: Sequence[Ack]
    ) -> None:
        await conn.execute(
            _REACKED,
            self.producer,
            [r["id"] for r in rows],
            [a[1] for a in acks],
            [a[2] for a in acks],
        )

    async def backlog(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], limit: int
    ) -> tuple[int, float]:
        """A fetch that was not full saw the whole backlog: its rows are the figures (the
        oldest is the lowest id, its age by this process's clock). Only a full one leaves
        a count to the database: on an outbox autovacuum has not yet visited, that count
        reads the dead heap (6-25 ms)."""
        if len(rows) < limit:
            age = time.time() - rows[0]["created_at"].timestamp() if rows else 0.0
            return len(rows), age
        row = await conn.fetchrow(
            "SELECT count(*) AS n,"
            " EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)) AS age"
            " FROM outbox WHERE producer = $1",
            self.producer,
        )
        assert row is not None
        return int(row["n"]), float(row["age"] or 0.0)


class OutboxRelay:
    def __init__(
        self,
        dsn: str,
        producer: str,
        publish: PublishBatch,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        publish_timeout: float = 15.0,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        end_offsets: EndOffsets | None = None,
        loss_check_interval: float = 1.0,
        purge_interval: float = 5.0,
        wake_on_notify: bool = True,
        source: RowSource | None = None,
    ) -> None:
        """``source``: where the rows come from (the shared outbox unless given).

        After a batch smaller than ``batch_size`` the relay waits for a NOTIFY of its
        producer, at most ``poll_interval``, before fetching again. ``wake_on_notify``
        False: it is not woken by NOTIFY, and asks the outbox trigger (``outbox_wakeup``)
        to send none for its producer; it then fetches every ``poll_interval``, and the
        rows of the commits meanwhile go out together (fewer, larger batches: less CPU per
        row in the relay and in PostgreSQL, for up to that much more time before a row is
        published). A source that cannot notify (a log table) needs
        ``wake_on_notify=False``."""
        self._source = source if source is not None else OutboxSource(producer)
        if wake_on_notify and not self._source.notifies:
            raise ValueError(f"{producer}: its rows send no NOTIFY; use wake_on_notify=False")
        self._dsn = dsn
        self._producer = producer
        self._publish = publish
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._retention = retention_seconds
        if end_offsets is None:
            # RelayProducer.publish_batch: its producer also answers end offsets.
            owner = getattr(publish, "__self__", None)
            end_offsets = owner if isinstance(owner, EndOffsets) else None
        self._end_offsets = end_offsets if self._retention > 0 else None
        self._loss_check_interval = loss_check_interval
        self._purge_interval = purge_interval
        self._wake_on_notify = wake_on_notify
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._lock_key = lock_key(producer)
        self._detector = LossDetector()
        self._lost: set[Partition] = set()
        self._last_check = 0.0
        self._last_purge = 0.0
        self._broker_down = False  # the last publish or log-end check failed: keep rows
        self._ends_failing_since: float | None = None  # log-end checks failing since then
        self._ends_warned = -math.inf
        self._cursor = 0  # the other relays' loss detections acted on (outbox_loss_cursor)
        self._cursor_pending = 0
        self._recorded: set[int] = set()  # ids of the detections this relay recorded
        self.is_leader = False
        self.last_error: str | None = None
        self._last_gauge = 0.0

    @property
    def retention_seconds(self) -> float:
        return self._retention

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if payload == self._producer:
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Interruptible by a notification or stop."""
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                await self._run_once_connected()
                backoff = 0.2
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.is_leader = False
                self.last_error = f"database: {exc.__class__.__name__}"
                log.warning("outbox relay lost database", error=str(exc))
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _run_once_connected(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn, timeout=5)
        try:
            while not self._stop.is_set():
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lock_key):
                    break
                await self._sleep(2.0)
            if self._stop.is_set():
                return
            self.is_leader = True
            if self._wake_on_notify:
                await conn.add_listener(CHANNEL, self._on_notify)
            await self._source.lead(conn, self._wake_on_notify)
            await self._load_acked(conn)
            backoff = 0.2
            while not self._stop.is_set():
                n = await self._maintain(conn)
                if n >= 0:
                    n = await self._relay_batch(conn)
                else:  # the broker does not answer: nothing is published, the gauges go on
                    await self._update_gauges(
                        conn, await self._source.fetch(conn, self._batch_size)
                    )
                if n < 0:  # publish failed: back off, keep the rows
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                if n < self._batch_size:
                    await self._sleep(min(self._poll_interval, self._loss_check_interval))
        finally:
            self.is_leader = False
            if not conn.is_closed():
                await conn.close()

    async def _load_acked(self, conn: asyncpg.Connection) -> None:
        """A new leader starts from what earlier leaders had acknowledged and kept, and
        from the other relays' loss detections they had acted on."""
        self._detector = LossDetector()
        if self._retention <= 0:
            return
        self._cursor = self._cursor_pending = int(
            await conn.fetchval(
                "SELECT coalesce(max(last_id), 0) FROM outbox_loss_cursor WHERE producer = $1",
                self._producer,
            )
        )
        self._detector.remember(await self._source.acked(conn))

    async def _send(self, rows: Sequence[asyncpg.Record]) -> list[Ack] | None:
        """Publish rows in order and wait for every ack; None if the broker did not take
        them all (counted and logged); [] if the publisher gives no offsets."""
        records = [
            (
                r["topic"],
                r["key"].encode() if r["key"] is not None else None,
                bytes(r["payload"]),
                r["correlation_id"],
            )
            for r in rows
        ]
        try:
            async with asyncio.timeout(self._publish_timeout):
                acks = list(await self._publish(records))
            if acks and len(acks) != len(rows):
                raise RuntimeError(f"{len(acks)} acknowledgements for {len(rows)} records")
        except Exception as exc:
            metrics.OUTBOX_PUBLISH_ERRORS.labels(self._producer).inc()
            self.last_error = f"publish: {exc.__class__.__name__}"
            self._broker_down = True
            log.warning("outbox publish failed; will retry", error=repr(exc), rows=len(rows))
            return None
        self.last_error = None
        self._broker_down = False
        return acks

    async def _relay_batch(self, conn: asyncpg.Connection) -> int:
        rows = await self._source.fetch(conn, self._batch_size)
        await self._update_gauges(conn, rows)
        if not rows:
            return 0
        acks = await self._send(rows)
        if acks is None:
            return -1
        if self._retention > 0 and acks:
            await self._note_lost(conn, self._detector.observe(acks))
            await self._source.published(conn, rows, acks)
        else:
            await self._source.published(conn, rows, [])
        _count_per_topic(metrics.OUTBOX_PUBLISHED, self._producer, rows)
        return len(rows)

    async def _note_lost(
        self, conn: asyncpg.Connection, lost: set[Partition], *, found_by: str | None = None
    ) -> None:
        """Mark partitions for re-publishing; record a loss this relay found itself
        (``found_by`` None) for the other relays."""
        new = lost - self._lost
        if not new:
            return
        self._lost |= new
        for topic, _ in new:
            metrics.OUTBOX_BROKER_LOSSES.labels(self._producer, topic).inc()
        log.warning(
            "broker lost acknowledged records; re-publishing the kept rows",
            partitions=sorted(f"{t}/{p}" for t, p in new),
            found_by=found_by or self._producer,
        )
        if found_by is None:
            found = sorted(new)
            ids = await conn.fetch(
                "INSERT INTO outbox_broker_losses (topic, kafka_partition, detected_by)"
                " SELECT t, p, $3 FROM unnest($1::text[], $2::int[]) AS l(t, p) RETURNING id",
                [t for t, _ in found],
                [p for _, p in found],
                self._producer,
            )
            self._recorded.update(r["id"] for r in ids)

    async def _losses_found_by_others(self, conn: asyncpg.Connection) -> None:
        """Partitions this relay wrote that were found lost since the cursor: by another
        relay, or by an earlier leader of this producer that stopped before it had
        re-published them."""
        rows = await conn.fetch(
            "SELECT id, topic, kafka_partition, detected_by FROM outbox_broker_losses"
            " WHERE id > $1 ORDER BY id",
            self._cursor,
        )
        if not rows:
            return
        self._cursor_pending = int(rows[-1]["id"])
        for r in rows:
            tp = (r["topic"], r["kafka_partition"])
            if r["id"] not in self._recorded and tp in self._detector.acked:
                await self._note_lost(conn, {tp}, found_by=r["detected_by"])

    async def _advance_cursor(self, conn: asyncpg.Connection) -> None:
        """Once everything marked is re-published, the detections read are acted on."""
        if self._cursor_pending <= self._cursor or self._lost:
            return
        await conn.execute(
            "INSERT INTO outbox_loss_cursor (producer, last_id) VALUES ($1, $2)"
            " ON CONFLICT (producer) DO UPDATE"
            " SET last_id = greatest(outbox_loss_cursor.last_id, EXCLUDED.last_id)",
            self._producer,
            self._cursor_pending,
        )
        self._cursor = self._cursor_pending
        self._recorded = {i for i in self._recorded if i > self._cursor}

    async def _maintain(self, conn: asyncpg.Connection) -> int:
        """Between batches: look for lost data, re-publish it, purge old kept rows.
        -1 if a re-publish failed (back off, as for a failed batch)."""
        if self._retention <= 0:
            return 0
        now = time.monotonic()
        # After a failed publish or check, the log ends are checked before anything new is
        # published: a broker back empty must get the kept rows first, in their old order,
        # or a consumer's position would point into records it never read.
        if self._broker_down or now - self._last_check >= self._loss_check_interval:
            self._last_check = now
            await self._losses_found_by_others(conn)
            if self._end_offsets is not None and self._detector.floor:
                try:
                    async with asyncio.timeout(min(3.0, self._publish_timeout)):
                        ends = await self._end_offsets.end_offsets(sorted(self._detector.floor))
                except Exception as exc:  # broker away: publish nothing until it answers
                    self._broker_down = True
                    if self._ends_failing_since is None:
                        self._ends_failing_since = now
                    if now - self._ends_warned >= ENDS_WARNING_INTERVAL:
                        self._ends_warned = now
                        log.warning(
                            "broker log ends not available: the relay publishes nothing until"
                            " they are",
                            producer=self._producer,
                            error=repr(exc),
                            seconds=round(now - self._ends_failing_since, 1),
                        )
                    else:
                        log.debug("end offsets not available", error=repr(exc))
                    return -1
                else:
                    self._broker_down = False
                    self._ends_failing_since, self._ends_warned = None, -math.inf
                    await self._note_lost(conn, self._detector.check(ends))
        if self._lost and not await self._republish(conn):
            return -1
        await self._advance_cursor(conn)
        if now - self._last_purge >= self._purge_interval and not self._broker_down:
            # Not while the broker is away: what it lost is only known once it answers.
            self._last_purge = now
            await self._source.purge(conn, self._retention)
            await conn.execute(
                "DELETE FROM outbox_broker_losses WHERE detected_at < now() - interval '1 day'"
            )
        return 0

    async def _republish(self, conn: asyncpg.Connection) -> bool:
        """Publish again, in id order, every kept row of the partitions that lost data."""
        lost = sorted(self._lost)
        self._detector.forget(lost)
        last_page, total = 0, 0
        while True:
            rows = await self._source.kept(conn, lost, last_page, self._batch_size)
            if not rows:
                break
            acks = await self._send(rows)
            if acks is None:
                return False  # self._lost unchanged: start over once the broker answers
            again: set[Partition] = set()
            if acks:
                # A loss during the re-publish: its partitions are re-published again.
                again = self._detector.observe(acks)
                await self._source.reacked(conn, rows, acks)
            _count_per_topic(metrics.OUTBOX_REPUBLISHED, self._producer, rows)
            total += len(rows)
            last_page = rows[-1]["page"]
            if again:
                log.warning("broker lost records again during the re-publish")
                self._lost -= again
                await self._note_lost(conn, again)  # counted and recorded as a new loss
                self._lost |= set(lost)  # start over, from the first kept row
                return True
        self._lost -= set(lost)
        log.warning("re-published the kept rows", rows=total, partitions=len(lost))
        return True

    async def _update_gauges(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
    ) -> None:
        """Backlog and oldest age (``RowSource.backlog``), at most once a second (always
        when nothing was fetched)."""
        now = time.monotonic()
        if rows and now - self._last_gauge < 1.0:
            return
        self._last_gauge = now
        n, age = await self._source.backlog(conn, rows, self._batch_size)
        metrics.OUTBOX_BACKLOG.labels(self._producer).set(n)
        metrics.OUTBOX_OLDEST_AGE.labels(self._producer).set(max(0.0, age))


def _count_per_topic(counter: Any, producer: str, rows: Sequence[asyncpg.Record]) -> None:
    """One increment per topic and batch, not per row (each is a write to a shared file
    when several processes export metrics)."""
    per_topic: dict[str, int] = {}
    for r in rows:
        per_topic[r["topic"]] = per_topic.get(r["topic"], 0) + 1
    for topic, n in per_topic.items():
        counter.labels(producer, topic).inc(n)


def lock_key(producer: str) -> int:
    """The advisory lock the relays of one producer take: only its holder publishes."""
    return zlib.crc32(f"outbox:{producer}".encode()) & 0x7FFFFFFF


async def leads(pool: asyncpg.Pool, producer: str) -> bool:
    """Whether a relay of ``producer`` holds its lock, in any process (a process that
    runs its relay elsewhere reports this as ``outbox_relay_leader``)."""
    # A bigint advisory key shows in pg_locks as classid (high half), objid (low half)
    # and objsubid 1.
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = 0 AND objid = $1::bigint::oid AND objsubid = 1)",
            lock_key(producer),
        )
    )


async def backlog(pool: asyncpg.Pool, producer: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE producer = $1", producer))
