"""Pure assignment policy: who can take a ticket, preference order, queue order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.router.assignment import (
    AgentView,
    Presence,
    can_take,
    due_at,
    priority_rank,
    queue_key,
    rank_agents,
    required_skills,
)
from services.router.roster import AgentIn, AgentPatch, load_seed
from shared.events import Category, Priority, Tier


def ag(
    agent_id: str,
    load: int = 0,
    capacity: int = 3,
    tier: Tier = Tier.L1,
    skills: tuple[str, ...] = ("orders", "zh"),
    presence: Presence = Presence.online,
) -> AgentView:
    return AgentView(agent_id, tier, frozenset(skills), capacity, load, presence)


def test_only_online_right_tier_skilled_and_free_agents_can_take() -> None:
    need = ("orders", "zh")
    assert can_take(ag("a"), Tier.L1, need)
    assert not can_take(ag("a", presence=Presence.away), Tier.L1, need)
    assert not can_take(ag("a", presence=Presence.offline), Tier.L1, need)
    assert not can_take(ag("a", tier=Tier.L2), Tier.L1, need)
    assert not can_take(ag("a", skills=("orders",)), Tier.L1, need)
    assert not can_take(ag("a", load=3), Tier.L1, need)
    assert not can_take(ag("a", capacity=0), Tier.L1, need)


def test_sticky_agent_first_then_least_loaded() -> None:
    agents = [ag("busy", load=2), ag("idle", load=0), ag("half", load=1, capacity=2)]
    assert rank_agents(agents, Tier.L1, ["orders"], None) == ["idle", "half", "busy"]
    assert rank_agents(agents, Tier.L1, ["orders"], "busy") == ["busy", "idle", "half"]
    # A sticky agent who cannot take it (full) is not preferred.
    assert rank_agents([ag("full", load=3), ag("x")], Tier.L1, [], "full") == ["x"]


def test_ties_break_by_load_then_id() -> None:
    agents = [ag("b", load=1, capacity=2), ag("a", load=2, capacity=4), ag("c", load=1, capacity=2)]
    assert rank_agents(agents, Tier.L1, [], None) == ["b", "c", "a"]


def test_queue_order_priority_then_due_time() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    limits = {Priority.urgent: 30.0, Priority.important: 60.0, Priority.normal: 120.0}
    items = [
        ("normal-early", queue_key(Priority.normal, due_at(t0, Priority.normal, limits), 0)),
        ("urgent-late", queue_key(Priority.urgent, t0 + timedelta(hours=1), 1)),
        ("important", queue_key(Priority.important, due_at(t0, Priority.important, limits), 2)),
        ("urgent-early", queue_key(Priority.urgent, t0, 3)),
    ]
    assert [n for n, _ in sorted(items, key=lambda x: x[1])] == [
        "urgent-early",
        "urgent-late",
        "important",
        "normal-early",
    ]
    assert due_at(t0, Priority.important, limits) == t0 + timedelta(seconds=60)
    assert [priority_rank(p) for p in (Priority.urgent, Priority.important, Priority.normal)] == [
        2,
        1,
        0,
    ]


def test_required_skills_from_decision_else_category() -> None:
    assert required_skills(Category.complaint, ("complaints", "zh", "zh")) == ("complaints", "zh")
    assert required_skills(Category.invoice, ()) == ("invoice",)
    assert required_skills(Category.other, None) == ()


def test_agent_models_refuse_bad_input() -> None:
    with pytest.raises(ValidationError):
        AgentIn.model_validate({"tier": "L9", "capacity": 1})
    with pytest.raises(ValidationError):
        AgentIn.model_validate({"tier": "L1", "capacity": -1})
    with pytest.raises(ValidationError):
        AgentPatch.model_validate({"presence": "sleeping"})
    assert AgentIn.model_validate({"tier": "L2", "capacity": 2}).presence is Presence.offline


def test_shipped_seed_file_is_valid() -> None:
    seed = load_seed("services/router/roster.seed.yaml")
    tiers = {a.tier for a in seed.agents}
    assert tiers == {Tier.bot, Tier.L1, Tier.L2}
    assert all(a.capacity > 0 for a in seed.agents)
