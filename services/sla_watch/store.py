"""PostgreSQL adapter of sla_watch: clock transitions and their events, atomically.

Every handler locks the ticket's row in ``sla_tickets`` first (one writer per ticket at a
time), then the ticket's clock rows in id order; firing locks clock rows in id order too,
so handlers and several instances' timers never deadlock. Each transition is a
conditional UPDATE whose event is written to the outbox in the same transaction: an
event is emitted once per (ticket, clock, instance) however many timers race for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import asyncpg
import orjson

from services.sla_watch.domain import (
    OPEN_STATES,
    ClockPolicy,
    ClockState,
    clock_start,
    consumed_at_pause,
    schedule,
    stop_outcome,
)
from services.sla_watch.policy import Labels, Policies, Policy
from shared.events import (
    PRIORITY_RANK,
    SCHEMA_VERSION,
    AuthorRole,
    Category,
    Channel,
    ClockName,
    EscalationEvent,
    MessageEvent,
    MessageKind,
    Priority,
    RoutedEvent,
    SlaKind,
    Tier,
    escalation_id_for,
    utcnow,
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
    category: str | None = None
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


def _sla_payload(row: Row, t: Row, kind: SlaKind, elapsed: float | None = None) -> bytes:
    """The wire form of the ``SlaEvent`` of a transition of the clock ``row`` of ticket
    ``t`` (its labels), serialised by orjson straight from the row's values: it runs
    twice per ticket on the consumer's hot path, and building a model to dump it cost
    four times as much. The bytes equal ``dump(SlaEvent(...))`` of the same values
    (fields in the model's order, UTC as ``Z``); the tests validate them with
    ``SlaEvent`` and compare them with the model's dump."""
    return orjson.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "event_id": str(uuid.uuid4()),
            "occurred_at": utcnow(),
            "correlation_id": row["correlation_id"] or row["ticket_id"],
            "producer": PRODUCER,
            "ticket_id": row["ticket_id"],
            "conversation_id": row["conversation_id"],
            "clock": row["clock"],
            "kind": kind.value,
            "deadline": row["deadline"],
            "started_at": row["started_at"],
            "limit_seconds": float(row["limit_seconds"]),
            "lateness_seconds": None,
            "elapsed_seconds": elapsed,
            "priority": t["priority"],
            "tier": t["tier"],
            "category": t["category"],
            "shop_id": row["shop_id"],
        },
        option=orjson.OPT_UTC_Z,
    )


def _labels(t: asyncpg.Record | dict[str, Any]) -> Labels:
    return Labels(
        category=_opt(Category, t["category"]),
        priority=_opt(Priority, t["priority"]),
        tier=_opt(Tier, t["tier"]),
        channel=_opt(Channel, t["channel"]),
        shop=t["shop_id"],
    )


def _dues(clock_id: int, warn_at: datetime | None, deadline: datetime) -> list[Due]:
    out = [Due(deadline.timestamp(), Kind.breach, clock_id)]
    if warn_at is not None and warn_at < deadline:
        out.append(Due(warn_at.timestamp(), Kind.warning, clock_id))
    return out


Row = dict[str, Any]
"""A ticket or clock row held in memory, locked in the database, while a batch runs."""

Event = MessageEvent | RoutedEvent | EscalationEvent

_TICKET_COLS = (
    ("priority", "text"),
    ("tier", "text"),
    ("category", "text"),
    ("channel", "text"),
    ("shop_id", "text"),
    ("last_customer_at", "timestamptz"),
    ("last_reply_at", "timestamptz"),
    ("resolved_at", "timestamptz"),
    ("agent_id", "text"),
    ("customer_ref", "text"),
    ("agent_at", "timestamptz"),
    ("routed_at", "timestamptz"),
    ("reopened_at", "timestamptz"),
)

_CLOCK_COLS = (
    ("ticket_id", "text"),
    ("clock", "text"),
    ("instance", "int"),
    ("state", "text"),
    ("conversation_id", "text"),
    ("shop_id", "text"),
    ("correlation_id", "text"),
    ("started_at", "timestamptz"),
    ("deadline", "timestamptz"),
    ("warn_at", "timestamptz"),
    ("limit_seconds", "float8"),
    ("warned_at", "timestamptz"),
    ("breached_at", "timestamptz"),
    ("stopped_at", "timestamptz"),
    ("resumed_at", "timestamptz"),
    ("consumed_seconds", "float8"),
    ("paused_at", "timestamptz"),
    ("policy", "text"),
    ("lateness_seconds", "float8"),
)


