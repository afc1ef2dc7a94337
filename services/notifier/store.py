"""PostgreSQL adapter of the notifier: escalations, the delivery queue, attempts, digests.

The queue is ``notifier_deliveries``: one row per (escalation, level, channel), or per
digest. A worker leases due rows by pushing ``next_attempt_at`` forward (so a crashed
worker's rows come back after the lease), sends them, and records the outcome. A lease
names its owner (the instance) and its round: a restarted instance, or one whose lease
answer was lost to a database fault, gives back the leases it no longer works on at once
(``release_leases``) rather than leaving them for the lease to run out.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.db import Conn
from shared.events import EscalationEvent


@dataclass(frozen=True, slots=True)
class Row:
    escalation_id: str  # the digest id for a digest row
    level: int
    channel: str
    kind: str
    ticket_id: str
    attempts: int
    first_attempt: bool
    payload: dict[str, Any] | None  # the escalation (single) or the summary (digest)

    def event(self) -> EscalationEvent:
        assert self.payload is not None
        return EscalationEvent.model_validate(self.payload)


async def record_escalation(
    pool: asyncpg.Pool,
    esc: EscalationEvent,
    route: str | None,
    channels: list[str],
    next_level_in: float | None,
) -> bool:
    """Store a new escalation and queue its level-1 deliveries; False for a repeat."""
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            "INSERT INTO notifier_escalations (escalation_id, ticket_id, route, payload,"
            " next_level_at) VALUES ($1, $2, $3, $4,"
            " CASE WHEN $5::float8 IS NULL THEN NULL"
            " ELSE now() + make_interval(secs => $5::float8) END)"
            " ON CONFLICT DO NOTHING RETURNING true",
            esc.escalation_id,
            esc.ticket_id,
            route,
            esc.model_dump(mode="json"),
            next_level_in,
        )
        if not inserted:
            return False
        await conn.executemany(
            "INSERT INTO notifier_deliveries (escalation_id, level, channel, ticket_id, status)"
            " VALUES ($1, 1, $2, $3, 'pending') ON CONFLICT DO NOTHING",
            [(esc.escalation_id, ch, esc.ticket_id) for ch in channels],
        )
        return True


async def due_count(pool: asyncpg.Pool, channel: str, kind: str) -> int:
    n = await pool.fetchval(
        "SELECT count(*) FROM notifier_deliveries WHERE status = 'pending' AND channel = $1"
        " AND kind = $2 AND next_attempt_at <= now()",
        channel,
        kind,
    )
    return int(n or 0)


async def next_due_in(pool: asyncpg.Pool, channel: str) -> float | None:
    """Seconds until this channel's next pending row is due (None: nothing pending)."""
    v = await pool.fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM notifier_deliveries"
        " WHERE status = 'pending' AND channel = $1",
        channel,
    )
    return None if v is None else max(0.0, float(v))


async def lease(
    pool: asyncpg.Pool,
    channel: str,
    kind: str,
    limit: int,
    lease_seconds: float,
    owner: str,
    lease_id: uuid.UUID,
) -> list[Row]:
    rows = await pool.fetch(
        """
        WITH picked AS (
            SELECT escalation_id, level, channel FROM notifier_deliveries
            WHERE status = 'pending' AND channel = $1 AND kind = $2 AND next_attempt_at <= now()
            ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED
        ), upd AS (
            UPDATE notifier_deliveries d
            SET next_attempt_at = now() + make_interval(secs => $4::float8),
                lease_owner = $5, lease_id = $6
            FROM picked p
            WHERE d.escalation_id = p.escalation_id AND d.level = p.level
              AND d.channel = p.channel
            RETURNING d.escalation_id, d.level, d.channel, d.kind, d.ticket_id, d.attempts,
                      d.first_attempt_at
        )
        SELECT u.*, COALESCE(e.payload, g.summary) AS payload
        FROM upd u
        LEFT JOIN notifier_escalations e ON u.kind = 'single' AND e.escalation_id = u.escalation_id
        LEFT JOIN notifier_digests g ON u.kind = 'digest' AND g.digest_id = u.escalation_id
        """,
        channel,
        kind,
        limit,
        lease_seconds,
        owner,
        lease_id,
    )
    return [
        Row(
            r["escalation_id"],
            r["level"],
            r["channel"],
            r["kind"],
            r["ticket_id"],
            r["attempts"],
            r["first_attempt_at"] is None,
            r["payload"],
        )
        for r in rows
    ]


