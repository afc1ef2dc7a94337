"""The broker is stopped in the middle of a load and started again: every webhook intake
accepted (202) reaches ``cs.messages.v1`` once the broker is back, counted by event id;
none is missing and no event id makes two messages.

The test runs its own Tansu broker (others share the session broker). Tansu keeps topics
in memory only, so records the old broker had acknowledged vanish with it: the test reads
them before stopping it. To make that count exact, it holds the relay for the moment of
the stop (publishing fails as it would against a dead broker), lets its reader catch up
with every row the relay had already published (rows gone from the outbox), then stops
the broker while the load goes on, restarts it, recreates the topics and releases the
relay, which publishes the backlog from PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest

from services.intake.settings import IntakeSettings
from shared.kafka import ensure_topics
from shared.localstack import Broker, free_port
from shared.outbox import Record
from shared.topics import MESSAGES
from tests.helpers import TopicReader, generic_body, serving, signed, uid, wait_ready

pytestmark = pytest.mark.integration


def metric_values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def until(pred: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = pred()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def test_broker_restart_mid_load_loses_and_doubles_nothing(
    service_env, monkeypatch, own_dsn, own_pool
):
    pool = own_pool  # its relay records the restart's loss: a database of its own
    monkeypatch.setenv("DATABASE_URL", own_dsn)
    from services.intake.app import build

    broker = Broker(port=free_port())
    broker.start()
    await ensure_topics(broker.bootstrap)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    app = build(IntakeSettings(max_loop_lag_seconds=60))  # this test is about durability
    relay = app.state.runtime.relay
    gate = asyncio.Event()
    gate.set()
    real_publish = relay._publish

    async def gated(records: Sequence[Record]) -> Any:
        if not gate.is_set():
            raise ConnectionError("relay held by the test around the broker stop")
        return await real_publish(records)

    relay._publish = gated
    shop = uid("shop")
    accepted: dict[str, str] = {}  # event id -> message id
    refused: list[int] = []
    seen: dict[str, set[str]] = defaultdict(set)  # event id -> message ids seen on the topic

    def collect(reader: TopicReader) -> None:
        for e in reader.seen:
            if e.get("shop_id") == shop:
                seen[e["source_event_id"]].add(e["message_id"])

    async def load(stop: asyncio.Event, url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:

            async def one() -> None:
                body = generic_body(shop_id=shop)
                raw, headers = signed(body)
                r = await c.post("/v1/webhooks/generic", content=raw, headers=headers)
                if r.status_code == 202:
                    accepted[body["event_id"]] = r.json()["message_id"]
                else:
                    refused.append(r.status_code)

            while not stop.is_set():
                await asyncio.gather(*(one() for _ in range(8)))

    async def in_outbox(message_ids: list[str]) -> set[str]:
        """The events not yet published: above the relay's cursor in intake's log."""
        rows = await pool.fetch(
            "SELECT e.message_id FROM intake_events e, outbox_log_cursor c"
            " WHERE c.producer = 'intake' AND (e.xid, e.seq) > (c.xid, c.seq)"
            " AND e.message_id = ANY($1::text[])",
            message_ids,
        )
        return {r["message_id"] for r in rows}

    try:
        async with serving(app) as url:
            await wait_ready(url)
            stop = asyncio.Event()
            loader = asyncio.create_task(load(stop, url))
            try:
                async with TopicReader(broker.bootstrap, MESSAGES.name) as before:
                    await until(lambda: len(accepted) >= 150, 30, "150 accepted before the stop")
                    gate.clear()
                    await until(
                        lambda: (relay.last_error or "").startswith("publish"), 30, "relay held"
                    )
                    snapshot = dict(accepted)
                    pending = await in_outbox(list(snapshot.values()))
                    published = {e for e, m in snapshot.items() if m not in pending}
                    await before.wait_for(
                        lambda e: e.get("shop_id") == shop and e["source_event_id"] in published,
                        timeout=30,
                        count=len(published),
                    )
                    collect(before)
                # off the loop: a blocking stop (up to 10 s) would stall the in-process
                # server under the load's keep-alive connections (httpx.ReadError)
                await asyncio.to_thread(broker.stop)  # mid-load: requests keep coming
                n = len(accepted)
                await until(lambda: len(accepted) >= n + 150, 30, "accepting while broker down")
                # The backlog and its age are visible while the broker is down.
                async with httpx.AsyncClient(base_url=url) as c:

                    async def backlog_shown() -> bool:
                        m = metric_values((await c.get("/metrics")).text)
                        return (
                            m.get('ticketflow_outbox_backlog{service="intake"}', 0) > 0
                            and m.get('ticketflow_outbox_oldest_age_seconds{service="intake"}', 0)
                            > 0
                        )

                    await until(backlog_shown, 30, "backlog gauges updated")
                await asyncio.to_thread(broker.start)
                await ensure_topics(broker.bootstrap)
                gate.set()
                n = len(accepted)
                await until(lambda: len(accepted) >= n + 150, 30, "accepting after the restart")
            finally:
                stop.set()
                await loader
            async with TopicReader(broker.bootstrap, MESSAGES.name) as after:
                missing = set(accepted) - set(seen)
                await after.wait_for(
                    lambda e: e.get("shop_id") == shop and e["source_event_id"] in missing,
                    timeout=60,
                    count=len(missing),
                )
                await after.drain(0.5)
                collect(after)
            async with httpx.AsyncClient(base_url=url) as c:
                m = metric_values((await c.get("/metrics")).text)
            key = 'ticketflow_outbox_published_total{service="intake",topic="cs.messages.v1"}'
            assert m[key] >= len(accepted) - len(published)
    finally:
        with contextlib.suppress(Exception):
            broker.stop()

    assert not refused, f"intake refused webhooks while the broker was down: {refused[:5]}"
    assert len(accepted) >= 450
    assert set(seen) >= set(accepted), f"missing: {sorted(set(accepted) - set(seen))[:5]}"
    doubled = {e: m for e, m in seen.items() if len(m) != 1}
    assert not doubled, f"event ids that made two messages: {doubled}"
    assert all(seen[e] == {m} for e, m in accepted.items())
    stored = await pool.fetchval(
        "SELECT count(*) FROM intake_events WHERE event->>'shop_id' = $1", shop
    )
    assert stored == len(accepted)
