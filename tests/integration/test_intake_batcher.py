"""Group commit against the real database: concurrent submissions share transactions,
each gets its own answer only after the commit, duplicates stay duplicates, and a value
the database refuses fails only its own request."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from services.intake.adapters.base import Inbound
from services.intake.batcher import GroupCommitter
from services.intake.domain import normalise
from shared.events import AuthorRole, Channel, MessageEvent, MessageKind
from tests.helpers import uid

pytestmark = pytest.mark.integration


def event(event_id: str, text: str = "你好", conv: str = "c") -> MessageEvent:
    now = datetime.now(UTC)
    return normalise(
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
    )


async def test_concurrent_submissions_share_transactions(pool):
    committer = GroupCommitter(lambda: pool, max_batch=64, max_wait=0.005)
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


async def test_one_refused_value_fails_only_its_request(pool):
    committer = GroupCommitter(lambda: pool, max_batch=64, max_wait=0.005)
    run = uid("gcbad")
    good = [committer.submit([event(f"{run}-{i}")]) for i in range(10)]
    bad = committer.submit([event(f"{run}-bad", text="a\x00b")])
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert all(r == [True] for r in results[:10])
    assert isinstance(results[10], asyncpg.DataError | ValueError)
    await committer.close()


async def test_repeated_key_in_one_submission(pool):
    committer = GroupCommitter(lambda: pool, max_wait=0.001)
    e = event(uid("gcdup"))
    assert await committer.submit([e, e]) == [True, False]
    await committer.close()
