"""Helpers for tests: signed webhooks, in-process services on real ports, topic readers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker

from shared.events import (
    AuthorRole,
    Channel,
    Envelope,
    EscalationEvent,
    EscalationReason,
    MessageEvent,
    MessageKind,
    Priority,
    SlaEvent,
    dump,
)
from shared.outbox import (
    CHANNEL,
    OutboxRelay,
    OutboxRow,
    OutboxSource,
    RowSource,
    backlog,
    enqueue,
)
from shared.outbox_log import LogSource
from shared.signing import signed_headers
from shared.topics import SLA, TopicSpec

DEV_SECRET = b"ticketflow-local-development-secret"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
FIXTURES = SHARED / "fixtures" / "webhooks"


@dataclass
class Infra:
    dsn: str
    bootstrap: str
    stack: Any = None
    pg: Any = None
    broker: Any = None
    tmp: Path | None = None


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sla_row(ticket: str, i: int, key: str | None = None) -> OutboxRow:
    """An outbox row of an SLA event with the id ``<ticket>-<i>``, keyed by the ticket
    unless told."""
    return OutboxRow(
        SLA,
        ticket if key is None else key,
        SlaEvent(
            event_id=f"{ticket}-{i}",
            correlation_id=f"{ticket}-{i}",
            producer="test",
            ticket_id=ticket,
            conversation_id="c",
            clock="first_response",
            kind="started",
            deadline=None,
        ),
    )


def message_event(
    ticket: str,
    *,
    kind: MessageKind = MessageKind.message_created,
    role: AuthorRole = AuthorRole.customer,
    text: str | None = None,
    shop: str = "shop-1",
    at: datetime | None = None,
    received_at: datetime | None = None,
) -> MessageEvent:
    """A chat event of ``ticket`` (conversation ``conv-<ticket>``) as intake publishes it,
    with fresh ids. ``at`` is when it happened (now unless told); intake received it at
    ``received_at``, or now (not before ``at``)."""
    mid = uid("msg")
    now = datetime.now(UTC)
    at = at or now
    return MessageEvent(
        correlation_id=mid,
        producer="intake",
        occurred_at=at,
        kind=kind,
        source="generic",
        source_event_id=mid,
        message_id=mid,
        ticket_id=ticket,
        conversation_id="conv-" + ticket,
        shop_id=shop,
        channel=Channel.chat,
        author_role=role,
        text=text,
        received_at=received_at or max(at, now),
    )


def escalation_event(
    ticket: str,
    reason: EscalationReason,
    *,
    producer: str = "sla_watch",
    priority: Priority | None = None,
) -> EscalationEvent:
    """An escalation of ``ticket`` as ``producer`` publishes it, with a fresh id."""
    return EscalationEvent(
        correlation_id=ticket,
        producer=producer,
        escalation_id=uid("esc"),
        ticket_id=ticket,
        conversation_id="conv-" + ticket,
        reason=reason,
        priority=priority,
    )


def generic_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": uid("evt"),
        "type": "message.created",
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "shop_id": "shop-1",
        "channel": "chat",
        "conversation_id": uid("conv"),
        "customer": {"id": uid("cust"), "name": "张三", "phone": "13800138000", "vip_level": 0},
        "author": {"role": "customer", "id": "cust-7"},
        "text": "请问这件衣服有货吗？",
    }
    body.update(overrides)
    return body


def signed(
    body: dict[str, Any] | bytes, secret: bytes = DEV_SECRET, now: float | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    headers = signed_headers(secret, raw, time.time() if now is None else now)
    headers["Content-Type"] = "application/json"
    return raw, headers


def free_port() -> int:
    from shared.localstack import free_port as fp

    return fp()


@contextlib.asynccontextmanager
async def serving(app: Any, port: int | None = None, **options: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a real loopback port in this event loop; yields its base URL.
    ``options``: further ``uvicorn.Config`` arguments."""
    port = port or free_port()
    config = {"log_config": None, "lifespan": "on", "access_log": False} | options
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **config))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def wait_ready(base_url: str, timeout: float = 30) -> None:
    """Wait for /readyz (consumers hold their assignment) rather than sleeping."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(base_url + "/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{base_url} not ready after {timeout}s")


class TopicReader:
    """Reads a topic from the beginning (no group) and waits for matching records."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.seen: list[dict[str, Any]] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15, count: int = 1
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout

        def match(value: dict[str, Any]) -> bool:
            # A record without the field the predicate reads is no match: the session's
            # broker is shared, and another test may have put a record of another shape on
            # the same topic (test_router_batch's poison escalation on cs.escalations.v1).
            try:
                return pred(value)
            except KeyError:
                return False

        found = [r for r in self.seen if match(r)]
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"only {len(found)} of {count} matching records in {timeout}s")
            batch = await self.consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batch.values():
                for rec in records:
                    value = json.loads(rec.value)
                    self.seen.append(value)
                    if match(value):
                        found.append(value)
        return found

    async def drain(self, seconds: float) -> list[dict[str, Any]]:
        """Everything that arrives within ``seconds`` (to prove that nothing more came)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.seen.extend(json.loads(r.value) for r in records)
        return self.seen


async def publish_event(
    broker: KafkaBroker, topic: TopicSpec, key: str | None, event: Envelope
) -> None:
    """Publish one event through a service's broker and wait for the ack (tests that
    inject an event a service would receive)."""
    await broker.publish(
        dump(event),
        topic.name,
        key=key.encode() if key is not None else None,
        correlation_id=event.correlation_id,
        headers={"content-type": "application/json"},
    )


class OutboxNotifications:
    """The NOTIFY payloads (producer names) of the outbox trigger, in the order their
    transactions committed (PostgreSQL delivers them so)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.payloads: list[str] = []
        self._arrived = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> OutboxNotifications:
        self._conn = await asyncpg.connect(self._dsn)
        await self._conn.add_listener(CHANNEL, self._on_notify)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self.payloads.append(str(payload))
        self._arrived.set()

    async def sent_before_now(self, pool: asyncpg.Pool) -> list[str]:
        """Every payload of the transactions committed before this call: commits a row of
        a producer no relay declared (notified), waits for its NOTIFY, and returns the
        payloads that came before it. The row is deleted again."""
        marker = uid("marker")
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, marker, [sla_row(marker, 0)])
        async with asyncio.timeout(30):
            while marker not in self.payloads:
                self._arrived.clear()
                await self._arrived.wait()
        await pool.execute("DELETE FROM outbox WHERE producer = $1", marker)
        return self.payloads[: self.payloads.index(marker)]


