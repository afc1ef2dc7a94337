"""The notifier's background loops: one delivery worker per channel (sends and retries
from the durable queue, within the channel's rate, folding a surge into digests), the
escalator (next level for unacknowledged escalations, dead-letters), and the gauges."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import orjson

from services.notifier import store
from services.notifier.channels.base import Channel
from services.notifier.delivery import decide
from services.notifier.domain import SlidingWindow, ack_url
from services.notifier.messages import Locale, Notice, render_digest, render_escalation, summarise
from services.notifier.routes import RoutesConfig
from services.notifier.settings import NotifierSettings
from shared import deadletter, metrics
from shared.logging import get_logger
from shared.topics import ESCALATIONS

log = get_logger(__name__)
SERVICE = "notifier"
LEASE_BATCH = 100  # most rows leased for single sends at once
SEND_CONCURRENCY = 8  # parallel sends per channel (within its rate)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, timeout))


@dataclass
class Context:
    pool: asyncpg.Pool
    client: httpx.AsyncClient
    settings: NotifierSettings
    routes: RoutesConfig | None
    owner: str  # this instance, as named on the leases it takes
    # Lease rounds whose rows this process is sending right now; every other lease of
    # ``owner`` is stale (a previous process's, or one whose answer a fault swallowed).
    inflight: set[uuid.UUID] = field(default_factory=set)
    release_due: bool = True  # at start: the previous process may have died holding leases

    async def release_stale_leases(self) -> None:
        n = await store.release_leases(self.pool, self.owner, self.inflight)
        self.release_due = False
        if n:
            log.info("stale delivery leases given back", count=n, owner=self.owner)

    @contextlib.asynccontextmanager
    async def lease(self, channel: str, kind: str, limit: int) -> AsyncIterator[list[store.Row]]:
        """Lease due rows for the body of the ``with``, which sends them."""
        lease_id = uuid.uuid4()
        self.inflight.add(lease_id)
        try:
            yield await store.lease(
                self.pool,
                channel,
                kind,
                limit,
                self.settings.lease_seconds,
                self.owner,
                lease_id,
            )
        finally:
            self.inflight.discard(lease_id)


class ChannelWorker:
    def __init__(self, ctx: Context, channel: Channel) -> None:
        self.ctx = ctx
        self.ch = channel
        self.limiter = SlidingWindow(channel.rate, ctx.settings.rate_window_seconds)
        self.wake = asyncio.Event()
        self.deadletter_wake: asyncio.Event | None = None
        # After a vendor's "too fast" (the robot is shared, or its limit is lower than
        # configured): digest any backlog for two windows instead of trying singles again.
        self.throttled_until = 0.0
        self._sem = asyncio.Semaphore(SEND_CONCURRENCY)

    @property
    def locale(self) -> Locale:
        if self.ch.locale is not None:
            return self.ch.locale
        return "en" if self.ctx.settings.locale == "en" else "zh"

    async def run(self) -> None:
        poll = self.ctx.settings.poll_interval_seconds
        while True:
            self.wake.clear()
            try:
                busy = await self.tick()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("delivery worker: database unavailable", error=repr(exc))
                self.ctx.release_due = True  # a lease may have been granted unanswered
                busy = False
                await asyncio.sleep(1.0)
            except Exception:  # a bug must not stop every later delivery of the channel
                log.exception("delivery worker round failed", channel=self.ch.name)
                self.ctx.release_due = True
                busy = False
                await asyncio.sleep(1.0)
            if busy:
                continue
            now = time.monotonic()
            timeout = poll
            if self.limiter.free(now) == 0:
                timeout = min(poll, self.limiter.next_free_at(now) - now)
                await asyncio.sleep(max(0.0, timeout))  # a wake-up would not help yet
                continue
            await _wait(self.wake, timeout)

    async def tick(self) -> bool:
        """One round; True when it sent something (so go again at once)."""
        ctx, pool, s = self.ctx, self.ctx.pool, self.ctx.settings
        if ctx.release_due:
            await ctx.release_stale_leases()
        free = self.limiter.free(time.monotonic())
        if free == 0:
            return False
        sent = False
        async with ctx.lease(self.ch.name, "digest", min(free, 10)) as digests:
            for row in digests:
                await self.send(row)
                sent = True
        free = self.limiter.free(time.monotonic())
        if free == 0:
            return sent
        due = await store.due_count(pool, self.ch.name, "single")
        if due == 0:
            return sent
        cautious = time.monotonic() < self.throttled_until
        if due <= free and not (cautious and due > 1):
            async with ctx.lease(self.ch.name, "single", min(due, LEASE_BATCH)) as rows:
                await self._send_all(rows)
            return bool(rows) or sent
        # A surge: more due than the channel may take now (or it said "too fast" lately).
        # Fold them into one digest.
        async with ctx.lease(self.ch.name, "single", s.digest_max_items) as rows:
            if not rows:
                return sent
            if len(rows) <= free and not (cautious and len(rows) > 1):
                await self._send_all(rows)
                return True
            summary = summarise([r.event() for r in rows])
            summary["escalation_ids"] = [r.escalation_id for r in rows]
            digest = await store.make_digest(pool, self.ch.name, rows, summary)
            metrics.NOTIFIER_DIGESTS.labels(self.ch.kind).inc()
            metrics.NOTIFIER_DIGESTED.labels(self.ch.kind).inc(len(rows))
            log.info("surge folded into a digest", channel=self.ch.name, count=len(rows))
            await self.send(digest)
        return True

    async def _send_all(self, rows: list[store.Row]) -> None:
        """Send leased rows, ``SEND_CONCURRENCY`` at a time; every send finishes (its lease
        round stays in flight until then) before the first failure is raised."""
        results = await asyncio.gather(*(self._bounded(r) for r in rows), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _bounded(self, row: store.Row) -> None:
        async with self._sem:
            await self.send(row)

    def render(self, row: store.Row) -> Notice:
        s = self.ctx.settings
        if row.kind == "digest":
            assert row.payload is not None
            return render_digest(
                row.escalation_id, row.payload, self.locale, ticket_base_url=s.ticket_base_url
            )
        esc = row.event()
        return render_escalation(
            esc,
            self.locale,
            ticket_url=s.ticket_base_url + esc.ticket_id,
            ack_url=ack_url(s.public_base_url, s.ack_key(), esc.escalation_id),
            level=row.level,
        )

    async def send(self, row: store.Row) -> None:
        s = self.ctx.settings
        if row.payload is None:  # a row from before the queue existed: nothing to send
            await store.record_attempt(
                self.ctx.pool,
                row,
                row.attempts + 1,
                "failed",
                "failed",
                None,
                "no stored escalation",
                0.0,
                None,
            )
            return
        try:
            notice = self.render(row)
        except ValueError as exc:  # a stored payload that no longer validates
            await store.record_attempt(
                self.ctx.pool,
                row,
                row.attempts + 1,
                "failed",
                "failed",
                None,
                f"cannot render: {exc.__class__.__name__}",
                0.0,
                None,
            )
            return
        if row.first_attempt and row.kind == "single" and row.level == 1 and notice.esc:
            metrics.NOTIFIER_FIRST_ATTEMPT_SECONDS.labels(self.ch.kind).observe(
                max(0.0, time.time() - notice.esc.occurred_at.timestamp())
            )
        stamp = self.limiter.take(time.monotonic())
        started = time.perf_counter()
        result = await self.ch.send(self.ctx.client, notice, time.time())
        elapsed = time.perf_counter() - started
        self.limiter.done(stamp, time.monotonic())
        if result.rate_limited:
            now = time.monotonic()
            self.limiter.block(now + (result.retry_after or s.rate_window_seconds))
            self.throttled_until = now + 2 * s.rate_window_seconds
            log.warning("channel answered too fast: pausing", channel=self.ch.name)
        attempt = row.attempts + 1
        d = decide(result, attempt, s.max_attempts, s.backoff_base_seconds, s.backoff_max_seconds)
        retry_in = d.retry_in
        if retry_in is not None and result.rate_limited:
            retry_in = max(retry_in, result.retry_after or s.rate_window_seconds)
        metrics.NOTIFIER_DELIVERY_SECONDS.labels(self.ch.kind).observe(elapsed)
        metrics.NOTIFIER_DELIVERIES.labels(self.ch.kind, d.outcome).inc()
        await store.record_attempt(
            self.ctx.pool,
            row,
            attempt,
            result.outcome.value,
            d.status,
            result.status_code,
            d.detail,
            elapsed * 1000,
            retry_in,
        )
        if d.status == "failed":
            log.warning("delivery failed for good", channel=self.ch.name, detail=d.detail)
            if self.deadletter_wake is not None:
                self.deadletter_wake.set()
        elif d.status == "pending":
            log.info(
                "delivery will be retried",
                channel=self.ch.name,
                attempt=attempt,
                detail=d.detail,
                retry_in=round(retry_in or 0, 2),
            )


class Escalator:
    """Sends the next level of unacknowledged escalations, dead-letters failed deliveries."""

    def __init__(self, ctx: Context, workers: dict[str, ChannelWorker]) -> None:
        self.ctx = ctx
        self.workers = workers
        self.wake = asyncio.Event()
        for w in workers.values():
            w.deadletter_wake = self.wake

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self.escalate()
                await self.deadletter()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("escalator: database unavailable", error=repr(exc))
            except Exception:  # a bug: log it and go on with the next round
                log.exception("escalator round failed")
            await _wait(self.wake, self.ctx.settings.escalate_interval_seconds)

    async def escalate(self) -> int:
        pool, routes = self.ctx.pool, self.ctx.routes
        moved = 0
        for e in await store.due_escalations(pool):
            route = routes.route_named(e["route"]) if routes else None
            level: int = e["level"]
            if route is None or level >= len(route.levels):
                await store.stop_escalating(pool, e["escalation_id"])
                continue
            nxt = route.levels[level]
            after = (
                route.levels[level + 1].after_minutes * 60
                if level + 1 < len(route.levels)
                else None
            )
            channels = [c for c in nxt.channels if c in self.workers]
            if await store.advance_level(pool, e["escalation_id"], level, channels, after):
                moved += 1
                metrics.NOTIFIER_REESCALATIONS.labels(str(level + 1)).inc()
                log.info(
                    "escalation not acknowledged: next level",
                    escalation_id=e["escalation_id"],
                    level=level + 1,
                    route=route.name,
                )
                for c in channels:
                    metrics.NOTIFIER_QUEUED.labels(self.workers[c].ch.kind, str(level + 1)).inc()
                    self.workers[c].wake.set()
        return moved

    async def deadletter(self) -> int:
        """Failed deliveries to cs.deadletter.v1: the dead letter enters the outbox in the
        transaction that marks the delivery dead-lettered (one dead letter per failure, also
        across a crash)."""
        n = 0
        for r in await store.to_deadletter(self.ctx.pool):
            payload = orjson.dumps(r["payload"]).decode() if r["payload"] is not None else ""
            dead = deadletter.event(
                SERVICE,
                ESCALATIONS.name,
                r["ticket_id"] or None,
                payload,
                "delivery_failed" if r["kind"] == "single" else "digest_delivery_failed",
                f"channel {r['channel']} level {r['level']}: {r['last_error'] or '?'}",
                (r["payload"] or {}).get("correlation_id") or r["escalation_id"],
            )
            async with self.ctx.pool.acquire() as conn, conn.transaction():
                await deadletter.enqueue(conn, dead)
                await store.mark_deadlettered(conn, r["escalation_id"], r["level"], r["channel"])
            n += 1
        return n


async def stats_loop(ctx: Context, names: list[str], every: float = 5.0) -> None:
    while True:
        try:
            queued, unacked, oldest = await store.stats(ctx.pool)
            for n in names:
                metrics.NOTIFIER_QUEUE_DEPTH.labels(n).set(queued.get(n, 0))
            metrics.NOTIFIER_UNACKED.set(unacked)
            metrics.NOTIFIER_UNACKED_OLDEST.set(oldest)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.debug("stats not available", error=repr(exc))
        await asyncio.sleep(every)
