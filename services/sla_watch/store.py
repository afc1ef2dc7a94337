"""PostgreSQL adapter of sla_watch: clock transitions and their events, atomically."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.sla_watch.domain import ClockState, Policy, lateness_seconds, stop_outcome
from shared.events import (
    Category,
    ClockName,
    EscalationEvent,
    EscalationReason,
    MessageEvent,
    Priority,
    RoutedEvent,
    SlaEvent,
    SlaKind,
    Tier,
    escalation_id_for,
    utcnow,
)
from shared.outbox import OutboxRow, enqueue
from shared.topics import ESCALATIONS, SLA

PRODUCER = "sla_watch"


@dataclass(frozen=True, slots=True)
class Timer:
    """What an in-memory timer holds: enough to find the row again."""

    ticket_id: str
    clock: str
    instance: int


@dataclass(frozen=True, slots=True)
class Scheduled:
    timer: Timer
    warn_at: datetime | None
    deadline: datetime


@dataclass(frozen=True, slots=True)
class Emitted:
    kind: SlaKind
    clock: str
    priority: str | None = None
    tier: str | None = None
    lateness: float | None = None
    elapsed: float | None = None


def _opt(enum: type[Priority] | type[Tier] | type[Category], v: str | None):  # type: ignore[no-untyped-def]
    return enum(v) if v else None


def _sla_event(row: asyncpg.Record, kind: SlaKind, **extra: object) -> SlaEvent:
    return SlaEvent(
        correlation_id=row["correlation_id"] or row["ticket_id"],
        producer=PRODUCER,
        ticket_id=row["ticket_id"],
        conversation_id=row["conversation_id"],
        clock=ClockName(row["clock"]),
        kind=kind,
        deadline=row["deadline"],
        started_at=row["started_at"],
        limit_seconds=row["limit_seconds"],
        priority=_opt(Priority, row.get("priority")),
        tier=_opt(Tier, row.get("tier")),
        category=_opt(Category, row.get("category")),
        shop_id=row["shop_id"],
        **extra,  # type: ignore[arg-type]
    )


_RETURNING = (
    " RETURNING c.*, (SELECT priority FROM sla_tickets t WHERE t.ticket_id = c.ticket_id) AS priority,"
    " (SELECT tier FROM sla_tickets t WHERE t.ticket_id = c.ticket_id) AS tier,"
    " (SELECT category FROM sla_tickets t WHERE t.ticket_id = c.ticket_id) AS category"
)


async def _seen(conn: asyncpg.Connection, message_id: str) -> bool:
    new = await conn.fetchval(
        "INSERT INTO sla_seen (message_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1",
        message_id,
    )
    return new is None


async def _start(
    conn: asyncpg.Connection,
    *,
    ticket_id: str,
    conversation_id: str,
    shop_id: str | None,
    correlation_id: str,
    policy: Policy,
    started_at: datetime,
) -> tuple[Scheduled | None, Emitted | None]:
    row = await conn.fetchrow(
        "SELECT c.state, c.instance, t.last_reply_at FROM sla_clocks c"
        " LEFT JOIN sla_tickets t USING (ticket_id)"
        " WHERE c.ticket_id = $1 AND c.clock = $2 FOR UPDATE OF c",
        ticket_id,
        policy.clock.value,
    )
    if row is not None and row["state"] in (ClockState.running, ClockState.breached):
        return None, None  # already waiting for a reply: the earliest message's clock runs
    last_reply = await conn.fetchval(
        "SELECT last_reply_at FROM sla_tickets WHERE ticket_id = $1", ticket_id
    )
    if (
        policy.clock is ClockName.first_response
        and last_reply is not None
        and last_reply >= started_at
    ):
        return None, None  # the reply arrived before this message's event: nothing to wait for
    deadline, warn_at = policy.deadline(started_at), policy.warn_at(started_at)
    rec = await conn.fetchrow(
        "INSERT INTO sla_clocks AS c (ticket_id, clock, instance, state, conversation_id, shop_id,"
        " correlation_id, started_at, deadline, warn_at, limit_seconds)"
        " VALUES ($1, $2, 1, 'running', $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (ticket_id, clock) DO UPDATE SET instance = c.instance + 1, state = 'running',"
        " conversation_id = EXCLUDED.conversation_id, correlation_id = EXCLUDED.correlation_id,"
        " started_at = EXCLUDED.started_at, deadline = EXCLUDED.deadline, warn_at = EXCLUDED.warn_at,"
        " limit_seconds = EXCLUDED.limit_seconds, warned_at = NULL, breached_at = NULL,"
        " stopped_at = NULL" + _RETURNING,
        ticket_id,
        policy.clock.value,
        conversation_id,
        shop_id,
        correlation_id,
        started_at,
        deadline,
        warn_at,
        policy.limit_seconds,
    )
    assert rec is not None
    await enqueue(conn, PRODUCER, [OutboxRow(SLA, ticket_id, _sla_event(rec, SlaKind.started))])
    return (
        Scheduled(Timer(ticket_id, policy.clock.value, rec["instance"]), warn_at, deadline),
        Emitted(SlaKind.started, policy.clock.value),
    )


async def on_customer_message(
    pool: asyncpg.Pool, msg: MessageEvent, policy: Policy
) -> tuple[bool, Scheduled | None]:
    """Start the first-response clock. Returns (was new, what to schedule)."""
    from services.sla_watch.domain import clock_start

    async with pool.acquire() as conn, conn.transaction():
        if await _seen(conn, msg.message_id):
            return False, None
        scheduled, _ = await _start(
            conn,
            ticket_id=msg.ticket_id,
            conversation_id=msg.conversation_id,
            shop_id=msg.shop_id,
            correlation_id=msg.correlation_id,
            policy=policy,
            started_at=clock_start(msg.occurred_at, msg.received_at),
        )
        return True, scheduled


async def _stop(
    conn: asyncpg.Connection, ticket_id: str, clocks: tuple[str, ...], at: datetime
) -> list[Emitted]:
    out: list[Emitted] = []
    rows = await conn.fetch(
        "SELECT * FROM sla_clocks WHERE ticket_id = $1 AND clock = ANY($2::text[])"
        " AND state IN ('running', 'breached') FOR UPDATE",
        ticket_id,
        list(clocks),
    )
    for row in rows:
        new_state = stop_outcome(ClockState(row["state"]), at, row["deadline"])
        if new_state is None or at < row["started_at"]:
            continue
        rec = await conn.fetchrow(
            "UPDATE sla_clocks AS c SET state = $3, stopped_at = $4"
            " WHERE ticket_id = $1 AND clock = $2" + _RETURNING,
            ticket_id,
            row["clock"],
            new_state.value,
            at,
        )
        assert rec is not None
        elapsed = (at - row["started_at"]).total_seconds()
        kind = SlaKind.met if new_state is ClockState.met else SlaKind.stopped
        await enqueue(
            conn,
            PRODUCER,
            [OutboxRow(SLA, ticket_id, _sla_event(rec, kind, elapsed_seconds=elapsed))],
        )
        out.append(Emitted(kind, row["clock"], rec["priority"], rec["tier"], elapsed=elapsed))
    return out


async def on_reply(pool: asyncpg.Pool, msg: MessageEvent) -> list[Emitted] | None:
    """An agent or bot replied: stop the first-response clock. None for a duplicate."""
    at = msg.occurred_at
    async with pool.acquire() as conn, conn.transaction():
        if await _seen(conn, msg.message_id):
            return None
        await conn.execute(
            "INSERT INTO sla_tickets (ticket_id, last_reply_at) VALUES ($1, $2)"
            " ON CONFLICT (ticket_id) DO UPDATE SET last_reply_at ="
            " GREATEST(sla_tickets.last_reply_at, EXCLUDED.last_reply_at), updated_at = now()",
            msg.ticket_id,
            at,
        )
        return await _stop(conn, msg.ticket_id, (ClockName.first_response.value,), at)


async def on_resolved(pool: asyncpg.Pool, msg: MessageEvent) -> list[Emitted] | None:
    async with pool.acquire() as conn, conn.transaction():
        if await _seen(conn, msg.message_id):
            return None
        return await _stop(conn, msg.ticket_id, tuple(c.value for c in ClockName), msg.occurred_at)


async def on_routed(
    pool: asyncpg.Pool, routed: RoutedEvent, resolution: Policy
) -> Scheduled | None:
    """Learn the ticket's labels; a complaint starts its resolution clock."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO sla_tickets (ticket_id, priority, tier, category) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (ticket_id) DO UPDATE SET priority = EXCLUDED.priority,"
            " tier = EXCLUDED.tier, category = EXCLUDED.category, updated_at = now()",
            routed.ticket_id,
            routed.priority.value,
            routed.tier.value,
            routed.category.value,
        )
        if routed.category is not Category.complaint:
            return None
        exists = await conn.fetchval(
            "SELECT 1 FROM sla_clocks WHERE ticket_id = $1 AND clock = $2 AND state IN"
            " ('running', 'breached')",
            routed.ticket_id,
            ClockName.resolution.value,
        )
        if exists:
            return None
        scheduled, _ = await _start(
            conn,
            ticket_id=routed.ticket_id,
            conversation_id=routed.conversation_id,
            shop_id=routed.shop_id,
            correlation_id=routed.correlation_id,
            policy=resolution,
            started_at=routed.message_received_at or routed.occurred_at,
        )
        return scheduled


