"""Kafka and HTTP adapters of the router."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import asyncpg
from fastapi import FastAPI
from faststream.kafka import KafkaMessage
from pydantic import ValidationError

from services.router.admin import admin_router
from services.router.domain import (
    DEFAULT_RULES_FILE,
    Decision,
    DecisionInput,
    decide,
    use_rules,
)
from services.router.roster import seed_if_empty
from services.router.settings import RouterSettings
from services.router.store import (
    PRODUCER,
    Outcome,
    escalate,
    fill_all,
    queue_stats,
    record_decisions_in,
    set_status_in,
    ticket_context,
)
from shared import deadletter, metrics
from shared.db import Conn
from shared.deadletter import DeadLetters
from shared.events import (
    AuthorRole,
    EscalationEvent,
    MessageEvent,
    MessageKind,
    Tier,
)
from shared.heap import freeze_startup_heap
from shared.kafka import (
    PermanentError,
    consume,
    handled,
    raw_records,
    subscriber_options,
    validated,
)
from shared.logging import correlation, get_logger
from shared.service import Runtime, create_app
from shared.topics import ESCALATIONS, MESSAGES

log = get_logger(__name__)


POISON = (asyncpg.DataError, PermanentError)
"""Faults of the message itself (PostgreSQL refuses a value): retrying cannot help."""

ROUTED_PER_LINE = 50
"""Routed messages per ``routed`` log line (each with its correlation id, ticket and
decision: ``grep <correlation id>`` finds it). A line per message cost about 90 µs, as
much as a decision, through structlog and the standard library's logging; a line of 50 is
about 11 KB with 36-character ids, below the 16 KB at which container runtimes split log
lines."""

YOUNG_GC_THRESHOLD = 50_000
"""Net allocations between collections of the youngest generation (Python's default: 700).
A batch of 500 never-seen messages allocates hundreds of thousands of short-lived objects;
at 700, collections caught many of them alive and promoted them, and the full collections
that followed (60-80 ms each, walking the rules and the classifier's caches) took about a
tenth of the router's wall time (docs/router.md, "Where the time goes")."""


NEW = (0, False)
"""A ticket not seen before: never reopened, never escalated."""


def count(*outs: Outcome) -> None:
    """Metrics of committed transactions (each counter moved once per label set)."""
    assigned = Counter(tier.value for out in outs for _ticket, _agent, tier in out.assigned)
    for tier_value, n in assigned.items():
        metrics.ROUTER_ASSIGNMENTS.labels(tier_value).inc(n)
    for out in outs:
        for reason in out.reassigned:
            metrics.ROUTER_REASSIGNMENTS.labels(reason).inc()


def build(settings: RouterSettings | None = None) -> FastAPI:
    settings = settings or RouterSettings()
    # Load and validate the rules (and the cutter's dictionary) now, at start-up:
    # a bad rules file stops the router here, and no message waits for the loading.
    use_rules(settings.rules_file or DEFAULT_RULES_FILE)
    runtime = Runtime(PRODUCER, settings, relay=True)
    dead = DeadLetters(runtime)
    broker = runtime.broker
    limits = settings.first_response_limits()
    std_log = logging.getLogger(__name__)

    def decision_for(msg: MessageEvent, reopen_count: int = 0, escalated: bool = False) -> Decision:
        started = time.perf_counter()
        decision = decide(
            DecisionInput(
                text=msg.text or "",
                channel=msg.channel,
                vip_level=msg.customer.vip_level if msg.customer else 0,
                order_amount=msg.order.amount if msg.order else None,
                order_status=msg.order.status if msg.order else None,
                reopen_count=reopen_count,
                escalated=escalated,
            )
        )
        metrics.ROUTER_DECISION_SECONDS.observe(time.perf_counter() - started)
        return decision

    async def apply(conn: Conn, events: list[MessageEvent]) -> list[tuple[str, Outcome | None]]:
        """The effects of messages, in order, inside the caller's transaction.

        Customer messages are decided and recorded as sets (a fixed number of statements
        per run of messages, see ``record_decisions_in``); a resolve or reopen is applied
        where it stands, so every ticket sees its own events in order."""
        results: list[tuple[str, Outcome | None]] = [("ignored", None)] * len(events)
        run: list[int] = []

        async def flush() -> None:
            if not run:
                return
            # The tickets' reopenings and escalation weigh in the decision (one statement
            # per run; a reopen in the batch flushed the run before it, so this reads it).
            context = await ticket_context(conn, [events[i].ticket_id for i in run])
            items = [
                (events[i], decision_for(events[i], *context.get(events[i].ticket_id, NEW)))
                for i in run
            ]
            outs = await record_decisions_in(conn, items, limits)
            for i, out in zip(run, outs, strict=True):
                results[i] = ("duplicate", None) if out is None else ("ok", out)
            run.clear()

        for i, msg in enumerate(events):
            if msg.kind in (MessageKind.ticket_resolved, MessageKind.ticket_reopened):
                await flush()
                resolved = msg.kind is MessageKind.ticket_resolved
                out = await set_status_in(
                    conn, msg.ticket_id, resolved=resolved, event_id=msg.message_id
                )
                results[i] = ("duplicate", None) if out.duplicate else ("ok", out)
            elif msg.author_role is AuthorRole.customer and msg.text:
                run.append(i)
        await flush()
        return results

    def committed(outs: Iterable[tuple[Outcome | None, str | None]]) -> None:
        """Metrics and log of committed messages (each counter moved once per label set)."""
        decided: Counter[tuple[str, str, str]] = Counter()
        done: list[Outcome] = []
        log_each = std_log.isEnabledFor(logging.INFO)  # cached by logging: a dict lookup
        lines: list[dict[str, str | None]] = []
        for out, correlation_id in outs:
            if out is None:
                continue
            done.append(out)
            routed = out.decided
            if routed is None:
                continue
            decided[(routed.priority.value, routed.tier.value, routed.category.value)] += 1
            if log_each:
                lines.append(
                    {
                        "correlation_id": correlation_id,
                        "ticket_id": routed.ticket_id,
                        "category": routed.category.value,
                        "priority": routed.priority.value,
                        "tier": routed.tier.value,
                        "queue": routed.queue,
                        "agent_id": routed.agent_id,
                    }
                )
        for i in range(0, len(lines), ROUTED_PER_LINE):
            chunk = lines[i : i + ROUTED_PER_LINE]
            log.info("routed", count=len(chunk), messages=chunk)
        count(*done)
        for labels, n in decided.items():
            metrics.ROUTER_DECISIONS.labels(*labels).inc(n)

    async def handle(msg: MessageEvent) -> str:
        async with runtime.pool.acquire() as conn, conn.transaction():
            [(outcome, out)] = await apply(conn, [msg])
        committed([(out, msg.correlation_id)])
        return outcome

    async def handle_batch(records: tuple[Any, ...]) -> None:
        """A batch of records in ONE transaction and ONE offset commit (idempotent per
        message: a redelivered batch finds its messages decided and does nothing again).
        Any failure of the batch falls back to one transaction per message, so a single
        bad message or a deadlock with another instance costs only a retry."""
        started = time.perf_counter()
        events: list[MessageEvent] = []
        valid: list[Any] = []
        for rec in records:
            try:
                events.append(MessageEvent.model_validate_json(rec.value or b""))
                valid.append(rec)
            except ValidationError as exc:
                await deadletter_record(rec, str(exc), "invalid_schema")
        try:
            async with runtime.pool.acquire() as conn, conn.transaction():
                results = await apply(conn, events)
        except Exception as exc:
            log.warning("batch failed; one transaction per message", error=repr(exc))
            for ev, rec in zip(events, valid, strict=True):
                with correlation(ev.correlation_id):
                    try:
                        outcome = await handle(ev)
                    except POISON as bad:
                        # The message itself can never be stored (e.g. a NUL character
                        # PostgreSQL refuses): dead-letter it, go on with the others.
                        log.warning("message dead-lettered", error=repr(bad))
                        await deadletter_record(rec, repr(bad), "unprocessable")
                        continue
                    # any other fault (database away, deadlock) raises: redelivered
                metrics.CONSUMED.labels(PRODUCER, MESSAGES.name, outcome).inc()
            return
        committed((out, ev.correlation_id) for (_, out), ev in zip(results, events, strict=True))
        outcomes = Counter(outcome for outcome, _ in results)
        for outcome, n in outcomes.items():
            metrics.CONSUMED.labels(PRODUCER, MESSAGES.name, outcome).inc(n)
        metrics.PROCESSING_SECONDS.labels(PRODUCER, MESSAGES.name).observe(
            time.perf_counter() - started
        )

    async def deadletter_record(rec: Any, error: str, reason: str) -> None:
        await dead.record(deadletter.event(PRODUCER, rec.topic, rec.key, rec.value, reason, error))
        metrics.CONSUMED.labels(PRODUCER, MESSAGES.name, "deadletter").inc()

    async def handle_escalation(ev: EscalationEvent) -> str:
        if not ev.reason.value.endswith("_breached"):
            return "ignored"  # the router's own routed_to_l2 notices
        out = await escalate(runtime.pool, ev)
        if out.ignored:
            return "ignored"
        count(out)
        log.info("escalated to L2", ticket_id=ev.ticket_id, reason=ev.reason.value)
        return "ok"

    async def handle_escalations(records: tuple[Any, ...]) -> None:
        """A batch of cs.escalations.v1 records, one after another, and ONE offset commit.
        Most are the router's own routed_to_l2 notices (one per urgent L2 decision), read
        one at a time before: a FastStream dispatch, a worker-thread hop and an offset
        commit each. Poison is dead-lettered by ``consume``'s own steps
        (``shared.kafka.validated``, ``handled``); any other fault raises and the batch is
        redelivered (an escalation applied twice is ignored: the ticket is already L2)."""
        started = time.perf_counter()
        outcomes: Counter[str] = Counter()
        for rec in records:
            topic, key, value = rec.topic, rec.key, rec.value
            ev = await validated(dead, ESCALATIONS, EscalationEvent, value, original=topic, key=key)
            if ev is None:
                continue
            outcome = await handled(
                dead,
                ESCALATIONS,
                ev,
                handle_escalation,
                original=topic,
                key=key,
                value=value,
                redelivered="batch",
            )
            if outcome == "deadletter":  # counted as it happens, as an invalid record is
                metrics.CONSUMED.labels(PRODUCER, ESCALATIONS.name, outcome).inc()
            else:
                outcomes[outcome] += 1
        for outcome, n in outcomes.items():
            metrics.CONSUMED.labels(PRODUCER, ESCALATIONS.name, outcome).inc(n)
        metrics.PROCESSING_SECONDS.labels(PRODUCER, ESCALATIONS.name).observe(
            time.perf_counter() - started
        )

    if settings.batch_max_records > 1:

        @broker.subscriber(  # type: ignore[untyped-decorator]
            MESSAGES.name,
            batch=True,
            max_records=settings.batch_max_records,
            batch_timeout_ms=settings.batch_timeout_ms,
            decoder=raw_records,  # the handler parses the records itself
            **subscriber_options(settings.group_id, runtime.tracker()),
        )
        async def on_messages(records: Any) -> None:
            await handle_batch(records)

    else:

        @broker.subscriber(  # type: ignore[untyped-decorator]
            MESSAGES.name, **subscriber_options(settings.group_id, runtime.tracker())
        )
        async def on_message(message: KafkaMessage) -> None:
            await consume(dead, MESSAGES, message, MessageEvent, handle)

    @broker.subscriber(  # type: ignore[untyped-decorator]
        ESCALATIONS.name,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        decoder=raw_records,
        **subscriber_options(settings.escalations_group_id, runtime.tracker()),
    )
    async def on_escalations(records: Any) -> None:
        await handle_escalations(records)

    async def seed() -> None:
        if settings.roster_seed_file:
            n = await seed_if_empty(runtime.pool, settings.roster_seed_file)
            if n:
                log.info("roster seeded", agents=n, file=settings.roster_seed_file)

    async def sweep() -> None:
        """Safety net and gauges: offer waiting tickets to free agents, refresh queue depth."""
        while True:
            try:
                count(await fill_all(runtime.pool))
                stats = {r["tier"]: r for r in await queue_stats(runtime.pool)}
                for tier in Tier:
                    r = stats.get(tier.value)
                    metrics.ROUTER_QUEUE_DEPTH.labels(tier.value).set(r["depth"] if r else 0)
                    metrics.ROUTER_QUEUE_OLDEST_AGE_SECONDS.labels(tier.value).set(
                        r["oldest_seconds"] if r else 0
                    )
            except Exception as exc:  # database away: try again next round
                log.warning("queue sweep failed", error=repr(exc))
            await asyncio.sleep(settings.sweep_seconds)

    runtime.on_ready(seed)
    runtime.background("queue-sweep", sweep)

    app = create_app(
        runtime, title="ticketflow router", description="Routing decisions and the admin/query API."
    )
    app.include_router(admin_router(runtime, count))

    @app.get("/v1/tickets/{ticket_id}", tags=["query"], summary="A ticket's state and decisions")
    async def get_ticket(ticket_id: str) -> dict[str, object]:
        from fastapi import HTTPException

        row = await runtime.pool.fetchrow(
            "SELECT ticket_id, conversation_id, shop_id, channel, status, category, priority,"
            " tier, queue, agent_id, reopen_count, created_at, updated_at"
            " FROM router_tickets WHERE ticket_id = $1",
            ticket_id,
        )
        if row is None:
            raise HTTPException(404, f"no ticket {ticket_id}")
        decisions = await runtime.pool.fetch(
            "SELECT message_id, message_event_id, category, priority, tier, queue, agent_id,"
            " reasons, decided_at FROM router_decisions WHERE ticket_id = $1 ORDER BY decided_at",
            ticket_id,
        )
        return {"ticket": dict(row), "decisions": [dict(d) for d in decisions]}

    return app


def build_process(settings: RouterSettings) -> FastAPI:
    """The app of ``python -m services.router``: ``build``, and once the pool is connected
    (rules, dictionaries and models loaded) its start-up heap frozen and the youngest
    generation collected less often (``YOUNG_GC_THRESHOLD``, ``shared/heap.py``). Not in
    ``build``: tests build apps in their own process."""
    app = build(settings)

    async def _freeze() -> None:
        frozen = freeze_startup_heap(young_threshold=YOUNG_GC_THRESHOLD)
        log.info("start-up heap frozen", objects=frozen, young_threshold=YOUNG_GC_THRESHOLD)

    app.state.runtime.on_ready(_freeze)
    return app
