"""Pure SLA arithmetic and the clock's state machine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared.events import ClockName


class ClockState(StrEnum):
    running = "running"
    met = "met"  # stopped by a reply/resolution before the deadline
    breached = "breached"  # the deadline passed; still waiting for the reply
    stopped = "stopped"  # stopped after a breach, or cancelled


@dataclass(frozen=True, slots=True)
class Policy:
    clock: ClockName
    limit_seconds: float
    warning_fraction: float = 0.8

    def deadline(self, started_at: datetime) -> datetime:
        return started_at + timedelta(seconds=self.limit_seconds)

    def warn_at(self, started_at: datetime) -> datetime:
        return started_at + timedelta(seconds=self.limit_seconds * self.warning_fraction)


def clock_start(occurred_at: datetime, received_at: datetime) -> datetime:
    """A clock runs from the customer's message; a platform clock ahead of ours is clamped."""
    return min(occurred_at, received_at)


def stop_outcome(state: ClockState, stopped_at: datetime, deadline: datetime) -> ClockState | None:
    """The state a reply or resolution moves a clock to; None when it changes nothing."""
    if state is ClockState.running:
        return ClockState.met if stopped_at <= deadline else ClockState.stopped
    if state is ClockState.breached:
        return ClockState.stopped
    return None


def lateness_seconds(deadline: datetime, emitted_at: datetime) -> float:
    return max(0.0, (emitted_at - deadline).total_seconds())
