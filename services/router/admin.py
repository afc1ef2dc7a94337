"""The router's admin and query API: roster, queues, loads, ticket history, reassignment."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from services.router.roster import AgentId, AgentIn, AgentPatch, upsert_agent
from services.router.store import AdminError, Outcome, fill_agent, queue_stats, reassign
from shared.service import Runtime


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    agent_id: AgentId
    note: str = Field("", max_length=500, description="Why (recorded in the history).")


_AGENT_COLS = "agent_id, name, tier, skills, capacity, load, presence, updated_at"


def admin_router(runtime: Runtime, after: Callable[[Outcome], None]) -> APIRouter:
    api = APIRouter(prefix="/v1/admin", tags=["admin"])

    async def _agent(agent_id: str) -> dict[str, Any]:
        row = await runtime.pool.fetchrow(
            f"SELECT {_AGENT_COLS} FROM router_agents WHERE agent_id = $1", agent_id
        )
        if row is None:
            raise HTTPException(404, f"no agent {agent_id}")
        return dict(row)

    async def _then_fill(agent_id: str, change: Callable[[Any], Awaitable[None]]) -> None:
        out = Outcome()
        async with runtime.pool.acquire() as conn, conn.transaction():
            await change(conn)
            await fill_agent(conn, agent_id, out)
        after(out)

    @api.get("/agents", summary="The roster with each agent's load")
    async def list_agents() -> list[dict[str, Any]]:
        rows = await runtime.pool.fetch(
            f"SELECT {_AGENT_COLS} FROM router_agents ORDER BY tier, agent_id"
        )
        return [dict(r) for r in rows]

    @api.get("/agents/{agent_id}", summary="One agent and its load")
    async def get_agent(agent_id: AgentId) -> dict[str, Any]:
        return await _agent(agent_id)

    @api.put("/agents/{agent_id}", summary="Create or replace an agent")
    async def put_agent(agent_id: AgentId, body: AgentIn) -> dict[str, Any]:
        async def change(conn: Any) -> None:
            if not await upsert_agent(conn, agent_id, body):
                raise HTTPException(
                    409, f"agent {agent_id} holds more tickets than capacity {body.capacity}"
                )

        await _then_fill(agent_id, change)
        return await _agent(agent_id)

    @api.patch("/agents/{agent_id}", summary="Change presence, capacity, skills or name")
    async def patch_agent(agent_id: AgentId, body: AgentPatch) -> dict[str, Any]:
        if body.model_dump(exclude_none=True) == {}:
            raise HTTPException(422, "nothing to change: give presence, capacity, skills or name")

        async def change(conn: Any) -> None:
            cur = await conn.fetchrow(
                "SELECT load FROM router_agents WHERE agent_id = $1 FOR UPDATE", agent_id
            )
            if cur is None:
                raise HTTPException(404, f"no agent {agent_id}")
            if body.capacity is not None and body.capacity < cur["load"]:
                raise HTTPException(
                    409,
                    f"agent {agent_id} holds {cur['load']} tickets; capacity {body.capacity}"
                    " would be below that (reassign some first)",
                )
            await conn.execute(
                "UPDATE router_agents SET name = COALESCE($2, name),"
                " skills = COALESCE($3, skills), capacity = COALESCE($4, capacity),"
                " presence = COALESCE($5, presence), updated_at = now() WHERE agent_id = $1",
                agent_id,
                body.name,
                sorted(set(body.skills)) if body.skills is not None else None,
                body.capacity,
                body.presence.value if body.presence is not None else None,
            )

        await _then_fill(agent_id, change)
        return await _agent(agent_id)

    @api.get("/queues", summary="Waiting tickets and the oldest wait, per tier")
    async def queues() -> dict[str, dict[str, float]]:
        stats = {r["tier"]: r for r in await queue_stats(runtime.pool)}
        return {
            tier: {
                "depth": float(stats[tier]["depth"]) if tier in stats else 0.0,
                "oldest_seconds": float(stats[tier]["oldest_seconds"]) if tier in stats else 0.0,
            }
            for tier in ("bot", "L1", "L2")
        }

    @api.get("/tickets/{ticket_id}", summary="A ticket's state, decisions and history")
    async def ticket(ticket_id: str) -> dict[str, Any]:
        row = await runtime.pool.fetchrow(
            "SELECT ticket_id, conversation_id, shop_id, channel, status, category, priority,"
            " tier, queue, agent_id, last_agent_id, skills, due_at, queued_at, assigned_at,"
            " escalated, reopen_count, created_at, updated_at"
            " FROM router_tickets WHERE ticket_id = $1",
            ticket_id,
        )
        if row is None:
            raise HTTPException(404, f"no ticket {ticket_id}")
        decisions = await runtime.pool.fetch(
            "SELECT message_id, message_event_id, category, priority, tier, queue, agent_id,"
            " reasons, decided_at FROM router_decisions WHERE ticket_id = $1 ORDER BY decided_at",
            ticket_id,
        )
        history = await runtime.pool.fetch(
            "SELECT at, action, agent_id, from_agent, tier, detail FROM router_history"
            " WHERE ticket_id = $1 ORDER BY id",
            ticket_id,
        )
        return {
            "ticket": dict(row),
            "decisions": [dict(d) for d in decisions],
            "history": [dict(h) for h in history],
        }

    @api.post("/tickets/{ticket_id}/reassign", summary="Give a ticket to another agent by hand")
    async def reassign_ticket(ticket_id: str, body: ReassignIn) -> dict[str, Any]:
        try:
            out = await reassign(runtime.pool, ticket_id, body.agent_id, body.note)
        except AdminError as exc:
            raise HTTPException(exc.status, exc.detail) from exc
        after(out)
        return await ticket(ticket_id)

    return api
