"""Clock semantics against the real PostgreSQL: each transition, its events in the outbox
(written in the same transaction), exactly once, and events out of order or twice."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.sla_watch import store
from services.sla_watch.policy import parse_policies
from services.sla_watch.store import Kind
from shared.events import (
    AuthorRole,
    Category,
    Channel,
    EscalationEvent,
    EscalationReason,
    MessageEvent,
    MessageKind,
    Priority,
    RoutedEvent,
    SlaEvent,
    SlaKind,
    Tier,
    escalation_id_for,
    load,
    utcnow,
)
from tests.helpers import escalation_event, message_event, uid

pytestmark = pytest.mark.integration

DEFAULT = parse_policies(
    {
        "policies": [
            {
                "name": "complaint",
                "match": {"category": ["complaint"]},
                "clocks": {"first_response": {"limit": 30}, "resolution": {"limit": "24h"}},
            },
            {"name": "default", "clocks": {"first_response": {"limit": 30}}},
        ]
    }
)

RICH = parse_policies(
    {
        "calendars": {"cn": {"timezone": "Asia/Shanghai", "hours": ["09:00", "21:00"]}},
        "policies": [
            {
                "name": "urgent",
                "match": {"priority": ["urgent"]},
                "clocks": {"first_response": {"limit": 10}, "next_response": {"limit": 20}},
            },
            {
                "name": "complaint",
                "match": {"category": ["complaint"]},
                "clocks": {
                    "first_response": {"limit": 30},
                    "next_response": {"limit": 60},
                    "resolution": {
                        "limit": "24h",
                        "calendar": "cn",
                        "pause_when_waiting_on_customer": True,
                    },
                },
            },
            {
                "name": "default",
                "clocks": {"first_response": {"limit": 60}, "next_response": {"limit": 120}},
            },
        ],
    }
)


def message(
    ticket: str,
    *,
    role: AuthorRole = AuthorRole.customer,
    kind: MessageKind = MessageKind.message_created,
    at: datetime | None = None,
) -> MessageEvent:
    return message_event(ticket, kind=kind, role=role, at=at)


def routed(
    ticket: str,
    category: Category = Category.complaint,
    priority: Priority = Priority.normal,
    received: datetime | None = None,
    *,
    agent: str | None = None,
    at: datetime | None = None,
    customer_ref: str | None = None,
    tier: Tier = Tier.L2,
) -> RoutedEvent:
    """A routed event of ``ticket`` held by ``agent`` (None: queued), published at ``at``
    (now unless told)."""
    return RoutedEvent(
        occurred_at=at or utcnow(),
        correlation_id=ticket,
        producer="router",
        ticket_id=ticket,
        conversation_id="conv-" + ticket,
        message_event_id="evt",
        message_id=uid("msg"),
        shop_id="shop-1",
        channel=Channel.chat,
        category=category,
        priority=priority,
        tier=tier,
        queue=f"{tier.value}.{priority.value}",
        reasons=["test"],
        message_received_at=received,
        agent_id=agent,
        customer_ref=customer_ref,
    )


async def events(pool, ticket: str, topic: str = "cs.sla.v1") -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE producer = 'sla_watch' AND key = $1 AND topic = $2"
        " ORDER BY id",
        ticket,
        topic,
    )
    return [json.loads(r["payload"]) for r in rows]


def kinds(evs: list[dict[str, Any]], clock: str | None = None) -> list[str]:
    return [e["kind"] for e in evs if clock is None or e["clock"] == clock]


async def clock(pool, ticket: str, name: str = "first_response"):
    return await pool.fetchrow(
        "SELECT * FROM sla_clocks WHERE ticket_id = $1 AND clock = $2", ticket, name
    )


async def test_customer_message_starts_reply_meets_and_duplicates_change_nothing(pool):
    t = uid("tkt")
    m = message(t)
    out = await store.on_customer_message(pool, m, DEFAULT)
    assert out.new and out.due and {d.kind for d in out.due} == {Kind.breach, Kind.warning}
    assert not (await store.on_customer_message(pool, m, DEFAULT)).new
    row = await clock(pool, t)
    assert row["state"] == "running"
    assert (row["deadline"] - row["started_at"]).total_seconds() == 30
    reply = message(t, role=AuthorRole.agent)
    await store.on_reply(pool, reply, DEFAULT)
    assert not (await store.on_reply(pool, reply, DEFAULT)).new
    evs = await events(pool, t)
    assert kinds(evs) == ["started", "met"]
    assert evs[1]["elapsed_seconds"] >= 0 and evs[1]["deadline"] and evs[1]["occurred_at"]
    assert (await clock(pool, t))["state"] == "met"


async def test_breach_fires_once_under_racing_timers_then_a_late_reply_stops(pool):
    t = uid("tkt")
    await store.on_customer_message(pool, message(t, at=utcnow() - timedelta(seconds=40)), DEFAULT)
    row = await clock(pool, t)
    results = await asyncio.gather(*(store.fire(pool, Kind.breach, [row["id"]]) for _ in range(4)))
    assert sum(len(r) for r in results) == 1
    [emitted] = [e for r in results for e in r]
    assert emitted.lateness is not None and emitted.lateness >= 9.0  # marked late
    assert await store.fire(pool, Kind.warning, [row["id"]]) == []  # no warning after breach
    await store.on_reply(pool, message(t, role=AuthorRole.agent), DEFAULT)
    evs = await events(pool, t)
    assert kinds(evs) == ["started", "breached", "stopped"]
    assert evs[1]["lateness_seconds"] >= 9.0
    [esc] = await events(pool, t, "cs.escalations.v1")
    assert esc["reason"] == "first_response_breached" and esc["lateness_seconds"] >= 9.0
    # built by PostgreSQL in the firing statement: the same schema as the Python models
    breach = load(SlaEvent, evs[1])
    assert breach.kind is SlaKind.breached and breach.deadline == row["deadline"]
    assert breach.started_at == row["started_at"] and breach.limit_seconds == 30
    assert breach.occurred_at > breach.deadline
    e = load(EscalationEvent, esc)
    assert e.escalation_id == escalation_id_for(t, "first_response_breached", "1")
    assert e.deadline == row["deadline"] and e.waiting_seconds and e.waiting_seconds >= 39


async def breach_escalation(pool, ticket: str) -> EscalationEvent:
    """Breach the ticket's overdue first-response clock; its escalation, as published."""
    row = await clock(pool, ticket)
    assert len(await store.fire(pool, Kind.breach, [row["id"]])) == 1
    escs = await events(pool, ticket, "cs.escalations.v1")
    return load(EscalationEvent, escs[-1])


