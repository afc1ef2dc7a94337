"""Count a load or chaos run by event id: what was sent, accepted, routed, timed, escalated
and notified, what was lost and what was duplicated, and the latency of each stage.

Shared by ``tools/load.py`` and ``tools/chaos.py``. The pure part (``Ledger``,
``Snapshot``, ``reconcile``, ``render``) takes plain data; the adapters around it read
PostgreSQL (the truth: ``snapshot``), follow the Kafka topics (``TopicCollector``, for
duplicates: the same outcome published under two different event ids) and receive the
notifier's signed webhooks (``Receiver``).

Definitions (docs/operations.md):
- *lost*: acknowledged by intake (202, or 200 for a repeat) but missing from a later
  stage after the run has drained: not in ``intake_events``, no routing decision, no
  first-response clock, a due clock neither breached nor met, a breach without an
  escalation, an escalation neither delivered to the receiver nor dead-lettered.
- *duplicated*: one logical outcome under two different event ids (two routing events for
  one webhook, two breach/met events for one clock, two escalation ids for one breach,
  the receiver getting two escalation ids for one breach). A re-publication of the same
  event id (at-least-once delivery after a crash) is a *redelivery*, counted apart:
  consumers and receivers drop it by id, as the contract says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.table import Table

from shared.events import uuid5_str

STAGES = ("accepted", "routed", "sla", "escalated", "notified")
LATENCIES = ("accept", "intake->routed", "intake->sla started", "breach->notified")
TOPICS = ("cs.messages.v1", "cs.tickets.routed.v1", "cs.sla.v1", "cs.escalations.v1")
TERMINAL_OPEN = ("running", "paused")
BREACH = "first_response_breached"


# ---------------------------------------------------------------------------- pure part


@dataclass
class Sent:
    """One webhook as the load generator sent it."""

    event_id: str
    conversation_id: str
    role: str  # customer | agent
    phase: str = "steady"  # the profile phase or fault active when it was sent
    status: int | None = None  # last HTTP answer; None: never answered
    accept_seconds: float | None = None
    ticket_id: str | None = None
    attempts: int = 0

    @property
    def acknowledged(self) -> bool:
        return self.status in (200, 202)


@dataclass
class Ledger:
    """What the run sent and what the topics and the receiver showed, by event id."""

    sent: dict[str, Sent] = field(default_factory=dict)
    # topic -> logical key -> distinct event ids
    outcomes: dict[str, dict[tuple[str, ...], set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    seen: dict[str, int] = field(default_factory=Counter)  # (topic|event id) -> times seen
    first_seen: dict[tuple[str, ...], float] = field(default_factory=dict)
    # receiver: escalation id -> (ticket id, reason, arrival times)
    notified: dict[str, tuple[str, str, list[float]]] = field(default_factory=dict)
    receiving: bool = True  # False: no receiver of ours; "notified" is the notifier's table

    def add(self, s: Sent) -> None:
        self.sent[s.event_id] = s

    def observe(self, topic: str, value: Mapping[str, Any], at: float) -> None:
        """One record of a topic (``at``: wall-clock time we read it)."""
        event_id = str(value.get("event_id", ""))
        self.seen[f"{topic}|{event_id}"] += 1
        key = logical_key(topic, value)
        if key is None:
            return
        self.outcomes[topic][key].add(event_id)
        self.first_seen.setdefault((topic, *key), at)

    def receive(self, escalation_id: str, ticket_id: str, reason: str, at: float) -> None:
        _, _, times = self.notified.setdefault(escalation_id, (ticket_id, reason, []))
        times.append(at)

    def redeliveries(self) -> int:
        return sum(n - 1 for n in self.seen.values() if n > 1) + sum(
            len(t) - 1 for _, _, t in self.notified.values()
        )


def logical_key(topic: str, v: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The outcome a record stands for: two event ids for one key is a duplicate."""
    event_id = str(v.get("event_id"))
    if topic == "cs.messages.v1":
        return (str(v.get("source_event_id")),)
    if topic == "cs.tickets.routed.v1":
        # The router's decision for a message has the id uuid5("routed:<message id>");
        # later routing updates of the ticket (assigned, moved to L2) have ids of their own
        # and are not decisions.
        decision = uuid5_str(f"routed:{v.get('message_id')}") == event_id
        return (str(v.get("message_event_id")), "decision" if decision else "update:" + event_id)
    if topic == "cs.sla.v1":
        kind = str(v.get("kind"))
        # breached and met are the one outcome of a clock: either, exactly once
        outcome = "outcome" if kind in ("breached", "met") else kind
        return (str(v.get("ticket_id")), str(v.get("clock")), outcome)
    if topic == "cs.escalations.v1":
        # one escalation per ticket and reason: the escalation id is the outcome here
        return (str(v.get("ticket_id")), str(v.get("reason")), "@" + str(v.get("escalation_id")))
    return None


