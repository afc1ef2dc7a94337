"""Pure SLA arithmetic and the clock's state machine (no I/O).

A clock run has a limit in (business) seconds. It may pause while the ticket waits on the
customer; what it had used before the last resume is ``consumed_seconds`` and it has run
again since ``resumed_at``. Its deadline is then ``resumed_at`` plus the remaining limit,
counted in the calendar's working time when the clock has a calendar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from shared.events import ClockName


class ClockState(StrEnum):
    running = "running"
    paused = "paused"  # waiting on the customer; the deadline does not run
    met = "met"  # stopped by a reply/resolution before the deadline
    breached = "breached"  # the deadline passed; still waiting for the reply
    stopped = "stopped"  # stopped after a breach, or cancelled


OPEN_STATES = (ClockState.running, ClockState.paused, ClockState.breached)

_MAX_DAYS = 3 * 366  # a calendar with no working day at all is refused before this


@dataclass(frozen=True, slots=True)
class Calendar:
    """Working hours in a time zone, on ISO weekdays (1 = Monday), minus holidays."""

    timezone: str
    opens: time
    closes: time
    weekdays: frozenset[int] = frozenset({1, 2, 3, 4, 5, 6, 7})
    holidays: frozenset[date] = field(default_factory=frozenset)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _window(self, day: date) -> tuple[datetime, datetime] | None:
        if day.isoweekday() not in self.weekdays or day in self.holidays:
            return None
        tz = self.tz
        return datetime.combine(day, self.opens, tz), datetime.combine(day, self.closes, tz)

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant at which ``seconds`` of working time have passed after ``start``."""
        left = max(0.0, seconds)
        day = start.astimezone(self.tz).date()
        for _ in range(_MAX_DAYS):
            w = self._window(day)
            if w is not None:
                lo, hi = max(w[0], start), w[1]
                if lo < hi:
                    span = (hi - lo).total_seconds()
                    if left <= span:
                        return lo + timedelta(seconds=left)
                    left -= span
            day += timedelta(days=1)
        raise ValueError("calendar has no working time within three years")

    def between(self, a: datetime, b: datetime) -> float:
        """Working seconds in [a, b)."""
        if b <= a:
            return 0.0
        total = 0.0
        day = a.astimezone(self.tz).date()
        end_day = b.astimezone(self.tz).date()
        while day <= end_day:
            w = self._window(day)
            if w is not None:
                lo, hi = max(w[0], a), min(w[1], b)
                if lo < hi:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total


def add_time(start: datetime, seconds: float, calendar: Calendar | None) -> datetime:
    if calendar is None:
        return start + timedelta(seconds=max(0.0, seconds))
    return calendar.add(start, seconds)


def elapsed(a: datetime, b: datetime, calendar: Calendar | None) -> float:
    if calendar is None:
        return max(0.0, (b - a).total_seconds())
    return calendar.between(a, b)


@dataclass(frozen=True, slots=True)
class ClockPolicy:
    """One clock of a policy."""

    clock: ClockName
    limit_seconds: float
    warning_fraction: float | None = 0.8  # None: no warning
    calendar: Calendar | None = None
    calendar_name: str | None = None
    pause_on_customer_wait: bool = False


@dataclass(frozen=True, slots=True)
class Schedule:
    warn_at: datetime | None
    deadline: datetime


def schedule(
    policy: ClockPolicy, resumed_at: datetime, consumed_seconds: float, warned: bool = False
) -> Schedule:
    """Warning and deadline of a clock that has used ``consumed_seconds`` before it (re)started
    running at ``resumed_at``. A warning already sent, or none configured, gives ``warn_at``
    None; a warning point already passed gives ``resumed_at`` (warn at once)."""
    remaining = policy.limit_seconds - consumed_seconds
    deadline = add_time(resumed_at, remaining, policy.calendar)
    warn_at = None
    if not warned and policy.warning_fraction is not None:
        to_warn = policy.limit_seconds * policy.warning_fraction - consumed_seconds
        warn_at = add_time(resumed_at, to_warn, policy.calendar)
    return Schedule(warn_at, deadline)


def consumed_at_pause(
    policy: ClockPolicy, resumed_at: datetime, consumed_seconds: float, paused_at: datetime
) -> float:
    """What a clock has used when it pauses at ``paused_at``."""
    return consumed_seconds + elapsed(resumed_at, paused_at, policy.calendar)


def clock_start(occurred_at: datetime, received_at: datetime) -> datetime:
    """A clock runs from the customer's message; a platform clock ahead of ours is clamped."""
    return min(occurred_at, received_at)


def stop_outcome(state: ClockState, stopped_at: datetime, deadline: datetime) -> ClockState | None:
    """The state a reply or resolution moves a clock to; None when it changes nothing."""
    if state is ClockState.paused:
        return ClockState.met  # a paused clock had time left when it paused
    if state is ClockState.running:
        return ClockState.met if stopped_at <= deadline else ClockState.stopped
    if state is ClockState.breached:
        return ClockState.stopped
    return None


def lateness_seconds(deadline: datetime, emitted_at: datetime) -> float:
    return max(0.0, (emitted_at - deadline).total_seconds())
