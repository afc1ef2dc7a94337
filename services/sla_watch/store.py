"""PostgreSQL adapter of sla_watch: clock transitions and their events, atomically.

Every handler locks the ticket's row in ``sla_tickets`` first (one writer per ticket at a
time), then the ticket's clock rows in id order; firing locks clock rows in id order too,
so handlers and several instances' timers never deadlock. Each transition is a
conditional UPDATE whose event is written to the outbox in the same transaction: an
event is emitted once per (ticket, clock, instance) however many timers race for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import asyncpg

from services.sla_watch.domain import (
    ClockPolicy,
    ClockState,
    clock_start,
    consumed_at_pause,
    schedule,
    stop_outcome,
)
from services.sla_watch.policy import Labels, Policies, Policy
from shared.events import (
    AuthorRole,
    Category,
    Channel,
    ClockName,
    EscalationEvent,
    MessageEvent,
    Priority,
    RoutedEvent,
    SlaEvent,
    SlaKind,
    Tier,
    dump,
    escalation_id_for,
)
from shared.topics import SLA

PRODUCER = "sla_watch"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Kind(IntEnum):
    warning = 0
    breach = 1


@dataclass(frozen=True, slots=True)
class Due:
    """What the in-memory scheduler holds: when, what, and the clock row's id."""

    at: float  # unix seconds
    kind: Kind
    id: int


@dataclass(frozen=True, slots=True)
class Emitted:
    kind: SlaKind
    clock: str
    priority: str | None = None
    tier: str | None = None
    lateness: float | None = None
    elapsed: float | None = None


@dataclass(slots=True)
class Outcome:
    """What one handled event did: timers to set and events emitted (for metrics)."""

    new: bool = True
    due: list[Due] | None = None
    emitted: list[Emitted] | None = None

    def add_due(self, d: Due) -> None:
        self.due = [*(self.due or []), d]

    def add_emitted(self, e: Emitted) -> None:
        self.emitted = [*(self.emitted or []), e]


def _opt(enum: Any, v: str | None) -> Any:
    return enum(v) if v else None


def _sla_event(row: asyncpg.Record | dict[str, Any], kind: SlaKind, **extra: Any) -> SlaEvent:
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
        **extra,
    )


def _labels(t: asyncpg.Record) -> Labels:
    return Labels(
        category=_opt(Category, t["category"]),
        priority=_opt(Priority, t["priority"]),
        tier=_opt(Tier, t["tier"]),
        channel=_opt(Channel, t["channel"]),
        shop=t["shop_id"],
    )


def _with_ticket(row: asyncpg.Record, t: asyncpg.Record) -> dict[str, Any]:
    d = dict(row)
    d.update(priority=t["priority"], tier=t["tier"], category=t["category"])
    return d


def _dues(clock_id: int, warn_at: datetime | None, deadline: datetime) -> list[Due]:
    out = [Due(deadline.timestamp(), Kind.breach, clock_id)]
    if warn_at is not None and warn_at < deadline:
        out.append(Due(warn_at.timestamp(), Kind.warning, clock_id))
    return out


async def _seen(conn: Any, message_id: str) -> bool:
    new = await conn.fetchval(
        "INSERT INTO sla_seen (message_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1",
        message_id,
    )
    return new is None


async def _emit(conn: Any, event: SlaEvent) -> None:
    """One event into the outbox (a single-row INSERT: cheaper than a batch of one)."""
    await conn.execute(
        "INSERT INTO outbox (producer, topic, key, payload, correlation_id)"
        " VALUES ($1, $2, $3, $4, $5)",
        PRODUCER,
        SLA.name,
        event.ticket_id,
        dump(event),
        event.correlation_id,
    )


