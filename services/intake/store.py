"""PostgreSQL adapter without group commit: one statement per webhook (the statement of
``batcher.store_batch``: the event recorded once), and ``LOG``: ``intake_events`` read as
intake's outbox by its relay (``shared/outbox_log.py``)."""

from __future__ import annotations

import asyncpg

from services.intake.batcher import store_batch
from services.intake.domain import PRODUCER, StoredEvent
from shared.outbox_log import LogSource
from shared.topics import MESSAGES

LOG = LogSource(
    PRODUCER,
    "intake_events",
    topic=f"'{MESSAGES.name}'",
    key="event->>'conversation_id'",
    # jsonb's text: the same document as the bytes intake wrote (key order and spacing
    # are jsonb's); the correlation id is the message id, as before.
    payload="convert_to(event::text, 'UTF8')",
    correlation_id="message_id",
    created_at="received_at",
)
"""Every accepted event is a row of ``intake_events``: the relay publishes the table itself
(``seq``/``xid`` columns, migration 0003), with no second copy in ``outbox``."""


async def accept(pool: asyncpg.Pool, events: list[StoredEvent]) -> list[bool]:
    """Per event, True when it is new (stored, hence queued for publishing), False for a
    duplicate. The idempotency key is (source, source event id): the primary key of
    ``intake_events``."""
    async with pool.acquire() as conn:
        return (await store_batch(conn, [events]))[0]
