"""sla_watch as users run it: a real process (`python -m services.sla_watch`) against the
real broker and database. Killed with SIGKILL while clocks are due, restarted: every
clock breaches once (late ones marked late), none twice. Two instances at once, one of
them killed: still one breach per clock."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from shared.events import MessageEvent, dump, utcnow
from shared.localstack import ServiceProc, free_port
from tests.helpers import TopicReader, message_event, uid

pytestmark = pytest.mark.integration

LIMIT = 3.0


def proc(infra, tmp: Path, name: str, group: str, **extra: str) -> ServiceProc:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "DATABASE_URL": infra.dsn,
        "TICKETFLOW_LOCAL_STACK": "true",
        "SLA_WATCH_FIRST_RESPONSE_SECONDS": str(LIMIT),
        "SLA_WATCH_GROUP_ID": group,
        "SLA_WATCH_LOG_FORMAT": "json",
        **extra,
    }
    port = free_port()
    env["SLA_WATCH_HTTP_PORT"] = str(port)
    return ServiceProc("sla_watch", port, env, tmp / f"{name}.log")


async def ready(p: ServiceProc, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(p.ready):
        assert p.proc is not None and p.proc.poll() is None, "the service exited"
        if loop.time() > deadline:
            raise TimeoutError(f"not ready; see {p.log_file}")
        await asyncio.sleep(0.2)


def customer_message(ticket: str) -> MessageEvent:
    return message_event(ticket)


async def send(bootstrap: str, tickets: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for t in tickets:
            await producer.send_and_wait(
                "cs.messages.v1", dump(customer_message(t)), key=t.encode()
            )
    finally:
        await producer.stop()


async def wait_deadlines_passed(pool, tickets: list[str]) -> None:
    """Until every clock of these tickets is past its deadline (a condition, not a sleep)."""
    while True:
        latest = await pool.fetchval(
            "SELECT max(deadline) FROM sla_clocks WHERE ticket_id = ANY($1::text[])", tickets
        )
        if latest is not None and latest + timedelta(seconds=0.5) < utcnow():
            return
        await asyncio.sleep(0.2)


async def test_kill_9_with_clocks_due_during_the_outage_breaches_each_once(infra, pool, tmp_path):
    group = uid("sla-restart")
    svc = proc(infra, tmp_path, "sla-restart", group)
    before = [uid("tkt") for _ in range(15)]  # started, then due while the service is dead
    during = [uid("tkt") for _ in range(10)]  # sent while it is dead
    every = before + during
    svc.start()
    try:
        await ready(svc)
        async with (
            TopicReader(infra.bootstrap, "cs.sla.v1") as sla,
            TopicReader(infra.bootstrap, "cs.escalations.v1") as esc,
        ):
            await send(infra.bootstrap, before)
            await sla.wait_for(
                lambda e: e["ticket_id"] in before and e["kind"] == "started",
                count=len(before),
                timeout=30,
            )
            svc.stop(signal.SIGKILL)  # kill -9: no graceful anything
            await send(infra.bootstrap, during)
            await wait_deadlines_passed(pool, before)
            running = await pool.fetchval(
                "SELECT count(*) FROM sla_clocks WHERE ticket_id = ANY($1::text[])"
                " AND state = 'running'",
                before,
            )
            assert running == len(before)  # they fell due while nothing ran

            svc.start()
            await ready(svc)
            breaches = await sla.wait_for(
                lambda e: e["ticket_id"] in every and e["kind"] == "breached",
                count=len(every),
                timeout=60,
            )
            await esc.wait_for(lambda e: e["ticket_id"] in every, count=len(every), timeout=30)
            await sla.drain(2.0)
            await esc.drain(0.5)
            per_ticket = Counter(
                e["ticket_id"]
                for e in sla.seen
                if e["ticket_id"] in every and e["kind"] == "breached"
            )
            assert set(per_ticket) == set(every)  # zero missed
            assert set(per_ticket.values()) == {1}  # zero duplicated
            started = Counter(
                e["ticket_id"]
                for e in sla.seen
                if e["ticket_id"] in every and e["kind"] == "started"
            )
            assert set(started.values()) == {1}
            escalated = Counter(e["ticket_id"] for e in esc.seen if e.get("ticket_id") in every)
            assert set(escalated) == set(every) and set(escalated.values()) == {1}
            late = [b for b in breaches if b["ticket_id"] in before]
            assert all(b["lateness_seconds"] > 0 for b in late)  # marked late, with how late
    finally:
        svc.stop()


async def test_two_instances_holding_the_same_clocks_one_killed_no_duplicate_breach(
    infra, pool, tmp_path
):
    """a handles the messages; b starts and loads the same running clocks into its own
    heap; both race for them; then a is killed and b fires the rest: one breach each."""
    group = uid("sla-pair")
    first = [uid("tkt") for _ in range(15)]
    second = [uid("tkt") for _ in range(15)]
    tickets = first + second
    a = proc(infra, tmp_path, "sla-a", group, SLA_WATCH_FIRST_RESPONSE_SECONDS="8")
    b = proc(infra, tmp_path, "sla-b", group, SLA_WATCH_FIRST_RESPONSE_SECONDS="8")
    a.start()
    try:
        await ready(a)
        async with TopicReader(infra.bootstrap, "cs.sla.v1") as sla:
            await send(infra.bootstrap, first)
            await sla.wait_for(
                lambda e: e["ticket_id"] in first and e["kind"] == "started",
                count=len(first),
                timeout=30,
            )
            b.start()
            await ready(b)
            await send(infra.bootstrap, second)
            await sla.wait_for(
                lambda e: e["ticket_id"] in second and e["kind"] == "started",
                count=len(second),
                timeout=30,
            )
            await sla.wait_for(
                lambda e: e["ticket_id"] in first and e["kind"] == "breached",
                count=len(first),
                timeout=60,
            )
            a.stop(signal.SIGKILL)  # b must fire a's clocks too
            await sla.wait_for(
                lambda e: e["ticket_id"] in tickets and e["kind"] == "breached",
                count=len(tickets),
                timeout=60,
            )
            await sla.drain(2.0)
            per_ticket = Counter(
                e["ticket_id"]
                for e in sla.seen
                if e["ticket_id"] in tickets and e["kind"] == "breached"
            )
            assert set(per_ticket) == set(tickets)
            assert set(per_ticket.values()) == {1}
    finally:
        a.stop()
        b.stop()
