"""Group commit against the real database: concurrent submissions share transactions,
each gets its own answer only after the commit, duplicates stay duplicates, a value the
database refuses fails only its own request, the outbox gets the stored bytes in arrival
order, and a lost connection fails only its batch."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.intake.adapters.base import Inbound
from services.intake.batcher import GroupCommitter
from services.intake.domain import EventIds, StoredEvent, to_stored
from services.intake.store import LOG, accept
from shared.events import AuthorRole, Channel, MessageEvent, MessageKind
from shared.topics import MESSAGES
from tests.helpers import uid

pytestmark = pytest.mark.integration


IDS = EventIds()


def event(event_id: str, text: str = "你好", conv: str = "c") -> StoredEvent:
    now = datetime.now(UTC)
    return to_stored(
        "generic",
        Inbound(
            source_event_id=event_id,
            kind=MessageKind.message_created,
            occurred_at=now,
            shop_id="shop-batch",
            channel=Channel.chat,
            conversation_id=conv,
            author_role=AuthorRole.customer,
            text=text,
        ),
        now,
        IDS.next(),
    )


@pytest.fixture
async def committers() -> AsyncIterator[list[GroupCommitter]]:
    """Committers made by a test, closed after it even when it fails (a committer holds
    its connections out of the pool until it closes)."""
    made: list[GroupCommitter] = []
    yield made
    for c in made:
        await c.close()


def new(made: list[GroupCommitter], pool: asyncpg.Pool, **kw: Any) -> GroupCommitter:
    c = GroupCommitter(lambda: pool, **kw)
    made.append(c)
    return c


async def test_concurrent_submissions_share_transactions(pool, committers):
    committer = new(committers, pool, max_batch=64, max_wait=0.005)
    run = uid("gc")
    ids = [f"{run}-{i}" for i in range(200)]
    # Every id twice: once new, once a duplicate, whichever batch each lands in.
    results = await asyncio.gather(*(committer.submit([event(i)]) for i in ids + ids))
    assert sum(r[0] for r in results) == 200
    assert sum(not r[0] for r in results) == 200
    stored = await pool.fetchval(
        "SELECT count(*) FROM intake_events WHERE source_event_id LIKE $1", run + "-%"
    )
    assert stored == 200
    # Fewer transactions than requests: commits grouped (xact_commit counts them).
    again = [f"{run}-b{i}" for i in range(64)]
    before = await pool.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    await asyncio.gather(*(committer.submit([event(i)]) for i in again))
    await asyncio.sleep(0)  # let the stats of this backend flush on the next statement
    after = await pool.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    assert after - before < 64
    await committer.close()


async def test_one_refused_value_fails_only_its_request(pool, committers):
    committer = new(committers, pool, max_batch=64, max_wait=0.005)
    run = uid("gcbad")
    good = [committer.submit([event(f"{run}-{i}")]) for i in range(10)]
    bad = committer.submit([event(f"{run}-bad", text="a\x00b")])
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert all(r == [True] for r in results[:10])
    assert isinstance(results[10], asyncpg.DataError | ValueError)
    await committer.close()


async def test_repeated_key_in_one_submission(pool, committers):
    committer = new(committers, pool, max_wait=0.001)
    e = event(uid("gcdup"))
    assert await committer.submit([e, e]) == [True, False]
    await committer.close()


async def logged(pool: asyncpg.Pool, source_event_ids: list[str]) -> list[asyncpg.Record]:
    """What intake's relay publishes of these events, in the order it publishes them: the
    rows its log source (``store.LOG``) fetches from just before the first of them."""
    first = await pool.fetchrow(
        "SELECT xid::text AS xid, seq FROM intake_events WHERE source = 'generic'"
        " AND source_event_id = ANY($1::text[]) ORDER BY intake_events.xid, seq LIMIT 1",
        source_event_ids,
    )
    assert first is not None
    source = copy.copy(LOG)
    source._xid, source._seq = first["xid"], first["seq"] - 1
    async with pool.acquire() as conn:
        rows = await source.fetch(conn, 10_000)
    ours = set(await _message_ids(pool, source_event_ids))
    return [r for r in rows if r["correlation_id"] in ours]


async def _message_ids(pool: asyncpg.Pool, source_event_ids: list[str]) -> list[str]:
    return [
        r["message_id"]
        for r in await pool.fetch(
            "SELECT message_id FROM intake_events WHERE source = 'generic'"
            " AND source_event_id = ANY($1::text[])",
            source_event_ids,
        )
    ]


async def test_the_log_publishes_the_stored_events_in_arrival_order(pool, committers):
    run = uid("gcord")
    events = [event(f"{run}-{i}", conv=f"{run}-conv") for i in range(50)]
    committer = new(committers, pool, max_batch=500, max_wait=0.005)
    await asyncio.gather(*(committer.submit([e]) for e in events))
    await committer.close()
    rows = await logged(pool, [e.source_event_id for e in events])
    assert [r["correlation_id"] for r in rows] == [e.message_id for e in events]
    assert [MessageEvent.model_validate_json(r["payload"]) for r in rows] == [
        MessageEvent.model_validate_json(e.payload) for e in events
    ]
    assert {(r["topic"], r["key"]) for r in rows} == {(MESSAGES.name, f"{run}-conv")}
    e = events[7]
    stored = await pool.fetchrow(
        "SELECT message_id, ticket_id, kind, received_at, event FROM intake_events"
        " WHERE source = 'generic' AND source_event_id = $1",
        e.source_event_id,
    )
    assert stored is not None
    assert (stored["message_id"], stored["ticket_id"]) == (e.message_id, e.ticket_id)
    assert (stored["kind"], stored["received_at"]) == (e.kind.value, e.received_at)
    assert MessageEvent.model_validate(stored["event"]) == MessageEvent.model_validate_json(
        e.payload
    )


async def test_a_duplicate_adds_nothing_to_publish(pool, committers):
    run = uid("gcdupbox")
    first = event(f"{run}-1")
    again = event(f"{run}-1", text="changed")  # the same key with another body
    committer = new(committers, pool, max_wait=0.001)
    assert await committer.submit([first]) == [True]
    assert await committer.submit([again]) == [False]
    await committer.close()
    rows = await logged(pool, [first.source_event_id])
    assert [MessageEvent.model_validate_json(r["payload"]) for r in rows] == [
        MessageEvent.model_validate_json(first.payload)
    ]
    kept = await pool.fetchval(
        "SELECT event->>'text' FROM intake_events WHERE source = 'generic'"
        " AND source_event_id = $1",
        f"{run}-1",
    )
    assert kept == "你好"


async def test_without_group_commit_one_statement_per_webhook(pool):
    run = uid("acc")
    events = [event(f"{run}-1"), event(f"{run}-2"), event(f"{run}-1")]
    assert await accept(pool, events) == [True, True, False]
    assert await accept(pool, events[:2]) == [False, False]


async def test_close_gives_the_held_connections_back(infra):
    own = await asyncpg.create_pool(infra.dsn, min_size=0, max_size=3)
    committer = GroupCommitter(lambda: own, max_wait=0.001, connections=2)
    try:
        run = uid("gcheld")
        await asyncio.gather(*(committer.submit([event(f"{run}-{i}")]) for i in range(300)))
        assert own.get_idle_size() < own.get_size()  # held out of the pool meanwhile
    finally:
        await committer.close()
    assert own.get_idle_size() == own.get_size()
    await own.close()


async def test_lost_connection_fails_its_batch_and_the_next_one_works(pool, committers):
    committer = new(committers, pool, max_wait=0.001, connections=1)
    run = uid("gclost")
    assert await committer.submit([event(f"{run}-a")]) == [True]
    held = committer._idle[0]
    await pool.execute("SELECT pg_terminate_backend($1)", held.get_server_pid())
    # Which error depends on when the server's goodbye reaches asyncpg: an admin shutdown
    # (PostgresError), a closed connection (InterfaceError, OSError), or, when it arrives as
    # the next statement starts, asyncpg's "another operation is in progress"
    # (InternalClientError: seen once in CI). Each fails the batch and drops the connection.
    with pytest.raises(
        (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
    ):
        await committer.submit([event(f"{run}-b")])
    assert await committer.submit([event(f"{run}-b")]) == [True]  # a fresh connection
    await committer.close()
