"""SLA policy files: validation with reasons, selection by conditions, env overrides."""

from __future__ import annotations

import pytest

from services.sla_watch.policy import Labels, PolicyError, load_policies, parse_duration
from shared.events import Category, Channel, ClockName, Priority, Tier

GOOD = """
calendars:
  cn:
    timezone: Asia/Shanghai
    hours: ["09:00", "21:00"]
    holidays: ["2026-10-01"]
policies:
  - name: urgent-complaint
    match: {category: [complaint], priority: [urgent]}
    clocks:
      first_response: {limit: 15s}
      resolution: {limit: 4h, calendar: cn, pause_when_waiting_on_customer: true}
  - name: complaint
    match: {category: [complaint]}
    clocks:
      first_response: {limit: 30s, warning_at: 0.5}
      resolution: {limit: 24h, calendar: cn}
  - name: vip-shop-email
    match: {shop: [shop-vip], channel: [email]}
    clocks:
      first_response: {limit: 10m}
      next_response: {limit: 30m}
  - name: default
    clocks:
      first_response: {limit: 30}
"""


def write(tmp_path, text, name="sla.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_builtin_default_is_the_contract():
    ps = load_policies(None)
    plain = ps.select(Labels(category=Category.presale))
    assert plain.clock(ClockName.first_response).limit_seconds == 30
    assert plain.clock(ClockName.resolution) is None
    complaint = ps.select(Labels(category=Category.complaint))
    assert complaint.clock(ClockName.resolution).limit_seconds == 86400
    assert complaint.clock(ClockName.first_response).warning_fraction == 0.8
    assert complaint.clock(ClockName.first_response).calendar is None


def test_selection_by_conditions_first_match_wins(tmp_path):
    ps = load_policies(write(tmp_path, GOOD))
    assert (
        ps.select(Labels(Category.complaint, Priority.urgent, Tier.L2)).name == "urgent-complaint"
    )
    assert ps.select(Labels(Category.complaint, Priority.normal)).name == "complaint"
    assert ps.select(Labels(channel=Channel.email, shop="shop-vip")).name == "vip-shop-email"
    assert ps.select(Labels(channel=Channel.chat, shop="shop-vip")).name == "default"
    assert ps.select(Labels()).name == "default"
    res = ps.select(Labels(Category.complaint, Priority.urgent)).clock(ClockName.resolution)
    assert res.limit_seconds == 4 * 3600 and res.pause_on_customer_wait
    assert res.calendar is not None and res.calendar.timezone == "Asia/Shanghai"


def test_toml_is_accepted(tmp_path):
    text = """
[[policies]]
name = "default"
[policies.clocks.first_response]
limit = "45s"
warning_at = 0.9
"""
    ps = load_policies(write(tmp_path, text, "sla.toml"))
    c = ps.select(Labels()).clock(ClockName.first_response)
    assert c.limit_seconds == 45 and c.warning_fraction == 0.9


def test_env_overrides_apply_to_every_policy(tmp_path):
    ps = load_policies(write(tmp_path, GOOD)).with_overrides(first_response=2, resolution=5)
    for p in ps.policies:
        assert p.clock(ClockName.first_response).limit_seconds == 2
        if (r := p.clock(ClockName.resolution)) is not None:
            assert r.limit_seconds == 5
    assert ps.policies[2].clock(ClockName.next_response).limit_seconds == 1800


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("policies: []", "policies"),
        (
            "policies:\n  - name: a\n    clocks: {first_response: {limit: -1}}",
            "limit must be positive",
        ),
        ("policies:\n  - name: a\n    clocks: {first_response: {limit: soon}}", "not a duration"),
        ("policies:\n  - name: a\n    clocks: {first_reply: {limit: 30}}", "first_reply"),
        (
            "policies:\n  - name: a\n    clocks: {resolution: {limit: 30, calendar: nope}}",
            "unknown calendar 'nope'",
        ),
        (
            "policies:\n  - name: a\n    match: {category: [complaint]}\n"
            "    clocks: {first_response: {limit: 30}}",
            "last policy must have no conditions",
        ),
        (
            "policies:\n  - name: a\n    match: {category: [gripe]}\n"
            "    clocks: {first_response: {limit: 30}}\n  - name: b\n    clocks: {}",
            "gripe",
        ),
        (
            "calendars: {c: {timezone: Mars/Base, hours: ['09:00', '21:00']}}\n"
            "policies:\n  - name: a\n    clocks: {}",
            "unknown time zone",
        ),
        (
            "calendars: {c: {hours: ['21:00', '09:00']}}\npolicies:\n  - name: a\n    clocks: {}",
            "opening time must be before closing",
        ),
        ("policies:\n  - name: a\n    clocks: {first_response: {limit: 30, warn: 1}}", "warn"),
        (
            "policies:\n  - name: a\n    clocks: {first_response: {limit: 30, warning_at: 1.5}}",
            "warning_at",
        ),
        ("policies: [", "not valid"),
    ],
)
def test_invalid_files_are_refused_with_the_reason(tmp_path, text, reason):
    with pytest.raises(PolicyError) as exc:
        load_policies(write(tmp_path, text))
    assert reason in str(exc.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policies(tmp_path / "absent.yaml")


def test_durations():
    assert parse_duration(30) == 30.0
    assert parse_duration("30s") == 30.0
    assert parse_duration("15m") == 900.0
    assert parse_duration("24h") == 86400.0
    assert parse_duration("1.5d") == 129600.0
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="duration"):
        parse_duration(True)
