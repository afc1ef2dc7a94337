"""Open-loop load of signed generic webhooks against a running intake, with its own
embedded PostgreSQL and Tansu broker on free ports, and in the same run the same load
against a bare endpoint (202, no work) and a raw aiokafka produce loop.

Open loop: request i is due at t0 + i/rate whatever happened to the earlier ones, and
its latency counts from that due time (no coordinated omission). The client is a small
HTTP/1.1 keep-alive client on asyncio streams (uvloop), requests signed before the run.
After the intake run it counts downstream: every accepted event id must be on
cs.messages.v1, none twice.

    python bench/intake/bench.py [--rate 4000] [--seconds 60] [--connections 128]
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.localstack import Broker, Postgres, _die_with_parent, free_port  # noqa: E402
from shared.signing import signed_headers  # noqa: E402

SECRET = b"bench-secret"


@dataclass
class Result:
    name: str
    due: int = 0
    ok: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    accepted_ids: list[str] = field(default_factory=list)
    client_cpu: float | None = None  # CPU seconds of the load client over the run

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def errors(self) -> int:
        return self.due - self.ok

    def line(self) -> str:
        other = {k: v for k, v in self.statuses.items() if k not in ("202", "ok")}
        return (
            f"{self.name:<22} {self.rate:>9.0f}/s  p50 {self.pct(0.5):>7.1f} ms"
            f"  p99 {self.pct(0.99):>7.1f} ms  p99.9 {self.pct(0.999):>7.1f} ms"
            f"  ok {self.ok}/{self.due}  errors {self.errors} {dict(other) if other else ''}"
            + (f"  client CPU {self.client_us:.1f} µs/req" if self.client_cpu is not None else "")
        )

    @property
    def client_us(self) -> float:
        """The load client's CPU per request offered, in µs (user + system, whole process:
        the client is all that runs in it during the load)."""
        return (self.client_cpu or 0.0) / max(self.due, 1) * 1e6


def make_bodies(n: int, run: str) -> list[tuple[str, bytes]]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    out = []
    for i in range(n):
        event_id = f"{run}-{i}"
        body = {
            "event_id": event_id,
            "type": "message.created",
            "occurred_at": now,
            "shop_id": "bench-shop",
            "channel": "chat",
            "conversation_id": f"{run}-conv-{i % 5000}",
            "customer": {"id": f"cust-{i % 20000}", "vip_level": i % 4},
            "author": {"role": "customer", "id": f"cust-{i % 20000}"},
            "text": "收到的杯子是碎的，要求退款！订单号 o-991，请尽快处理。",
            "order": {"id": f"o-{i}", "amount": 299.0, "currency": "CNY", "status": "delivered"},
        }
        out.append((event_id, json.dumps(body, ensure_ascii=False).encode()))
    return out


def http_request(path: str, body: bytes) -> bytes:
    h = signed_headers(SECRET, body, time.time())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Timestamp: {h['X-Timestamp']}\r\n"
        f"X-Signature: {h['X-Signature']}\r\n\r\n"
    )
    return head.encode() + body


async def _dispatch(n: int, rate: float, queue: asyncio.Queue[tuple[int, float]]) -> None:
    t0 = time.perf_counter()
    i = 0
    while i < n:
        now = time.perf_counter()
        while i < n and t0 + i / rate <= now:
            queue.put_nowait((i, t0 + i / rate))
            i += 1
        await asyncio.sleep(0.001)


async def http_load(
    name: str,
    port: int,
    path: str,
    bodies: list[tuple[str, bytes]],
    rate: float,
    connections: int,
    drain_timeout: float = 60,
) -> Result:
    reqs = [http_request(path, b) for _, b in bodies]
    res = Result(name, due=len(reqs))
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    done = 0
    all_done = asyncio.Event()

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                i, due = await queue.get()
                try:
                    writer.write(reqs[i])
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = head[9:12].decode()
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    if length:
                        await reader.readexactly(length)
                    res.statuses[status] += 1
                    if status in ("202", "200"):
                        res.ok += 1
                        res.latencies.append(time.perf_counter() - due)
                        if status == "202":
                            res.accepted_ids.append(bodies[i][0])
                except (OSError, asyncio.IncompleteReadError) as exc:
                    res.statuses[type(exc).__name__] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                done += 1
                if done == len(reqs):
                    all_done.set()
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    cpu = time.process_time()
    start = time.perf_counter()
    await _dispatch(len(reqs), rate, queue)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(drain_timeout):
            await all_done.wait()
    res.elapsed = time.perf_counter() - start
    res.client_cpu = time.process_time() - cpu
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    res.statuses["unanswered"] = len(reqs) - done
    return res


async def kafka_load(bootstrap: str, bodies: list[tuple[str, bytes]], rate: float) -> Result:
    from aiokafka import AIOKafkaProducer

    res = Result("raw aiokafka produce", due=len(bodies))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    pending: set[asyncio.Future[object]] = set()
    drained = asyncio.Event()
    finished_sending = asyncio.Event()
    try:
        t0 = time.perf_counter()
        i = 0
        n = len(bodies)
        while i < n:
            now = time.perf_counter()
            while i < n and t0 + i / rate <= now:
                due = t0 + i / rate
                fut = await producer.send("bench.raw", bodies[i][1], key=bodies[i][0].encode())

                def record(f: asyncio.Future[object], due: float = due) -> None:
                    pending.discard(f)
                    if not pending and finished_sending.is_set():
                        drained.set()
                    if f.exception() is None:
                        res.ok += 1
                        res.latencies.append(time.perf_counter() - due)
                    else:
                        res.statuses[type(f.exception()).__name__] += 1

                pending.add(fut)
                fut.add_done_callback(record)
                i += 1
            await asyncio.sleep(0.001)
        await producer.flush()
        if pending:
            await drained.wait()
        res.elapsed = time.perf_counter() - t0
    finally:
        await producer.stop()
    return res


async def count_downstream(bootstrap: str, dsn: str, accepted: list[str]) -> tuple[int, int, int]:
    """(seen, missing, duplicate records) of the accepted event ids on cs.messages.v1."""
    import asyncpg
    from aiokafka import AIOKafkaConsumer

    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            left = await conn.fetchval("SELECT count(*) FROM outbox WHERE producer = 'intake'")
            if left == 0:
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    want = set(accepted)
    per_id: Counter[str] = Counter()
    consumer = AIOKafkaConsumer(
        "cs.messages.v1",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        quiet = 0
        while (quiet < 6 and len(per_id) < len(want)) or quiet < 2:
            batch = await consumer.getmany(timeout_ms=500)
            got = 0
            for records in batch.values():
                for r in records:
                    got += 1
                    per_id[json.loads(r.value)["source_event_id"]] += 1
            quiet = quiet + 1 if got == 0 else 0
    finally:
        await consumer.stop()
    seen = want & set(per_id)
    dup = sum(c - 1 for e, c in per_id.items() if e in want and c > 1)
    return len(seen), len(want - seen), dup


def wrk_run(wrk: str, port: int, bodies: list[tuple[str, bytes]], seconds: float, tmp: Path) -> str:
    """Closed-loop maximum with wrk (C, cheap on CPU): what intake does when the load tool
    does not compete for the cores. Its latencies suffer from coordinated omission; the
    open-loop figures above are the honest ones."""
    path = tmp / "requests.tsv"
    with path.open("wb") as f:
        for _, body in bodies:
            h = signed_headers(SECRET, body, time.time())
            f.write(f"{h['X-Timestamp']}\t{h['X-Signature']}\t".encode() + body + b"\n")
    threads = 2
    env = dict(os.environ, BENCH_REQUESTS=str(path), BENCH_THREADS=str(threads))
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            "-c64",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(Path(__file__).with_name("signed.lua")),
            f"http://127.0.0.1:{port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout + out.stderr


def wait_http(port: int, proc: subprocess.Popen[bytes], path: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
            if r.status_code < 500:
                return
        time.sleep(0.1)
    raise TimeoutError(f"server on {port} not ready")


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/intake/bench.py")
    p.add_argument("--rate", type=float, default=float(os.environ.get("BENCH_RATE", 4000)))
    p.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 60)))
    p.add_argument("--connections", type=int, default=128)
    p.add_argument("--pool", type=int, default=int(os.environ.get("BENCH_DB_POOL", 20)))
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("BENCH_WORKERS", 2)),
        help="intake worker processes (INTAKE_WORKERS)",
    )
    p.add_argument("--wrk-seconds", type=float, default=20)
    p.add_argument("--no-wrk", action="store_true", help="skip the closed-loop wrk run")
    p.add_argument("--profile", help="write a cProfile of intake to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = p.parse_args()
    n = int(args.rate * args.seconds)
    tmp = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    pg = Postgres(tmp / "pgdata", port=free_port(), log_file=tmp / "postgres.log")
    broker = Broker(port=free_port(), log_file=tmp / "broker.log")
    procs: list[subprocess.Popen[bytes]] = []
    print(
        f"bench-intake: {args.rate:.0f}/s open loop for {args.seconds:.0f} s ({n} requests),"
        f" {args.connections} connections; {os.cpu_count()} CPUs, load average"
        f" {os.getloadavg()[0]:.2f} before start (other engineers share this machine)",
        flush=True,
    )
    try:
        from shared.db import migrate
        from shared.kafka import ensure_topics

        pg.start()
        broker.start()
        asyncio.run(ensure_topics(broker.bootstrap))
        asyncio.run(migrate(pg.dsn))
        env = dict(os.environ)
        env.update(
            DATABASE_URL=pg.dsn,
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
            TICKETFLOW_LOCAL_STACK="true",
            INTAKE_SOURCES="generic",
            INTAKE_GENERIC_SECRET=SECRET.decode(),
            LOG_LEVEL="WARNING",
            DB_POOL_MAX=str(args.pool),
            DB_POOL_MIN=str(args.pool),
        )
        results: list[Result] = []

        bare_port = free_port()
        bare = start(
            [sys.executable, str(Path(__file__).with_name("bare.py")), str(bare_port)],
            env,
            tmp / "bare.log",
        )
        procs.append(bare)
        wait_http(bare_port, bare, "/")
        import uvloop

        run = uuid.uuid4().hex[:8]
        bodies = make_bodies(n, f"bare-{run}")
        results.append(
            uvloop.run(
                http_load("bare 202 endpoint", bare_port, "/x", bodies, args.rate, args.connections)
            )
        )
        print(results[-1].line(), flush=True)
        stop(bare)

        results.append(uvloop.run(kafka_load(broker.bootstrap, bodies, args.rate)))
        print(results[-1].line(), flush=True)

        intake_port = free_port()
        env["INTAKE_HTTP_PORT"] = str(intake_port)
        env["INTAKE_WORKERS"] = str(args.workers)
        cmd = [sys.executable, "-m", "services.intake"]
        if args.profile:
            cmd[1:1] = ["-m", "cProfile", "-o", str(args.profile)]
        intake = start(cmd, env, tmp / "intake.log")
        procs.append(intake)
        wait_http(intake_port, intake, "/readyz")
        bodies = make_bodies(n, f"intake-{run}")
        res = uvloop.run(
            http_load(
                "intake (generic)",
                intake_port,
                "/v1/webhooks/generic",
                bodies,
                args.rate,
                args.connections,
            )
        )
        results.append(res)
        print(res.line(), flush=True)
        seen, missing, dup = uvloop.run(
            count_downstream(broker.bootstrap, pg.dsn, res.accepted_ids)
        )
        wrk_report = ""
        wrk = shutil.which("wrk")
        if wrk and not args.no_wrk:
            wrk_bodies = make_bodies(int(8000 * args.wrk_seconds), f"wrk-{run}")
            wrk_report = wrk_run(wrk, intake_port, wrk_bodies, args.wrk_seconds, tmp)
        stop(intake)

        bare_r, kafka_r, intake_r = results
        print()
        print(
            f"downstream: {len(res.accepted_ids)} accepted, {seen} on cs.messages.v1,"
            f" {missing} missing, {dup} duplicate records"
        )
        print(
            f"ratios: intake/bare throughput {intake_r.rate / bare_r.rate:.2f},"
            f" intake/raw-kafka throughput {intake_r.rate / kafka_r.rate:.2f};"
            f" p99 intake {intake_r.pct(0.99):.1f} ms vs bare {bare_r.pct(0.99):.1f} ms"
            f" (x{intake_r.pct(0.99) / max(bare_r.pct(0.99), 1e-9):.1f})"
        )
        if wrk_report:
            print(f"\nclosed-loop maximum with wrk (64 connections, {args.wrk_seconds:.0f} s):")
            keep = ("Requests/sec", "Latency ", "50%", "99%", "Non-2xx", "requests in", "Socket")
            for line in wrk_report.splitlines():
                if any(k in line for k in keep):
                    print("  " + line.strip())
        target = intake_r.rate >= 4000 and intake_r.pct(0.99) <= 50
        print(f"target 4000/s with p99 <= 50 ms: {'met' if target else 'NOT met'}")
        from tools.bench_summary import write_result

        write_result(
            "intake",
            {
                "accepted/s": intake_r.rate,
                "p99 ms": intake_r.pct(0.99),
                "missing": missing,
                "duplicates": dup,
                "load client CPU µs/req": intake_r.client_us,
            },
            {
                "bare 202/s": bare_r.rate,
                "bare p99 ms": bare_r.pct(0.99),
                "raw kafka/s": kafka_r.rate,
                "bare load client CPU µs/req": bare_r.client_us,
            },
            "4000/s with p99 <= 50 ms: " + ("met" if target else "NOT met"),
        )
        return 0 if missing == 0 and dup == 0 else 1
    finally:
        for proc in procs:
            stop(proc)
        broker.stop()
        pg.stop()
        if args.keep:
            print(f"data and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