class _Tx:
    """One handler's transaction on one ticket: the locked ticket row and its clocks."""

    def __init__(self, conn: Any, policies: Policies, out: Outcome) -> None:
        self.conn = conn
        self.policies = policies
        self.out = out
        self.ticket: asyncpg.Record
        self.clocks: dict[str, asyncpg.Record] = {}

    async def row(self, sql: str, *args: object) -> asyncpg.Record:
        rec: asyncpg.Record | None = await self.conn.fetchrow(sql, *args)
        assert rec is not None, sql
        return rec

    async def lock(
        self,
        ticket_id: str,
        latest: tuple[str, datetime] | None = None,
        **labels: str | None,
    ) -> None:
        """Lock the ticket's row (creating it), set its labels and, in the same statement,
        move the ``latest`` timestamp column forward; then lock its clocks in id order."""
        sets = [f"{k} = COALESCE(EXCLUDED.{k}, sla_tickets.{k})" for k in labels]
        names: list[str] = list(labels)
        args: list[object] = list(labels.values())
        if latest is not None:
            col = latest[0]
            sets.append(f"{col} = GREATEST(sla_tickets.{col}, EXCLUDED.{col})")
            names.append(col)
            args.append(latest[1])
        cols = ", ".join(["ticket_id", *names])
        vals = ", ".join(f"${i + 1}" for i in range(len(names) + 1))
        self.ticket = await self.row(
            f"INSERT INTO sla_tickets AS sla_tickets ({cols}) VALUES ({vals})"
            " ON CONFLICT (ticket_id) DO UPDATE SET"
            f" {''.join(x + ', ' for x in sets)}updated_at = now()"
            " RETURNING *",
            ticket_id,
            *args,
        )
        rows = await self.conn.fetch(
            "SELECT * FROM sla_clocks WHERE ticket_id = $1 ORDER BY id FOR UPDATE", ticket_id
        )
        self.clocks = {r["clock"]: r for r in rows}

    @property
    def policy(self) -> Policy:
        return self.policies.select(_labels(self.ticket))

    def clock_policy(self, row: asyncpg.Record) -> ClockPolicy:
        cp = self.policy.clock(ClockName(row["clock"]))
        return cp if cp is not None else ClockPolicy(ClockName(row["clock"]), row["limit_seconds"])

    async def set_ticket(self, column: str, at: datetime) -> None:
        self.ticket = await self.row(
            f"UPDATE sla_tickets SET {column} = GREATEST({column}, $2) WHERE ticket_id = $1"
            " RETURNING *",
            self.ticket["ticket_id"],
            at,
        )

    def waiting_on_customer(self) -> bool:
        r, c = self.ticket["last_reply_at"], self.ticket["last_customer_at"]
        return r is not None and (c is None or r >= c)

    async def start(
        self,
        cp: ClockPolicy,
        *,
        conversation_id: str,
        shop_id: str | None,
        correlation_id: str,
        started_at: datetime,
        paused: bool = False,
    ) -> None:
        sched = schedule(cp, started_at, 0.0)
        rec = await self.row(
            "INSERT INTO sla_clocks AS c (ticket_id, clock, instance, state, conversation_id,"
            " shop_id, correlation_id, started_at, deadline, warn_at, limit_seconds, resumed_at,"
            " consumed_seconds, paused_at, policy)"
            " VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10, $7, 0, $11, $12)"
            " ON CONFLICT (ticket_id, clock) DO UPDATE SET instance = c.instance + 1,"
            " state = EXCLUDED.state, conversation_id = EXCLUDED.conversation_id,"
            " correlation_id = EXCLUDED.correlation_id, started_at = EXCLUDED.started_at,"
            " deadline = EXCLUDED.deadline, warn_at = EXCLUDED.warn_at,"
            " limit_seconds = EXCLUDED.limit_seconds, resumed_at = EXCLUDED.resumed_at,"
            " consumed_seconds = 0, paused_at = EXCLUDED.paused_at, policy = EXCLUDED.policy,"
            " warned_at = NULL, breached_at = NULL, stopped_at = NULL, lateness_seconds = NULL"
            " RETURNING *",
            self.ticket["ticket_id"],
            cp.clock.value,
            ClockState.paused.value if paused else ClockState.running.value,
            conversation_id,
            shop_id,
            correlation_id,
            started_at,
            sched.deadline,
            sched.warn_at,
            cp.limit_seconds,
            started_at if paused else None,
            self.policy.name,
        )
        self.clocks[cp.clock.value] = rec
        await _emit(self.conn, _sla_event(_with_ticket(rec, self.ticket), SlaKind.started))
        self.out.add_emitted(Emitted(SlaKind.started, cp.clock.value))
        if not paused:
            for d in _dues(rec["id"], sched.warn_at, sched.deadline):
                self.out.add_due(d)

    async def stop(self, clocks: Sequence[str], at: datetime, *, cancel: bool = False) -> None:
        for name in clocks:
            row = self.clocks.get(name)
            if row is None:
                continue
            state = ClockState(row["state"])
            new_state = ClockState.stopped if cancel else stop_outcome(state, at, row["deadline"])
            if new_state is None or state not in (
                ClockState.running,
                ClockState.paused,
                ClockState.breached,
            ):
                continue
            if at < row["started_at"]:
                continue  # a reply older than this run's message does not answer it
            rec = await self.row(
                "UPDATE sla_clocks SET state = $2, stopped_at = $3 WHERE id = $1 RETURNING *",
                row["id"],
                new_state.value,
                at,
            )
            self.clocks[name] = rec
            took = (at - row["started_at"]).total_seconds()
            kind = SlaKind.met if new_state is ClockState.met else SlaKind.stopped
            await _emit(
                self.conn, _sla_event(_with_ticket(rec, self.ticket), kind, elapsed_seconds=took)
            )
            self.out.add_emitted(
                Emitted(kind, name, self.ticket["priority"], self.ticket["tier"], elapsed=took)
            )

    async def pause(self, at: datetime) -> None:
        """Running clocks whose policy pauses while the ticket waits on the customer."""
        for name, row in list(self.clocks.items()):
            cp = self.clock_policy(row)
            if row["state"] != ClockState.running or not cp.pause_on_customer_wait:
                continue
            if at < row["resumed_at"] or at >= row["deadline"]:
                continue
            used = consumed_at_pause(cp, row["resumed_at"], row["consumed_seconds"], at)
            self.clocks[name] = await self.row(
                "UPDATE sla_clocks SET state = 'paused', paused_at = $2, consumed_seconds = $3"
                " WHERE id = $1 RETURNING *",
                row["id"],
                at,
                used,
            )

    async def resume(self, at: datetime) -> None:
        for name, row in list(self.clocks.items()):
            if row["state"] != ClockState.paused:
                continue
            cp = self.clock_policy(row)
            at = max(at, row["paused_at"])
            sched = schedule(cp, at, row["consumed_seconds"], warned=row["warned_at"] is not None)
            rec = await self.row(
                "UPDATE sla_clocks SET state = 'running', paused_at = NULL, resumed_at = $2,"
                " deadline = $3, warn_at = $4, limit_seconds = $5 WHERE id = $1 RETURNING *",
                row["id"],
                at,
                sched.deadline,
                sched.warn_at,
                cp.limit_seconds,
            )
            self.clocks[name] = rec
            for d in _dues(rec["id"], sched.warn_at, sched.deadline):
                self.out.add_due(d)

    async def recompute(self) -> None:
        """The ticket's labels changed: apply the limits of the policy that now matches."""
        policy = self.policy
        for name, row in list(self.clocks.items()):
            state = ClockState(row["state"])
            if state not in (ClockState.running, ClockState.paused):
                continue
            cp = policy.clock(ClockName(name))
            if cp is None:
                continue
            if cp.limit_seconds == row["limit_seconds"] and row["policy"] == policy.name:
                continue
            if state is ClockState.paused:
                self.clocks[name] = await self.row(
                    "UPDATE sla_clocks SET limit_seconds = $2, policy = $3 WHERE id = $1"
                    " RETURNING *",
                    row["id"],
                    cp.limit_seconds,
                    policy.name,
                )
                continue
            sched = schedule(
                cp, row["resumed_at"], row["consumed_seconds"], warned=row["warned_at"] is not None
            )
            rec = await self.row(
                "UPDATE sla_clocks SET limit_seconds = $2, policy = $3, deadline = $4, warn_at = $5"
                " WHERE id = $1 RETURNING *",
                row["id"],
                cp.limit_seconds,
                policy.name,
                sched.deadline,
                sched.warn_at,
            )
            self.clocks[name] = rec
            for d in _dues(rec["id"], sched.warn_at, sched.deadline):
                self.out.add_due(d)


