"""Counting a run by event id: lost, duplicated, redelivered, pending; and the summary."""

from __future__ import annotations

import io

from rich.console import Console

from shared.events import uuid5_str
from tools.verify import (
    BREACH,
    Clock,
    Delivery,
    Ledger,
    Sent,
    Snapshot,
    percentiles,
    reconcile,
    render,
    render_phases,
)

NOW = 10_000.0


def routed(msg: str, event_id: str | None = None) -> dict[str, str]:
    mid = "mid-" + msg
    return {
        "event_id": event_id or uuid5_str(f"routed:{mid}"),
        "message_id": mid,
        "message_event_id": msg,
    }


def world() -> tuple[Ledger, Snapshot]:
    """Two conversations: m1 answered in time (met), m2 unanswered (breached, notified)."""
    led, snap = Ledger(), Snapshot()
    for n, phase in (("m1", "steady"), ("m2", "peak")):
        led.add(Sent(n, "c" + n, "customer", phase, 202, 0.01))
        snap.intake[n] = ("t" + n, NOW - 100)
        snap.decisions[n] = NOW - 99.8
        led.observe("cs.messages.v1", {"event_id": "e" + n, "source_event_id": n}, NOW - 100)
        led.observe("cs.tickets.routed.v1", routed(n), NOW - 99.8)
        sla = {"ticket_id": "t" + n, "clock": "first_response", "kind": "started"}
        led.observe("cs.sla.v1", {**sla, "event_id": "s" + n}, NOW - 99.7)
    led.add(Sent("m1-r", "cm1", "agent", "steady", 202, 0.01))
    snap.intake["m1-r"] = ("tm1", NOW - 98)
    snap.clocks["tm1"] = Clock("met", NOW - 100, NOW - 95, None)
    snap.clocks["tm2"] = Clock("breached", NOW - 100, NOW - 95, NOW - 95)
    led.observe(
        "cs.sla.v1",
        {"event_id": "x1", "ticket_id": "tm1", "clock": "first_response", "kind": "met"},
        NOW - 98,
    )
    led.observe(
        "cs.sla.v1",
        {"event_id": "x2", "ticket_id": "tm2", "clock": "first_response", "kind": "breached"},
        NOW - 95,
    )
    esc = {"event_id": "q2", "ticket_id": "tm2", "reason": BREACH, "escalation_id": "esc2"}
    led.observe("cs.escalations.v1", esc, NOW - 95)
    snap.escalations["esc2"] = ("tm2", BREACH)
    snap.deliveries["esc2"] = Delivery("delivered", False)
    led.receive("esc2", "tm2", BREACH, NOW - 94.9)
    return led, snap


def test_a_clean_run_counts_every_stage_and_nothing_lost_or_duplicated():
    led, snap = world()
    r = reconcile(led, snap, NOW)
    assert r.ok() and r.pending == 0 and r.redelivered == 0
    assert (r.sent, r.unanswered, r.met, r.breached) == (3, 0, 1, 1)
    assert {k: (v.expected, v.done) for k, v in r.stages.items()} == {
        "accepted": (3, 3),
        "routed": (2, 2),
        "sla": (2, 2),
        "escalated": (1, 1),
        "notified": (1, 1),
    }
    assert [round(x, 3) for x in r.latencies["intake->routed"]] == [0.2, 0.2]
    assert [round(x, 3) for x in r.latencies["breach->notified"]] == [0.1]
    assert r.by_phase["peak"]["sent"] == 1


def test_missing_rows_are_lost_once_late_and_pending_before():
    led, snap = world()
    led.add(Sent("m3", "cm3", "customer", "broker down", 202, 0.01))  # acked, never stored
    del snap.decisions["m2"]  # accepted, never routed
    snap.deliveries.clear()
    led.notified.clear()  # escalated, never delivered
    r = reconcile(led, snap, NOW)
    assert not r.ok()
    assert r.stages["accepted"].lost == 1
    assert r.stages["routed"].lost == 1
    assert r.stages["notified"].lost == 1
    assert r.by_phase["broker down"]["lost"] == 1 and r.by_phase["peak"]["lost"] == 2
    assert any("m3" in p for p in r.problems)
    # While the run drains nothing is lost yet, everything missing is pending.
    early = reconcile(led, snap, NOW, final=False)
    assert early.lost == 0 and early.pending == 3


