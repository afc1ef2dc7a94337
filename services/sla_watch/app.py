"""Kafka adapter of sla_watch, its timer loop, rolling window loader and safety-net sweep."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import FastAPI
from pydantic import ValidationError

from services.sla_watch import store
from services.sla_watch.policy import Policies, load_policies
from services.sla_watch.settings import SlaWatchSettings
from services.sla_watch.store import EPOCH, PRODUCER, Emitted, Kind
from services.sla_watch.timers import Scheduler
from shared import deadletter, metrics
from shared.deadletter import DeadLetters
from shared.events import (
    ClockName,
    EscalationEvent,
    MessageEvent,
    RoutedEvent,
    SlaKind,
    utcnow,
)
from shared.kafka import PermanentError, raw_records, subscriber_options
from shared.logging import correlation, get_logger
from shared.service import Runtime, create_app
from shared.topics import ESCALATIONS, MESSAGES, ROUTED, TopicSpec

log = get_logger(__name__)

_OPEN_COUNT_EVERY = 15.0

POISON = (asyncpg.DataError, PermanentError)
"""Faults of the message itself (PostgreSQL refuses a value): retrying cannot help."""


def policies_for(settings: SlaWatchSettings) -> Policies:
    """The policy file (or built-in default) with the env overrides applied; raises
    ``PolicyError`` with the reason for a file that does not validate."""
    return load_policies(settings.policy_file).with_overrides(
        first_response=settings.first_response_seconds,
        resolution=settings.resolution_seconds,
        warning_fraction=settings.warning_fraction,
    )


def observe(emitted: Sequence[Emitted]) -> None:
    for e in emitted:
        if e.kind is SlaKind.met:
            metrics.SLA_MET.labels(e.clock).inc()
        first = e.clock == ClockName.first_response and e.elapsed is not None
        if first and e.kind in (SlaKind.met, SlaKind.stopped):
            metrics.SLA_FIRST_RESPONSE.observe(e.elapsed or 0.0)
        if e.kind is SlaKind.breached:
            metrics.SLA_BREACHES.labels(
                e.clock, e.priority or "unknown", e.tier or "unknown", e.category or "unknown"
            ).inc()
            metrics.SLA_BREACH_LATENESS.observe(e.lateness or 0.0)
        if e.kind is SlaKind.warning:
            metrics.SLA_WARNINGS.labels(e.clock).inc()


class Window:
    """Keeps the scheduler holding every running clock due before ``now + window``: the
    horizon is advanced first, then the clocks due up to it are paged in by keyset from
    the partial indexes, so a clock started meanwhile is either pushed by its handler
    (its time is within the new horizon) or found by a later page."""

    def __init__(self, pool_getter: Runtime, scheduler: Scheduler, window: float) -> None:
        self._rt = pool_getter
        self._s = scheduler
        self._window = window
        self._cursor: dict[Kind, tuple[datetime, int]] = {k: (EPOCH, 0) for k in Kind}

    async def advance(self) -> int:
        until = utcnow() + timedelta(seconds=self._window)
        self._s.horizon = until.timestamp()
        loaded = 0
        for kind in Kind:
            while True:
                rows = await store.page(self._rt.pool, kind, self._cursor[kind], until)
                for at, clock_id in rows:
                    self._s.push(at, kind, clock_id)
                loaded += len(rows)
                if rows:
                    at, clock_id = rows[-1]
                    self._cursor[kind] = (datetime.fromtimestamp(at, UTC), clock_id)
                if len(rows) < 20_000:
                    break
        return loaded


def build(settings: SlaWatchSettings | None = None) -> FastAPI:
    settings = settings or SlaWatchSettings()
    policies = policies_for(settings)  # refuses a bad policy file before anything starts
    runtime = Runtime(PRODUCER, settings, relay=True)
    dead = DeadLetters(runtime)
    broker = runtime.broker

    async def fire(kind: Kind, ids: Sequence[int]) -> None:
        try:
            emitted = await store.fire(runtime.pool, kind, ids)
        except Exception:
            log.exception("firing clocks failed; the sweep will retry", clocks=len(ids))
            return
        observe(emitted)
        if emitted:
            log.info(
                "sla fired",
                kind=kind.name,
                count=len(emitted),
                max_lateness=max((e.lateness or 0.0) for e in emitted),
            )

    scheduler = Scheduler(fire, batch=settings.fire_batch)
    window = Window(runtime, scheduler, settings.window_seconds)

    tasks: list[asyncio.Task[None]] = []

    async def load() -> None:
        """Load the window and start firing before Kafka is even connected: firing needs
        only the database (events wait in the outbox), so clocks that fell due during an
        outage breach while the consumers are still joining their groups."""
        t0 = time.perf_counter()
        n = await window.advance()
        log.info("clocks loaded", timers=n, seconds=round(time.perf_counter() - t0, 3))
        for name, job in (("scheduler", scheduler.run), ("window", roll), ("sweep", sweep)):
            tasks.append(asyncio.create_task(job(), name=f"sla_watch:{name}"))

    async def stop_timers() -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def roll() -> None:
        """Advance the window a quarter of its length at a time."""
        while True:
            await asyncio.sleep(max(0.5, settings.window_seconds / 4))
            try:
                await window.advance()
            except Exception:
                log.exception("window refill failed")

    async def sweep() -> None:
        """Safety net: due clocks that no timer here fired (another instance died holding
        them mid-transaction, a failed batch, a lock wait)."""
        last_count = 0.0
        while True:
            await asyncio.sleep(settings.sweep_interval_seconds)
            try:
                before = utcnow() - timedelta(seconds=min(0.25, settings.sweep_interval_seconds))
                for kind in (Kind.breach, Kind.warning):
                    ids = await store.overdue(runtime.pool, kind, before, settings.fire_batch)
                    if ids:
                        await fire(kind, ids)
                if time.monotonic() - last_count >= _OPEN_COUNT_EVERY:
                    last_count = time.monotonic()
                    counts = await store.open_counts(runtime.pool)
                    for clock in ClockName:
                        metrics.SLA_OPEN_CLOCKS.labels(clock.value).set(counts.get(clock.value, 0))
            except Exception:
                log.exception("sweep failed")

    runtime.on_ready(load)
    runtime.on_stop(stop_timers)

    Model = type[MessageEvent] | type[RoutedEvent] | type[EscalationEvent]

    async def handle_batch(topic: TopicSpec, model: Model, records: tuple[Any, ...]) -> None:
        """A poll's records in ONE transaction (``store.apply_in``: a fixed number of
        set-based statements) and ONE offset commit, after the commit of the transaction
        (FastStream acks when this returns). Idempotent per message, so a redelivered
        batch changes nothing. Any failure of the batch falls back to one transaction per
        message: a poison message is dead-lettered and the others commit; any other fault
        (database away, deadlock) raises and the whole batch is redelivered."""
        started = time.perf_counter()
        events: list[store.Event] = []
        valid: list[Any] = []
        for rec in records:
            try:
                events.append(model.model_validate_json(rec.value or b""))
                valid.append(rec)
            except ValidationError as exc:
                log.warning("invalid event dead-lettered", topic=topic.name)
                await deadletter_record(topic, rec, str(exc), "invalid_schema")
        if not events:
            return
        try:
            batch = await store.apply(runtime.pool, events, policies)
        except Exception as exc:
            log.warning("batch failed; one transaction per message", error=repr(exc))
            for ev, rec in zip(events, valid, strict=True):
                with correlation(ev.correlation_id):
                    try:
                        one = await store.apply(runtime.pool, [ev], policies)
                    except POISON as bad:
                        log.warning("message dead-lettered", error=repr(bad))
                        await deadletter_record(topic, rec, repr(bad), "unprocessable")
                        continue
                    except Exception:
                        metrics.CONSUMED.labels(PRODUCER, topic.name, "error").inc()
                        log.exception("handler failed; batch will be redelivered")
                        await asyncio.sleep(0.5)  # retry backoff for a transient fault
                        raise
                committed(topic, one)
            return
        committed(topic, batch)
        metrics.PROCESSING_SECONDS.labels(PRODUCER, topic.name).observe(
            time.perf_counter() - started
        )

    def committed(topic: TopicSpec, batch: store.Batch) -> None:
        for d in batch.due:
            scheduler.push(d.at, d.kind, d.id)
        observe(batch.emitted)
        for outcome, n in Counter(batch.results).items():
            metrics.CONSUMED.labels(PRODUCER, topic.name, outcome).inc(n)

    async def deadletter_record(topic: TopicSpec, rec: Any, error: str, reason: str) -> None:
        await dead.record(deadletter.event(PRODUCER, rec.topic, rec.key, rec.value, reason, error))
        metrics.CONSUMED.labels(PRODUCER, topic.name, "deadletter").inc()

    def batch_options(group: str) -> dict[str, Any]:
        return {
            "batch": True,
            "max_records": settings.batch_max_records,
            "batch_timeout_ms": settings.batch_timeout_ms,
            "decoder": raw_records,  # handle_batch validates the records itself
            **subscriber_options(f"{settings.group_id}.{group}", runtime.tracker()),
        }

    @broker.subscriber(MESSAGES.name, **batch_options("messages"))  # type: ignore[untyped-decorator]
    async def on_messages(records: Any) -> None:
        await handle_batch(MESSAGES, MessageEvent, records)

    @broker.subscriber(ROUTED.name, **batch_options("routed"))  # type: ignore[untyped-decorator]
    async def on_routed(records: Any) -> None:
        await handle_batch(ROUTED, RoutedEvent, records)

    @broker.subscriber(ESCALATIONS.name, **batch_options("escalations"))  # type: ignore[untyped-decorator]
    async def on_escalations(records: Any) -> None:
        await handle_batch(ESCALATIONS, EscalationEvent, records)

    return create_app(runtime, title="ticketflow sla_watch", description="SLA clocks.")
