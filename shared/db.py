"""PostgreSQL through asyncpg: a pool, SQL migrations, and a liveness probe.

Migrations are plain SQL files named ``NNNN_description.sql``. The shared library's live
in ``shared/migrations/``; each service keeps its own in ``services/<name>/migrations/``.
``python -m shared.db migrate`` applies every pending file in order, each in its own
transaction, under an advisory lock so that concurrent starters do not race.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

ROOT = Path(__file__).resolve().parent.parent
Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection, direct or from a pool."""
COMPONENTS: tuple[tuple[str, Path], ...] = (
    ("shared", ROOT / "shared" / "migrations"),
    ("intake", ROOT / "services" / "intake" / "migrations"),
    ("router", ROOT / "services" / "router" / "migrations"),
    ("sla_watch", ROOT / "services" / "sla_watch" / "migrations"),
    ("notifier", ROOT / "services" / "notifier" / "migrations"),
)
_MIGRATION_LOCK = 7_301_001


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
        timeout=5,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def pool_lifespan(dsn: str, **kwargs: Any) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(dsn, **kwargs)
    try:
        yield pool
    finally:
        await pool.close()


async def ping(pool: asyncpg.Pool, timeout: float = 1.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return bool(await pool.fetchval("SELECT 1") == 1)
    except Exception:
        return False


def _pending_files() -> list[tuple[str, str, Path]]:
    out: list[tuple[str, str, Path]] = []
    for component, folder in COMPONENTS:
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.sql")):
            out.append((component, f.stem, f))
    return out


async def migrate(dsn: str, *, verbose: bool = False) -> list[str]:
    """Apply every pending migration; return the names applied."""
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                 component text NOT NULL,
                 version text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (component, version))"""
        )
        done = {
            (r["component"], r["version"])
            for r in await conn.fetch("SELECT component, version FROM schema_migrations")
        }
        for component, version, path in _pending_files():
            if (component, version) in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text(encoding="utf-8"))
                await conn.execute(
                    "INSERT INTO schema_migrations (component, version) VALUES ($1, $2)",
                    component,
                    version,
                )
            applied_now.append(f"{component}/{version}")
            if verbose:
                print(f"applied {component}/{version}")
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        finally:
            await conn.close()
    return applied_now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.db")
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("migrate", help="apply pending SQL migrations to DATABASE_URL")
    m.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args(argv)
    if not args.dsn:
        from shared.settings import DEFAULT_DATABASE_URL

        args.dsn = DEFAULT_DATABASE_URL
    applied = asyncio.run(migrate(args.dsn, verbose=True))
    print(f"{len(applied)} migration(s) applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
