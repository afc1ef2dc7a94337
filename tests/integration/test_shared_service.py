"""The service runtime: readiness and start-up order against real dependencies."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from shared.localstack import Broker, free_port
from tests.helpers import TopicReader, generic_body, serving, signed, wait_ready

pytestmark = pytest.mark.integration


async def test_intake_starts_ready_and_accepting_while_the_broker_is_down(
    service_env, own_dsn, monkeypatch, tmp_path
):
    broker = Broker(port=free_port(), log_file=tmp_path / "broker.log")  # not started yet
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    # A database of its own: the broker of its own lacks what earlier tests' intake relays
    # kept, and the loss this relay would record there is not the session broker's.
    monkeypatch.setenv("DATABASE_URL", own_dsn)
    from services.intake.app import build

    async with serving(build()) as url, httpx.AsyncClient() as client:
        await wait_ready(url)
        ready = (await client.get(url + "/readyz")).json()
        assert ready["checks"]["database"] is True
        assert ready["checks"]["broker"] is False
        body = generic_body()
        raw, headers = signed(body)
        r = await client.post(url + "/v1/webhooks/generic", content=raw, headers=headers)
        assert r.status_code == 202, r.text
        broker.start()
        try:
            async with TopicReader(broker.bootstrap, "cs.messages.v1") as reader:
                [msg] = await reader.wait_for(
                    lambda e: e["source_event_id"] == body["event_id"], timeout=60
                )
            assert msg["ticket_id"] == r.json()["ticket_id"]
        finally:
            broker.stop()


async def test_router_is_not_ready_without_its_broker(service_env, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    from services.router.app import build

    async with serving(build()) as url, httpx.AsyncClient() as client:
        r = await client.get(url + "/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["broker"] is False
        assert (await client.get(url + "/healthz")).status_code == 200


async def test_consumer_groups_join_at_once(service_env):
    """A consumer's start returns only once its group has assigned it partitions (a join
    takes seconds on any broker), so the runtime starts every group's consumer before
    awaiting any: readiness costs one join, not one per group (sla_watch has three)."""
    from shared.kafka import subscriber_options
    from shared.service import Runtime, create_app
    from shared.settings import ServiceSettings
    from shared.topics import ESCALATIONS, MESSAGES, ROUTED

    runtime = Runtime("test-joins", ServiceSettings())
    run = uuid.uuid4().hex[:8]
    for topic in (MESSAGES, ROUTED, ESCALATIONS):

        @runtime.broker.subscriber(
            topic.name, **subscriber_options(f"test-joins-{run}-{topic.name}", runtime.tracker())
        )
        async def ignore(body: Any) -> None:
            return None

    steps: list[tuple[str, int]] = []
    for i, sub in enumerate(runtime.broker.subscribers):
        real = sub.start

        async def start(i: int = i, real: Any = real) -> None:
            steps.append(("join", i))
            await real()
            steps.append(("joined", i))

        sub.start = start
    async with serving(create_app(runtime, title="joins")) as url:
        await wait_ready(url)
    assert len(steps) == 6, steps
    assert [step for step, _ in steps[:3]] == ["join"] * 3, steps