async def fire_warning(pool: asyncpg.Pool, t: Timer) -> Emitted | None:
    async with pool.acquire() as conn, conn.transaction():
        rec = await conn.fetchrow(
            "UPDATE sla_clocks AS c SET warned_at = clock_timestamp()"
            " WHERE ticket_id = $1 AND clock = $2 AND instance = $3 AND state = 'running'"
            " AND warned_at IS NULL" + _RETURNING,
            t.ticket_id,
            t.clock,
            t.instance,
        )
        if rec is None:
            return None
        await enqueue(
            conn, PRODUCER, [OutboxRow(SLA, t.ticket_id, _sla_event(rec, SlaKind.warning))]
        )
        return Emitted(SlaKind.warning, t.clock, rec["priority"], rec["tier"])


async def fire_breach(pool: asyncpg.Pool, t: Timer) -> Emitted | None:
    async with pool.acquire() as conn, conn.transaction():
        rec = await conn.fetchrow(
            "UPDATE sla_clocks AS c SET state = 'breached', breached_at = clock_timestamp()"
            " WHERE ticket_id = $1 AND clock = $2 AND instance = $3 AND state = 'running'"
            " AND deadline <= clock_timestamp()" + _RETURNING,
            t.ticket_id,
            t.clock,
            t.instance,
        )
        if rec is None:
            return None
        late = lateness_seconds(rec["deadline"], rec["breached_at"])
        clock = ClockName(t.clock)
        reason = EscalationReason(f"{clock.value}_breached")
        esc = EscalationEvent(
            correlation_id=rec["correlation_id"] or t.ticket_id,
            producer=PRODUCER,
            escalation_id=escalation_id_for(t.ticket_id, reason.value, str(t.instance)),
            ticket_id=t.ticket_id,
            conversation_id=rec["conversation_id"],
            reason=reason,
            priority=_opt(Priority, rec["priority"]),
            tier=_opt(Tier, rec["tier"]),
            category=_opt(Category, rec["category"]),
            shop_id=rec["shop_id"],
            waiting_seconds=(rec["breached_at"] - rec["started_at"]).total_seconds(),
            deadline=rec["deadline"],
            lateness_seconds=late,
        )
        await enqueue(
            conn,
            PRODUCER,
            [
                OutboxRow(
                    SLA, t.ticket_id, _sla_event(rec, SlaKind.breached, lateness_seconds=late)
                ),
                OutboxRow(ESCALATIONS, t.ticket_id, esc),
            ],
        )
        return Emitted(SlaKind.breached, t.clock, rec["priority"], rec["tier"], lateness=late)