async def test_breach_escalation_names_the_agent_holding_the_ticket(pool):
    t = uid("tkt")
    await store.on_customer_message(pool, message(t, at=utcnow() - timedelta(seconds=40)), DEFAULT)
    r = routed(t, Category.complaint, Priority.urgent, agent="l2-evan", customer_ref="cu***07")
    await store.on_routed(pool, r, DEFAULT)
    e = await breach_escalation(pool, t)
    assert e.agent_id == "l2-evan"
    assert e.channel is Channel.chat and e.customer_ref == "cu***07"
    assert e.priority is Priority.urgent and e.tier is Tier.L2 and e.shop_id == "shop-1"


async def test_breach_escalation_of_a_queued_ticket_names_no_agent(pool):
    t = uid("tkt")
    await store.on_customer_message(pool, message(t, at=utcnow() - timedelta(seconds=40)), DEFAULT)
    await store.on_routed(pool, routed(t, agent=None, customer_ref="cu***08"), DEFAULT)
    e = await breach_escalation(pool, t)
    assert e.agent_id is None
    assert e.channel is Channel.chat and e.customer_ref == "cu***08"


async def test_breach_escalation_names_the_latest_agent_whatever_order_routed_events_came(pool):
    """Queued, assigned from the queue, reassigned by hand: each a routed event. One
    consumed late (older than what was already applied) and one consumed twice change
    nothing; a later event that queues the ticket again (an escalation with no free L2
    agent) makes it nobody's."""
    t = uid("tkt")
    t0 = utcnow() - timedelta(seconds=40)
    await store.on_customer_message(pool, message(t, at=t0), DEFAULT)
    queued = routed(t, agent=None, at=t0 + timedelta(seconds=1), customer_ref="cu***09")
    from_queue = routed(t, agent="l1-amy", at=t0 + timedelta(seconds=2))
    by_hand = routed(t, agent="l1-bob", at=t0 + timedelta(seconds=3))
    for ev in (queued, by_hand, from_queue, by_hand, queued):
        await store.on_routed(pool, ev, DEFAULT)
    ticket = await pool.fetchrow("SELECT * FROM sla_tickets WHERE ticket_id = $1", t)
    assert ticket["agent_id"] == "l1-bob" and ticket["agent_at"] == by_hand.occurred_at
    e = await breach_escalation(pool, t)
    assert e.agent_id == "l1-bob" and e.customer_ref == "cu***09"  # kept from the first

    u = uid("tkt")
    await store.on_customer_message(pool, message(u, at=t0), DEFAULT)
    await store.on_routed(pool, routed(u, agent="l1-amy", at=t0 + timedelta(seconds=1)), DEFAULT)
    await store.on_routed(pool, routed(u, agent=None, at=t0 + timedelta(seconds=2)), DEFAULT)
    assert (await breach_escalation(pool, u)).agent_id is None


