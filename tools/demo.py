"""`make demo`: realistic customer traffic, simulated agents, and a live terminal view.

Against a running local stack (`make run`): customers in Chinese and English write from
several shops and channels through signed generic webhooks; simulated agents answer most of
them at human speed (some too slowly, so first-response clocks breach) and resolve them; the
view reads the Kafka topics and the router's admin API and refreshes in place.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from services.intake.settings import DEV_SECRET
from shared.signing import signed_headers

# (text, vip level) per kind of customer; written to look like real chats.
MESSAGES: tuple[tuple[str, int], ...] = (
    ("亲，在吗？这款连衣裙M码还有货吗", 0),
    ("请问满300减50的优惠还能用吗", 0),
    ("我的订单怎么还没发货啊，都三天了", 0),
    ("快递显示签收了但我根本没收到！！", 1),
    ("物流一直不更新，麻烦帮我查一下", 0),
    ("收到的杯子是碎的，要求退款！", 0),
    ("衣服有个破洞，质量太差了，我要退货", 2),
    ("发票抬头开错了，能重新开一张吗", 0),
    ("再不处理我就投诉到12315，还要给差评", 3),
    ("充电器用了一天就冒烟了，差点起火，太危险了", 4),
    ("Hi, is the blue one still in stock in size 42?", 0),
    ("Where is my order? It was supposed to arrive yesterday", 0),
    ("I want a refund, the item arrived damaged", 1),
    ("Can you send me the invoice for my last order please", 0),
    ("This is unacceptable, I will contact my lawyer and file a chargeback", 5),
)
REPLIES = ("亲，马上为您查询哦", "您好，已经为您处理", "Sorry for the trouble, checking now")


@dataclass
class State:
    sent: int = 0
    refused: int = 0
    replies: int = 0
    resolved: int = 0
    routed: Counter[str] = field(default_factory=Counter)
    priorities: Counter[str] = field(default_factory=Counter)
    sla: Counter[str] = field(default_factory=Counter)
    escalations: Counter[str] = field(default_factory=Counter)
    assigned: int = 0
    queues: dict[str, Any] = field(default_factory=dict)
    recent: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=8))


def customer_message(rng: random.Random, conversation: str, shop: str) -> dict[str, Any]:
    text, vip = rng.choice(MESSAGES)
    return {
        "event_id": f"demo-{uuid.uuid4().hex[:12]}",
        "type": "message.created",
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "shop_id": shop,
        "channel": rng.choice(["chat", "chat", "app", "email", "social"]),
        "conversation_id": conversation,
        "customer": {"id": f"cust-{rng.randint(1, 500)}", "vip_level": vip},
        "author": {"role": "customer", "id": "c"},
        "text": text,
        "order": {"id": f"o-{rng.randint(10000, 99999)}", "amount": rng.choice([59, 299, 1299])},
    }


def agent_event(conversation: str, shop: str, kind: str, text: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"demo-{uuid.uuid4().hex[:12]}",
        "type": kind,
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "shop_id": shop,
        "channel": "chat",
        "conversation_id": conversation,
        "author": {"role": "agent", "id": "demo-agent"},
    }
    if text:
        body["text"] = text
    return body


class Simulator:
    def __init__(self, intake: str, secret: bytes, state: State, seed: int = 11) -> None:
        self.intake = intake.rstrip("/")
        self.secret = secret
        self.state = state
        self.rng = random.Random(seed)
        self.client = httpx.AsyncClient(timeout=10)
        self.tasks: set[asyncio.Task[None]] = set()

    async def post(self, body: dict[str, Any]) -> int:
        raw = json.dumps(body, ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            **signed_headers(self.secret, raw, time.time()),
        }
        r = await self.client.post(
            f"{self.intake}/v1/webhooks/generic", content=raw, headers=headers
        )
        return r.status_code

    async def customer(self) -> None:
        conv, shop = f"demo-{uuid.uuid4().hex[:8]}", self.rng.choice(["shop-1", "shop-2", "shop-3"])
        if await self.post(customer_message(self.rng, conv, shop)) in (200, 202):
            self.state.sent += 1
        else:
            self.state.refused += 1
            return
        if self.rng.random() < 0.75:  # an agent answers; a third of them too late
            delay = (
                self.rng.uniform(2, 25) if self.rng.random() < 0.67 else self.rng.uniform(31, 45)
            )
            task = asyncio.create_task(self.agent(conv, shop, delay))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def agent(self, conv: str, shop: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if (
            await self.post(agent_event(conv, shop, "message.created", self.rng.choice(REPLIES)))
            < 300
        ):
            self.state.replies += 1
        await asyncio.sleep(self.rng.uniform(5, 20))
        if await self.post(agent_event(conv, shop, "ticket.resolved", None)) < 300:
            self.state.resolved += 1

    async def run(self, rate: float, count: int | None) -> None:
        n = 0
        while count is None or n < count:
            await self.customer()
            n += 1
            await asyncio.sleep(self.rng.expovariate(rate))

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()


async def watch(bootstrap: str, state: State, ready: asyncio.Event) -> None:
    """Follow the topics from their end (no consumer group: the demo changes nothing)."""
    consumer = AIOKafkaConsumer(
        "cs.tickets.routed.v1",
        "cs.sla.v1",
        "cs.escalations.v1",
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=500)  # take the assignment at the current end
        ready.set()
        async for rec in consumer:
            ev = json.loads(rec.value)
            if rec.topic == "cs.tickets.routed.v1":
                if str(ev.get("message_event_id", "")).startswith("demo-"):
                    state.routed[ev["tier"]] += 1
                    state.priorities[ev["priority"]] += 1
                if ev.get("agent_id"):
                    state.assigned += 1
                state.recent.appendleft(
                    (
                        ev["ticket_id"][4:12],
                        ev["category"],
                        ev["priority"],
                        ev["tier"],
                        ev.get("agent_id") or "queued",
                        (ev.get("reasons") or [""])[0][:40],
                    )
                )
            elif rec.topic == "cs.sla.v1":
                state.sla[f"{ev['clock']}:{ev['kind']}"] += 1
            else:
                state.escalations[ev["reason"]] += 1
    finally:
        await consumer.stop()


async def poll_queues(router: str, state: State) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                state.queues = (await client.get(f"{router}/v1/admin/queues")).json()
            await asyncio.sleep(1)


def render(state: State, started: float) -> Group:
    head = Table(title=f"ticketflow demo, {time.monotonic() - started:,.0f} s", expand=True)
    for col in (
        "sent",
        "routed bot/L1/L2",
        "urgent/important/normal",
        "assigned",
        "first response met/breached",
        "escalations",
        "agent replies/resolved",
    ):
        head.add_column(col, justify="center")
    fr = state.sla
    head.add_row(
        str(state.sent),
        f"{state.routed['bot']}/{state.routed['L1']}/{state.routed['L2']}",
        f"{state.priorities['urgent']}/{state.priorities['important']}/{state.priorities['normal']}",
        str(state.assigned),
        f"{fr['first_response:met']}/{fr['first_response:breached']}",
        str(sum(state.escalations.values())),
        f"{state.replies}/{state.resolved}",
    )
    queues = Table(title="waiting for an agent (router admin API)", expand=True)
    for col in ("tier", "waiting", "oldest wait (s)"):
        queues.add_column(col, justify="center")
    for tier, q in sorted(state.queues.items()):
        if isinstance(q, dict):
            queues.add_row(tier, f"{q.get('depth', 0):.0f}", f"{q.get('oldest_seconds', 0):.1f}")
    recent = Table(title="latest routing decisions", expand=True)
    for col in ("ticket", "category", "priority", "tier", "agent", "why"):
        recent.add_column(col)
    for row in state.recent:
        recent.add_row(*row)
    return Group(head, queues, recent)


async def main_async(args: argparse.Namespace) -> int:
    try:
        async with httpx.AsyncClient(timeout=2) as c:
            ok = (await c.get(f"{args.intake}/readyz")).status_code == 200
    except httpx.HTTPError:
        ok = False
    if not ok:
        print(f"intake at {args.intake} is not ready: start `make run` in another terminal first.")
        return 1
    state, ready = State(), asyncio.Event()
    sim = Simulator(args.intake, args.secret.encode(), state)
    watcher = asyncio.create_task(watch(args.kafka, state, ready))
    poller = asyncio.create_task(poll_queues(args.router, state))
    await asyncio.wait_for(ready.wait(), 30)
    started = time.monotonic()
    runner = asyncio.create_task(sim.run(args.rate, args.count))
    try:
        with Live(render(state, started), refresh_per_second=2, screen=False) as live:
            while not runner.done() or (args.count is not None and sim.tasks):
                live.update(render(state, started))
                await asyncio.sleep(0.5)
            live.update(render(state, started))
    finally:
        for t in (runner, watcher, poller):
            t.cancel()
        await asyncio.gather(runner, watcher, poller, return_exceptions=True)
        await sim.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__)
    p.add_argument("--intake", default="http://127.0.0.1:8080")
    p.add_argument("--router", default="http://127.0.0.1:8081")
    p.add_argument("--kafka", default="127.0.0.1:9092")
    p.add_argument("--secret", default=DEV_SECRET, help="the local stack's development secret")
    p.add_argument("--rate", type=float, default=2.0, help="customer messages per second")
    p.add_argument("--count", type=int, default=None, help="stop after this many (default: Ctrl-C)")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