def _unnest(cols: Sequence[tuple[str, str]], first: int = 1) -> str:
    args = ", ".join(f"${i + first}::{t}[]" for i, (_, t) in enumerate(cols))
    return f"unnest({args}) AS x({', '.join(c for c, _ in cols)})"


_SEEN = (
    "INSERT INTO sla_seen (message_id) SELECT unnest($1::text[])"
    " ON CONFLICT DO NOTHING RETURNING message_id"
)
# Ticket rows are created and locked in ticket_id order, then their clocks in id order
# (the order firing locks them in): two batches, or a batch and a firing, never deadlock.
_LOCK_TICKETS = (
    "INSERT INTO sla_tickets AS t (ticket_id) SELECT x FROM unnest($1::text[]) AS x ORDER BY x"
    " ON CONFLICT (ticket_id) DO UPDATE SET updated_at = now() RETURNING *"
)
# The clock ids are found by one primary-key probe per ticket (a LATERAL subquery with a
# LIMIT is planned as an index scan whatever the statistics say), then locked in id order.
# ``ticket_id = ANY($1)`` alone was planned as a sequential scan while the table had no
# statistics yet (a new or fast-growing table before autovacuum analyses it): 70-90 ms a
# batch at 40k rows, seconds at 200k with a generic plan. The ids need no lock to be
# found: clock rows are created only under their ticket's row lock (held here) and never
# deleted, and a row's id and ticket never change.
_LOCK_CLOCKS = (
    "SELECT * FROM sla_clocks WHERE id = ANY(ARRAY("
    "SELECT c.id FROM unnest($1::text[]) AS x(t) CROSS JOIN LATERAL"
    f" (SELECT id FROM sla_clocks WHERE ticket_id = x.t LIMIT {len(ClockName)}) AS c"
    ")) ORDER BY id FOR UPDATE"
)
_TICKET_ROW = (("ticket_id", "text"), *_TICKET_COLS)
_SLA_EVENT = (("key", "text"), ("payload", "bytea"), ("correlation_id", "text"))
# A batch's writes in ONE statement (one round trip): the changed tickets, the emitted
# events and the changed clocks. Every row written is already locked by this transaction
# (tickets and existing clocks by the load; a new clock's key cannot be taken by another
# writer, which would need the ticket's lock), so no lock is taken here in another order.
# Tickets and clocks are written as upserts on their primary keys: always planned as
# index lookups (``UPDATE ... FROM unnest`` joined by a sequential scan while the table
# had no statistics), and one statement for new and changed clocks alike (a changed one
# spends an identity value in vain: ids are unique, not dense). The events go to the
# outbox in the order they were emitted.
_FLUSH = (
    "WITH tickets AS ("
    f" INSERT INTO sla_tickets ({', '.join(c for c, _ in _TICKET_ROW)})"
    f" SELECT * FROM {_unnest(_TICKET_ROW)}"
    " ON CONFLICT (ticket_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in _TICKET_COLS)
    + ", updated_at = now()"
    "), events AS ("
    " INSERT INTO outbox (producer, topic, key, payload, correlation_id)"
    f" SELECT '{PRODUCER}', '{SLA.name}', key, payload, correlation_id"
    f" FROM {_unnest(_SLA_EVENT, len(_TICKET_ROW) + 1)})"
    f" INSERT INTO sla_clocks ({', '.join(c for c, _ in _CLOCK_COLS)})"
    f" SELECT * FROM {_unnest(_CLOCK_COLS, len(_TICKET_ROW) + len(_SLA_EVENT) + 1)}"
    " ON CONFLICT (ticket_id, clock) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in _CLOCK_COLS[2:])
    + " RETURNING id, ticket_id, clock"
)


@dataclass(slots=True)
class Batch:
    """What a batch of events did, once committed: per event an outcome label (``ok``,
    ``duplicate``, ``ignored``, ``stale``: a routed event older than the one applied), the
    timers to set and the events emitted (for metrics)."""

    results: list[str]
    due: list[Due]
    emitted: list[Emitted]