async def test_a_resolved_ticket_reopened_names_no_agent_until_routed_again(pool):
    """The router frees the agent on a resolve and publishes nothing; reopened with no
    free agent it publishes nothing either: the reopened clock's breach names nobody,
    even when a routed event from before the resolve is consumed after it."""
    t = uid("tkt")
    now = utcnow()
    before = routed(t, agent="l1-amy", at=now - timedelta(seconds=50))
    await store.on_customer_message(pool, message(t, at=now - timedelta(seconds=50)), DEFAULT)
    await store.on_routed(pool, before, DEFAULT)
    resolve = message(
        t, role=AuthorRole.agent, kind=MessageKind.ticket_resolved, at=now - timedelta(seconds=45)
    )
    await store.on_resolved(pool, resolve, DEFAULT)
    await store.on_routed(pool, before, DEFAULT)  # redelivered after the resolve
    reopen = message(
        t,
        role=AuthorRole.customer,
        kind=MessageKind.ticket_reopened,
        at=now - timedelta(seconds=40),
    )
    await store.on_reopened(pool, reopen, DEFAULT)
    e = await breach_escalation(pool, t)
    assert e.escalation_id == escalation_id_for(t, "first_response_breached", "2")
    assert e.agent_id is None


async def test_an_older_routed_event_consumed_after_a_newer_one_changes_nothing(pool):
    """Two routed events of one ticket consumed out of order (a redelivery, or two router
    instances' relays): the newer one (urgent/L2, to l2-evan) first, then the older one
    (normal/L1, to l1-amy). The older one is ``stale``: the labels stay urgent/L2, the
    first-response clock keeps the urgent policy's 10 s deadline (the older labels would
    select the complaint policy: 30 s, and a resolution clock started), nothing is emitted
    and no timer set; the breach's escalation says urgent/L2 and l2-evan."""
    t = uid("tkt")
    t0 = utcnow() - timedelta(seconds=40)
    await store.on_customer_message(pool, message(t, at=t0), RICH)
    newer = routed(t, Category.complaint, Priority.urgent, t0, agent="l2-evan", at=t0, tier=Tier.L2)
    older = routed(
        t,
        Category.complaint,
        Priority.normal,
        t0,
        agent="l1-amy",
        at=t0 - timedelta(milliseconds=1),
        tier=Tier.L1,
    )
    assert (await store.apply(pool, [newer], RICH)).results == ["ok"]
    ticket = dict(await pool.fetchrow("SELECT * FROM sla_tickets WHERE ticket_id = $1", t))
    fr = dict(await clock(pool, t))
    assert (fr["policy"], fr["deadline"]) == ("urgent", t0 + timedelta(seconds=10))
    outbox = await events(pool, t)

    stale = await store.apply(pool, [older], RICH)
    assert stale.results == ["stale"] and stale.emitted == [] and stale.due == []
    again = dict(await pool.fetchrow("SELECT * FROM sla_tickets WHERE ticket_id = $1", t))
    assert (again["priority"], again["tier"], again["agent_id"]) == ("urgent", "L2", "l2-evan")
    assert again == {**ticket, "updated_at": again["updated_at"]}
    assert dict(await clock(pool, t)) == fr
    assert await clock(pool, t, "resolution") is None
    assert await events(pool, t) == outbox
    assert (await store.apply(pool, [newer], RICH)).results == ["duplicate"]  # redelivered
    assert dict(await clock(pool, t)) == fr
    e = await breach_escalation(pool, t)
    assert (e.priority, e.tier, e.agent_id) == (Priority.urgent, Tier.L2, "l2-evan")
    assert e.deadline == t0 + timedelta(seconds=10)