async def running(pool: asyncpg.Pool) -> list[Scheduled]:
    rows = await pool.fetch(
        "SELECT ticket_id, clock, instance, warn_at, warned_at, deadline FROM sla_clocks"
        " WHERE state = 'running'"
    )
    return [
        Scheduled(
            Timer(r["ticket_id"], r["clock"], r["instance"]),
            r["warn_at"] if r["warned_at"] is None else None,
            r["deadline"],
        )
        for r in rows
    ]


async def overdue(pool: asyncpg.Pool, limit: int = 1000) -> tuple[list[Timer], list[Timer]]:
    """Clocks whose warning or deadline passed without an event (safety net)."""
    now = utcnow()
    breaches = await pool.fetch(
        "SELECT ticket_id, clock, instance FROM sla_clocks WHERE state = 'running'"
        " AND deadline <= $1 ORDER BY deadline LIMIT $2",
        now,
        limit,
    )
    warns = await pool.fetch(
        "SELECT ticket_id, clock, instance FROM sla_clocks WHERE state = 'running'"
        " AND warned_at IS NULL AND warn_at <= $1 AND deadline > $1 ORDER BY warn_at LIMIT $2",
        now,
        limit,
    )
    return (
        [Timer(r["ticket_id"], r["clock"], r["instance"]) for r in warns],
        [Timer(r["ticket_id"], r["clock"], r["instance"]) for r in breaches],
    )


async def open_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT clock, count(*) AS n FROM sla_clocks WHERE state = 'running' GROUP BY clock"
    )
    return {r["clock"]: r["n"] for r in rows}
