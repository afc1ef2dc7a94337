"""In-memory deadline scheduler: a heap of (when, timer) and one task that sleeps until
the earliest entry. Entries are hints, never truth: firing runs a conditional UPDATE in
PostgreSQL, so a stale or duplicate entry emits nothing."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.sla_watch.store import Timer

Fire = Callable[[str, Timer], Awaitable[None]]


class Scheduler:
    def __init__(self, fire: Fire) -> None:
        self._heap: list[tuple[float, int, str, Timer]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._fire = fire

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when: datetime, kind: str, timer: Timer) -> None:
        ts = when.timestamp()
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (ts, next(self._seq), kind, timer))
        if earliest is None or ts < earliest:
            self._wake.set()

    async def run(self) -> None:
        while True:
            if not self._heap:
                await self._wake.wait()
                self._wake.clear()
                continue
            delay = self._heap[0][0] - time.time()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
                continue
            _, _, kind, timer = heapq.heappop(self._heap)
            await self._fire(kind, timer)
