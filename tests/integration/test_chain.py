"""The four services in one process, on real ports, against the real broker and database:
a signed webhook in, a routed event out, a breach, and a signed notification received."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from tests.helpers import TopicReader, generic_body, serving, signed, uid, wait_ready
from tools.inbox import Inbox

pytestmark = pytest.mark.integration


async def test_webhook_to_routed_to_breach_to_notification(service_env, monkeypatch):
    secret = b"receiver-secret"
    receiver = Inbox(secret)
    async with serving(receiver.app()) as rx_url:
        monkeypatch.setenv("SLA_WATCH_FIRST_RESPONSE_SECONDS", "2")
        monkeypatch.setenv("NOTIFIER_GENERIC_WEBHOOK_URL", rx_url + "/hook")
        monkeypatch.setenv("NOTIFIER_GENERIC_WEBHOOK_SECRET", secret.decode())
        from services.intake.app import build as intake
        from services.notifier.app import build as notifier
        from services.router.app import build as router
        from services.sla_watch.app import build as sla_watch

        async with (
            serving(intake()) as intake_url,
            serving(router()) as router_url,
            serving(sla_watch()) as sla_url,
            serving(notifier()) as notifier_url,
        ):
            for u in (intake_url, router_url, sla_url, notifier_url):
                await wait_ready(u)
            body = generic_body(text="收到的杯子是碎的，要求退款！我要投诉到12315")
            raw, headers = signed(body)
            # An L2 agent with the skills this complaint needs (offline again at the end,
            # so that no later test's ticket goes to it).
            agent = f"{router_url}/v1/admin/agents/{uid('l2')}"
            l2 = {"tier": "L2", "skills": ["complaints", "zh"], "capacity": 1000}
            async with httpx.AsyncClient() as client:
                r = await client.put(agent, json={**l2, "presence": "online"})
                assert r.status_code == 200, r.text
            async with (
                TopicReader(service_env.bootstrap, "cs.tickets.routed.v1") as routed,
                TopicReader(service_env.bootstrap, "cs.sla.v1") as sla,
                httpx.AsyncClient() as client,
            ):
                sent = datetime.fromisoformat(body["occurred_at"]).timestamp()
                r = await client.post(
                    intake_url + "/v1/webhooks/generic", content=raw, headers=headers
                )
                assert r.status_code == 202, r.text
                ticket_id = r.json()["ticket_id"]
                [decision] = await routed.wait_for(lambda e: e["ticket_id"] == ticket_id)
                assert decision["message_event_id"] == body["event_id"]
                assert decision["tier"] == "L2"
                assert decision["priority"] == "urgent"
                assert decision["reasons"]
                assert decision["correlation_id"] == r.json()["message_id"]
                assert decision["agent_id"] is not None

                [breach] = await sla.wait_for(
                    lambda e: e["ticket_id"] == ticket_id and e["kind"] == "breached", timeout=15
                )
                assert breach["clock"] == "first_response"
                note = await receiver.wait(
                    lambda x: (
                        x.body["ticket_id"] == ticket_id
                        and x.body["reason"] == "first_response_breached"
                    ),
                    timeout=15,
                )
                assert note.signature_ok
                assert note.headers["x-escalation-id"] == note.body["escalation_id"]
                assert 2 <= note.at - sent < 6  # the shortened 2 s limit, give or take
                # The breach's escalation names who holds the ticket, as routed, in its
                # fields and in the text second line reads.
                for field in ("agent_id", "customer_ref"):
                    assert note.body[field] == decision[field], field
                assert decision["agent_id"] in note.body["text"]
                # No personal data left intake.
                assert "13800138000" not in str(note.body) and "张三" not in str(note.body)

                # The redelivered webhook is acknowledged as a duplicate and routes nothing.
                r2 = await client.post(
                    intake_url + "/v1/webhooks/generic", content=raw, headers=headers
                )
                assert r2.status_code == 200 and r2.json()["status"] == "duplicate"
                seen = await routed.drain(1.5)
                assert sum(1 for e in seen if e["ticket_id"] == ticket_id) == 1
                r = await client.patch(agent, json={"presence": "offline"})
                assert r.status_code == 200, r.text

            async with httpx.AsyncClient() as client:
                m = (await client.get(intake_url + "/metrics")).text
            assert 'intake_webhooks_total{outcome="accepted",source="generic"}' in m
            assert "sla_breaches_total" in m and "notifier_deliveries_total" in m