def _answered(t: asyncpg.Record, since: datetime) -> bool:
    """A reply at or after ``since`` was already seen (events out of order)."""
    return t["last_reply_at"] is not None and t["last_reply_at"] >= since


async def on_customer_message(pool: asyncpg.Pool, msg: MessageEvent, policies: Policies) -> Outcome:
    """A customer wrote: start first_response (or next_response after a reply, when the
    policy has one) and resume clocks paused while waiting on the customer."""
    out = Outcome()
    async with pool.acquire() as conn, conn.transaction():
        if await _seen(conn, msg.message_id):
            return Outcome(new=False)
        tx = _Tx(conn, policies, out)
        at = clock_start(msg.occurred_at, msg.received_at)
        await tx.lock(
            msg.ticket_id,
            ("last_customer_at", at),
            channel=msg.channel.value,
            shop_id=msg.shop_id,
        )
        if _answered(tx.ticket, at):
            return out  # the reply arrived before this message's event: nothing to wait for
        await tx.resume(at)
        policy = tx.policy
        fr = tx.clocks.get(ClockName.first_response.value)
        nr_policy = policy.clock(ClockName.next_response)
        open_states = (ClockState.running, ClockState.breached)
        if fr is not None and fr["state"] not in open_states and nr_policy is not None:
            nr = tx.clocks.get(ClockName.next_response.value)
            if nr is None or nr["state"] not in open_states:
                await tx.start(
                    nr_policy,
                    conversation_id=msg.conversation_id,
                    shop_id=msg.shop_id,
                    correlation_id=msg.correlation_id,
                    started_at=at,
                )
            return out
        fr_policy = policy.clock(ClockName.first_response)
        if fr_policy is not None and (fr is None or fr["state"] not in open_states):
            await tx.start(
                fr_policy,
                conversation_id=msg.conversation_id,
                shop_id=msg.shop_id,
                correlation_id=msg.correlation_id,
                started_at=at,
            )
    return out


