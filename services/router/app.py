"""Kafka and HTTP adapters of the router."""

from __future__ import annotations

import time

from fastapi import FastAPI, HTTPException
from faststream.kafka import KafkaMessage

from services.router.domain import DecisionInput, decide
from services.router.settings import RouterSettings
from services.router.store import PRODUCER, record_decision, set_status
from shared import metrics
from shared.events import AuthorRole, MessageEvent, MessageKind
from shared.kafka import consume, subscriber_options
from shared.logging import get_logger
from shared.service import Runtime, create_app
from shared.topics import MESSAGES

log = get_logger(__name__)


def build(settings: RouterSettings | None = None) -> FastAPI:
    settings = settings or RouterSettings()
    runtime = Runtime(PRODUCER, settings, relay=True)
    broker = runtime.broker

    async def handle(msg: MessageEvent) -> str:
        if msg.kind is MessageKind.ticket_resolved:
            await set_status(runtime.pool, msg.ticket_id, resolved=True)
            return "ok"
        if msg.kind is MessageKind.ticket_reopened:
            await set_status(runtime.pool, msg.ticket_id, resolved=False)
            return "ok"
        if msg.author_role is not AuthorRole.customer or not msg.text:
            return "ignored"
        started = time.perf_counter()
        decision = decide(
            DecisionInput(
                text=msg.text,
                channel=msg.channel,
                vip_level=msg.customer.vip_level if msg.customer else 0,
                order_amount=msg.order.amount if msg.order else None,
                order_status=msg.order.status if msg.order else None,
            )
        )
        metrics.ROUTER_DECISION_SECONDS.observe(time.perf_counter() - started)
        routed = await record_decision(runtime.pool, msg, decision)
        if routed is None:
            return "duplicate"
        metrics.ROUTER_DECISIONS.labels(
            routed.priority.value, routed.tier.value, routed.category.value
        ).inc()
        log.info(
            "routed",
            ticket_id=routed.ticket_id,
            category=routed.category.value,
            priority=routed.priority.value,
            tier=routed.tier.value,
            queue=routed.queue,
        )
        return "ok"

    @broker.subscriber(MESSAGES.name, **subscriber_options(settings.group_id, runtime.tracker()))
    async def on_message(message: KafkaMessage) -> None:
        await consume(broker, PRODUCER, MESSAGES, message, MessageEvent, handle)

    app = create_app(
        runtime, title="ticketflow router", description="Routing decisions and the admin/query API."
    )

    @app.get("/v1/tickets/{ticket_id}", tags=["query"], summary="A ticket's state and decisions")
    async def get_ticket(ticket_id: str) -> dict[str, object]:
        row = await runtime.pool.fetchrow(
            "SELECT * FROM router_tickets WHERE ticket_id = $1", ticket_id
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
