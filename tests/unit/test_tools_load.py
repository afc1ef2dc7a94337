"""Load profiles: shapes, counts and phases (pure); what the own stack leaves behind."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tools import load
from tools.load import SPIKE, make_profile, steady_times
from tools.verify import Ledger


def test_steady_sends_rate_times_seconds_evenly():
    p = make_profile("steady", rate=10, seconds=30)
    times = p.send_times()
    assert len(times) == pytest.approx(300, abs=1)
    gaps = {round(b - a, 2) for a, b in itertools.pairwise(times)}
    assert gaps <= {0.09, 0.1, 0.11}
    assert p.phases() == ["steady"]


def test_double11_ramps_twenty_times_within_a_minute_and_comes_back():
    p = make_profile("double11", rate=3, seconds=90)
    start, end, peak_end = p.ramp
    assert end - start <= 60
    assert p.rate_at(start - 1) == 3
    assert p.rate_at(end + 1) == pytest.approx(3 * SPIKE)
    assert p.rate_at((start + end) / 2) == pytest.approx(3 * (1 + SPIKE) / 2, rel=0.01)
    assert p.rate_at(peak_end + 1) == 3
    times = p.send_times()
    first_second = sum(1 for t in times if t < 1)
    peak_second = sum(1 for t in times if end + 1 <= t < end + 2)
    assert first_second == 3
    assert peak_second == 60
    assert p.phases() == ["evening", "midnight ramp", "peak", "after"]


def test_double11_short_run_ramps_over_half_of_it():
    p = make_profile("double11", rate=2, seconds=40)
    start, end, _ = p.ramp
    assert (start, end) == (8, 28)


def test_broker_outage_window_is_inside_the_run():
    p = make_profile("broker-outage", rate=5, seconds=60, outage=10)
    assert p.outage == (21, 31)
    assert p.phase_at(20) == "before outage"
    assert p.phase_at(25) == "broker down"
    assert p.phase_at(40) == "after outage"
    assert make_profile("broker-outage", seconds=10, outage=30).outage == (3.5, 10)
    assert make_profile("steady").outage is None


def test_defaults_and_unknown_profile():
    p = make_profile("double11")
    assert 60 <= p.seconds <= 90
    with pytest.raises(ValueError, match="unknown profile"):
        make_profile("black-friday")


def test_steady_times_are_endless_and_even():
    assert list(itertools.islice(steady_times(4), 5)) == [0, 0.25, 0.5, 0.75, 1.0]


class _StandInStack:
    """Only what own_stack touches; the decision under test is what it deletes after."""

    def __init__(self, data: Path, **_: Any) -> None:
        self.logs = data / "logs"
        self.services = {"intake": type("S", (), {"url": "http://127.0.0.1:1"})()}
        self.dsn, self.bootstrap = "postgresql://x", "127.0.0.1:1"

    def start_infra(self) -> None:
        self.logs.mkdir(parents=True)
        (self.logs / "intake.log").write_text("what explains the loss\n")

    def start_services(self) -> None:
        pass

    def wait_ready(self, _timeout: float) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.mark.parametrize("failed", [False, True])
async def test_own_stack_keeps_data_and_logs_of_a_failed_run_only(
    failed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "stack"
    data.mkdir()
    monkeypatch.setattr(load, "LocalStack", _StandInStack)
    monkeypatch.setattr(load.tempfile, "mkdtemp", lambda **_: str(data))
    async with load.own_stack(Ledger(), 5.0) as target:
        assert (data / "logs" / "intake.log").exists()
        target.failed = failed
    assert (data / "logs" / "intake.log").exists() is failed
