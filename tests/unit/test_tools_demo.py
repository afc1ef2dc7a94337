from __future__ import annotations

import json
import random
import time

from services.intake.adapters.generic import GenericAdapter
from services.intake.settings import DEV_SECRET
from shared.signing import signed_headers
from tools.demo import State, agent_event, customer_message, render


def test_generated_messages_are_valid_signed_generic_webhooks():
    rng = random.Random(1)
    adapter = GenericAdapter([DEV_SECRET.encode()])
    texts = set()
    for i in range(60):
        body = customer_message(rng, f"conv-{i}", "shop-1")
        raw = json.dumps(body, ensure_ascii=False).encode()
        headers = {
            k.lower(): v for k, v in signed_headers(DEV_SECRET.encode(), raw, time.time()).items()
        }
        adapter.verify(headers, raw, time.time())
        [inbound] = adapter.parse(raw, headers)
        assert inbound.author_role.value == "customer"
        texts.add(inbound.text)
    assert any(t and t.isascii() for t in texts) and any(t and not t.isascii() for t in texts)
    reply = agent_event("conv-1", "shop-1", "message.created", "亲，马上为您查询哦")
    [inbound] = adapter.parse(json.dumps(reply, ensure_ascii=False).encode(), {})
    assert inbound.author_role.value == "agent"
    [resolved] = adapter.parse(
        json.dumps(agent_event("conv-1", "shop-1", "ticket.resolved", None)).encode(), {}
    )
    assert resolved.kind.value == "ticket.resolved"


def test_the_view_renders_counts():
    from rich.console import Console

    state = State(sent=3)
    state.routed["L2"] += 2
    state.sla["first_response:breached"] += 1
    state.queues = {"L1": {"depth": 4, "oldest_seconds": 12.5}}
    console = Console(width=140, record=True)
    console.print(render(state, time.monotonic()))
    out = console.export_text()
    assert "0/0/2" in out and "0/1" in out and "12.5" in out