async def on_reply(pool: asyncpg.Pool, msg: MessageEvent, policies: Policies) -> Outcome:
    """An agent or bot replied: stop the response clocks; pause clocks that wait on the
    customer."""
    out = Outcome()
    async with pool.acquire() as conn, conn.transaction():
        if await _seen(conn, msg.message_id):
            return Outcome(new=False)
        tx = _Tx(conn, policies, out)
        at = msg.occurred_at
        await tx.lock(
            msg.ticket_id, ("last_reply_at", at), channel=msg.channel.value, shop_id=msg.shop_id
        )
        await tx.stop((ClockName.first_response.value, ClockName.next_response.value), at)
        if tx.waiting_on_customer():
            await tx.pause(at)
    return out


async def on_resolved(pool: asyncpg.Pool, msg: MessageEvent, policies: Policies) -> Outcome:
    out = Outcome()
    async with pool.acquire() as conn, conn.transaction():
        if await _seen(conn, msg.message_id):
            return Outcome(new=False)
        tx = _Tx(conn, policies, out)
        await tx.lock(msg.ticket_id, ("resolved_at", msg.occurred_at))
        await tx.stop(tuple(c.value for c in ClockName), msg.occurred_at)
    return out


async def on_reopened(pool: asyncpg.Pool, msg: MessageEvent, policies: Policies) -> Outcome:
    """A reopened ticket restarts its resolution clock (a new instance); reopened by the
    customer, it also awaits a first response again."""
    out = Outcome()
    async with pool.acquire() as conn, conn.transaction():
        if await _seen(conn, msg.message_id):
            return Outcome(new=False)
        tx = _Tx(conn, policies, out)
        await tx.lock(msg.ticket_id, channel=msg.channel.value, shop_id=msg.shop_id)
        at = clock_start(msg.occurred_at, msg.received_at)
        if tx.ticket["resolved_at"] is not None and tx.ticket["resolved_at"] > at:
            return out  # resolved again after this reopen: nothing to restart
        policy = tx.policy
        wanted = [ClockName.resolution]
        if msg.author_role is AuthorRole.customer:
            await tx.set_ticket("last_customer_at", at)
            wanted.append(ClockName.first_response)
        for name in wanted:
            cp = policy.clock(name)
            row = tx.clocks.get(name.value)
            if cp is None or (row is not None and row["started_at"] >= at):
                continue  # no such clock, or this reopen already restarted it
            if row is not None and row["state"] in (ClockState.running, ClockState.breached):
                continue
            if name is ClockName.first_response and _answered(tx.ticket, at):
                continue
            await tx.start(
                cp,
                conversation_id=msg.conversation_id,
                shop_id=msg.shop_id,
                correlation_id=msg.correlation_id,
                started_at=at,
            )
    return out


