"""Kafka adapter of sla_watch, its timer loop, rolling window loader and safety-net sweep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from faststream.kafka import KafkaMessage

from services.sla_watch import store
from services.sla_watch.policy import Policies, load_policies
from services.sla_watch.settings import SlaWatchSettings
from services.sla_watch.store import EPOCH, PRODUCER, Emitted, Kind, Outcome
from services.sla_watch.timers import Scheduler
from shared import metrics
from shared.events import (
    AuthorRole,
    ClockName,
    EscalationEvent,
    MessageEvent,
    MessageKind,
    RoutedEvent,
    SlaKind,
    utcnow,
)
from shared.kafka import consume, subscriber_options
from shared.logging import get_logger
from shared.service import Runtime, create_app
from shared.topics import ESCALATIONS, MESSAGES, ROUTED

log = get_logger(__name__)

_OPEN_COUNT_EVERY = 15.0


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
            metrics.SLA_BREACHES.labels(e.clock, e.priority or "unknown", e.tier or "unknown").inc()
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

    def schedule(out: Outcome) -> None:
        for d in out.due or ():
            scheduler.push(d.at, d.kind, d.id)
        observe(out.emitted or ())

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

    async def handle_message(msg: MessageEvent) -> str:
        if msg.kind is MessageKind.message_created and msg.author_role is AuthorRole.customer:
            out = await store.on_customer_message(runtime.pool, msg, policies)
        elif msg.kind is MessageKind.message_created:
            out = await store.on_reply(runtime.pool, msg, policies)
        elif msg.kind is MessageKind.ticket_resolved:
            out = await store.on_resolved(runtime.pool, msg, policies)
        elif msg.kind is MessageKind.ticket_reopened:
            out = await store.on_reopened(runtime.pool, msg, policies)
        else:
            return "ignored"
        if not out.new:
            return "duplicate"
        schedule(out)
        return "ok"

    async def handle_routed(routed: RoutedEvent) -> str:
        schedule(await store.on_routed(runtime.pool, routed, policies))
        return "ok"

    async def handle_escalation(esc: EscalationEvent) -> str:
        if esc.producer == PRODUCER:
            return "ignored"  # our own breach escalations
        schedule(await store.on_escalation(runtime.pool, esc, policies))
        return "ok"

    @broker.subscriber(  # type: ignore[untyped-decorator]
        MESSAGES.name, **subscriber_options(f"{settings.group_id}.messages", runtime.tracker())
    )
    async def on_message(message: KafkaMessage) -> None:
        await consume(broker, PRODUCER, MESSAGES, message, MessageEvent, handle_message)

    @broker.subscriber(  # type: ignore[untyped-decorator]
        ROUTED.name, **subscriber_options(f"{settings.group_id}.routed", runtime.tracker())
    )
    async def on_routed(message: KafkaMessage) -> None:
        await consume(broker, PRODUCER, ROUTED, message, RoutedEvent, handle_routed)

    @broker.subscriber(  # type: ignore[untyped-decorator]
        ESCALATIONS.name,
        **subscriber_options(f"{settings.group_id}.escalations", runtime.tracker()),
    )
    async def on_escalation(message: KafkaMessage) -> None:
        await consume(broker, PRODUCER, ESCALATIONS, message, EscalationEvent, handle_escalation)

    return create_app(runtime, title="ticketflow sla_watch", description="SLA clocks.")
