"""Kafka and HTTP adapters of the router."""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from faststream.kafka import KafkaMessage

from services.router.admin import admin_router
from services.router.domain import DecisionInput, decide
from services.router.roster import seed_if_empty
from services.router.settings import RouterSettings
from services.router.store import (
    PRODUCER,
    Outcome,
    escalate,
    fill_all,
    queue_stats,
    record_decision,
    set_status,
)
from shared import metrics
from shared.events import AuthorRole, EscalationEvent, MessageEvent, MessageKind, Tier
from shared.kafka import consume, subscriber_options
from shared.logging import get_logger
from shared.service import Runtime, create_app
from shared.topics import ESCALATIONS, MESSAGES

log = get_logger(__name__)


def count(out: Outcome) -> None:
    """Metrics of a committed transaction."""
    for _ticket, _agent, tier in out.assigned:
        metrics.ROUTER_ASSIGNMENTS.labels(tier.value).inc()
    for reason in out.reassigned:
        metrics.ROUTER_REASSIGNMENTS.labels(reason).inc()


def build(settings: RouterSettings | None = None) -> FastAPI:
    settings = settings or RouterSettings()
    runtime = Runtime(PRODUCER, settings, relay=True)
    broker = runtime.broker
    limits = settings.first_response_limits()

    async def handle(msg: MessageEvent) -> str:
        if msg.kind is MessageKind.ticket_resolved:
            count(await set_status(runtime.pool, msg.ticket_id, resolved=True))
            return "ok"
        if msg.kind is MessageKind.ticket_reopened:
            count(await set_status(runtime.pool, msg.ticket_id, resolved=False))
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
        out = await record_decision(runtime.pool, msg, decision, limits)
        if out is None or out.routed is None:
            return "duplicate"
        routed = out.routed
        count(out)
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
            agent_id=routed.agent_id,
        )
        return "ok"

    async def handle_escalation(ev: EscalationEvent) -> str:
        if not ev.reason.value.endswith("_breached"):
            return "ignored"  # the router's own routed_to_l2 notices
        out = await escalate(runtime.pool, ev)
        if out.ignored:
            return "ignored"
        count(out)
        log.info("escalated to L2", ticket_id=ev.ticket_id, reason=ev.reason.value)
        return "ok"

    @broker.subscriber(  # type: ignore[untyped-decorator]
        MESSAGES.name, **subscriber_options(settings.group_id, runtime.tracker())
    )
    async def on_message(message: KafkaMessage) -> None:
        await consume(broker, PRODUCER, MESSAGES, message, MessageEvent, handle)

    @broker.subscriber(  # type: ignore[untyped-decorator]
        ESCALATIONS.name,
        **subscriber_options(settings.escalations_group_id, runtime.tracker()),
    )
    async def on_escalation(message: KafkaMessage) -> None:
        await consume(broker, PRODUCER, ESCALATIONS, message, EscalationEvent, handle_escalation)

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
                    metrics.ROUTER_QUEUE_OLDEST_SECONDS.labels(tier.value).set(
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
