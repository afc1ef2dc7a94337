"""``python -m services.intake`` as it runs in production: uvicorn worker processes and the
outbox relay in a process of its own. A scrape of either worker counts the webhooks both
of them accepted and the rows the relay published (prometheus_client multiprocess mode);
the workers' /readyz says whether the relay leads; the relay process is started again
when it dies, stops with its parent, and dies with it. Each worker listens on a socket of
its own (SO_REUSEPORT), so new connections go to both."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from shared.localstack import ServiceProc, free_port
from tests.helpers import (
    OutboxNotifications,
    TopicReader,
    generic_body,
    signed,
)

pytestmark = pytest.mark.integration

N = 40


def counter(text: str, pattern: str) -> float:
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


def accepted(text: str) -> float:
    return counter(text, r'^intake_webhooks_total\{outcome="accepted",source="generic"\} (\S+)$')


def published(text: str) -> float:
    name = r'ticketflow_outbox_published_total\{service="intake",topic="cs.messages.v1"\}'
    return counter(text, "^" + name + r" (\S+)$")


def relay_children(parent: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(parent).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if "services.intake.relay" in k.cmdline():
                out.append(k)
        except psutil.NoSuchProcess:
            continue
    return out


def workers(parent: int) -> list[psutil.Process]:
    """uvicorn's worker processes (spawned by multiprocessing) of intake's process."""
    return [
        k
        for k in psutil.Process(parent).children()
        if "multiprocessing.spawn" in " ".join(k.cmdline())
    ]


def listening_sockets(pid: int, port: int) -> set[int]:
    """Inodes of the TCP sockets listening on ``port`` that process ``pid`` holds."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                held.add(int(link[8:-1]))
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()  # local address (ip:port in hex), state (0A: LISTEN), inode
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                listening.add(int(f[9]))
    return held & listening


async def until(pred, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.2)):
        if await asyncio.to_thread(pred):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def intake(infra, tmp_path: Path) -> Iterator[ServiceProc]:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "DATABASE_URL": infra.dsn,
        "TICKETFLOW_LOCAL_STACK": "true",
        "INTAKE_WORKERS": "2",
        "INTAKE_HTTP_PORT": str(port),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    svc = ServiceProc("intake", port, env, tmp_path / "intake.log")
    svc.start()
    assert svc.proc is not None
    group = svc.proc.pid  # its own session: the workers and the relay are in its group
    try:
        yield svc
    finally:
        svc.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # workers a kill -9 of their parent left


async def wait_ready(svc: ServiceProc) -> None:
    assert svc.proc is not None

    def ready() -> bool:
        assert svc.proc is not None and svc.proc.poll() is None, "intake exited"
        return svc.ready()

    await until(ready, "intake ready")


async def post_many(svc: ServiceProc, n: int) -> list[str]:
    bodies = [generic_body() for _ in range(n)]

    async def post(body: dict[str, object]) -> int:
        raw, headers = signed(body)
        async with httpx.AsyncClient(base_url=svc.url) as c:  # a new connection each
            r = await c.post("/v1/webhooks/generic", content=raw, headers=headers)
            return r.status_code

    assert await asyncio.gather(*(post(b) for b in bodies)) == [202] * n
    return [str(b["event_id"]) for b in bodies]


async def scrape(svc: ServiceProc, path: str = "/metrics") -> httpx.Response:
    async with httpx.AsyncClient(base_url=svc.url) as c:  # a new connection: any worker
        return await c.get(path)


