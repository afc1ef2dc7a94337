"""The start-up heap is frozen: the objects alive at that moment leave the collector's
generations, so a full collection under load no longer walks them; a process may also
collect its youngest generation less often."""

from __future__ import annotations

import gc

from shared.heap import freeze_startup_heap


def _tracked(obj: object) -> bool:
    return any(o is obj for gen in range(3) for o in gc.get_objects(gen))


def test_objects_alive_at_start_up_are_frozen_and_new_ones_are_not() -> None:
    before = [[i] for i in range(1000)]
    assert _tracked(before)
    threshold = gc.get_threshold()
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() >= 1000
        assert not _tracked(before)
        after: list[list[int]] = [[1]]
        assert _tracked(after)
        assert gc.get_threshold() == threshold  # unchanged unless asked
    finally:
        gc.unfreeze()
    assert _tracked(before)


def test_young_threshold_changes_the_youngest_generation_only() -> None:
    threshold = gc.get_threshold()
    try:
        freeze_startup_heap(young_threshold=threshold[0] * 10)
        assert gc.get_threshold() == (threshold[0] * 10, threshold[1], threshold[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
