"""In-memory deadline scheduler: a compact heap of (unix time, signed clock id) for the
clocks due within a rolling window, and one task that sleeps until the earliest entry.

An entry is two numbers (a breach is ``+id``, a warning ``-id``), never a row. Entries are
hints, never truth: firing runs a conditional UPDATE in PostgreSQL, so a stale or
duplicate entry emits nothing. Entries due together are fired as one batch (one
transaction), which keeps lateness flat when thousands of clocks fall due at once.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Sequence

from services.sla_watch.store import Kind

Fire = Callable[[Kind, Sequence[int]], Awaitable[None]]


class Scheduler:
    def __init__(self, fire: Fire, *, batch: int = 1000, concurrency: int = 4) -> None:
        self._heap: list[tuple[float, int]] = []
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._fire = fire
        self._batch = batch
        # Entries later than the horizon are not held: the window loader pages them in
        # from the database as the horizon advances.
        self.horizon = float("-inf")

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, at: float, kind: Kind, clock_id: int) -> bool:
        """Hold a timer if it falls within the window; True if held."""
        if at > self.horizon:
            return False
        entry = (at, clock_id if kind is Kind.breach else -clock_id)
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, entry)
        if earliest is None or at < earliest:
            self._wake.set()
        return True

    def earliest(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def _pop_due(self, now: float) -> tuple[list[int], list[int]]:
        breaches: list[int] = []
        warnings: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(breaches) + len(warnings) < self._batch:
            _, signed = heapq.heappop(heap)
            if signed > 0:
                breaches.append(signed)
            else:
                warnings.append(-signed)
        return breaches, warnings

    async def run(self) -> None:
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._heap[0][0] - time.time()
            if delay > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            # Wait for a free slot first, so entries that fall due meanwhile join this batch.
            await self._slots.acquire()
            breaches, warnings = self._pop_due(time.time())
            task = asyncio.create_task(self._fire_batches(breaches, warnings))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _fire_batches(self, breaches: list[int], warnings: list[int]) -> None:
        """Batches in flight at once are bounded, so a slow database does not pile them up
        while the loop keeps firing the next ones on time."""
        try:
            if breaches:
                await self._fire(Kind.breach, sorted(set(breaches)))
            if warnings:
                await self._fire(Kind.warning, sorted(set(warnings)))
        finally:
            self._slots.release()
