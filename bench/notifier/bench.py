"""Escalation event to first delivery attempt, not rate limited.

Starts its own embedded PostgreSQL and Tansu broker on free ports, the notifier as a
separate process (``python -m services.notifier``) whose generic webhook points at a
receiver in this process, then publishes escalations at a steady rate and measures, for
each, the receiver's arrival time minus the event's ``occurred_at`` (the first attempt
has reached the receiver by then, so this bounds event-to-first-attempt from above).

Baseline in the same run: the same rate through the broker alone (produce, consumed by a
plain aiokafka group consumer), i.e. the Kafka hop every design pays.

    python bench/notifier/bench.py [--rate 50] [--count 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from shared.db import migrate  # noqa: E402
from shared.events import EscalationEvent, EscalationReason, Priority, dump  # noqa: E402
from shared.localstack import Broker, Postgres, _die_with_parent, free_port  # noqa: E402

SECRET = "bench-secret"  # noqa: S105


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def escalation(i: int) -> EscalationEvent:
    return EscalationEvent(
        correlation_id=f"bench-{i}",
        producer="bench",
        escalation_id=f"esc-bench-{uuid.uuid4()}",
        ticket_id=f"tkt-bench-{i}",
        conversation_id=f"conv-{i}",
        reason=EscalationReason.first_response_breached,
        priority=Priority.urgent,
        waiting_seconds=31.0,
        lateness_seconds=1.0,
    )


async def paced(rate: float, count: int, send: Any) -> None:
    t0 = time.perf_counter()
    for i in range(count):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)


async def baseline(bootstrap: str, rate: float, count: int) -> list[float]:
    topic = "cs.escalations.v1"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4()}",
        auto_offset_reset="latest",
        fetch_max_wait_ms=50,  # as the notifier's escalation consumer
    )
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)
    for tp in consumer.assignment():
        await consumer.seek_to_end(tp)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    marker = f"base-{uuid.uuid4()}"
    lat: list[float] = []

    async def read() -> None:
        while len(lat) < count:
            r = await consumer.getone()
            now = time.time()
            v = json.loads(r.value)
            if v.get("producer") == marker:
                lat.append(now - datetime.fromisoformat(v["occurred_at"]).timestamp())

    async def send(i: int) -> None:
        e = escalation(i).model_copy(
            update={
                "producer": marker,
                "occurred_at": datetime.now(UTC),
                "escalation_id": f"esc-base-{uuid.uuid4()}",
            }
        )
        await producer.send(topic, dump(e), key=e.ticket_id.encode())

    reader = asyncio.create_task(read())
    await paced(rate, count, send)
    await asyncio.wait_for(reader, 60)
    await producer.stop()
    await consumer.stop()
    return lat


async def run(rate: float, count: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-notifier-"))
    pg = Postgres(tmp / "pg", port=free_port(), log_file=tmp / "pg.log")
    broker = Broker(port=free_port(), log_file=tmp / "broker.log")
    proc: subprocess.Popen[bytes] | None = None
    arrivals: dict[str, float] = {}
    done = asyncio.Event()

    async def hook(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        if not body["escalation_id"].startswith("esc-bench-"):
            return JSONResponse({"ok": True})  # the baseline's records, read by the notifier
        arrivals.setdefault(
            body["escalation_id"],
            time.time() - datetime.fromisoformat(body["occurred_at"]).timestamp(),
        )
        if len(arrivals) >= count:
            done.set()
        return JSONResponse({"ok": True})

    rx_port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hook", hook, methods=["POST"])]),
            host="127.0.0.1",
            port=rx_port,
            log_config=None,
            access_log=False,
        )
    )
    rx_task = asyncio.create_task(server.serve())
    try:
        pg.start()
        broker.start()
        await migrate(pg.dsn)
        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "DATABASE_URL": pg.dsn,
            "TICKETFLOW_LOCAL_STACK": "true",
            "NOTIFIER_HTTP_PORT": str(port),
            "NOTIFIER_GENERIC_WEBHOOK_URL": f"http://127.0.0.1:{rx_port}/hook",
            "NOTIFIER_GENERIC_WEBHOOK_SECRET": SECRET,
            "NOTIFIER_GROUP_ID": f"bench-notifier-{uuid.uuid4()}",
            "LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "services.notifier"],
            cwd=ROOT,
            env=env,
            preexec_fn=_die_with_parent,
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "notifier.log").open("wb"),
        )
        async with httpx.AsyncClient() as c:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit("notifier not ready")
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()

        async def send(i: int) -> None:
            e = escalation(i).model_copy(update={"occurred_at": datetime.now(UTC)})
            await producer.send("cs.escalations.v1", dump(e), key=e.ticket_id.encode())

        await paced(rate, count, send)
        await asyncio.wait_for(done.wait(), 120)
        await producer.stop()
        lat = list(arrivals.values())
        proc.terminate()  # the notifier would read the baseline's records too
        proc.wait(20)
        base = await baseline(broker.bootstrap, rate, count)
        ms = 1000.0
        print(
            f"notifier bench: {count} escalations at {rate:g}/s, not rate limited "
            "(2 shared cores: other engineers' work adds noise)"
        )
        print(
            f"  kafka hop alone  p50 {pct(base, 50) * ms:7.1f} ms  p99 {pct(base, 99) * ms:7.1f} ms"
        )
        print(
            f"  event->delivered p50 {pct(lat, 50) * ms:7.1f} ms  p99 {pct(lat, 99) * ms:7.1f} ms"
            f"  max {max(lat) * ms:7.1f} ms"
        )
        print(
            f"  ratio p99 notifier / kafka hop: {pct(lat, 99) / max(pct(base, 99), 1e-9):.1f}x;"
            f" target p99 <= 200 ms: {'met' if pct(lat, 99) <= 0.2 else 'NOT met'}"
        )
        from tools.bench_summary import write_result

        write_result(
            "notifier",
            {"p50 ms": pct(lat, 50) * ms, "p99 ms": pct(lat, 99) * ms, "max ms": max(lat) * ms},
            {"kafka hop p50 ms": pct(base, 50) * ms, "kafka hop p99 ms": pct(base, 99) * ms},
            "event -> delivered p99 <= 200 ms",
        )
    finally:
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(rx_task, 10)
        broker.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--count", type=int, default=1000)
    a = ap.parse_args()
    asyncio.run(run(a.rate, a.count))


if __name__ == "__main__":
    main()
