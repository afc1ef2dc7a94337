"""The agent roster in PostgreSQL: validated agent records, upsert, and the seed file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import asyncpg
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from services.router.assignment import Presence
from shared.db import Conn
from shared.events import Tier

Skill = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z0-9_]+$")]
AgentId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
]


class AgentIn(BaseModel):
    """A whole agent record (PUT)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("", max_length=100, description="Display name (no customer data).")
    tier: Tier
    skills: list[Skill] = Field(default_factory=list, max_length=50)
    capacity: int = Field(ge=0, le=1000, description="Conversations held at once.")
    presence: Presence = Presence.offline


class AgentPatch(BaseModel):
    """Change some fields of an agent (PATCH): presence, capacity, skills, name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(None, max_length=100)
    skills: list[Skill] | None = Field(None, max_length=50)
    capacity: int | None = Field(None, ge=0, le=1000)
    presence: Presence | None = None


class SeedAgent(AgentIn):
    agent_id: AgentId


class Seed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    agents: list[SeedAgent]


class SeedError(Exception):
    pass


def load_seed(path: str | Path) -> Seed:
    """Parse and validate a roster seed file; SeedError names the file and the reason."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return Seed.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise SeedError(f"roster seed {path}: {exc}") from exc


async def upsert_agent(conn: Conn, agent_id: str, a: AgentIn) -> bool:
    """Create or replace an agent; False if the new capacity is below its current load."""
    row = await conn.fetchrow(
        "INSERT INTO router_agents (agent_id, name, tier, skills, capacity, presence)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (agent_id) DO UPDATE SET name = EXCLUDED.name, tier = EXCLUDED.tier,"
        " skills = EXCLUDED.skills, capacity = EXCLUDED.capacity,"
        " presence = EXCLUDED.presence, updated_at = now()"
        " WHERE router_agents.load <= EXCLUDED.capacity RETURNING agent_id",
        agent_id,
        a.name,
        a.tier.value,
        sorted(set(a.skills)),
        a.capacity,
        a.presence.value,
    )
    return row is not None


async def seed_if_empty(pool: asyncpg.Pool, path: str | Path) -> int:
    """Load the seed file into an empty roster (local stack); returns agents inserted."""
    seed = load_seed(path)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE router_agents IN SHARE ROW EXCLUSIVE MODE")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM router_agents)"):
            return 0
        for a in seed.agents:
            await upsert_agent(conn, a.agent_id, a)
    return len(seed.agents)
