"""The stack as users run it: PostgreSQL, the broker and the four services as separate
processes (the same supervisor as `make run`), on free ports."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from shared.localstack import SERVICES, LocalStack, free_port
from tests.helpers import TopicReader, generic_body, signed

pytestmark = pytest.mark.e2e

CONTRACT_METRICS = {
    "intake": ["intake_webhooks_total"],
    "router": ["router_decisions_total", "router_decision_seconds"],
    "sla_watch": [
        "sla_breaches_total",
        "sla_open_clocks",
        "sla_breach_lateness_seconds",
        "sla_first_response_seconds",
    ],
    "notifier": ["notifier_deliveries_total", "notifier_delivery_seconds"],
}


async def _paged(
    client: httpx.AsyncClient, inbox_url: str, ticket: str, timeout: float
) -> dict[str, Any]:
    """The pager inbox's record of the notification about ``ticket`` (polled over HTTP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for note in (await client.get(inbox_url + "/v1/received")).json():
            if note["body"].get("ticket_id") == ticket:
                return dict(note)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no notification about {ticket} reached the pager inbox")


async def test_webhook_through_four_processes_to_a_breach_notification(tmp_path):
    limit = 4.0
    # The stack's own pager inbox receives the notification, as in `make run`.
    stack = LocalStack(
        tmp_path,
        pg_port=free_port(),
        kafka_port=free_port(),
        service_ports={name: free_port() for name, _, _ in SERVICES},
        extra_env={"SLA_WATCH_FIRST_RESPONSE_SECONDS": str(limit)},
        inbox_port=free_port(),
    )
    try:
        t0 = time.monotonic()
        await asyncio.to_thread(stack.start_infra)
        stack.start_services()
        await asyncio.to_thread(stack.wait_ready, 60)
        assert time.monotonic() - t0 < 60
        intake = stack.services["intake"].url
        async with (
            TopicReader(stack.broker.bootstrap, "cs.tickets.routed.v1") as routed,
            TopicReader(stack.broker.bootstrap, "cs.sla.v1") as sla,
            httpx.AsyncClient() as client,
        ):
            # An unanswered message: routed at once, breached at the limit, notified.
            body = generic_body(text="I want a refund, the parcel never arrived")
            raw, headers = signed(body)
            sent = datetime.fromisoformat(body["occurred_at"]).timestamp()
            r = await client.post(intake + "/v1/webhooks/generic", content=raw, headers=headers)
            assert r.status_code == 202, r.text
            ticket = r.json()["ticket_id"]
            [decision] = await routed.wait_for(lambda e: e["ticket_id"] == ticket)
            assert decision["message_event_id"] == body["event_id"]

            # An answered one: the agent's reply stops the clock, no breach.
            conv = body["conversation_id"] + "-answered"
            b2 = generic_body(conversation_id=conv)
            raw2, h2 = signed(b2)
            r2 = await client.post(intake + "/v1/webhooks/generic", content=raw2, headers=h2)
            ticket2 = r2.json()["ticket_id"]
            reply = generic_body(
                conversation_id=conv, author={"role": "agent", "id": "a1"}, text="亲，有货的哦"
            )
            raw3, h3 = signed(reply)
            assert (
                await client.post(intake + "/v1/webhooks/generic", content=raw3, headers=h3)
            ).status_code == 202
            [met] = await sla.wait_for(lambda e: e["ticket_id"] == ticket2 and e["kind"] == "met")
            assert met["clock"] == "first_response"

            [breach] = await sla.wait_for(
                lambda e: e["ticket_id"] == ticket and e["kind"] == "breached", timeout=30
            )
            note = await _paged(client, stack.inbox_url, ticket, timeout=15)
            assert note["signature_ok"]
            assert note["body"]["reason"] == "first_response_breached"
            # The contract: the breach comes at the limit, within a second.
            late = note["received_at"] - sent
            assert limit - 1 <= late <= limit + 1, late
            assert breach["lateness_seconds"] < 1
            assert not any(
                e["ticket_id"] == ticket2 and e["kind"] == "breached" for e in await sla.drain(1.0)
            )

            for name, names in CONTRACT_METRICS.items():
                text = (await client.get(stack.services[name].url + "/metrics")).text
                for metric in names:
                    assert metric in text, f"{name} does not export {metric}"
            m = (await client.get(intake + "/metrics")).text
            assert 'intake_webhooks_total{outcome="accepted",source="generic"} 3.0' in m

        # Graceful shutdown: on SIGTERM each service closes its consumers, relay and pool
        # (uvicorn re-raises the signal after a clean shutdown, hence -SIGTERM).
        for svc in stack.services.values():
            assert svc.proc is not None
            svc.proc.send_signal(signal.SIGTERM)
        for svc in stack.services.values():
            assert svc.proc is not None
            code = await asyncio.to_thread(svc.proc.wait, 30)
            assert code in (0, -signal.SIGTERM), (svc.name, code)
            log = svc.log_file.read_text()
            assert '"service stopped"' in log, svc.name
    finally:
        await asyncio.to_thread(stack.stop)