def test_a_clock_not_yet_due_is_pending_even_at_the_end():
    led, snap = world()
    snap.clocks["tm2"] = Clock("running", NOW - 1, NOW + 3, None)
    r = reconcile(led, snap, NOW)
    assert r.lost == 0 and r.stages["sla"].pending == 1
    snap.clocks["tm2"] = Clock("running", NOW - 100, NOW - 95, None)  # overdue: lost
    assert reconcile(led, snap, NOW).stages["sla"].lost == 1


def test_two_outcomes_for_one_clock_or_two_escalations_for_one_breach_are_duplicates():
    led, snap = world()
    led.observe(
        "cs.sla.v1",
        {"event_id": "x2b", "ticket_id": "tm2", "clock": "first_response", "kind": "met"},
        NOW,
    )
    snap.escalations["esc2b"] = ("tm2", BREACH)
    led.receive("esc2b", "tm2", BREACH, NOW)
    snap.deliveries["esc2b"] = Delivery("delivered", False)
    r = reconcile(led, snap, NOW)
    assert r.stages["sla"].duplicated == 1
    assert r.stages["escalated"].duplicated == 1
    assert r.stages["notified"].duplicated == 1
    assert r.by_phase["peak"]["duplicated"] == 3
    assert not r.ok()


def test_redeliveries_and_routing_updates_are_not_duplicates():
    led, snap = world()
    led.observe("cs.tickets.routed.v1", routed("m2"), NOW)  # same id again: redelivered
    led.observe("cs.tickets.routed.v1", routed("m2", event_id="upd-1"), NOW)  # moved to L2
    led.receive("esc2", "tm2", BREACH, NOW)  # the notifier's retry, same escalation id
    r = reconcile(led, snap, NOW)
    assert r.ok()
    assert r.redelivered == 2


def test_dead_lettered_escalation_is_accounted_for_and_unanswered_webhooks_counted():
    led, snap = world()
    led.notified.clear()
    snap.deliveries["esc2"] = Delivery("failed", True)
    led.add(Sent("m9", "cm9", "customer", "steady", None))
    r = reconcile(led, snap, NOW)
    assert r.ok() and r.stages["notified"].done == 1
    assert r.unanswered == 1


def test_without_our_receiver_the_notifier_table_says_delivered():
    led, snap = world()
    led.notified.clear()
    led.receiving = False
    assert reconcile(led, snap, NOW).stages["notified"].done == 1
    snap.deliveries["esc2"] = Delivery("pending", False)
    assert reconcile(led, snap, NOW).stages["notified"].lost == 1


def test_percentiles():
    assert percentiles([]) == {"n": 0}
    p = percentiles([i / 100 for i in range(1, 101)])
    assert (p["n"], p["p50"], p["p99"], p["max"]) == (100, 0.51, 1.0, 1.0)


def test_render_shows_counts_latencies_and_phases():
    led, snap = world()
    del snap.decisions["m2"]
    r = reconcile(led, snap, NOW)
    out = io.StringIO()
    console = Console(file=out, width=140, color_system=None)
    for t in render(r, "steady run"):
        console.print(t)
    console.print(render_phases(r, ["steady", "peak", "broker down"], "by phase"))
    text = out.getvalue()
    assert "steady run" in text and "intake->routed" in text
    assert "│ routed    │        2 │    1 │       0 │    1 │          0 │" in text
    assert "│ broker down   │    0 │    0 │          0 │" in text
    assert "SLA breached 1, met 1" in text
    assert r.to_json()["stages"]["routed"]["lost"] == 1