@dataclass(frozen=True)
class Clock:
    state: str
    started_at: float
    deadline: float
    breached_at: float | None


@dataclass(frozen=True)
class Delivery:
    status: str
    deadlettered: bool


@dataclass
class Snapshot:
    """The database's view, restricted to the run's ids (epoch seconds)."""

    intake: dict[str, tuple[str, float]] = field(default_factory=dict)  # event id -> ticket, at
    decisions: dict[str, float] = field(default_factory=dict)  # message event id -> decided at
    clocks: dict[str, Clock] = field(default_factory=dict)  # ticket id -> first_response clock
    escalations: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> ticket, reason
    deliveries: dict[str, Delivery] = field(default_factory=dict)  # escalation id -> level 1


@dataclass
class StageCount:
    expected: int = 0
    done: int = 0
    pending: int = 0
    lost: int = 0
    duplicated: int = 0


@dataclass
class Report:
    sent: int = 0
    unanswered: int = 0  # sent but never acknowledged (the sender gave up)
    stages: dict[str, StageCount] = field(default_factory=lambda: {s: StageCount() for s in STAGES})
    breached: int = 0
    met: int = 0
    redelivered: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LATENCIES})
    by_phase: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    problems: list[str] = field(default_factory=list)  # first few, for a human

    @property
    def lost(self) -> int:
        return sum(s.lost for s in self.stages.values())

    @property
    def duplicated(self) -> int:
        return sum(s.duplicated for s in self.stages.values())

    @property
    def pending(self) -> int:
        return sum(s.pending for s in self.stages.values())

    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "unanswered": self.unanswered,
            "stages": {k: vars(v) for k, v in self.stages.items()},
            "breached": self.breached,
            "met": self.met,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "redelivered": self.redelivered,
            "latency_seconds": {k: percentiles(v) for k, v in self.latencies.items()},
            "by_phase": {k: dict(v) for k, v in self.by_phase.items()},
        }


