"""Group commit: concurrent webhooks share one transaction.

Each request hands its events to ``GroupCommitter.submit`` and waits. The first event of
a batch starts a short timer (``max_wait``, ~2 ms); when it fires, or when the batch is
full, one transaction inserts every event into ``intake_events`` (``ON CONFLICT DO
NOTHING``) and the new ones into the outbox, each with one ``unnest`` statement, and
commits. Only then is each request answered, so ``202`` still means durable. One fsync
then serves a whole batch instead of one per webhook.

A value the database refuses (``DataError``) fails only its own request: the batch is
retried one request at a time. Any other database error fails the whole batch (503).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from services.intake.domain import PRODUCER
from shared.events import MessageEvent
from shared.topics import MESSAGES

INSERT_EVENTS = (
    "INSERT INTO intake_events"
    " (source, source_event_id, message_id, ticket_id, kind, received_at, event)"
    " SELECT s, i, m, t, k, r, e::jsonb FROM unnest("
    "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[]"
    ") AS u(s, i, m, t, k, r, e)"
    " ON CONFLICT (source, source_event_id) DO NOTHING RETURNING source, source_event_id"
)
INSERT_OUTBOX = (
    "INSERT INTO outbox (producer, topic, key, payload, correlation_id)"
    " SELECT $1, $2, k, p, c FROM unnest($3::text[], $4::bytea[], $5::text[]) AS u(k, p, c)"
)


@dataclass
class _Item:
    events: list[MessageEvent]
    future: asyncio.Future[list[bool]]
    payloads: list[str] = field(default_factory=list)


async def store_batch(conn: asyncpg.Connection, items: list[_Item]) -> list[list[bool]]:
    """Insert every event of ``items`` in the caller's transaction; per item, per event,
    True when it was new. A key repeated within the batch is new only the first time."""
    first: dict[tuple[str, str], tuple[MessageEvent, str]] = {}
    for item in items:
        for event, payload in zip(item.events, item.payloads, strict=True):
            first.setdefault((event.source, event.source_event_id), (event, payload))
    rows = list(first.values())
    inserted = await conn.fetch(
        INSERT_EVENTS,
        [e.source for e, _ in rows],
        [e.source_event_id for e, _ in rows],
        [e.message_id for e, _ in rows],
        [e.ticket_id for e, _ in rows],
        [e.kind.value for e, _ in rows],
        [e.received_at for e, _ in rows],
        [p for _, p in rows],
    )
    new = {(r["source"], r["source_event_id"]) for r in inserted}
    queued = [(e, p) for e, p in rows if (e.source, e.source_event_id) in new]
    if queued:
        await conn.execute(
            INSERT_OUTBOX,
            PRODUCER,
            MESSAGES.name,
            [e.conversation_id for e, _ in queued],
            [p.encode() for _, p in queued],
            [e.correlation_id for e, _ in queued],
        )
    results: list[list[bool]] = []
    for item in items:
        out = []
        for event in item.events:
            key = (event.source, event.source_event_id)
            out.append(key in new)
            new.discard(key)  # a repeat later in the batch is a duplicate
        results.append(out)
    return results


class GroupCommitter:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        *,
        max_batch: int = 256,
        max_wait: float = 0.002,
    ) -> None:
        self._pool = pool
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._pending: list[_Item] = []
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, events: list[MessageEvent]) -> list[bool]:
        """Store ``events`` durably; per event, True when new and False for a duplicate.
        Returns only after the transaction holding them has committed."""
        loop = asyncio.get_running_loop()
        item = _Item(events, loop.create_future(), [e.model_dump_json() for e in events])
        self._pending.append(item)
        self._count += len(events)
        if self._count >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self._flush)
        return await item.future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending, self._count = self._pending, [], 0
        if batch:
            task = asyncio.get_running_loop().create_task(self._commit(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            results = await self._transaction(batch)
        except asyncpg.DataError as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            for item in batch:  # isolate the request the database refused
                await self._commit([item])
            return
        except BaseException as exc:
            _fail(batch, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    async def _transaction(self, batch: list[_Item]) -> list[list[bool]]:
        async with self._pool().acquire() as proxy, proxy.transaction():
            return await store_batch(proxy, batch)  # type: ignore[arg-type]

    async def close(self) -> None:
        self._flush()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(
                exc if isinstance(exc, Exception) else RuntimeError("group commit cancelled")
            )
