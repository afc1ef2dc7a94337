"""The start-up heap is frozen: the objects alive at that moment leave the collector's
generations, so a full collection under load no longer walks them."""

from __future__ import annotations

import gc

from services.intake.heap import freeze_startup_heap


def _tracked(obj: object) -> bool:
    return any(o is obj for gen in range(3) for o in gc.get_objects(gen))


def test_objects_alive_at_start_up_are_frozen_and_new_ones_are_not() -> None:
    before = [[i] for i in range(1000)]
    assert _tracked(before)
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() >= 1000
        assert not _tracked(before)
        after: list[list[int]] = [[1]]
        assert _tracked(after)
    finally:
        gc.unfreeze()
    assert _tracked(before)