async def relay_declared(pool: asyncpg.Pool, producer: str, notify: bool) -> None:
    """Until the relay of ``producer`` has declared in ``outbox_wakeup`` how it is woken."""
    query = "SELECT notify FROM outbox_wakeup WHERE producer = $1"
    async with asyncio.timeout(60):
        while True:
            if await pool.fetchval(query, producer) is notify:
                return
            await asyncio.sleep(0.05)


class Sink:
    """Where a test's relay reads its rows, for the relay tests that run against both row
    sources: ``outbox`` (the shared outbox, router's and sla_watch's) or ``log`` (a
    producer's own log table, as intake's ``intake_events``: a table of the test's own
    with the same ``seq``/``xid`` columns)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tables: dict[str, str] = {}  # producer -> its log table

    async def source(self, pool: asyncpg.Pool, producer: str) -> RowSource:
        if self.kind == "outbox":
            return OutboxSource(producer)
        table = self.tables.get(producer)
        if table is None:
            table = self.tables[producer] = "log_" + uuid.uuid4().hex[:12]
            await pool.execute(
                f"CREATE TABLE {table} ("
                " seq bigint GENERATED ALWAYS AS IDENTITY,"
                " xid xid8 NOT NULL DEFAULT pg_current_xact_id(),"
                " topic text NOT NULL, key text, payload bytea NOT NULL, correlation_id text,"
                " created_at timestamptz NOT NULL DEFAULT clock_timestamp());"
                f" CREATE INDEX ON {table} (xid, seq)"
            )
        return LogSource(
            producer,
            table,
            topic="topic",
            key="key",
            payload="payload",
            correlation_id="correlation_id",
            created_at="created_at",
        )

    async def relay(
        self, pool: asyncpg.Pool, dsn: str, producer: str, publish: Any, **options: Any
    ) -> OutboxRelay:
        """An ``OutboxRelay`` of ``producer`` on this sink (a log is polled: every 50 ms
        unless told)."""
        source = await self.source(pool, producer)
        if self.kind == "log":
            options.setdefault("poll_interval", 0.05)
            options["wake_on_notify"] = False
        return OutboxRelay(dsn, producer, publish, source=source, **options)

    async def write(self, conn: Any, producer: str, rows: Sequence[OutboxRow]) -> None:
        """``enqueue``, or the rows inserted into the producer's log, in the caller's
        transaction."""
        if self.kind == "outbox":
            await enqueue(conn, producer, rows)
            return
        await conn.executemany(
            f"INSERT INTO {self.tables[producer]} (topic, key, payload, correlation_id)"
            " VALUES ($1, $2, $3, $4)",
            [(r.topic.name, r.key, dump(r.event), r.event.correlation_id) for r in rows],
        )

    async def backlog(self, pool: asyncpg.Pool, producer: str) -> int:
        """Rows not yet published (and acknowledged)."""
        if self.kind == "outbox":
            return await backlog(pool, producer)
        source = await self.source(pool, producer)
        assert isinstance(source, LogSource)
        return await source.unpublished(pool)

    async def published(self, pool: asyncpg.Pool, producer: str, timeout: float = 20) -> None:
        """Until every row of ``producer`` was published (acknowledged and recorded)."""
        async with asyncio.timeout(timeout):
            while True:
                if await self.backlog(pool, producer) == 0:
                    return
                await asyncio.sleep(0.1)
