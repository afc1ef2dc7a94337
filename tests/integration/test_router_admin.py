"""The router's admin API over real HTTP: roster changes, validation, queries, reassignment."""

from __future__ import annotations

import httpx

from services.router.app import build
from services.router.settings import RouterSettings
from tests.helpers import Infra, serving, uid, wait_ready


async def test_admin_api_roster_validation_queries_and_reassignment(
    service_env: Infra,
) -> None:
    group = uid("router-admin")
    app = build(RouterSettings(group_id=group, escalations_group_id=group + "-esc"))
    skill = uid("sk").replace("-", "_")
    a, b = uid("adm"), uid("adm")
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as c:
        await wait_ready(url)
        # Validation: unknown tier, negative capacity, unknown field, bad skill -> 422.
        for bad in (
            {"tier": "L3", "capacity": 1},
            {"tier": "L1", "capacity": -1},
            {"tier": "L1", "capacity": 1, "shoe_size": 42},
            {"tier": "L1", "capacity": 1, "skills": ["Has Space"]},
            {"tier": "L1"},
        ):
            r = await c.put(f"/v1/admin/agents/{a}", json=bad)
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["detail"]
        r = await c.patch(f"/v1/admin/agents/{uid('nobody')}", json={"presence": "online"})
        assert r.status_code == 404 and "no agent" in r.json()["detail"]
        r = await c.patch(f"/v1/admin/agents/{a}", json={})
        assert r.status_code == 422
        r = await c.patch(f"/v1/admin/agents/{a}", json={"presence": "asleep"})
        assert r.status_code == 422

        for agent_id in (a, b):
            r = await c.put(
                f"/v1/admin/agents/{agent_id}",
                json={"tier": "L1", "skills": [skill], "capacity": 1, "presence": "online"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["load"] == 0 and r.json()["skills"] == [skill]

        # A ticket for them (written through the store: its skill is this test's own).
        from services.router.domain import Decision
        from services.router.store import record_decision
        from shared.events import Category, Priority, Tier
        from tests.integration.test_router_assignment import LIMITS, msg

        pool = app.state.runtime.pool
        ticket = uid("tk")
        d = Decision(Category.logistics, Priority.normal, Tier.L1, ["x"], skills=(skill,))
        out = await record_decision(pool, msg(ticket), d, LIMITS)
        assert out is not None and out.routed is not None
        holder = out.routed.agent_id
        assert holder in (a, b)
        other = b if holder == a else a

        # Capacity below the load: 409 with the reason.
        r = await c.patch(f"/v1/admin/agents/{holder}", json={"capacity": 0})
        assert r.status_code == 409 and "holds 1" in r.json()["detail"]

        agents = {x["agent_id"]: x for x in (await c.get("/v1/admin/agents")).json()}
        assert agents[holder]["load"] == 1 and agents[other]["load"] == 0

        queues = (await c.get("/v1/admin/queues")).json()
        assert set(queues) == {"bot", "L1", "L2"}
        assert all(set(v) == {"depth", "oldest_seconds"} for v in queues.values())

        # Manual reassignment: unknown ticket 404, unknown agent 404, same agent 409.
        r = await c.post(f"/v1/admin/tickets/{uid('nope')}/reassign", json={"agent_id": other})
        assert r.status_code == 404
        r = await c.post(f"/v1/admin/tickets/{ticket}/reassign", json={"agent_id": uid("x")})
        assert r.status_code == 404
        r = await c.post(f"/v1/admin/tickets/{ticket}/reassign", json={"agent_id": holder})
        assert r.status_code == 409
        r = await c.post(f"/v1/admin/tickets/{ticket}/reassign", json={"agent_id": "bad id!"})
        assert r.status_code == 422
        r = await c.post(
            f"/v1/admin/tickets/{ticket}/reassign", json={"agent_id": other, "note": "VIP"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ticket"]["agent_id"] == other
        assert body["decisions"][0]["category"] == "logistics"
        moved = [h for h in body["history"] if h["action"] == "reassigned"]
        assert moved == [{**moved[0], "agent_id": other, "from_agent": holder, "detail": "VIP"}]

        # Going offline with nothing held, then 404 for an unknown ticket query.
        r = await c.patch(f"/v1/admin/agents/{holder}", json={"presence": "offline"})
        assert r.status_code == 200 and r.json()["presence"] == "offline"
        assert (await c.get(f"/v1/admin/tickets/{uid('nope')}")).status_code == 404
        await c.patch(f"/v1/admin/agents/{other}", json={"presence": "offline"})


async def test_sla_breach_on_kafka_moves_the_ticket_to_l2(service_env: Infra) -> None:
    """cs.escalations.v1 (router.escalations group) -> L2 agent, routed event, history."""
    from services.router.domain import Decision
    from services.router.roster import AgentIn, upsert_agent
    from services.router.store import record_decision
    from shared.events import (
        Category,
        EscalationReason,
        Priority,
        Tier,
    )
    from shared.topics import ESCALATIONS, ROUTED
    from tests.helpers import TopicReader, escalation_event, publish_event
    from tests.integration.test_router_assignment import LIMITS, msg

    group = uid("router-esc")
    app = build(RouterSettings(group_id=group, escalations_group_id=group + "-esc"))
    skill = uid("sk").replace("-", "_")
    l1, l2 = uid("l1"), uid("l2")
    async with serving(app) as url, TopicReader(service_env.bootstrap, ROUTED.name) as routed:
        await wait_ready(url)
        pool = app.state.runtime.pool
        async with pool.acquire() as conn:
            for agent_id, tier in ((l1, Tier.L1), (l2, Tier.L2)):
                await upsert_agent(
                    conn,
                    agent_id,
                    AgentIn(tier=tier, skills=[skill], capacity=1, presence="online"),
                )
        ticket = uid("tk")
        d = Decision(Category.logistics, Priority.normal, Tier.L1, ["x"], skills=(skill,))
        await record_decision(pool, msg(ticket), d, LIMITS)
        assert (
            await pool.fetchval("SELECT agent_id FROM router_tickets WHERE ticket_id = $1", ticket)
            == l1
        )
        # The router's own routed_to_l2 notices on the same topic are not escalations to act on.
        for reason in (EscalationReason.routed_to_l2, EscalationReason.first_response_breached):
            await publish_event(
                app.state.runtime.broker, ESCALATIONS, ticket, escalation_event(ticket, reason)
            )
        [moved] = await routed.wait_for(
            lambda r: r["ticket_id"] == ticket and r["tier"] == "L2", timeout=30
        )
        assert moved["agent_id"] == l2 and moved["priority"] == "important"
        assert "first response breached" in moved["reasons"][-1]
        async with httpx.AsyncClient(base_url=url) as c:
            body = (await c.get(f"/v1/admin/tickets/{ticket}")).json()
        esc = [h for h in body["history"] if h["action"] == "escalated"]
        assert len(esc) == 1 and esc[0]["from_agent"] == l1 and esc[0]["agent_id"] == l2
        agents = {
            r["agent_id"]: r["load"]
            for r in await pool.fetch(
                "SELECT agent_id, load FROM router_agents WHERE agent_id = ANY($1)", [l1, l2]
            )
        }
        assert agents == {l1: 0, l2: 1}
        await pool.execute(
            "UPDATE router_agents SET presence = 'offline' WHERE agent_id = ANY($1)", [l1, l2]
        )
