"""Dead letters: what a service can never process, published through its outbox.

A poison record (an invalid schema, a value PostgreSQL refuses, a delivery that failed
for good) becomes a ``DeadLetterEvent`` on ``cs.deadletter.v1`` with the reason, and the
consumer then commits its offset so it never blocks a partition. The dead letter is
written to the service's outbox in a transaction of its own (``DeadLetters.record``) or in
the caller's (``enqueue``, e.g. together with marking a delivery dead-lettered), so it is
as durable as every other event: the relay publishes it, keeps it, and re-publishes it if
the broker loses it. Without the database the record is not committed and comes back.
"""

from __future__ import annotations

from typing import Protocol

import asyncpg

from shared import metrics
from shared.db import Conn
from shared.events import DeadLetterEvent
from shared.outbox import OutboxRelay, OutboxRow
from shared.outbox import enqueue as enqueue_rows
from shared.topics import DEADLETTER

MAX_PAYLOAD = 1_000_000
MAX_ERROR = 4000


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


def event(
    service: str,
    original_topic: str,
    key: bytes | str | None,
    value: bytes | str | None,
    reason: str,
    error: str,
    correlation_id: str | None = None,
) -> DeadLetterEvent:
    """The dead letter of one record (error and payload cut to the schema's bounds)."""
    return DeadLetterEvent(
        correlation_id=correlation_id or "unknown",
        producer=service,
        original_topic=original_topic,
        original_key=_text(key) or None,
        service=service,
        reason=reason,
        error=error[:MAX_ERROR],
        payload=(_text(value) or "")[:MAX_PAYLOAD],
    )


async def enqueue(conn: Conn, dead: DeadLetterEvent) -> None:
    """Write a dead letter to the outbox inside the caller's transaction (counted once
    the caller's transaction is expected to commit)."""
    await enqueue_rows(conn, dead.producer, [OutboxRow(DEADLETTER, dead.original_key, dead)])
    metrics.DEADLETTERED.labels(dead.producer, dead.reason).inc()


class _Service(Protocol):
    name: str
    relay: OutboxRelay | None

    @property
    def pool(self) -> asyncpg.Pool: ...


class DeadLetters:
    """A service's dead letters, written to its outbox (the service runs a relay)."""

    def __init__(self, service: _Service) -> None:
        if service.relay is None:
            raise ValueError(f"{service.name}: dead letters go through the outbox; run a relay")
        self._service = service

    @property
    def service(self) -> str:
        return self._service.name

    async def record(self, dead: DeadLetterEvent) -> None:
        """Write one dead letter (``event(...)``) to the outbox in its own transaction."""
        async with self._service.pool.acquire() as conn, conn.transaction():
            await enqueue(conn, dead)