async def release_leases(pool: asyncpg.Pool, owner: str, keep: Collection[uuid.UUID]) -> int:
    """Make ``owner``'s leased rows due now, except those of the rounds in ``keep`` (still
    being sent). Called when an instance starts (its previous process died holding
    leases) and after a database fault (a lease may have been granted whose answer never
    arrived); returns how many rows came back."""
    res = await pool.execute(
        "UPDATE notifier_deliveries SET next_attempt_at = now(), lease_owner = NULL,"
        " lease_id = NULL WHERE status = 'pending' AND lease_owner = $1"
        " AND NOT (lease_id = ANY($2::uuid[]))",
        owner,
        list(keep),
    )
    return int(res.split()[-1])


async def make_digest(
    pool: asyncpg.Pool, channel: str, members: list[Row], summary: dict[str, Any]
) -> Row:
    """Fold leased rows into one digest delivery (in one transaction)."""
    digest_id = "dig-" + str(uuid.uuid4())
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO notifier_digests (digest_id, channel, count, summary)"
            " VALUES ($1, $2, $3, $4)",
            digest_id,
            channel,
            len(members),
            summary,
        )
        await conn.execute(
            "INSERT INTO notifier_deliveries (escalation_id, level, channel, ticket_id, status,"
            " kind) VALUES ($1, 1, $2, '', 'pending', 'digest')",
            digest_id,
            channel,
        )
        await conn.executemany(
            "UPDATE notifier_deliveries SET status = 'digested', digest_id = $4"
            " WHERE escalation_id = $1 AND level = $2 AND channel = $3",
            [(m.escalation_id, m.level, m.channel, digest_id) for m in members],
        )
    return Row(digest_id, 1, channel, "digest", "", 0, True, summary)


async def record_attempt(
    pool: asyncpg.Pool,
    row: Row,
    attempt: int,
    outcome: str,
    status: str,
    status_code: int | None,
    detail: str,
    duration_ms: float,
    retry_in: float | None,
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO notifier_attempts (escalation_id, channel, level, attempt, outcome,"
            " status_code, detail, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            row.escalation_id,
            row.channel,
            row.level,
            attempt,
            outcome,
            status_code,
            detail,
            duration_ms,
        )
        await conn.execute(
            "UPDATE notifier_deliveries SET attempts = $4, status = $5, last_error = $6,"
            " first_attempt_at = COALESCE(first_attempt_at, now()),"
            " lease_owner = NULL, lease_id = NULL,"
            " delivered_at = CASE WHEN $5 = 'delivered' THEN now() ELSE delivered_at END,"
            " next_attempt_at = CASE WHEN $7::float8 IS NULL THEN next_attempt_at"
            "   ELSE now() + make_interval(secs => $7::float8) END"
            " WHERE escalation_id = $1 AND level = $2 AND channel = $3",
            row.escalation_id,
            row.level,
            row.channel,
            attempt,
            status,
            detail or None,
            retry_in,
        )


async def to_deadletter(pool: asyncpg.Pool, limit: int = 100) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT d.escalation_id, d.level, d.channel, d.kind, d.ticket_id, d.last_error,"
            " COALESCE(e.payload, g.summary) AS payload FROM notifier_deliveries d"
            " LEFT JOIN notifier_escalations e ON e.escalation_id = d.escalation_id"
            " LEFT JOIN notifier_digests g ON g.digest_id = d.escalation_id"
            " WHERE d.status = 'failed' AND d.deadlettered_at IS NULL LIMIT $1",
            limit,
        )
    )


async def mark_deadlettered(conn: Conn, escalation_id: str, level: int, channel: str) -> None:
    await conn.execute(
        "UPDATE notifier_deliveries SET deadlettered_at = now()"
        " WHERE escalation_id = $1 AND level = $2 AND channel = $3",
        escalation_id,
        level,
        channel,
    )


async def fail_unknown_channels(pool: asyncpg.Pool, known: list[str]) -> int:
    """Rows queued for a channel that the configuration no longer has: permanent failure."""
    res = await pool.execute(
        "UPDATE notifier_deliveries SET status = 'failed',"
        " last_error = 'channel no longer configured'"
        " WHERE status = 'pending' AND NOT (channel = ANY($1::text[]))",
        known,
    )
    return int(res.split()[-1])


# -- levels, acknowledgements, resolution ------------------------------------------------


async def due_escalations(pool: asyncpg.Pool, limit: int = 200) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT escalation_id, ticket_id, route, level,"
            " extract(epoch FROM now() - received_at) AS age FROM notifier_escalations"
            " WHERE acked_at IS NULL AND resolved_at IS NULL AND next_level_at <= now()"
            " ORDER BY next_level_at LIMIT $1",
            limit,
        )
    )


