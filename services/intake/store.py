"""PostgreSQL adapter without group commit: one statement per webhook (the statement of
``batcher.store_batch``: the event recorded once and queued in the outbox, atomically)."""

from __future__ import annotations

import asyncpg

from services.intake.batcher import store_batch
from services.intake.domain import StoredEvent


async def accept(pool: asyncpg.Pool, events: list[StoredEvent]) -> list[bool]:
    """Per event, True when it is new (stored and queued for publishing), False for a
    duplicate. The idempotency key is (source, source event id): the primary key of
    ``intake_events``."""
    async with pool.acquire() as conn:
        return (await store_batch(conn, [events]))[0]