class _State:
    """The locked rows of every ticket a batch touches, changed in memory event by event
    (so each ticket sees its events in order) and written back in a few set-based
    statements: whatever the batch size, a batch costs about six round trips."""

    def __init__(self, policies: Policies) -> None:
        self.policies = policies
        self.tickets: dict[str, Row] = {}
        self.clocks: dict[str, dict[str, Row]] = {}
        self.dirty_tickets: set[str] = set()
        self.dirty_clocks: dict[tuple[str, str], Row] = {}
        self.timed: set[tuple[str, str]] = set()  # started, resumed or recomputed
        self.events: list[tuple[str, bytes, str]] = []  # (key, payload, correlation id)
        self.emitted: list[Emitted] = []
        self.policy_of: dict[tuple[str | None, ...], Policy] = {}  # by the ticket's labels

    async def load(self, conn: Any, ticket_ids: Sequence[str]) -> None:
        ids = sorted(set(ticket_ids))
        if not ids:
            return
        for r in await conn.fetch(_LOCK_TICKETS, ids):
            self.tickets[r["ticket_id"]] = dict(r)
            self.clocks[r["ticket_id"]] = {}
        for r in await conn.fetch(_LOCK_CLOCKS, ids):
            self.clocks[r["ticket_id"]][r["clock"]] = dict(r)

    async def flush(self, conn: Any) -> list[Due]:
        tickets = [self.tickets[t] for t in sorted(self.dirty_tickets)]
        clocks = list(self.dirty_clocks.values())
        if tickets or clocks or self.events:
            events = [[e[i] for e in self.events] for i in range(len(_SLA_EVENT))]
            recs = await conn.fetch(
                _FLUSH,
                *([r[c] for r in tickets] for c, _ in _TICKET_ROW),
                *events,
                *([r[c] for r in clocks] for c, _ in _CLOCK_COLS),
            )
            for rec in recs:
                self.clocks[rec["ticket_id"]][rec["clock"]]["id"] = rec["id"]
        due: list[Due] = []
        for t, name in sorted(self.timed):
            row = self.clocks[t][name]
            if row["state"] == ClockState.running:
                due.extend(_dues(row["id"], row["warn_at"], row["deadline"]))
        return due


