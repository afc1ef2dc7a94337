"""Group commit: concurrent webhooks share one statement, hence one transaction.

Each request hands its events to ``GroupCommitter.submit`` and waits. Events gather
while every connection of the committer is busy committing (the batch grows with the
load by itself) and, when one is free, for at most ``max_wait`` (~2 ms) or until
``max_batch`` events. Then one statement stores the whole batch: it inserts into
``intake_events`` (``ON CONFLICT DO NOTHING``), in arrival order; that table is intake's
outbox (``store.LOG``). A single statement is a transaction of its own in PostgreSQL:
one round trip and one WAL flush for the batch, and no ``BEGIN``/``COMMIT`` of its own.
Only after it returns is each request answered, so ``202`` still means durable.

The committer keeps its ``connections`` (2) out of the pool for as long as it runs
(returning a connection to an asyncpg pool resets it: a round trip and a statement per
batch); a connection that fails goes back to the pool and a fresh one is taken next time.

A value the database refuses (``DataError``) fails only its own request: the batch is
retried one request at a time. Any other database error fails the whole batch (503).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.intake.domain import StoredEvent

STORE = (
    "WITH u AS MATERIALIZED ("
    " SELECT convert_from(p, 'UTF8')::jsonb AS e, n"
    " FROM unnest($1::bytea[]) WITH ORDINALITY AS u(p, n)"
    ")"
    " INSERT INTO intake_events"
    " (source, source_event_id, message_id, ticket_id, kind, received_at, event)"
    " SELECT e->>'source', e->>'source_event_id', e->>'message_id', e->>'ticket_id',"
    " e->>'kind', (e->>'received_at')::timestamptz, e FROM u ORDER BY n"
    " ON CONFLICT (source, source_event_id) DO NOTHING RETURNING source, source_event_id"
)
"""One insert; the table is intake's outbox (``store.LOG``): its rows take ``seq`` in
arrival order and the statement's transaction id. The events are parsed once
(``MATERIALIZED``: a CTE read once is inlined, and each column read would parse the JSON
again)."""

Conn = asyncpg.Connection | PoolConnectionProxy


async def store_batch(conn: Conn, batch: Sequence[Sequence[StoredEvent]]) -> list[list[bool]]:
    """Store every event of ``batch`` (one list per request) with one statement; per
    request, per event, True when it was new. A key repeated within the batch is new only
    the first time."""
    first: dict[tuple[str, str], StoredEvent] = {}
    for events in batch:
        for event in events:
            first.setdefault((event.source, event.source_event_id), event)
    rows = list(first.values())
    inserted = await conn.fetch(STORE, [e.payload for e in rows])
    new = {(r[0], r[1]) for r in inserted}
    results: list[list[bool]] = []
    for events in batch:
        out = []
        for event in events:
            key = (event.source, event.source_event_id)
            out.append(key in new)
            new.discard(key)  # a repeat later in the batch is a duplicate
        results.append(out)
    return results


@dataclass(slots=True)
class _Item:
    events: list[StoredEvent]
    future: asyncio.Future[list[bool]]


class GroupCommitter:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        *,
        max_batch: int = 256,
        max_wait: float = 0.002,
        connections: int = 2,
    ) -> None:
        self._pool = pool
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._pending: list[_Item] = []
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._idle: list[PoolConnectionProxy] = []  # connections held out of the pool, free
        self._slots = connections  # connections not busy committing (held or not)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, events: list[StoredEvent]) -> list[bool]:
        """Store ``events`` durably; per event, True when new and False for a duplicate.
        Returns only after the statement holding them has committed."""
        loop = asyncio.get_running_loop()
        item = _Item(events, loop.create_future())
        self._pending.append(item)
        self._count += len(events)
        if self._slots > 0:
            if self._count >= self.max_batch:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self.max_wait, self._flush)
        # else: the next commit to finish takes it (``_done``)
        return await item.future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending or self._slots == 0:
            return
        if self._count <= self.max_batch:
            batch, self._pending, self._count = self._pending, [], 0
        else:
            batch, n = [], 0
            while self._pending and n < self.max_batch:
                item = self._pending.pop(0)
                batch.append(item)
                n += len(item.events)
            self._count -= n
        self._slots -= 1
        task = asyncio.get_running_loop().create_task(self._commit(batch))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots += 1
        if self._pending:  # what gathered meanwhile goes now
            self._flush()

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            results = await self._store(batch)
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

    async def _store(self, batch: list[_Item]) -> list[list[bool]]:
        pool = self._pool()
        conn = self._idle.pop() if self._idle else await pool.acquire()
        try:
            results = await store_batch(conn, [item.events for item in batch])
        except asyncpg.DataError:
            self._idle.append(conn)  # the connection is fine; the value was not
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await pool.release(conn)
            raise
        if self._closed:
            await pool.release(conn)
        else:
            self._idle.append(conn)
        return results

    async def close(self) -> None:
        """Commit what is pending, wait for every commit, return the connections."""
        while self._tasks or self._pending:
            self._flush()
            if self._tasks:
                await asyncio.wait(list(self._tasks))
            # A finished task frees its slot in its done callback, which runs on a later
            # turn of the loop: yield to it (``await`` of a done task does not yield).
            await asyncio.sleep(0)
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await self._pool().release(conn)


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(
                exc if isinstance(exc, Exception) else RuntimeError("group commit cancelled")
            )
