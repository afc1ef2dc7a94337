"""Delivery policy: retries with exponential backoff and full jitter, attempts recorded,
one delivery per (escalation, channel)."""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import httpx

from services.notifier.channels.base import Channel, Outcome, Result
from shared import metrics
from shared.events import EscalationEvent
from shared.logging import get_logger

log = get_logger(__name__)


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is a floor."""
    delay = random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
    return max(delay, retry_after or 0.0)


async def claim(pool: asyncpg.Pool, esc: EscalationEvent, channel: str) -> bool:
    """True when this (escalation, channel) still needs delivering."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO notifier_deliveries (escalation_id, channel, ticket_id, status)"
            " VALUES ($1, $2, $3, 'pending') ON CONFLICT DO NOTHING",
            esc.escalation_id,
            channel,
            esc.ticket_id,
        )
        status = await conn.fetchval(
            "SELECT status FROM notifier_deliveries WHERE escalation_id = $1 AND channel = $2",
            esc.escalation_id,
            channel,
        )
        return bool(status == "pending")


async def _record(
    pool: asyncpg.Pool, esc: EscalationEvent, ch: Channel, attempt: int, r: Result, ms: float
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO notifier_attempts (escalation_id, channel, attempt, outcome, status_code,"
            " detail, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            esc.escalation_id,
            ch.name,
            attempt,
            r.outcome.value,
            r.status_code,
            r.detail,
            ms,
        )
        status = {Outcome.delivered: "delivered", Outcome.failed: "failed"}.get(
            r.outcome, "pending"
        )
        await conn.execute(
            "UPDATE notifier_deliveries SET attempts = $3, status = $4, last_error = $5,"
            " delivered_at = CASE WHEN $4 = 'delivered' THEN now() ELSE delivered_at END"
            " WHERE escalation_id = $1 AND channel = $2",
            esc.escalation_id,
            ch.name,
            attempt,
            status,
            r.detail or None,
        )


async def deliver(
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    ch: Channel,
    esc: EscalationEvent,
    *,
    max_attempts: int,
    base: float,
    cap: float,
) -> Result:
    result = Result(Outcome.retry, "not attempted")
    for attempt in range(1, max_attempts + 1):
        started = time.perf_counter()
        result = await ch.send(client, esc, time.time())
        elapsed = time.perf_counter() - started
        metrics.NOTIFIER_DELIVERY_SECONDS.labels(ch.kind).observe(elapsed)
        final = result.outcome is not Outcome.retry or attempt == max_attempts
        if result.outcome is Outcome.retry and attempt == max_attempts:
            result = Result(
                Outcome.failed,
                f"gave up after {attempt} attempts: {result.detail}",
                result.status_code,
            )
        metrics.NOTIFIER_DELIVERIES.labels(ch.kind, result.outcome.value).inc()
        await _record(pool, esc, ch, attempt, result, elapsed * 1000)
        if final:
            return result
        delay = backoff(attempt, base, cap, result.retry_after)
        log.info(
            "delivery will be retried",
            channel=ch.name,
            attempt=attempt,
            detail=result.detail,
            retry_in=round(delay, 2),
        )
        await asyncio.sleep(delay)
    return result
