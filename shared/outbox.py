"""Transactional outbox: write events with the state change, publish them afterwards.

A service writes the event row in the same PostgreSQL transaction as the change it
reports (``enqueue``). ``OutboxRelay`` publishes rows to Kafka in id order, in batches,
and deletes them once the broker has acknowledged every one. A crash between publish
and delete re-publishes the batch: delivery is at least once, and every consumer is
idempotent on the event's ids, so the effect is exactly once.

Only one relay per producer runs at a time (a PostgreSQL advisory lock), which keeps the
order per key. If the broker is down the rows wait; the relay retries with backoff and
catches up when it is back. The broker's memory-only storage in the local stack makes
this the recovery path for a broker restart too.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared import metrics
from shared.events import Envelope, dump
from shared.logging import get_logger
from shared.topics import TopicSpec

log = get_logger(__name__)

CHANNEL = "ticketflow_outbox"

Publish = Callable[[str, bytes | None, bytes, str | None], Awaitable[Any]]
"""(topic, key, value, correlation_id) -> awaitable that resolves when the broker acked."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    topic: TopicSpec
    key: str | None
    event: Envelope


async def enqueue(conn: asyncpg.Connection, producer: str, rows: Sequence[OutboxRow]) -> None:
    """Insert events into the outbox inside the caller's transaction."""
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO outbox (producer, topic, key, payload, correlation_id)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(producer, r.topic.name, r.key, dump(r.event), r.event.correlation_id) for r in rows],
    )


class OutboxRelay:
    def __init__(
        self,
        dsn: str,
        producer: str,
        publish: Publish,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        publish_timeout: float = 15.0,
    ) -> None:
        self._dsn = dsn
        self._producer = producer
        self._publish = publish
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._lock_key = zlib.crc32(f"outbox:{producer}".encode()) & 0x7FFFFFFF
        self.is_leader = False
        self.last_error: str | None = None
        self._last_gauge = 0.0

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
            await conn.add_listener(CHANNEL, self._on_notify)
            backoff = 0.2
            while not self._stop.is_set():
                n = await self._relay_batch(conn)
                if n < 0:  # publish failed: back off, keep the rows
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                if n < self._batch_size:
                    await self._sleep(self._poll_interval)
        finally:
            self.is_leader = False
            if not conn.is_closed():
                await conn.close()

    async def _relay_batch(self, conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(
            "SELECT id, topic, key, payload, correlation_id, created_at FROM outbox"
            " WHERE producer = $1 ORDER BY id LIMIT $2",
            self._producer,
            self._batch_size,
        )
        await self._update_gauges(conn, force=not rows)
        if not rows:
            return 0
        try:
            async with asyncio.timeout(self._publish_timeout):
                futures = [
                    await self._publish(
                        r["topic"],
                        r["key"].encode() if r["key"] is not None else None,
                        bytes(r["payload"]),
                        r["correlation_id"],
                    )
                    for r in rows
                ]
                await asyncio.gather(*futures)
        except Exception as exc:
            metrics.OUTBOX_PUBLISH_ERRORS.labels(self._producer).inc()
            self.last_error = f"publish: {exc.__class__.__name__}"
            log.warning("outbox publish failed; will retry", error=repr(exc), rows=len(rows))
            return -1
        self.last_error = None
        await conn.execute(
            "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
        )
        for r in rows:
            metrics.OUTBOX_PUBLISHED.labels(self._producer, r["topic"]).inc()
        return len(rows)

    async def _update_gauges(self, conn: asyncpg.Connection, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_gauge < 1.0:
            return
        self._last_gauge = now
        row = await conn.fetchrow(
            "SELECT count(*) AS n, EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)) AS age"
            " FROM outbox WHERE producer = $1",
            self._producer,
        )
        assert row is not None
        metrics.OUTBOX_BACKLOG.labels(self._producer).set(row["n"])
        metrics.OUTBOX_OLDEST_AGE.labels(self._producer).set(float(row["age"] or 0.0))


async def backlog(pool: asyncpg.Pool, producer: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE producer = $1", producer))
