"""PostgreSQL adapter of the router: ticket state, decisions and outbox, atomically."""

from __future__ import annotations

import asyncpg

from services.router.domain import Decision
from shared.events import (
    PRIORITY_RANK,
    EscalationEvent,
    EscalationReason,
    MessageEvent,
    Priority,
    RoutedEvent,
    Tier,
    escalation_id_for,
)
from shared.outbox import OutboxRow, enqueue
from shared.topics import ESCALATIONS, ROUTED

PRODUCER = "router"
_TIER_RANK = {Tier.bot: 0, Tier.L1: 1, Tier.L2: 2}


async def record_decision(
    pool: asyncpg.Pool, msg: MessageEvent, decision: Decision
) -> RoutedEvent | None:
    """Persist the decision and queue its events; None if this message was decided before."""
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchrow(
            "SELECT priority, tier, category, agent_id FROM router_tickets"
            " WHERE ticket_id = $1 AND status = 'open' FOR UPDATE",
            msg.ticket_id,
        )
        priority, tier, category = decision.priority, decision.tier, decision.category
        reasons = list(decision.reasons)
        agent_id = None
        if current is not None:
            # An open ticket never loses urgency or tier because of a calmer follow-up.
            if PRIORITY_RANK[Priority(current["priority"])] < PRIORITY_RANK[priority]:
                priority = Priority(current["priority"])
                reasons.append(f"kept priority {priority.value} of the open ticket")
            if _TIER_RANK[Tier(current["tier"])] > _TIER_RANK[tier]:
                tier = Tier(current["tier"])
                reasons.append(f"kept tier {tier.value} of the open ticket")
            agent_id = current["agent_id"]
        queue = f"{tier.value}.{priority.value}"
        inserted = await conn.fetchval(
            "INSERT INTO router_decisions (message_id, ticket_id, message_event_id, category,"
            " priority, tier, queue, agent_id, reasons) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
            " ON CONFLICT (message_id) DO NOTHING RETURNING 1",
            msg.message_id,
            msg.ticket_id,
            msg.source_event_id,
            category.value,
            priority.value,
            tier.value,
            queue,
            agent_id,
            reasons,
        )
        if inserted is None:
            return None
        await conn.execute(
            "INSERT INTO router_tickets (ticket_id, conversation_id, shop_id, channel, category,"
            " priority, tier, queue, agent_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
            " ON CONFLICT (ticket_id) DO UPDATE SET status = 'open', category = EXCLUDED.category,"
            " priority = EXCLUDED.priority, tier = EXCLUDED.tier, queue = EXCLUDED.queue,"
            " updated_at = now()",
            msg.ticket_id,
            msg.conversation_id,
            msg.shop_id,
            msg.channel.value,
            category.value,
            priority.value,
            tier.value,
            queue,
            agent_id,
        )
        routed = RoutedEvent(
            correlation_id=msg.correlation_id,
            producer=PRODUCER,
            ticket_id=msg.ticket_id,
            conversation_id=msg.conversation_id,
            message_event_id=msg.source_event_id,
            message_id=msg.message_id,
            shop_id=msg.shop_id,
            channel=msg.channel,
            category=category,
            priority=priority,
            tier=tier,
            queue=queue,
            agent_id=agent_id,
            reasons=reasons,
            risk_signals=decision.risk_signals,
            sentiment=decision.sentiment,
            vip_level=msg.customer.vip_level if msg.customer else 0,
            customer_ref=msg.customer.ref if msg.customer else None,
            message_received_at=msg.received_at,
        )
        rows = [OutboxRow(ROUTED, msg.ticket_id, routed)]
        if tier is Tier.L2 and priority is Priority.urgent:
            rows.append(
                OutboxRow(
                    ESCALATIONS,
                    msg.ticket_id,
                    EscalationEvent(
                        correlation_id=msg.correlation_id,
                        producer=PRODUCER,
                        escalation_id=escalation_id_for(
                            msg.ticket_id, EscalationReason.routed_to_l2.value, msg.message_id
                        ),
                        ticket_id=msg.ticket_id,
                        conversation_id=msg.conversation_id,
                        reason=EscalationReason.routed_to_l2,
                        priority=priority,
                        tier=tier,
                        category=category,
                        shop_id=msg.shop_id,
                        channel=msg.channel,
                        agent_id=agent_id,
                        customer_ref=msg.customer.ref if msg.customer else None,
                    ),
                )
            )
        await enqueue(conn, PRODUCER, rows)
        return routed


async def set_status(pool: asyncpg.Pool, ticket_id: str, *, resolved: bool) -> None:
    if resolved:
        await pool.execute(
            "UPDATE router_tickets SET status = 'resolved', updated_at = now() WHERE ticket_id = $1",
            ticket_id,
        )
    else:
        await pool.execute(
            "UPDATE router_tickets SET status = 'open', reopen_count = reopen_count + 1,"
            " updated_at = now() WHERE ticket_id = $1 AND status = 'resolved'",
            ticket_id,
        )
