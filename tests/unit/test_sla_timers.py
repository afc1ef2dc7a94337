"""The compact heap: holds only what falls within the window, never fires early, batches
entries due together, and keeps warnings and breaches apart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from services.sla_watch.store import Kind
from services.sla_watch.timers import Scheduler


async def test_fires_in_order_never_early_and_batches_due_entries():
    fired: list[tuple[Kind, list[int], float]] = []
    done = asyncio.Event()

    async def fire(kind: Kind, ids: Sequence[int]) -> None:
        fired.append((kind, list(ids), time.time()))
        if sum(len(i) for _, i, _ in fired) >= 5:
            done.set()

    s = Scheduler(fire)
    now = time.time()
    s.horizon = now + 10
    assert s.push(now + 0.05, Kind.breach, 2)
    assert s.push(now + 0.05, Kind.breach, 1)
    assert s.push(now + 0.02, Kind.warning, 1)
    assert s.push(now - 1, Kind.breach, 7)  # overdue: at once
    assert s.push(now + 0.1, Kind.breach, 3)
    assert not s.push(now + 11, Kind.breach, 9)  # beyond the window: left to the loader
    assert len(s) == 5
    task = asyncio.create_task(s.run())
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
    assert [(k, ids) for k, ids, _ in fired] == [
        (Kind.breach, [7]),
        (Kind.warning, [1]),
        (Kind.breach, [1, 2]),  # due together: one batch, one transaction
        (Kind.breach, [3]),
    ]
    due = {(Kind.breach, 7): now - 1, (Kind.warning, 1): now + 0.02, (Kind.breach, 1): now + 0.05}
    due |= {(Kind.breach, 3): now + 0.1}
    for kind, ids, at in fired:
        assert at >= due[(kind, ids[0])]  # never early
    assert len(s) == 0


async def test_an_earlier_push_wakes_a_sleeping_scheduler():
    fired = asyncio.Event()

    async def fire(kind: Kind, ids: Sequence[int]) -> None:
        if ids == [2]:
            fired.set()

    s = Scheduler(fire)
    s.horizon = time.time() + 3600
    s.push(time.time() + 3000, Kind.breach, 1)
    task = asyncio.create_task(s.run())
    try:
        await asyncio.sleep(0)  # let it go to sleep on the far entry
        s.push(time.time(), Kind.breach, 2)
        await asyncio.wait_for(fired.wait(), 10)
    finally:
        task.cancel()
    assert s.earliest() is not None and len(s) == 1