async def test_warning_once_and_not_before_its_time(pool):
    t = uid("tkt")
    await store.on_customer_message(pool, message(t, at=utcnow() - timedelta(seconds=5)), DEFAULT)
    row = await clock(pool, t)
    assert await store.fire(pool, Kind.warning, [row["id"]]) == []  # warns at 24 s
    assert await store.fire(pool, Kind.breach, [row["id"]]) == []  # breaches at 30 s
    t2 = uid("tkt")
    await store.on_customer_message(pool, message(t2, at=utcnow() - timedelta(seconds=25)), DEFAULT)
    row2 = await clock(pool, t2)
    results = await asyncio.gather(
        *(store.fire(pool, Kind.warning, [row2["id"]]) for _ in range(3))
    )
    assert sum(len(r) for r in results) == 1
    evs2 = await events(pool, t2)
    assert kinds(evs2) == ["started", "warning"]
    w = load(SlaEvent, evs2[1])
    assert (
        w.kind is SlaKind.warning and w.deadline == row2["deadline"] and w.lateness_seconds is None
    )


async def test_reply_seen_before_the_message_event_means_no_clock(pool):
    t = uid("tkt")
    now = utcnow()
    m = message(t, at=now - timedelta(seconds=3))
    await store.on_reply(pool, message(t, role=AuthorRole.agent, at=now), DEFAULT)
    await store.on_customer_message(pool, m, DEFAULT)
    assert await clock(pool, t) is None
    assert await events(pool, t) == []


async def test_reply_before_the_routing_event_still_stops_and_routing_starts_resolution(pool):
    t = uid("tkt")
    now = utcnow()
    await store.on_customer_message(pool, message(t, at=now - timedelta(seconds=2)), DEFAULT)
    await store.on_reply(pool, message(t, role=AuthorRole.agent, at=now), DEFAULT)
    await store.on_routed(pool, routed(t, received=now - timedelta(seconds=2)), DEFAULT)
    await store.on_routed(pool, routed(t, received=now - timedelta(seconds=2)), DEFAULT)  # twice
    assert (await clock(pool, t))["state"] == "met"
    res = await clock(pool, t, "resolution")
    assert res["state"] == "running" and res["instance"] == 1
    assert (res["deadline"] - res["started_at"]).total_seconds() == 86400
    evs = await events(pool, t)
    assert kinds(evs, "first_response") == ["started", "met"]
    assert kinds(evs, "resolution") == ["started"]


async def test_resolution_pauses_while_waiting_on_the_customer_and_resumes(pool):
    t = uid("tkt")
    t0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    await store.on_customer_message(pool, message(t, at=t0), RICH)
    await store.on_routed(pool, routed(t, received=t0), RICH)
    res = await clock(pool, t, "resolution")
    # 24 working hours on 09:00-21:00 = two working days: 10:00 two days later.
    assert res["deadline"] == t0 + timedelta(days=2)
    await store.on_reply(pool, message(t, role=AuthorRole.agent, at=t0 + timedelta(hours=1)), RICH)
    res = await clock(pool, t, "resolution")
    assert res["state"] == "paused" and res["consumed_seconds"] == 3600
    assert await store.fire(pool, Kind.breach, [res["id"]]) == []  # paused clocks do not breach
    back = t0 + timedelta(days=1)  # next day 10:00 Shanghai
    out = await store.on_customer_message(pool, message(t, at=back), RICH)
    res = await clock(pool, t, "resolution")
    assert res["state"] == "running" and res["resumed_at"] == back
    # 23 working hours left from 10:00: 11 today, 12 tomorrow -> 21:00 tomorrow.
    assert res["deadline"] == back + timedelta(hours=35)
    assert any(d.id == res["id"] and d.kind is Kind.breach for d in out.due or [])
    # the follow-up after a reply starts next_response, not a new first_response
    assert (await clock(pool, t, "next_response"))["state"] == "running"
    assert (await clock(pool, t))["instance"] == 1


async def test_resolution_started_paused_when_the_reply_came_before_routing(pool):
    t = uid("tkt")
    now = utcnow()
    await store.on_customer_message(pool, message(t, at=now - timedelta(seconds=5)), RICH)
    await store.on_reply(pool, message(t, role=AuthorRole.agent, at=now), RICH)
    await store.on_routed(pool, routed(t, received=now - timedelta(seconds=5)), RICH)
    assert (await clock(pool, t, "resolution"))["state"] == "paused"


