"""The shortened chaos suite (``make chaos`` runs the full one): on a stack of its own, under
load, kill -9 intake, router and notifier and restart the broker (it comes back empty) and
PostgreSQL, then count by event id."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tools.chaos import SHORT_FAULTS, ChaosConfig, run

pytestmark = pytest.mark.e2e


async def test_short_chaos_loses_and_duplicates_nothing():
    console = Console(file=io.StringIO(), width=120)
    report, timings = await run(ChaosConfig.short(), console)

    assert [name for name, _, _ in timings] == list(SHORT_FAULTS)
    # The run did real work through every stage, so that zero below means something.
    assert report.stages["routed"].expected >= 100
    assert report.breached > 0 and report.met > 0
    assert report.stages["notified"].done >= report.breached
    assert report.by_phase["kill -9 intake"]["sent"] > 0
    assert report.by_phase["broker restart"]["sent"] > 0
    assert report.unanswered == 0
    assert report.lost == 0, report.problems
    assert report.duplicated == 0, report.to_json()["stages"]