async def advance_level(
    pool: asyncpg.Pool,
    escalation_id: str,
    from_level: int,
    channels: list[str],
    next_level_in: float | None,
) -> bool:
    """Move an unacknowledged escalation to its next level and queue that level's
    deliveries; False when someone else did it, or it was acknowledged meanwhile."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE notifier_escalations SET level = level + 1,"
            " next_level_at = CASE WHEN $3::float8 IS NULL THEN NULL"
            "   ELSE received_at + make_interval(secs => $3::float8) END"
            " WHERE escalation_id = $1 AND level = $2 AND acked_at IS NULL"
            " AND resolved_at IS NULL RETURNING ticket_id, level",
            escalation_id,
            from_level,
            next_level_in,
        )
        if row is None:
            return False
        await conn.executemany(
            "INSERT INTO notifier_deliveries (escalation_id, level, channel, ticket_id, status)"
            " VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT DO NOTHING",
            [(escalation_id, row["level"], ch, row["ticket_id"]) for ch in channels],
        )
        return True


async def stop_escalating(pool: asyncpg.Pool, escalation_id: str) -> None:
    await pool.execute(
        "UPDATE notifier_escalations SET next_level_at = NULL WHERE escalation_id = $1",
        escalation_id,
    )


async def acknowledge(
    pool: asyncpg.Pool, escalation_id: str, by: str | None, via: str
) -> dict[str, Any] | None:
    """Acknowledge (idempotent): no further level is sent and queued re-sends are
    cancelled. None when the escalation is unknown."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE notifier_escalations SET acked_at = COALESCE(acked_at, now()),"
            " acked_by = COALESCE(acked_by, $2), acked_via = COALESCE(acked_via, $3),"
            " next_level_at = NULL WHERE escalation_id = $1"
            " RETURNING escalation_id, ticket_id, level, acked_at, acked_by, acked_via",
            escalation_id,
            by,
            via,
        )
        if row is None:
            return None
        await conn.execute(
            "UPDATE notifier_deliveries SET status = 'cancelled', last_error = 'acknowledged'"
            " WHERE escalation_id = $1 AND status = 'pending' AND level > 1",
            escalation_id,
        )
        return dict(row)


async def escalation_status(pool: asyncpg.Pool, escalation_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT escalation_id, ticket_id, route, level, received_at, next_level_at, acked_at,"
        " acked_by, acked_via, resolved_at FROM notifier_escalations WHERE escalation_id = $1",
        escalation_id,
    )
    if row is None:
        return None
    out = dict(row)
    dels = await pool.fetch(
        "SELECT level, channel, status, attempts, digest_id, last_error FROM notifier_deliveries"
        " WHERE escalation_id = $1 ORDER BY level, channel",
        escalation_id,
    )
    out["deliveries"] = [dict(d) for d in dels]
    return out


async def resolve_ticket(pool: asyncpg.Pool, ticket_id: str) -> int:
    """The ticket was resolved: its escalations stop, queued re-sends are cancelled."""
    async with pool.acquire() as conn, conn.transaction():
        res = await conn.execute(
            "UPDATE notifier_escalations SET resolved_at = now(), next_level_at = NULL"
            " WHERE ticket_id = $1 AND resolved_at IS NULL",
            ticket_id,
        )
        await conn.execute(
            "UPDATE notifier_deliveries SET status = 'cancelled', last_error = 'resolved'"
            " WHERE ticket_id = $1 AND status = 'pending' AND level > 1 AND kind = 'single'",
            ticket_id,
        )
    return int(res.split()[-1])


async def stats(pool: asyncpg.Pool) -> tuple[dict[str, int], int, float]:
    """Pending rows per channel, unacknowledged open escalations of a route (those that
    someone is expected to acknowledge), and the oldest one's age."""
    queued = {
        r["channel"]: int(r["n"])
        for r in await pool.fetch(
            "SELECT channel, count(*) AS n FROM notifier_deliveries WHERE status = 'pending'"
            " GROUP BY channel"
        )
    }
    row = await pool.fetchrow(
        "SELECT count(*) AS n, COALESCE(extract(epoch FROM now() - min(received_at)), 0) AS age"
        " FROM notifier_escalations WHERE acked_at IS NULL AND resolved_at IS NULL"
        " AND route IS NOT NULL"
    )
    assert row is not None
    return queued, int(row["n"]), float(row["age"])