async def test_every_worker_reports_the_sum_and_the_relay(infra, pool, intake: ServiceProc) -> None:
    await wait_ready(intake)
    # The relay process polls intake's log (intake_events): intake's commits write no
    # outbox row and send no NOTIFY, and still every event reaches the topic.
    before = published((await scrape(intake)).text)
    async with (
        OutboxNotifications(infra.dsn) as notifications,
        TopicReader(infra.bootstrap, "cs.messages.v1") as reader,
    ):
        ids = set(await post_many(intake, N))
        await reader.wait_for(lambda r: r["source_event_id"] in ids, timeout=60, count=N)
        assert "intake" not in await notifications.sent_before_now(pool)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE producer = 'intake'") == 0
    # Each worker adds its counts to the shared files a few times a second (Tally).
    for _ in range(50):
        if accepted((await scrape(intake)).text) == N:
            break
        await asyncio.sleep(0.1)
    seen, sent = [], []
    for _ in range(8):
        text = (await scrape(intake)).text
        seen.append(accepted(text))
        sent.append(published(text) - before)
    assert seen == [N] * 8
    # The relay's counter is updated after the broker's acks, which the reader may beat.
    assert all(s >= 0 for s in sent) and max(sent) <= N
    for _ in range(100):
        if published((await scrape(intake)).text) - before == N:
            break
        await asyncio.sleep(0.2)
    assert published((await scrape(intake)).text) - before == N
    for _ in range(4):
        r = await scrape(intake, "/readyz")
        assert r.status_code == 200 and r.json()["checks"]["outbox_relay_leader"] is True
    # Each worker froze its start-up heap once its pool was up, and so did the relay.
    log_text = intake.log_file.read_text(errors="replace")
    assert log_text.count("start-up heap frozen") == 2
    assert log_text.count("frozen_objects") == 1


async def test_relay_process_restarts_stops_and_dies_with_its_parent(
    infra, intake: ServiceProc
) -> None:
    await wait_ready(intake)
    assert intake.proc is not None
    parent = intake.proc.pid
    first = relay_children(parent)
    assert len(first) == 1
    first[0].kill()  # a crash: the parent starts a new relay, which publishes
    await until(
        lambda: any(p.pid != first[0].pid for p in relay_children(parent)), "a new relay process"
    )
    async with TopicReader(infra.bootstrap, "cs.messages.v1") as reader:
        ids = set(await post_many(intake, 5))
        await reader.wait_for(lambda r: r["source_event_id"] in ids, timeout=60, count=5)
    await until(
        lambda: httpx.get(intake.url + "/readyz").json()["checks"]["outbox_relay_leader"],
        "the new relay leads",
    )

    # SIGTERM to intake: the workers stop, then the relay process.
    relay = relay_children(parent)[0]
    intake.stop(signal.SIGTERM)
    assert not relay.is_running() or relay.status() == psutil.STATUS_ZOMBIE


async def test_relay_process_dies_with_a_killed_parent(intake: ServiceProc) -> None:
    await wait_ready(intake)
    assert intake.proc is not None
    relay = relay_children(intake.proc.pid)[0]
    intake.proc.kill()  # kill -9: no shutdown of its own
    intake.proc.wait()
    await until(
        lambda: not relay.is_running() or relay.status() == psutil.STATUS_ZOMBIE,
        "the relay process ends with its parent",
    )


async def test_each_worker_listens_on_its_own_socket_and_gets_connections(
    intake: ServiceProc,
) -> None:
    await wait_ready(intake)
    assert intake.proc is not None
    parent = intake.proc.pid
    # Ready means one worker answers; the other may still be starting (and not yet bound).
    await until(
        lambda: [len(listening_sockets(w.pid, intake.port)) for w in workers(parent)] == [1, 1],
        "both workers listen",
    )
    pair = workers(parent)
    assert len(pair) == 2
    # One socket each (SO_REUSEPORT), none in the parent: not one socket shared by all.
    own = [listening_sockets(w.pid, intake.port) for w in pair]
    assert [len(s) for s in own] == [1, 1] and own[0] != own[1]
    assert listening_sockets(parent, intake.port) == set()

    # 64 fresh connections, each kept open after its request: the kernel hashes them over
    # the two sockets (all 64 on one worker: probability 2**-63).
    clients = [httpx.AsyncClient(base_url=intake.url) for _ in range(64)]
    try:
        answers = await asyncio.gather(*(c.get("/readyz") for c in clients))
        assert [r.status_code for r in answers] == [200] * 64
        held = [
            sum(
                1
                for c in w.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == intake.port
            )
            for w in pair
        ]
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert sum(held) == 64 and min(held) > 0, held
