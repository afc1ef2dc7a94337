"""Pure SLA arithmetic: deadlines, warnings, pauses, business-hour calendars."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from services.sla_watch.domain import (
    Calendar,
    ClockPolicy,
    ClockState,
    clock_start,
    consumed_at_pause,
    lateness_seconds,
    schedule,
    stop_outcome,
)
from shared.events import ClockName

SH = ZoneInfo("Asia/Shanghai")
CAL = Calendar("Asia/Shanghai", time(9), time(21), holidays=frozenset({date(2026, 10, 1)}))
T0 = datetime(2026, 11, 11, 10, 0, tzinfo=SH)


def fr(limit: float = 30.0, frac: float | None = 0.8) -> ClockPolicy:
    return ClockPolicy(ClockName.first_response, limit, frac)


def test_plain_deadline_and_warning():
    s = schedule(fr(), T0, 0.0)
    assert s.deadline == T0 + timedelta(seconds=30)
    assert s.warn_at == T0 + timedelta(seconds=24)


def test_no_warning_when_none_configured_or_already_sent():
    assert schedule(fr(frac=None), T0, 0.0).warn_at is None
    assert schedule(fr(), T0, 0.0, warned=True).warn_at is None


def test_resume_keeps_what_was_used_before_the_pause():
    p = fr(100.0)
    used = consumed_at_pause(p, T0, 0.0, T0 + timedelta(seconds=40))
    assert used == 40.0
    resumed = T0 + timedelta(hours=5)
    s = schedule(p, resumed, used)
    assert s.deadline == resumed + timedelta(seconds=60)
    assert s.warn_at == resumed + timedelta(seconds=40)


def test_warning_point_passed_before_the_pause_warns_at_resume():
    p = fr(100.0)
    s = schedule(p, T0, 90.0)
    assert s.warn_at == T0
    assert s.deadline == T0 + timedelta(seconds=10)


def test_calendar_skips_nights():
    # 20:00 with 2 working hours left: one hour tonight, one tomorrow from 09:00.
    start = datetime(2026, 11, 11, 20, 0, tzinfo=SH)
    assert CAL.add(start, 7200) == datetime(2026, 11, 12, 10, 0, tzinfo=SH)


def test_calendar_starts_at_opening_when_started_at_night():
    start = datetime(2026, 11, 11, 3, 0, tzinfo=SH)
    assert CAL.add(start, 60) == datetime(2026, 11, 11, 9, 1, tzinfo=SH)


def test_calendar_skips_holidays():
    start = datetime(2026, 9, 30, 20, 30, tzinfo=SH)
    # 30 min on the 30th, the 1st is a holiday, 30 min on the 2nd.
    assert CAL.add(start, 3600) == datetime(2026, 10, 2, 9, 30, tzinfo=SH)


def test_calendar_weekdays_only():
    cal = Calendar("Asia/Shanghai", time(9), time(18), weekdays=frozenset({1, 2, 3, 4, 5}))
    fri = datetime(2026, 11, 13, 17, 0, tzinfo=SH)  # a Friday
    assert cal.add(fri, 7200) == datetime(2026, 11, 16, 10, 0, tzinfo=SH)


def test_resolution_24h_on_a_calendar_is_two_working_days():
    p = ClockPolicy(ClockName.resolution, 86400, 0.8, calendar=CAL)
    s = schedule(p, T0, 0.0)
    assert s.deadline == datetime(2026, 11, 13, 10, 0, tzinfo=SH)


def test_works_across_utc_inputs():
    start = datetime(2026, 11, 11, 12, 30, tzinfo=UTC)  # 20:30 in Shanghai
    assert CAL.add(start, 3600) == datetime(2026, 11, 12, 9, 30, tzinfo=SH)


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 1), timezones=st.just(SH)
    ),
    seconds=st.floats(min_value=0, max_value=10 * 86400),
)
def test_calendar_add_and_between_are_inverse(start, seconds):
    end = CAL.add(start, seconds)
    assert end >= start
    assert abs(CAL.between(start, end) - seconds) < 1e-3
    # the deadline itself is inside working hours (or at their closing edge)
    local = end.astimezone(SH)
    if seconds > 0:
        assert time(9) <= local.time() <= time(21)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.floats(min_value=1, max_value=1e6),
    used=st.floats(min_value=0, max_value=1),
    frac=st.floats(min_value=0.05, max_value=0.95),
)
def test_pause_resume_never_extends_the_total_limit(limit, used, frac):
    p = fr(limit, frac)
    consumed = used * limit
    s = schedule(p, T0, consumed)
    total = consumed + (s.deadline - T0).total_seconds()
    assert abs(total - limit) < 1e-3 * max(1.0, limit) or consumed > limit
    assert s.warn_at is not None and s.warn_at <= s.deadline


def test_stop_outcomes():
    dl = T0 + timedelta(seconds=30)
    assert stop_outcome(ClockState.running, T0, dl) is ClockState.met
    assert stop_outcome(ClockState.running, dl + timedelta(seconds=1), dl) is ClockState.stopped
    assert stop_outcome(ClockState.paused, dl + timedelta(days=1), dl) is ClockState.met
    assert stop_outcome(ClockState.breached, T0, dl) is ClockState.stopped
    assert stop_outcome(ClockState.met, T0, dl) is None
    assert stop_outcome(ClockState.stopped, T0, dl) is None


def test_clock_start_and_lateness():
    later = T0 + timedelta(seconds=5)
    assert clock_start(later, T0) == T0
    assert clock_start(T0, later) == T0
    assert lateness_seconds(T0, later) == 5.0
    assert lateness_seconds(later, T0) == 0.0
