"""Backpressure: refuse work (429 + Retry-After) when the outbox backlog or the database's
latency passes its bound, rather than queue without bound.

A probe refreshes two figures at most every ``interval`` seconds, off the request path:
the outbox backlog of intake (``LogSource.probe_backlog``: the ``seq`` values handed out
above the highest one published, an upper bound, and the rows counted, up to the limit,
only when that bound reaches the limit), the round-trip time of a pool acquire plus a
query (pool waits included, so a saturated pool counts as latency), and how late the
event loop woke the probe (a saturated CPU).
Each request only reads the last verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import asyncpg

from shared import metrics
from shared.logging import get_logger
from shared.outbox_log import LogSource

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    max_backlog: int
    max_latency: float
    max_loop_lag: float = float("inf")


def overload_reason(
    backlog: int | None, latency: float | None, limits: Limits, loop_lag: float = 0.0
) -> str | None:
    """Why intake should refuse new work now, or None. Unknown figures never refuse: a
    database that does not answer is the 503 path, not the 429 one."""
    if backlog is not None and backlog >= limits.max_backlog:
        return f"outbox backlog at or above {limits.max_backlog} events"
    if latency is not None and latency >= limits.max_latency:
        return f"database latency above {limits.max_latency * 1000:.0f} ms"
    if loop_lag >= limits.max_loop_lag:
        return f"event loop lag above {limits.max_loop_lag * 1000:.0f} ms (CPU saturated)"
    return None


class LoadGuard:
    def __init__(self, source: LogSource, limits: Limits, interval: float = 0.5) -> None:
        self.source = source
        self.producer = source.producer
        self.limits = limits
        self.interval = interval
        self.backlog: int | None = None
        self.latency: float | None = None
        self.loop_lag = 0.0
        self.reason: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, pool: asyncpg.Pool) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(pool), name=f"{self.producer}:load-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def probe(self, pool: asyncpg.Pool) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(max(5.0, self.limits.max_latency * 4)):
                n = await self.source.probe_backlog(pool, self.limits.max_backlog)
            self.latency = time.perf_counter() - started
            self.backlog = int(n or 0)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            # A timed-out probe means the database is at least that slow.
            self.latency = time.perf_counter() - started if isinstance(exc, TimeoutError) else None
            self.backlog = None
        before = self.reason
        self.reason = overload_reason(self.backlog, self.latency, self.limits, self.loop_lag)
        metrics.INTAKE_OVERLOADED.set(1 if self.reason else 0)
        if self.reason != before:
            log.warning("intake overload changed", overloaded=self.reason or "no")

    async def _loop(self, pool: asyncpg.Pool) -> None:
        while True:
            await self.probe(pool)
            asked = time.perf_counter()
            await asyncio.sleep(self.interval)
            # How late the loop woke us: the CPU cost of what it was busy with.
            self.loop_lag = max(0.0, time.perf_counter() - asked - self.interval)