def percentiles(xs: Sequence[float]) -> dict[str, float | int]:
    if not xs:
        return {"n": 0}
    s = sorted(xs)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 4)

    return {"n": len(s), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": round(s[-1], 4)}


def reconcile(
    ledger: Ledger, snap: Snapshot, now: float, grace: float = 5.0, final: bool = True
) -> Report:
    """Compare what was acknowledged with what every stage did. Items whose time has not
    come (a clock not yet due, a breach younger than ``grace``) are *pending*; so is
    everything missing unless ``final``, when a missing item past its time is lost."""
    r = Report(sent=len(ledger.sent), redelivered=ledger.redeliveries())
    st = r.stages

    def miss(stage: str, s: Sent, what: str, late: bool) -> None:
        if final and late:
            st[stage].lost += 1
            r.by_phase[s.phase]["lost"] += 1
            if len(r.problems) < 10:
                r.problems.append(f"{stage}: {what} ({s.event_id}, sent during {s.phase})")
        else:
            st[stage].pending += 1

    def dup(stage: str, s: Sent | None, n: int) -> None:
        if n > 1:
            st[stage].duplicated += n - 1
            r.by_phase[s.phase if s else "?"]["duplicated"] += n - 1

    routed_ids = ledger.outcomes["cs.tickets.routed.v1"]
    message_ids = ledger.outcomes["cs.messages.v1"]
    sla = ledger.outcomes["cs.sla.v1"]
    topic_escalations: dict[tuple[str, str], set[str]] = defaultdict(set)
    for t, reason, esc in ledger.outcomes["cs.escalations.v1"]:
        topic_escalations[(t, reason)].add(esc[1:])
    db_escalations: dict[tuple[str, str], set[str]] = defaultdict(set)
    for esc_id, (ticket, reason) in snap.escalations.items():
        db_escalations[(ticket, reason)].add(esc_id)
    received: dict[tuple[str, str], set[str]] = defaultdict(set)
    for esc_id, (ticket, reason, times) in ledger.notified.items():
        received[(ticket, reason)].add(esc_id)
        clock = snap.clocks.get(ticket)
        if reason == BREACH and clock is not None and clock.breached_at is not None:
            r.latencies["breach->notified"].append(min(times) - clock.breached_at)
    customer_of: dict[str, Sent] = {}  # ticket -> the customer webhook that opened it

    for s in ledger.sent.values():
        r.by_phase[s.phase]["sent"] += 1
        if not s.acknowledged:
            r.unanswered += 1
            continue
        if s.accept_seconds is not None:
            r.latencies["accept"].append(s.accept_seconds)
        st["accepted"].expected += 1
        row = snap.intake.get(s.event_id)
        if row is None:
            miss("accepted", s, "acknowledged but not in intake_events", late=True)
            continue
        st["accepted"].done += 1
        dup("accepted", s, len(message_ids.get((s.event_id,), ())))
        ticket, received_at = row
        if s.role != "customer":
            continue
        customer_of[ticket] = s
        st["routed"].expected += 1
        decided = snap.decisions.get(s.event_id)
        if decided is None:
            seen = "seen" if message_ids.get((s.event_id,)) else "never seen"
            what = f"no routing decision (its event {seen} on cs.messages.v1)"
            miss("routed", s, what, late=now - received_at > grace)
        else:
            st["routed"].done += 1
            r.latencies["intake->routed"].append(decided - received_at)
        dup("routed", s, len(routed_ids.get((s.event_id, "decision"), ())))
        seen_start = ledger.first_seen.get(("cs.sla.v1", ticket, "first_response", "started"))
        if seen_start is not None:
            r.latencies["intake->sla started"].append(seen_start - received_at)

        st["sla"].expected += 1
        clock = snap.clocks.get(ticket)
        dup("sla", s, len(sla.get((ticket, "first_response", "outcome"), ())))
        if clock is None:
            miss("sla", s, "no first_response clock", late=now - received_at > grace)
            continue
        if clock.state in TERMINAL_OPEN:
            miss("sla", s, "due clock neither breached nor met", late=now > clock.deadline + grace)
            continue
        st["sla"].done += 1
        if clock.breached_at is None:
            r.met += 1
            continue
        r.breached += 1
        st["escalated"].expected += 1
        escs = db_escalations.get((ticket, BREACH), set())
        dup("escalated", s, max(len(escs), len(topic_escalations.get((ticket, BREACH), ()))))
        if escs:
            st["escalated"].done += 1
        else:
            miss("escalated", s, "breach without escalation", late=now > clock.breached_at + grace)

    # Every escalation of the run's tickets (breaches, and routing straight to L2) is
    # delivered to the receiver or dead-lettered, once.
    for (ticket, reason), escs in db_escalations.items():
        opener = customer_of.get(ticket)
        if opener is None:
            continue
        st["notified"].expected += len(escs)
        delivered = received.get((ticket, reason), set())
        if not ledger.receiving:
            delivered = {
                e for e in escs if (d := snap.deliveries.get(e)) and d.status == "delivered"
            }
        dup("notified", opener, len(delivered))
        for e in escs:
            d = snap.deliveries.get(e)
            if e in delivered or (d is not None and d.deadlettered):
                st["notified"].done += 1
            else:
                miss("notified", opener, f"escalation {e} ({reason}) not delivered", late=True)
    return r


def _fmt(p: Mapping[str, float | int], k: str) -> str:
    v = p.get(k)
    return "-" if v is None else f"{float(v) * 1000:.0f} ms"


def render(report: Report, title: str = "summary") -> list[Table]:
    """The summary tables: counts per stage, then latencies per stage."""
    t = Table(title=title)
    for col in ("stage", "expected", "done", "pending", "lost", "duplicated"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in report.stages.items():
        lost = f"[red]{s.lost}[/]" if s.lost else "0"
        dup = f"[red]{s.duplicated}[/]" if s.duplicated else "0"
        t.add_row(name, str(s.expected), str(s.done), str(s.pending), lost, dup)
    t.caption = (
        f"sent {report.sent}, unanswered {report.unanswered}, SLA breached {report.breached},"
        f" met {report.met}, redelivered (same event id, dropped by consumers)"
        f" {report.redelivered}"
    )
    lat = Table(title="latency per stage")
    for col in ("stage", "n", "p50", "p90", "p99", "max"):
        lat.add_column(col, justify="left" if col == "stage" else "right")
    for name, xs in report.latencies.items():
        p = percentiles(xs)
        lat.add_row(name, str(p["n"]), *(_fmt(p, k) for k in ("p50", "p90", "p99", "max")))
    return [t, lat]


def render_phases(report: Report, phases: Iterable[str], title: str) -> Table:
    """Lost and duplicated per phase (load profile phase or injected fault)."""
    t = Table(title=title)
    for col in ("fault / phase", "sent", "lost", "duplicated"):
        t.add_column(col, justify="left" if col.startswith("fault") else "right")
    for ph in phases:
        c = report.by_phase.get(ph, Counter())
        t.add_row(ph, str(c["sent"]), str(c["lost"]), str(c["duplicated"]))
    return t


# ---------------------------------------------------------------------------- adapters


def _epoch(d: datetime | None) -> float | None:
    return None if d is None else d.timestamp()


async def snapshot(dsn: str, ledger: Ledger) -> Snapshot:
    """Read the run's rows from PostgreSQL (one short connection)."""
    import asyncpg

    snap = Snapshot()
    ids = list(ledger.sent)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for row in await conn.fetch(
            "SELECT source_event_id, ticket_id, received_at FROM intake_events"
            " WHERE source = 'generic' AND source_event_id = ANY($1::text[])",
            ids,
        ):
            snap.intake[row[0]] = (row[1], row[2].timestamp())
        tickets = list({t for t, _ in snap.intake.values()})
        for row in await conn.fetch(
            "SELECT message_event_id, decided_at FROM router_decisions"
            " WHERE ticket_id = ANY($1::text[])",
            tickets,
        ):
            snap.decisions[row[0]] = row[1].timestamp()
        for row in await conn.fetch(
            "SELECT ticket_id, state, started_at, deadline, breached_at FROM sla_clocks"
            " WHERE ticket_id = ANY($1::text[]) AND clock = 'first_response'",
            tickets,
        ):
            snap.clocks[row[0]] = Clock(
                row[1], row[2].timestamp(), row[3].timestamp(), _epoch(row[4])
            )
        for row in await conn.fetch(
            "SELECT escalation_id, ticket_id, payload->>'reason' FROM notifier_escalations"
            " WHERE ticket_id = ANY($1::text[])",
            tickets,
        ):
            snap.escalations[row[0]] = (row[1], row[2])
        for row in await conn.fetch(
            "SELECT escalation_id, status, deadlettered_at FROM notifier_deliveries"
            " WHERE escalation_id = ANY($1::text[]) AND level = 1",
            list(snap.escalations),
        ):
            snap.deliveries[row[0]] = Delivery(row[1], row[2] is not None)
    finally:
        await conn.close()
    return snap


def quiet_client_logs(level: int | None = None) -> int:
    """The collector's Kafka client logs every failed reconnect while a broker is down on
    purpose; the summary says what matters. Returns the previous level (to restore)."""
    import logging

    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL if level is None else level)
    return previous


class TopicCollector:
    """Follows the run's topics from the beginning (no consumer group) into the ledger.
    After a broker restart (memory storage: topics start empty) call ``reset``."""

    def __init__(self, bootstrap: str, ledger: Ledger) -> None:
        self.bootstrap = bootstrap
        self.ledger = ledger
        self._task: asyncio.Task[None] | None = None
        self._log_level = 0
        self.errors = 0

    async def start(self) -> None:
        self._log_level = quiet_client_logs()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        while True:
            consumer = AIOKafkaConsumer(
                *TOPICS,
                bootstrap_servers=self.bootstrap,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                metadata_max_age_ms=2000,
            )
            try:
                await consumer.start()
                while True:
                    batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                    now = time.time()
                    for tp, records in batch.items():
                        for rec in records:
                            with contextlib.suppress(ValueError, TypeError):
                                self.ledger.observe(tp.topic, json.loads(rec.value or b""), now)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            except Exception:
                self.errors += 1
                with contextlib.suppress(Exception):
                    await consumer.stop()
                await asyncio.sleep(1)

    async def reset(self) -> None:
        """Re-read from the beginning (same event ids are recognised, not double counted)."""
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
            quiet_client_logs(self._log_level)


class Receiver:
    """The notifier's generic webhook target: the pager inbox (``tools.inbox``), recording
    escalations by id in the ledger and counting bad signatures."""

    def __init__(self, secret: bytes, ledger: Ledger) -> None:
        from tools.inbox import Inbox

        self.ledger = ledger
        self.bad_signatures = 0
        self.inbox = Inbox(secret, on_receive=self._record)

    def _record(self, got: Any) -> None:
        if not got.signature_ok:
            self.bad_signatures += 1
        elif got.body.get("kind", "escalation") == "escalation":
            body = got.body
            self.ledger.receive(
                str(body.get("escalation_id")),
                str(body.get("ticket_id")),
                str(body.get("reason")),
                got.at,
            )

    def app(self) -> Any:
        return self.inbox.app()


@contextlib.asynccontextmanager
async def serve(app: Any, port: int) -> Any:
    """Run an ASGI app on 127.0.0.1:port inside this event loop."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def drain(
    dsn: str, ledger: Ledger, timeout: float, grace: float = 5.0, poll: float = 1.0
) -> Report:
    """Poll until nothing is pending (or ``timeout``), then the final report."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            r = reconcile(ledger, await snapshot(dsn, ledger), time.time(), grace, final=False)
            if r.pending == 0:
                break
        await asyncio.sleep(poll)
    return reconcile(ledger, await snapshot(dsn, ledger), time.time(), grace, final=True)
