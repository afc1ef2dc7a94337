"""The local pager inbox (tools/inbox.py) and how the local stack wires it to the notifier."""

from __future__ import annotations

import time

import httpx
import orjson

from shared.localstack import LocalStack
from shared.signing import signed_headers
from tools.inbox import Inbox, summary

SECRET = b"inbox-test-secret"
BODY = {
    "kind": "escalation",
    "level": 1,
    "reason": "first_response_breached",
    "ticket_id": "t-1",
    "priority": "urgent",
    "tier": "L2",
    "category": "complaint",
    "agent_id": "agent-7",
    "customer_ref": "cust-***89",
    "links": {"ack": "http://127.0.0.1:8083/v1/ack/esc-1?sig=x"},
}


def _client(inbox: Inbox) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(inbox.app()), base_url="http://inbox")


async def _post(client: httpx.AsyncClient, body: bytes, secret: bytes = SECRET) -> int:
    headers = {"Content-Type": "application/json", **signed_headers(secret, body, time.time())}
    return (await client.post("/hook", content=body, headers=headers)).status_code


async def test_signed_notification_is_accepted_and_listed_newest_first():
    inbox = Inbox(SECRET)
    async with _client(inbox) as client:
        assert await _post(client, orjson.dumps(BODY)) == 200
        assert await _post(client, orjson.dumps(BODY | {"ticket_id": "t-2"})) == 200
        listed = (await client.get("/v1/received")).json()
    assert [n["body"]["ticket_id"] for n in listed] == ["t-2", "t-1"]
    assert all(n["signature_ok"] for n in listed)


async def test_bad_signature_is_refused_but_recorded():
    inbox = Inbox(SECRET)
    async with _client(inbox) as client:
        assert await _post(client, orjson.dumps(BODY), secret=b"someone-else") == 401
    [got] = inbox.received
    assert got.signature_ok is False
    assert "BAD SIGNATURE" in summary(got)


async def test_not_json_is_a_400_and_fail_first_answers_503():
    inbox = Inbox(SECRET, fail_first=1)
    async with _client(inbox) as client:
        assert await _post(client, orjson.dumps(BODY)) == 503
        assert await _post(client, b"{not json") == 400
        assert await _post(client, orjson.dumps(BODY)) == 200
    assert len(inbox.received) == 1


async def test_console_line_names_the_ticket_and_no_customer_reference():
    inbox = Inbox(SECRET)
    async with _client(inbox) as client:
        await _post(client, orjson.dumps(BODY))
    line = summary(inbox.received[0])
    assert "first_response_breached" in line and "t-1" in line and "urgent/L2" in line
    assert "ack: http://127.0.0.1:8083/v1/ack/esc-1?sig=x" in line
    assert "cust" not in line


def test_local_stack_points_the_notifier_at_its_inbox_unless_a_receiver_is_named(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("NOTIFIER_GENERIC_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("NOTIFIER_ROUTES_FILE", raising=False)
    stack = LocalStack(tmp_path, inbox_port=18084)
    assert stack.env()["NOTIFIER_GENERIC_WEBHOOK_URL"] == "http://127.0.0.1:18084/hook"
    assert "NOTIFIER_GENERIC_WEBHOOK_URL" not in LocalStack(tmp_path).env()
    own = LocalStack(tmp_path, inbox_port=18084, extra_env={"NOTIFIER_ROUTES_FILE": "r.yaml"})
    assert not own.inbox_wanted(own.env())
    assert "NOTIFIER_GENERIC_WEBHOOK_URL" not in own.env()
