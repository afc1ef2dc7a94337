"""Kafka adapter of sla_watch and its timer loop."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from faststream.kafka import KafkaMessage

from services.sla_watch import store
from services.sla_watch.domain import Policy
from services.sla_watch.settings import SlaWatchSettings
from services.sla_watch.store import PRODUCER, Emitted, Scheduled, Timer
from services.sla_watch.timers import Scheduler
from shared import metrics
from shared.events import AuthorRole, ClockName, MessageEvent, MessageKind, RoutedEvent, SlaKind
from shared.kafka import consume, subscriber_options
from shared.logging import get_logger
from shared.service import Runtime, create_app
from shared.topics import MESSAGES, ROUTED

log = get_logger(__name__)


def build(settings: SlaWatchSettings | None = None) -> FastAPI:
    settings = settings or SlaWatchSettings()
    runtime = Runtime(PRODUCER, settings, relay=True)
    broker = runtime.broker
    first_response = Policy(
        ClockName.first_response, settings.first_response_seconds, settings.warning_fraction
    )
    resolution = Policy(
        ClockName.resolution, settings.resolution_seconds, settings.warning_fraction
    )

    def observe(emitted: list[Emitted]) -> None:
        for e in emitted:
            if e.kind is SlaKind.met:
                metrics.SLA_MET.labels(e.clock).inc()
            if e.clock == ClockName.first_response and e.elapsed is not None:
                metrics.SLA_FIRST_RESPONSE.observe(e.elapsed)
            if e.kind is SlaKind.breached:
                metrics.SLA_BREACHES.labels(
                    e.clock, e.priority or "unknown", e.tier or "unknown"
                ).inc()
                metrics.SLA_BREACH_LATENESS.observe(e.lateness or 0.0)
            if e.kind is SlaKind.warning:
                metrics.SLA_WARNINGS.labels(e.clock).inc()

    async def fire(kind: str, timer: Timer) -> None:
        try:
            fn = store.fire_breach if kind == "breach" else store.fire_warning
            emitted = await fn(runtime.pool, timer)
        except Exception:
            log.exception("firing a clock failed; the sweep will retry", ticket_id=timer.ticket_id)
            return
        if emitted is not None:
            observe([emitted])
            log.info(
                f"sla {emitted.kind.value}",
                ticket_id=timer.ticket_id,
                clock=timer.clock,
                lateness=emitted.lateness,
            )

    scheduler = Scheduler(fire)

    def schedule(s: Scheduled | None) -> None:
        if s is None:
            return
        if s.warn_at is not None:
            scheduler.push(s.warn_at, "warning", s.timer)
        scheduler.push(s.deadline, "breach", s.timer)

    async def load() -> None:
        for s in await store.running(runtime.pool):
            schedule(s)
        log.info("clocks loaded", timers=len(scheduler))

    async def sweep() -> None:
        """Safety net: clocks due that no timer here holds (another instance died)."""
        while True:
            await asyncio.sleep(settings.sweep_interval_seconds)
            try:
                warns, breaches = await store.overdue(runtime.pool)
                for t in warns:
                    await fire("warning", t)
                for t in breaches:
                    await fire("breach", t)
                counts = await store.open_counts(runtime.pool)
                for clock in ClockName:
                    metrics.SLA_OPEN_CLOCKS.labels(clock.value).set(counts.get(clock.value, 0))
            except Exception:
                log.exception("sweep failed")

    runtime.on_ready(load)
    runtime.background("scheduler", scheduler.run)
    runtime.background("sweep", sweep)

    async def handle_message(msg: MessageEvent) -> str:
        if msg.kind is MessageKind.message_created and msg.author_role is AuthorRole.customer:
            new, scheduled = await store.on_customer_message(runtime.pool, msg, first_response)
            schedule(scheduled)
            return "ok" if new else "duplicate"
        if msg.kind is MessageKind.message_created:
            emitted = await store.on_reply(runtime.pool, msg)
        elif msg.kind is MessageKind.ticket_resolved:
            emitted = await store.on_resolved(runtime.pool, msg)
        else:
            return "ignored"
        if emitted is None:
            return "duplicate"
        observe(emitted)
        return "ok"

    async def handle_routed(routed: RoutedEvent) -> str:
        schedule(await store.on_routed(runtime.pool, routed, resolution))
        return "ok"

    @broker.subscriber(
        MESSAGES.name, **subscriber_options(f"{settings.group_id}.messages", runtime.tracker())
    )
    async def on_message(message: KafkaMessage) -> None:
        await consume(broker, PRODUCER, MESSAGES, message, MessageEvent, handle_message)

    @broker.subscriber(
        ROUTED.name, **subscriber_options(f"{settings.group_id}.routed", runtime.tracker())
    )
    async def on_routed(message: KafkaMessage) -> None:
        await consume(broker, PRODUCER, ROUTED, message, RoutedEvent, handle_routed)

    return create_app(runtime, title="ticketflow sla_watch", description="SLA clocks.")
