"""Kafka adapter of the notifier."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from faststream.kafka import KafkaMessage

from services.notifier.channels.base import Channel, Outcome
from services.notifier.channels.generic import GenericWebhook
from services.notifier.delivery import claim, deliver
from services.notifier.settings import NotifierSettings
from shared import metrics
from shared.events import EscalationEvent
from shared.kafka import PermanentError, consume, subscriber_options
from shared.logging import get_logger
from shared.service import Runtime, create_app
from shared.topics import ESCALATIONS

log = get_logger(__name__)
PRODUCER = "notifier"


def channels_from(settings: NotifierSettings) -> list[Channel]:
    out: list[Channel] = []
    if settings.generic_webhook_url:
        out.append(
            GenericWebhook("generic", settings.generic_webhook_url, settings.generic_secret())
        )
    return out


def build(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    runtime = Runtime(PRODUCER, settings)
    broker = runtime.broker
    channels = channels_from(settings)
    if not channels:
        log.warning("no notification channel configured: set NOTIFIER_GENERIC_WEBHOOK_URL")
    client = httpx.AsyncClient(timeout=settings.attempt_timeout_seconds)
    runtime.on_stop(client.aclose)

    async def handle(esc: EscalationEvent) -> str:
        if not channels:
            return "no_channel"
        failures: list[str] = []
        delivered_any = False
        for ch in channels:
            if not await claim(runtime.pool, esc, ch.name):
                metrics.NOTIFIER_DELIVERIES.labels(ch.kind, "duplicate").inc()
                continue
            result = await deliver(
                runtime.pool,
                client,
                ch,
                esc,
                max_attempts=settings.max_attempts,
                base=settings.backoff_base_seconds,
                cap=settings.backoff_max_seconds,
            )
            if result.outcome is Outcome.delivered:
                delivered_any = True
                log.info(
                    "escalation delivered",
                    channel=ch.name,
                    ticket_id=esc.ticket_id,
                    reason=esc.reason.value,
                )
            else:
                failures.append(f"{ch.name}: {result.detail}")
        if failures:
            raise PermanentError("delivery_failed", "; ".join(failures))
        return "ok" if delivered_any else "duplicate"

    @broker.subscriber(ESCALATIONS.name, **subscriber_options(settings.group_id, runtime.tracker()))
    async def on_escalation(message: KafkaMessage) -> None:
        await consume(broker, PRODUCER, ESCALATIONS, message, EscalationEvent, handle)

    return create_app(runtime, title="ticketflow notifier", description="Escalation delivery.")
