"""The start-up heap out of the garbage collector's way.

A service process holds tens of thousands of objects once it has started (modules,
classes, FastAPI and pydantic schemas; intake's adapters, the router's rules and
dictionaries): every full (generation 2) collection walked all of them, tens to hundreds of
milliseconds of wall time with the cores busy, a few times a minute under load, and
everything in flight in that process waited. Moved to the permanent generation after
start-up (``gc.freeze``), a full collection walks only what was allocated since
(docs/intake.md, "Where the tail came from"; docs/router.md, "Where the time goes").
Objects frozen are never collected; they are the start-up heap, which lives as long as the
process anyway.
"""

from __future__ import annotations

import gc


def freeze_startup_heap(*, young_threshold: int | None = None) -> int:
    """Collect what start-up left behind, then freeze everything still alive; returns
    the number of frozen objects.

    ``young_threshold``: collect the youngest generation after that many net allocations
    instead of Python's 700. A process that allocates many short-lived objects per unit
    of work (the router: a batch of 500 messages) then promotes far fewer of them, by
    chance still alive at a collection, to the older generations, and so runs far fewer
    full collections; the garbage of reference cycles waits a little longer."""
    gc.collect()
    gc.freeze()
    if young_threshold is not None:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)
    return gc.get_freeze_count()