async def on_routed(pool: asyncpg.Pool, routed: RoutedEvent, policies: Policies) -> Outcome:
    """Learn the ticket's labels; recompute running clocks under the policy that now
    matches; start its resolution clock if the policy has one and it never ran."""
    out = Outcome()
    async with pool.acquire() as conn, conn.transaction():
        tx = _Tx(conn, policies, out)
        await tx.lock(
            routed.ticket_id,
            priority=routed.priority.value,
            tier=routed.tier.value,
            category=routed.category.value,
            channel=routed.channel.value,
            shop_id=routed.shop_id,
        )
        await tx.recompute()
        policy = tx.policy
        res = tx.clocks.get(ClockName.resolution.value)
        cp = policy.clock(ClockName.resolution)
        if cp is None:
            if res is not None and res["state"] in (ClockState.running, ClockState.paused):
                await tx.stop((ClockName.resolution.value,), routed.occurred_at, cancel=True)
            return out
        if res is not None:
            return out
        started = routed.message_received_at or routed.occurred_at
        resolved = tx.ticket["resolved_at"]
        if resolved is not None and resolved >= started:
            return out
        await tx.start(
            cp,
            conversation_id=routed.conversation_id,
            shop_id=routed.shop_id,
            correlation_id=routed.correlation_id,
            started_at=started,
            paused=cp.pause_on_customer_wait and tx.waiting_on_customer(),
        )
    return out


async def on_escalation(pool: asyncpg.Pool, esc: EscalationEvent, policies: Policies) -> Outcome:
    """An escalation by another service may raise the ticket's priority: recompute."""
    out = Outcome()
    if esc.priority is None:
        return out
    async with pool.acquire() as conn, conn.transaction():
        tx = _Tx(conn, policies, out)
        await tx.lock(esc.ticket_id, priority=esc.priority.value)
        await tx.recompute()
    return out


# Firing is the hot path: the events are built by PostgreSQL in the firing statement
# (the same JSON as ``SlaEvent`` / ``EscalationEvent``, checked by the tests), so a batch of
# a thousand breaches costs two statements and no Python object per event.
_SLA_JSON = """convert_to(json_build_object(
    'schema_version', 1, 'event_id', gen_random_uuid()::text, 'occurred_at', {at},
    'correlation_id', coalesce(j.correlation_id, j.ticket_id), 'producer', 'sla_watch',
    'ticket_id', j.ticket_id, 'conversation_id', j.conversation_id, 'clock', j.clock,
    'kind', '{kind}', 'deadline', j.deadline, 'started_at', j.started_at,
    'limit_seconds', j.limit_seconds, 'lateness_seconds', {lateness},
    'elapsed_seconds', NULL, 'priority', j.priority, 'tier', j.tier, 'category', j.category,
    'shop_id', j.shop_id)::text, 'UTF8')"""

_FIRE = """
WITH due AS (
    SELECT id FROM sla_clocks WHERE id = ANY($1::bigint[]) AND state = 'running' AND {due}
     ORDER BY id FOR UPDATE),
upd AS (
    UPDATE sla_clocks c SET {set} FROM due WHERE c.id = due.id RETURNING c.*),
j AS (
    SELECT upd.*, t.priority, t.tier, t.category FROM upd
      LEFT JOIN sla_tickets t USING (ticket_id)),
ev AS (
    INSERT INTO outbox (producer, topic, key, payload, correlation_id)
    SELECT 'sla_watch', 'cs.sla.v1', j.ticket_id, {payload}, coalesce(j.correlation_id, j.ticket_id)
      FROM j ORDER BY j.id)
SELECT j.id, j.ticket_id, j.clock, j.instance, j.priority, j.tier, j.lateness_seconds FROM j
ORDER BY j.id
"""

_FIRE_BREACH = _FIRE.format(
    due="deadline <= clock_timestamp()",
    set="state = 'breached', breached_at = clock_timestamp(),"
    " lateness_seconds = GREATEST(0, extract(epoch FROM clock_timestamp() - c.deadline))",
    payload=_SLA_JSON.format(at="j.breached_at", kind="breached", lateness="j.lateness_seconds"),
)

