"""Pure assignment policy: which agent may take a ticket, and in which order to try them.

The database enforces capacity (a conditional ``UPDATE ... WHERE load < capacity`` and a
``CHECK (load <= capacity)``); this module only decides preferences, so it is the same for
every router instance and testable without one.

- An agent can take a ticket when online, of the ticket's tier, holding every skill the
  ticket needs, and with free capacity.
- Preference: the agent who already holds (or last held) the conversation, then the least
  loaded (by share of capacity, then by absolute load), then the agent id (stable order).
- The waiting queue is ordered by priority, then by SLA due time (received time plus the
  first-response limit of the priority), then by arrival.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared.events import PRIORITY_RANK, Category, Priority, Tier


class Presence(StrEnum):
    online = "online"
    away = "away"
    offline = "offline"


# Skills a category needs when the decision does not say (the rules file's defaults).
CATEGORY_SKILLS: dict[Category, tuple[str, ...]] = {
    Category.complaint: ("complaints",),
    Category.return_refund: ("after_sales",),
    Category.product_quality: ("after_sales",),
    Category.invoice: ("invoice",),
    Category.logistics: ("logistics",),
    Category.order_status: ("orders",),
    Category.presale: ("presale",),
    Category.other: (),
}


@dataclass(frozen=True, slots=True)
class AgentView:
    agent_id: str
    tier: Tier
    skills: frozenset[str]
    capacity: int
    load: int
    presence: Presence

    @property
    def free(self) -> int:
        return self.capacity - self.load


def required_skills(category: Category, decision_skills: Sequence[str] | None) -> tuple[str, ...]:
    """The skills a ticket needs: the decision's own, else the category's defaults."""
    if decision_skills:
        return tuple(dict.fromkeys(decision_skills))
    return CATEGORY_SKILLS.get(category, ())


def can_take(agent: AgentView, tier: Tier, skills: Iterable[str]) -> bool:
    return (
        agent.presence is Presence.online
        and agent.tier is tier
        and agent.free > 0
        and agent.skills.issuperset(skills)
    )


def rank_agents(
    agents: Iterable[AgentView], tier: Tier, skills: Sequence[str], sticky: str | None
) -> list[str]:
    """Agents who can take the ticket, best first."""
    able = [a for a in agents if can_take(a, tier, skills)]
    able.sort(
        key=lambda a: (
            a.agent_id != sticky,
            a.load / a.capacity if a.capacity else 1.0,
            a.load,
            a.agent_id,
        )
    )
    return [a.agent_id for a in able]


def due_at(received_at: datetime, priority: Priority, limits: dict[Priority, float]) -> datetime:
    """When the first response is due: the queue's second ordering key."""
    return received_at + timedelta(seconds=limits[priority])


def priority_rank(priority: Priority) -> int:
    """Higher is served first (urgent 2, important 1, normal 0)."""
    return max(PRIORITY_RANK.values()) - PRIORITY_RANK[priority]


def queue_key(priority: Priority, due: datetime, seq: int) -> tuple[int, datetime, int]:
    """Sort key of the waiting queue (ascending = served first)."""
    return (-priority_rank(priority), due, seq)


def escalated_tier(current: Tier) -> Tier:
    """An SLA breach moves a ticket to the second line."""
    del current
    return Tier.L2