async def test_resolution_meets_all_and_reopen_restarts_once(pool):
    t = uid("tkt")
    now = utcnow()
    await store.on_customer_message(pool, message(t, at=now - timedelta(seconds=9)), DEFAULT)
    await store.on_routed(pool, routed(t, received=now - timedelta(seconds=9)), DEFAULT)
    await store.on_resolved(
        pool, message(t, role=AuthorRole.agent, kind=MessageKind.ticket_resolved, at=now), DEFAULT
    )
    assert (await clock(pool, t))["state"] == "met"
    assert (await clock(pool, t, "resolution"))["state"] == "met"
    reopen = message(
        t, role=AuthorRole.customer, kind=MessageKind.ticket_reopened, at=now + timedelta(seconds=1)
    )
    await store.on_reopened(pool, reopen, DEFAULT)
    assert not (await store.on_reopened(pool, reopen, DEFAULT)).new
    res = await clock(pool, t, "resolution")
    assert res["state"] == "running" and res["instance"] == 2
    fr = await clock(pool, t)
    assert fr["state"] == "running" and fr["instance"] == 2
    evs = await events(pool, t)
    assert kinds(evs, "resolution") == ["started", "met", "started"]
    assert kinds(evs, "first_response") == ["started", "met", "started"]


async def test_routing_with_higher_priority_shortens_the_running_limit(pool):
    t = uid("tkt")
    m = message(t)
    await store.on_customer_message(pool, m, RICH)
    before = await clock(pool, t)
    assert before["limit_seconds"] == 60 and before["policy"] == "default"
    out = await store.on_routed(pool, routed(t, Category.logistics, Priority.urgent), RICH)
    after = await clock(pool, t)
    assert after["limit_seconds"] == 10 and after["policy"] == "urgent"
    assert after["deadline"] == before["started_at"] + timedelta(seconds=10)
    assert after["instance"] == 1  # same run, new limit
    assert any(
        d.kind is Kind.breach and d.at == after["deadline"].timestamp() for d in out.due or []
    )


def router_escalation(t: str, priority: Priority) -> EscalationEvent:
    return escalation_event(t, EscalationReason.routed_to_l2, producer="router", priority=priority)


async def test_an_escalation_with_a_higher_priority_recomputes(pool):
    t = uid("tkt")
    await store.on_customer_message(pool, message(t), RICH)
    await store.on_routed(pool, routed(t, Category.logistics, Priority.normal), RICH)
    assert (await clock(pool, t))["limit_seconds"] == 60
    await store.on_escalation(pool, router_escalation(t, Priority.urgent), RICH)
    assert (await clock(pool, t))["limit_seconds"] == 10


async def test_an_escalation_with_a_lower_priority_changes_nothing(pool):
    t = uid("tkt")
    await store.on_customer_message(pool, message(t), RICH)
    await store.on_routed(pool, routed(t, Category.logistics, Priority.urgent), RICH)
    before = await clock(pool, t)
    assert before["limit_seconds"] == 10
    await store.on_escalation(pool, router_escalation(t, Priority.normal), RICH)
    assert await clock(pool, t) == before


async def test_category_no_longer_matching_a_resolution_policy_cancels_it(pool):
    t = uid("tkt")
    await store.on_customer_message(pool, message(t), DEFAULT)
    await store.on_routed(pool, routed(t, Category.complaint), DEFAULT)
    await store.on_routed(pool, routed(t, Category.logistics), DEFAULT)
    assert (await clock(pool, t, "resolution"))["state"] == "stopped"
    assert kinds(await events(pool, t), "resolution") == ["started", "stopped"]


async def test_window_pages_by_deadline_and_id(pool):
    base = utcnow() + timedelta(days=3650)  # far away from every other test's clocks
    tickets = [uid("tkt") for _ in range(5)]
    for i, t in enumerate(tickets):
        m = message(t, at=base + timedelta(seconds=i))
        await store.on_customer_message(
            pool, m.model_copy(update={"received_at": m.occurred_at}), DEFAULT
        )
    ids = [(await clock(pool, t))["id"] for t in tickets]
    first = await store.page(pool, Kind.breach, (base, 0), base + timedelta(seconds=32), limit=2)
    assert [i for _, i in first] == ids[:2]
    last_at, last_id = first[-1]
    rest = await store.page(
        pool,
        Kind.breach,
        (datetime.fromtimestamp(last_at, UTC), last_id),
        base + timedelta(seconds=60),
    )
    assert [i for _, i in rest] == ids[2:]
    for t in tickets:  # leave nothing running far in the future
        await store.on_resolved(
            pool,
            message(t, kind=MessageKind.ticket_resolved, at=base + timedelta(seconds=9)),
            DEFAULT,
        )