_FIRE_WARNING = _FIRE.format(
    due="warned_at IS NULL AND warn_at <= clock_timestamp() AND deadline > clock_timestamp()",
    set="warned_at = clock_timestamp()",
    payload=_SLA_JSON.format(at="j.warned_at", kind="warning", lateness="NULL"),
)

_ESCALATE = """
INSERT INTO outbox (producer, topic, key, payload, correlation_id)
SELECT 'sla_watch', 'cs.escalations.v1', c.ticket_id, convert_to(json_build_object(
    'schema_version', 1, 'event_id', gen_random_uuid()::text, 'occurred_at', c.breached_at,
    'correlation_id', coalesce(c.correlation_id, c.ticket_id), 'producer', 'sla_watch',
    'escalation_id', x.esc, 'ticket_id', c.ticket_id, 'conversation_id', c.conversation_id,
    'reason', c.clock || '_breached', 'priority', t.priority, 'tier', t.tier,
    'category', t.category, 'shop_id', c.shop_id, 'channel', NULL, 'agent_id', NULL,
    'waiting_seconds', extract(epoch FROM c.breached_at - c.started_at)::float8,
    'deadline', c.deadline, 'lateness_seconds', c.lateness_seconds, 'customer_ref', NULL
  )::text, 'UTF8'), coalesce(c.correlation_id, c.ticket_id)
FROM unnest($1::bigint[], $2::text[]) AS x(id, esc)
JOIN sla_clocks c ON c.id = x.id
LEFT JOIN sla_tickets t USING (ticket_id)
ORDER BY c.id
"""


async def fire(pool: asyncpg.Pool, kind: Kind, ids: Sequence[int]) -> list[Emitted]:
    """Breach (or warn) every clock of ``ids`` that is due, in one transaction. Clocks no
    longer due (stopped, restarted, recomputed, fired by another instance) are left."""
    if not ids:
        return []
    async with pool.acquire() as conn, conn.transaction():
        if kind is Kind.breach:
            recs = await conn.fetch(_FIRE_BREACH, list(ids))
            if recs:
                esc_ids = [
                    escalation_id_for(r["ticket_id"], f"{r['clock']}_breached", str(r["instance"]))
                    for r in recs
                ]
                await conn.execute(_ESCALATE, [r["id"] for r in recs], esc_ids)
            return [
                Emitted(
                    SlaKind.breached, r["clock"], r["priority"], r["tier"], r["lateness_seconds"]
                )
                for r in recs
            ]
        recs = await conn.fetch(_FIRE_WARNING, list(ids))
        return [Emitted(SlaKind.warning, r["clock"], r["priority"], r["tier"]) for r in recs]


_COLUMN = {Kind.breach: "deadline", Kind.warning: "warn_at"}


async def page(
    pool: asyncpg.Pool,
    kind: Kind,
    after: tuple[datetime, int],
    until: datetime,
    limit: int = 20_000,
) -> list[tuple[float, int]]:
    """Running clocks due in (after, until], by (time, id): one page of the rolling window
    (uses the partial indexes ``sla_clocks_running_deadline`` / ``_warn``)."""
    col = _COLUMN[kind]
    extra = " AND warned_at IS NULL" if kind is Kind.warning else ""
    rows = await pool.fetch(
        f"SELECT extract(epoch FROM {col})::float8 AS at, id FROM sla_clocks"
        f" WHERE state = 'running'{extra} AND ({col}, id) > ($1, $2) AND {col} <= $3"
        f" ORDER BY {col}, id LIMIT $4",
        after[0],
        after[1],
        until,
        limit,
    )
    return [(r["at"], r["id"]) for r in rows]


async def overdue(pool: asyncpg.Pool, kind: Kind, before: datetime, limit: int = 1000) -> list[int]:
    """Ids of running clocks whose time passed before ``before`` (the safety-net sweep)."""
    col = _COLUMN[kind]
    extra = " AND warned_at IS NULL AND deadline > now()" if kind is Kind.warning else ""
    rows = await pool.fetch(
        f"SELECT id FROM sla_clocks WHERE state = 'running'{extra} AND {col} <= $1"
        f" ORDER BY {col} LIMIT $2",
        before,
        limit,
    )
    return [r["id"] for r in rows]


async def open_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT clock, count(*) AS n FROM sla_clocks WHERE state IN ('running', 'paused')"
        " GROUP BY clock"
    )
    return {r["clock"]: r["n"] for r in rows}
