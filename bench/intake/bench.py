"""Open-loop load of signed generic webhooks against a running intake, with its own
embedded PostgreSQL and Tansu broker on free ports, and in the same run the same load
against a bare endpoint (202, no work) and a raw aiokafka produce loop.

Open loop: request i is due at t0 + i/rate whatever happened to the earlier ones, and
its latency counts from that due time (no coordinated omission). The client (``OpenLoop``)
is a small HTTP/1.1 keep-alive client on non-blocking sockets and one epoll, waking once a
millisecond, with requests signed before the run; its own CPU per request is printed.
After the intake run it counts downstream: every accepted event id must be on
cs.messages.v1, none twice.

    python bench/intake/bench.py [--rate 4000] [--seconds 60] [--connections 128]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
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


# Linux's SO_TIMESTAMPNS (asm-generic; Python's socket module has no name for it): the
# kernel stamps every segment it receives, and recvmsg hands over the stamp (CLOCK_REALTIME,
# a struct timespec) of the last segment read.
_SO_TIMESTAMPNS = 35
_ANCILLARY = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("qq")


class _Conn:
    """One keep-alive connection with at most one request in flight."""

    __slots__ = ("buf", "fd", "i", "keep", "need", "out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.i = -1  # the request in flight
        self.buf = b""  # the response so far
        self.need = -1  # bytes of the whole response, once its head is in
        self.out = b""  # what the kernel did not take of the request yet
        self.keep = True  # no "Connection: close" in the last response


class OpenLoop:
    """The open-loop HTTP/1.1 client: request i is due at t0 + i/rate whatever happened to
    the others, and its latency counts from that due time (no coordinated omission), so
    waiting for a free connection (queueing in the client) counts as well as the server.

    Built to cost little CPU, since it shares the cores with the service it measures:
    requests are built and signed before the clock starts; a fixed pool of non-blocking
    keep-alive sockets on one epoll, used in turn; one thread wakes once per ``tick``
    (1 ms) and no more often, reads every response that came in meanwhile, hands each due
    request to the longest idle connection (or, when none is idle, to the first one that
    becomes so) and sleeps again.
    Waking per tick rather than per response does not blur the latency: each response's
    time is the kernel's receive stamp of its last segment (SO_TIMESTAMPNS), not the
    moment the client got round to reading it. The response parser reads the status line
    and Content-Length (or walks a chunked body) and nothing else.
    A connection that closes or fails counts its request in flight under the error's name
    (``closed`` for an end of stream) and is opened again; a non-2xx answer counts under
    its status; requests with no answer by the end count as ``unanswered``."""

    def __init__(
        self,
        res: Result,
        ids: list[str],
        reqs: list[bytes],
        rate: float,
        port: int,
        connections: int,
        tick: float = 0.001,
    ) -> None:
        self.res, self.ids, self.reqs, self.rate, self.port = res, ids, reqs, rate, port
        self.tick = tick
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        # idle connections, longest idle first: every connection is used in turn, none
        # sits idle long enough for the server's keep-alive timeout to close it
        self.idle: deque[_Conn] = deque()
        self.backlog: deque[int] = deque()  # due requests waiting for a connection
        self.missing = connections  # connections to (re)open
        self.done = 0
        self.t0 = 0.0
        self.clock = 0  # CLOCK_REALTIME minus perf_counter, ns

    def run(self, drain_timeout: float) -> None:
        n, rate, poll, conns = len(self.reqs), self.rate, self.ep.poll, self.conns
        idle, backlog = self.idle, self.backlog
        self.open()
        self.t0 = t0 = wake = time.perf_counter()
        end = t0 + n / rate + drain_timeout
        i, retry = 0, t0
        while self.done < n:
            now = time.perf_counter()
            if now > end:
                break
            self.clock = time.time_ns() - time.perf_counter_ns()
            for fd, events in poll(0):
                conn = conns.get(fd)
                if conn is None:  # closed by an earlier event of this batch
                    continue
                if events & select.EPOLLOUT and conn.out:
                    self.flush(conn)
                if events & ~select.EPOLLOUT:
                    self.receive(conn)
            if self.missing and now >= retry:
                self.open()
                if self.missing:  # refused: try again 0.1 s later
                    retry = now + 0.1
            while i < n and t0 + i / rate <= now:
                if idle:
                    self.send(idle.popleft(), i)
                else:
                    backlog.append(i)
                i += 1
            wake += self.tick
            delay = wake - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:  # behind: go on at once, and tick from now on
                wake = time.perf_counter()

    def close(self) -> None:
        for conn in self.conns.values():
            conn.sock.close()
        self.ep.close()

    def open(self) -> None:
        """Open the missing connections; stop at the first refusal."""
        while self.missing:
            sock = socket.socket()
            try:
                sock.connect(("127.0.0.1", self.port))
            except OSError:
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
            conn = _Conn(sock)
            self.conns[conn.fd] = conn
            self.ep.register(conn.fd, select.EPOLLIN)
            self.missing -= 1
            self.ready(conn)

    def ready(self, conn: _Conn) -> None:
        if self.backlog:
            self.send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def send(self, conn: _Conn, i: int) -> None:
        conn.i = i
        req = self.reqs[i]
        try:
            sent = conn.sock.send(req)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.lost(conn, type(exc).__name__)
            return
        if sent < len(req):
            conn.out = req[sent:]
            self.ep.modify(conn.fd, select.EPOLLIN | select.EPOLLOUT)

    def flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self.lost(conn, type(exc).__name__)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self.ep.modify(conn.fd, select.EPOLLIN)

    def receive(self, conn: _Conn) -> None:
        try:
            data, ancillary, _, _ = conn.sock.recvmsg(65536, _ANCILLARY)
        except BlockingIOError:
            return
        except OSError as exc:
            self.lost(conn, type(exc).__name__)
            return
        if not data:
            self.lost(conn, "closed")
            return
        buf = conn.buf + data if conn.buf else data
        need = conn.need
        if need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                conn.buf = buf
                return
            head = buf[:end].lower()
            conn.keep = b"\nconnection: close" not in head
            at = head.find(b"\ncontent-length:")
            if at >= 0:
                eol = head.find(b"\r", at)
                need = end + 4 + int(head[at + 16 : eol if eol >= 0 else None])
            elif b"\ntransfer-encoding: chunked" in head:
                need = _chunked_end(buf, end + 4)  # -1 until complete: parsed again
            else:
                need = end + 4
            conn.need = need
        if need < 0 or len(buf) < need:
            conn.buf = buf
            return
        i, status = conn.i, buf[9:12].decode()
        conn.i, conn.buf, conn.need = -1, b"", -1
        if i < 0:  # an answer to nothing: not HTTP as we know it
            self.lost(conn, None)
            return
        res = self.res
        res.statuses[status] += 1
        if status == "202" or status == "200":
            res.ok += 1
            got = 0.0
            for _, kind, stamp in ancillary:
                if kind == _SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(stamp)
                    got = (sec * 1_000_000_000 + nsec - self.clock) * 1e-9
            res.latencies.append((got or time.perf_counter()) - (self.t0 + i / self.rate))
            if status == "202":
                res.accepted_ids.append(self.ids[i])
        self.done += 1
        if conn.keep:
            self.ready(conn)
        else:
            self.lost(conn, None)

    def lost(self, conn: _Conn, error: str | None) -> None:
        """Close the connection (to be opened again); its request in flight counts as an
        error named ``error``."""
        self.ep.unregister(conn.fd)
        conn.sock.close()
        del self.conns[conn.fd]
        if conn in self.idle:
            self.idle.remove(conn)
        self.missing += 1
        if conn.i >= 0:
            self.res.statuses[error or "closed"] += 1
            self.done += 1
            conn.i = -1


def _chunked_end(buf: bytes, at: int) -> int:
    """Where a chunked body starting at ``at`` ends (its last chunk and the empty line
    after any trailers), or -1 while it is incomplete."""
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return -1
        size = int(buf[at:eol].split(b";")[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)
            return -1 if end < 0 else end + 4
        at = eol + 2 + size + 2
        if at > len(buf):
            return -1


def http_load(
    name: str,
    port: int,
    path: str,
    bodies: list[tuple[str, bytes]],
    rate: float,
    connections: int,
    drain_timeout: float = 60,
    loaded: Callable[[], object] | None = None,
) -> Result:
    """The open-loop load (see ``OpenLoop``); ``loaded`` is called after it, while its
    connections are still open."""
    reqs = [http_request(path, b) for _, b in bodies]
    res = Result(name, due=len(reqs))
    client = OpenLoop(res, [event_id for event_id, _ in bodies], reqs, rate, port, connections)
    # No collection during the load: a full one walks every request in memory (tens of ms
    # of stall, counted as latency); the loop makes no reference cycles to collect.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        cpu = time.process_time()
        client.run(drain_timeout)
        res.elapsed = time.perf_counter() - client.t0
        res.client_cpu = time.process_time() - cpu
        if loaded:
            loaded()
    finally:
        gc.enable()
        gc.unfreeze()
        client.close()
    res.statuses["unanswered"] = len(reqs) - client.done
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
            left = await conn.fetchval(
                "SELECT count(*) FROM intake_events WHERE (xid, seq) >"
                " (SELECT xid, seq FROM outbox_log_cursor WHERE producer = 'intake')"
            )
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


def connections_per_process(pid: int, port: int, status: str = "ESTABLISHED") -> list[int]:
    """Connections on ``port`` in ``status`` held by each process of the tree of ``pid``
    (those with any), most first."""
    import psutil

    counts = []
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            held = sum(
                1
                for c in proc.net_connections(kind="tcp")
                if c.status == status and c.laddr and c.laddr.port == port
            )
            if held:
                counts.append(held)
    return sorted(counts, reverse=True)


def wait_listening(pid: int, port: int, workers: int, timeout: float = 60) -> None:
    """Until ``workers`` processes of the tree of ``pid`` listen on ``port``: ``/readyz``
    answers once one worker does, and the client's connections, all opened at the start,
    would otherwise all go to it (seen: 128/0 in a 5 s run)."""
    deadline = time.monotonic() + timeout
    while len(connections_per_process(pid, port, "LISTEN")) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {workers} processes listen on {port}")
        time.sleep(0.1)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants, those still running
    and those it has reaped (a process's children counters hold every child it waited for:
    PostgreSQL's postmaster reaps its backends and autovacuum workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


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
            http_load("bare 202 endpoint", bare_port, "/x", bodies, args.rate, args.connections)
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
        wait_listening(intake.pid, intake_port, args.workers)
        bodies = make_bodies(n, f"intake-{run}")
        per_worker: list[int] = []
        # CPU of intake (workers and relay), PostgreSQL and the broker over the load
        assert pg.proc is not None and broker.proc is not None
        trees = {"intake": intake.pid, "PostgreSQL": pg.proc.pid, "broker": broker.proc.pid}
        cpu_before = {k: tree_cpu(v) for k, v in trees.items()}
        cpu_used: dict[str, float] = {}

        def loaded() -> None:
            cpu_used.update({k: tree_cpu(v) - cpu_before[k] for k, v in trees.items()})
            per_worker.extend(connections_per_process(intake.pid, intake_port))

        res = http_load(
            "intake (generic)",
            intake_port,
            "/v1/webhooks/generic",
            bodies,
            args.rate,
            args.connections,
            loaded=loaded,
        )
        results.append(res)
        print(res.line(), flush=True)
        per_webhook = {k: v / max(res.ok, 1) * 1e6 for k, v in cpu_used.items()}
        print(
            "  CPU per accepted webhook over the load: "
            + ", ".join(f"{k} {v:.0f} µs" for k, v in per_webhook.items()),
            flush=True,
        )
        # each worker has a listening socket of its own (SO_REUSEPORT): the kernel hashes
        # the client's connections over them, about half each
        print(f"  client connections per intake process: {per_worker}", flush=True)
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
                **{f"{k} CPU µs/webhook": v for k, v in per_webhook.items()},
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