class _Tx:
    """One event's view of one locked ticket: its row and its clocks, in memory."""

    def __init__(self, st: _State, ticket_id: str) -> None:
        self.st = st
        self.ticket_id = ticket_id
        self.ticket = st.tickets[ticket_id]
        self.clocks = st.clocks[ticket_id]
        self.policies = st.policies

    def lock(self, latest: tuple[str, datetime] | None = None, **labels: str | None) -> None:
        """Set the ticket's labels (a missing one keeps the known value) and move the
        ``latest`` timestamp column forward."""
        for k, v in labels.items():
            if v is not None:
                self.ticket[k] = v
        if latest is not None:
            self.set_ticket(*latest)
        self.st.dirty_tickets.add(self.ticket_id)

    def _write(self, name: str, row: Row) -> None:
        self.clocks[name] = row
        self.st.dirty_clocks[(self.ticket_id, name)] = row

    def _emit(self, row: Row, kind: SlaKind, elapsed: float | None = None) -> None:
        payload = _sla_payload(row, self.ticket, kind, elapsed)
        self.st.events.append((self.ticket_id, payload, row["correlation_id"] or self.ticket_id))

    @property
    def policy(self) -> Policy:
        t = self.ticket
        key = (t["category"], t["priority"], t["tier"], t["channel"], t["shop_id"])
        found = self.st.policy_of.get(key)
        if found is None:
            found = self.st.policy_of[key] = self.policies.select(_labels(t))
        return found

    def clock_policy(self, row: Row) -> ClockPolicy:
        cp = self.policy.clock(ClockName(row["clock"]))
        return cp if cp is not None else ClockPolicy(ClockName(row["clock"]), row["limit_seconds"])

    def hold(self, agent_id: str | None, at: datetime, customer_ref: str | None = None) -> None:
        """The ticket is held by ``agent_id`` (None: nobody, queued) as of ``at``, unless
        a later holder is already known (``agent_at``). Routed events older than the latest
        applied one never get here (``routed_at``, in ``_routed``); what this still guards
        against is a resolve, which frees the agent without a routed event: a routed event
        stamped before the resolve's ``received_at`` does not give the ticket back to its
        agent. A missing ``customer_ref`` keeps the known one."""
        t = self.ticket
        if t["agent_at"] is not None and at < t["agent_at"]:
            return
        t["agent_id"], t["agent_at"] = agent_id, at
        if customer_ref is not None:
            t["customer_ref"] = customer_ref
        self.st.dirty_tickets.add(self.ticket_id)

    def set_ticket(self, column: str, at: datetime) -> None:
        cur = self.ticket[column]
        self.ticket[column] = at if cur is None else max(cur, at)
        self.st.dirty_tickets.add(self.ticket_id)

    def waiting_on_customer(self) -> bool:
        r, c = self.ticket["last_reply_at"], self.ticket["last_customer_at"]
        return r is not None and (c is None or r >= c)

    def start(
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
        old = self.clocks.get(cp.clock.value)
        row: Row = {
            "id": old["id"] if old else None,
            "ticket_id": self.ticket_id,
            "clock": cp.clock.value,
            "instance": old["instance"] + 1 if old else 1,
            "state": ClockState.paused.value if paused else ClockState.running.value,
            "conversation_id": conversation_id,
            "shop_id": old["shop_id"] if old else shop_id,  # a run keeps the first shop
            "correlation_id": correlation_id,
            "started_at": started_at,
            "deadline": sched.deadline,
            "warn_at": sched.warn_at,
            "limit_seconds": cp.limit_seconds,
            "warned_at": None,
            "breached_at": None,
            "stopped_at": None,
            "resumed_at": started_at,
            "consumed_seconds": 0.0,
            "paused_at": started_at if paused else None,
            "policy": self.policy.name,
            "lateness_seconds": None,
        }
        self._write(cp.clock.value, row)
        self._emit(row, SlaKind.started)
        self.st.emitted.append(Emitted(SlaKind.started, cp.clock.value))
        if not paused:
            self.st.timed.add((self.ticket_id, cp.clock.value))

    def stop(self, clocks: Sequence[str], at: datetime, *, cancel: bool = False) -> None:
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
            rec = {**row, "state": new_state.value, "stopped_at": at}
            self._write(name, rec)
            took = (at - row["started_at"]).total_seconds()
            kind = SlaKind.met if new_state is ClockState.met else SlaKind.stopped
            self._emit(rec, kind, took)
            t = self.ticket
            self.st.emitted.append(
                Emitted(kind, name, t["priority"], t["tier"], t["category"], elapsed=took)
            )

    def pause(self, at: datetime) -> None:
        """Running clocks whose policy pauses while the ticket waits on the customer."""
        for name, row in list(self.clocks.items()):
            cp = self.clock_policy(row)
            if row["state"] != ClockState.running or not cp.pause_on_customer_wait:
                continue
            if at < row["resumed_at"] or at >= row["deadline"]:
                continue
            used = consumed_at_pause(cp, row["resumed_at"], row["consumed_seconds"], at)
            self._write(name, {**row, "state": "paused", "paused_at": at, "consumed_seconds": used})

    def resume(self, at: datetime) -> None:
        for name, row in list(self.clocks.items()):
            if row["state"] != ClockState.paused:
                continue
            cp = self.clock_policy(row)
            at = max(at, row["paused_at"])
            sched = schedule(cp, at, row["consumed_seconds"], warned=row["warned_at"] is not None)
            rec = {
                **row,
                "state": "running",
                "paused_at": None,
                "resumed_at": at,
                "deadline": sched.deadline,
                "warn_at": sched.warn_at,
                "limit_seconds": cp.limit_seconds,
            }
            self._write(name, rec)
            self.st.timed.add((self.ticket_id, name))

    def recompute(self) -> None:
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
                self._write(name, {**row, "limit_seconds": cp.limit_seconds, "policy": policy.name})
                continue
            sched = schedule(
                cp, row["resumed_at"], row["consumed_seconds"], warned=row["warned_at"] is not None
            )
            rec = {
                **row,
                "limit_seconds": cp.limit_seconds,
                "policy": policy.name,
                "deadline": sched.deadline,
                "warn_at": sched.warn_at,
            }
            self._write(name, rec)
            self.st.timed.add((self.ticket_id, name))


def _answered(t: Row, since: datetime) -> bool:
    """A reply at or after ``since`` was already seen (events out of order)."""
    return t["last_reply_at"] is not None and t["last_reply_at"] >= since


def _customer_message(tx: _Tx, msg: MessageEvent) -> None:
    """A customer wrote: start first_response (or next_response after a reply, when the
    policy has one) and resume clocks paused while waiting on the customer."""
    at = clock_start(msg.occurred_at, msg.received_at)
    tx.lock(("last_customer_at", at), channel=msg.channel.value, shop_id=msg.shop_id)
    if _answered(tx.ticket, at):
        return  # the reply arrived before this message's event: nothing to wait for
    tx.resume(at)
    policy = tx.policy
    fr = tx.clocks.get(ClockName.first_response.value)
    nr_policy = policy.clock(ClockName.next_response)
    open_states = (ClockState.running, ClockState.breached)
    if fr is not None and fr["state"] not in open_states and nr_policy is not None:
        nr = tx.clocks.get(ClockName.next_response.value)
        if nr is None or nr["state"] not in open_states:
            tx.start(
                nr_policy,
                conversation_id=msg.conversation_id,
                shop_id=msg.shop_id,
                correlation_id=msg.correlation_id,
                started_at=at,
            )
        return
    fr_policy = policy.clock(ClockName.first_response)
    if fr_policy is not None and (fr is None or fr["state"] not in open_states):
        tx.start(
            fr_policy,
            conversation_id=msg.conversation_id,
            shop_id=msg.shop_id,
            correlation_id=msg.correlation_id,
            started_at=at,
        )


def _reply(tx: _Tx, msg: MessageEvent) -> None:
    """An agent or bot replied: stop the response clocks; pause clocks that wait on the
    customer."""
    at = msg.occurred_at
    tx.lock(("last_reply_at", at), channel=msg.channel.value, shop_id=msg.shop_id)
    tx.stop((ClockName.first_response.value, ClockName.next_response.value), at)
    if tx.waiting_on_customer():
        tx.pause(at)


def _resolved(tx: _Tx, msg: MessageEvent) -> None:
    """Stop every clock. The router frees the agent's slot on a resolve and publishes no
    routed event for it: the ticket is held by nobody until a later routed event (the
    router releases after intake received the resolve, so any routed event stamped before
    ``received_at`` is older than the release)."""
    tx.lock(("resolved_at", msg.occurred_at))
    tx.hold(None, msg.received_at)
    tx.stop(tuple(c.value for c in ClockName), msg.occurred_at)


def _reopened(tx: _Tx, msg: MessageEvent) -> None:
    """A reopened ticket restarts its resolution clock (a new instance); reopened by the
    customer, it also awaits a first response again."""
    tx.lock(channel=msg.channel.value, shop_id=msg.shop_id)
    at = clock_start(msg.occurred_at, msg.received_at)
    if tx.ticket["resolved_at"] is not None and tx.ticket["resolved_at"] > at:
        return  # resolved again after this reopen: nothing to restart
    tx.set_ticket("reopened_at", at)
    policy = tx.policy
    wanted = [ClockName.resolution]
    if msg.author_role is AuthorRole.customer:
        tx.set_ticket("last_customer_at", at)
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
        tx.start(
            cp,
            conversation_id=msg.conversation_id,
            shop_id=msg.shop_id,
            correlation_id=msg.correlation_id,
            started_at=at,
        )


def _routed(tx: _Tx, routed: RoutedEvent) -> str:
    """Learn the ticket's labels and who holds it (the router publishes a routed event for
    every decision, assignment from the queue, manual reassignment and escalation);
    recompute running clocks under the policy that now matches; start its resolution
    clock if the policy has one and none ran since the ticket was last opened: from the
    event's message, or from the reopen when the message came before the last resolution
    (a ticket moved to L2 by its reopens, in whichever order the two topics' events come).
    A customer's message after a resolution (a reopen, to the router too) starts a new
    instance of a resolution clock that the resolution finished.

    The latest routed event wins, for all of it: the router stamps ``occurred_at`` under
    the ticket's lock, and ``routed_at`` keeps the stamp of the latest one applied. One
    stamped at or before it (``duplicate``: the same stamp, i.e. the same event again;
    ``stale``: older, from a redelivery, a rebalance or a relay taking over) changes
    nothing: no label, no holder, no limit, no clock started or cancelled, no event."""
    known = tx.ticket["routed_at"]
    if known is not None and routed.occurred_at <= known:
        return "duplicate" if routed.occurred_at == known else "stale"
    tx.lock(
        ("routed_at", routed.occurred_at),
        priority=routed.priority.value,
        tier=routed.tier.value,
        category=routed.category.value,
        channel=routed.channel.value,
        shop_id=routed.shop_id,
    )
    tx.hold(routed.agent_id, routed.occurred_at, routed.customer_ref)
    tx.recompute()
    policy = tx.policy
    res = tx.clocks.get(ClockName.resolution.value)
    cp = policy.clock(ClockName.resolution)
    if cp is None:
        if res is not None and res["state"] in (ClockState.running, ClockState.paused):
            tx.stop((ClockName.resolution.value,), routed.occurred_at, cancel=True)
        return "ok"
    if res is not None and res["state"] in OPEN_STATES:
        return "ok"
    started = routed.message_received_at or routed.occurred_at
    resolved = tx.ticket["resolved_at"]
    if resolved is not None and resolved >= started:
        back = tx.ticket["reopened_at"]
        if back is None or back <= resolved:
            return "ok"  # decided before the resolution, and the ticket has not come back
        started = back
    if res is not None and (resolved is None or res["started_at"] > resolved):
        return "ok"  # it ran since the ticket was last opened (met, or cancelled by policy)
    tx.start(
        cp,
        conversation_id=routed.conversation_id,
        shop_id=routed.shop_id,
        correlation_id=routed.correlation_id,
        started_at=started,
        paused=cp.pause_on_customer_wait and tx.waiting_on_customer(),
    )
    return "ok"


def _escalation(tx: _Tx, esc: EscalationEvent) -> None:
    """An escalation by another service may raise the ticket's priority: recompute. It
    never lowers it (a late escalation must not undo a higher priority decided since)."""
    assert esc.priority is not None
    known = tx.ticket["priority"]
    if known is not None and PRIORITY_RANK[Priority(known)] <= PRIORITY_RANK[esc.priority]:
        return
    tx.lock(priority=esc.priority.value)
    tx.recompute()


def _relevant(ev: Event) -> bool:
    """Whether an event acts on its ticket at all (else ``ignored``, no lock taken)."""
    if isinstance(ev, MessageEvent):
        return ev.kind in (
            MessageKind.message_created,
            MessageKind.ticket_resolved,
            MessageKind.ticket_reopened,
        )
    if isinstance(ev, EscalationEvent):
        return ev.priority is not None and ev.producer != PRODUCER
    return True


def _apply(tx: _Tx, ev: Event) -> str:
    """Apply one event to its locked ticket; its outcome label."""
    if isinstance(ev, RoutedEvent):
        return _routed(tx, ev)
    if isinstance(ev, EscalationEvent):
        _escalation(tx, ev)
    elif ev.kind is MessageKind.message_created and ev.author_role is AuthorRole.customer:
        _customer_message(tx, ev)
    elif ev.kind is MessageKind.message_created:
        _reply(tx, ev)
    elif ev.kind is MessageKind.ticket_resolved:
        _resolved(tx, ev)
    else:
        _reopened(tx, ev)
    return "ok"


async def apply_in(conn: Any, events: Sequence[Event], policies: Policies) -> Batch:
    """Apply events, in order, inside the caller's transaction, in a fixed number of
    statements: dedupe every message id at once (``sla_seen``), lock every ticket the
    events touch and their clocks, run each event's transitions in memory in the order
    given (so a ticket sees its own events in order), then write the changed tickets and
    clocks and the emitted events back as sets. Idempotent: a message already applied
    (here or in an earlier batch) is a ``duplicate``; a routed event no newer than the
    latest applied is a ``duplicate`` (the same stamp) or ``stale`` (older) and changes
    nothing; escalation events set labels and recompute, so applying them again changes
    nothing."""
    results = ["ignored"] * len(events)
    live = [i for i, ev in enumerate(events) if _relevant(ev)]
    mids = [ev.message_id for i in live if isinstance(ev := events[i], MessageEvent)]
    new_ids: set[str] = set()
    if mids:
        new_ids = {r["message_id"] for r in await conn.fetch(_SEEN, mids)}
    todo: list[int] = []
    for i in live:
        ev = events[i]
        if isinstance(ev, MessageEvent):
            if ev.message_id not in new_ids:
                results[i] = "duplicate"
                continue
            new_ids.discard(ev.message_id)  # the same message twice in one batch: once
        todo.append(i)
    st = _State(policies)
    await st.load(conn, [events[i].ticket_id for i in todo])
    for i in todo:
        ev = events[i]
        results[i] = _apply(_Tx(st, ev.ticket_id), ev)
    due = await st.flush(conn)
    return Batch(results, due, st.emitted)


async def apply(pool: asyncpg.Pool, events: Sequence[Event], policies: Policies) -> Batch:
    """``apply_in`` in a transaction of its own."""
    async with pool.acquire() as conn, conn.transaction():
        return await apply_in(conn, events, policies)


async def _one(pool: asyncpg.Pool, ev: Event, policies: Policies) -> Outcome:
    b = await apply(pool, [ev], policies)
    return Outcome(new=b.results[0] != "duplicate", due=b.due or None, emitted=b.emitted or None)


async def on_customer_message(pool: asyncpg.Pool, msg: MessageEvent, policies: Policies) -> Outcome:
    return await _one(pool, msg, policies)


async def on_reply(pool: asyncpg.Pool, msg: MessageEvent, policies: Policies) -> Outcome:
    return await _one(pool, msg, policies)


async def on_resolved(pool: asyncpg.Pool, msg: MessageEvent, policies: Policies) -> Outcome:
    return await _one(pool, msg, policies)


async def on_reopened(pool: asyncpg.Pool, msg: MessageEvent, policies: Policies) -> Outcome:
    return await _one(pool, msg, policies)


async def on_routed(pool: asyncpg.Pool, routed: RoutedEvent, policies: Policies) -> Outcome:
    return await _one(pool, routed, policies)


async def on_escalation(pool: asyncpg.Pool, esc: EscalationEvent, policies: Policies) -> Outcome:
    return await _one(pool, esc, policies)


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
SELECT j.id, j.ticket_id, j.clock, j.instance, j.priority, j.tier, j.category,
       j.lateness_seconds FROM j
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

# A breach's escalation names who holds the ticket when it fires (the agent of the latest
# routed event consumed, null while queued), its channel and the customer's masked reference.
_ESCALATE = """
INSERT INTO outbox (producer, topic, key, payload, correlation_id)
SELECT 'sla_watch', 'cs.escalations.v1', c.ticket_id, convert_to(json_build_object(
    'schema_version', 1, 'event_id', gen_random_uuid()::text, 'occurred_at', c.breached_at,
    'correlation_id', coalesce(c.correlation_id, c.ticket_id), 'producer', 'sla_watch',
    'escalation_id', x.esc, 'ticket_id', c.ticket_id, 'conversation_id', c.conversation_id,
    'reason', c.clock || '_breached', 'priority', t.priority, 'tier', t.tier,
    'category', t.category, 'shop_id', c.shop_id, 'channel', t.channel, 'agent_id', t.agent_id,
    'waiting_seconds', extract(epoch FROM c.breached_at - c.started_at)::float8,
    'deadline', c.deadline, 'lateness_seconds', c.lateness_seconds,
    'customer_ref', t.customer_ref
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
                    SlaKind.breached,
                    r["clock"],
                    r["priority"],
                    r["tier"],
                    r["category"],
                    lateness=r["lateness_seconds"],
                )
                for r in recs
            ]
        recs = await conn.fetch(_FIRE_WARNING, list(ids))
        return [
            Emitted(SlaKind.warning, r["clock"], r["priority"], r["tier"], r["category"])
            for r in recs
        ]


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
