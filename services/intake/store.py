"""PostgreSQL adapter: record an event once and put it in the outbox, atomically."""

from __future__ import annotations

from typing import cast

import asyncpg

from services.intake.domain import PRODUCER
from shared.events import MessageEvent
from shared.outbox import OutboxRow, enqueue
from shared.topics import MESSAGES


async def accept(pool: asyncpg.Pool, event: MessageEvent) -> bool:
    """True when the event is new (stored and queued for publishing), False for a duplicate.
    The idempotency key is (source, source event id): the primary key of ``intake_events``."""
    async with pool.acquire() as proxy, proxy.transaction():
        conn = cast(asyncpg.Connection, proxy)
        inserted = await conn.fetchval(
            "INSERT INTO intake_events"
            " (source, source_event_id, message_id, ticket_id, kind, received_at, event)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (source, source_event_id) DO NOTHING RETURNING 1",
            event.source,
            event.source_event_id,
            event.message_id,
            event.ticket_id,
            event.kind.value,
            event.received_at,
            event.model_dump(mode="json"),
        )
        if inserted is None:
            return False
        await enqueue(conn, PRODUCER, [OutboxRow(MESSAGES, event.conversation_id, event)])
        return True
