"""sla_watch under N open clocks: breach lateness, memory, database size, start/stop
throughput and recovery after kill -9.

Starts its own embedded PostgreSQL and Tansu broker on free ports. For each N it
bulk-inserts N running first-response clocks with COPY (deadlines spread evenly over the
next minutes, warnings 6 s before each), starts sla_watch as a real process
(``python -m services.sla_watch``), and reads every breach's lateness from the database
(``breached_at - deadline``, stamped inside the breaching transaction). Halfway through
the spread it kills the process with SIGKILL, leaves it dead for ``--outage`` seconds,
restarts it, and times how long after the restart (and after /readyz) every clock that
fell due meanwhile has breached; each clock breaches once (its state allows one
transition), which is counted.

Baseline in the same run: a bare asyncio ``loop.call_at`` for every one of the same
deadlines in this process, under the same load (the service firing, the relay
publishing): the lateness of an in-memory timer with no database at all.

Throughput, end to end: sla_watch runs as a process; a ticket's customer message and
agent reply are produced to ``cs.messages.v1`` for 20k tickets, and the clock is counted
when it is ``met`` in PostgreSQL (Kafka -> sla_watch consumer -> PostgreSQL + outbox).
Baseline in the same run: the same path with SLA_WATCH_BATCH_MAX_RECORDS=1 (one
transaction and one offset commit per message, as before batching).

    python bench/sla/bench.py [--sizes 10000,100000] [--outage 5]
    python bench/sla/bench.py --only-throughput     # the starts+stops part alone
    N=1000000 make bench-sla
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from shared.db import create_pool, migrate  # noqa: E402
from shared.events import AuthorRole, Channel, MessageEvent, MessageKind, dump, utcnow  # noqa: E402
from shared.kafka import ensure_topics  # noqa: E402
from shared.localstack import Broker, Postgres, ServiceProc, free_port  # noqa: E402
from shared.topics import MESSAGES  # noqa: E402

LEAD = 30.0  # seconds before the first deadline (start-up, loading, consumer join)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def ms(v: float) -> str:
    return f"{v * 1000:8.1f} ms"


def rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def spread_for(n: int) -> float:
    return 30.0 if n <= 10_000 else 90.0 if n <= 100_000 else 300.0


async def copy_clocks(pool: asyncpg.Pool, n: int, first: datetime, spread: float) -> None:
    limit = 30.0
    records = []
    for i in range(n):
        deadline = first + timedelta(seconds=spread * i / n)
        started = deadline - timedelta(seconds=limit)
        t = f"tkt-bench-{i}"
        records.append(
            (
                t,
                "first_response",
                1,
                "running",
                "conv-" + t,
                "shop-bench",
                t,
                started,
                deadline,
                deadline - timedelta(seconds=limit * 0.2),
                limit,
                started,
                0.0,
                "default",
            )
        )
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "sla_clocks",
            records=records,
            columns=[
                "ticket_id",
                "clock",
                "instance",
                "state",
                "conversation_id",
                "shop_id",
                "correlation_id",
                "started_at",
                "deadline",
                "warn_at",
                "limit_seconds",
                "resumed_at",
                "consumed_seconds",
                "policy",
            ],
        )
        await conn.execute("ANALYZE sla_clocks")


async def reset(pool: asyncpg.Pool) -> None:
    await pool.execute("TRUNCATE sla_clocks, sla_tickets, sla_seen, outbox")


async def wait_ready(svc: ServiceProc, timeout: float = 120) -> float:
    t0 = time.monotonic()
    async with httpx.AsyncClient() as c:
        while time.monotonic() - t0 < timeout:
            try:
                if (await c.get(svc.url + "/readyz", timeout=1)).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"sla_watch not ready; see {svc.log_file}")


def tp_message(ticket: str, role: AuthorRole, at: datetime) -> bytes:
    mid = "msg-" + uuid.uuid4().hex
    return dump(
        MessageEvent(
            correlation_id=mid,
            producer="bench",
            occurred_at=at,
            kind=MessageKind.message_created,
            source="bench",
            source_event_id=mid,
            message_id=mid,
            ticket_id=ticket,
            conversation_id="c-" + ticket,
            shop_id="shop-bench",
            channel=Channel.chat,
            author_role=role,
            received_at=at,
        )
    )


async def throughput(
    pool: asyncpg.Pool, env: dict[str, str], tmp: Path, bootstrap: str, tickets: int, batch: int
) -> tuple[float, float]:
    """End to end: sla_watch runs as a process and is ready (its consumer groups joined);
    then ``tickets`` tickets' customer message and agent reply (2 records per ticket, the
    same key, in order) are produced to ``cs.messages.v1`` as fast as the producer goes.
    Counted from the first record sent until every one of those clocks is stopped in
    PostgreSQL (``met``, or ``stopped`` when the consumer lagged past the 30 s limit), their
    events in the outbox, offsets committed per batch. ``batch`` is
    SLA_WATCH_BATCH_MAX_RECORDS (1: one transaction per message).
    Returns (starts+stops per second, records produced per second)."""
    run = "tkt-tp-" + uuid.uuid4().hex[:8] + "-"
    port = free_port()
    svc = ServiceProc(
        "sla_watch",
        port,
        {
            **env,
            "SLA_WATCH_HTTP_PORT": str(port),
            "SLA_WATCH_BATCH_MAX_RECORDS": str(batch),
            "SLA_WATCH_LOG_LEVEL": os.environ.get("SLA_WATCH_LOG_LEVEL", "WARNING"),
        },
        tmp / f"sla-tp-{batch}.log",
    )
    svc.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        await wait_ready(svc)
        await producer.start()
        now = utcnow()
        records = []
        for i in range(tickets):
            t = f"{run}{i}"
            records.append((t, tp_message(t, AuthorRole.customer, now)))
            records.append((t, tp_message(t, AuthorRole.agent, now + timedelta(milliseconds=1))))
        headers = [("content-type", b"application/json")]
        t0 = time.monotonic()
        futs = [
            await producer.send(MESSAGES.name, v, key=k.encode(), headers=headers)
            for k, v in records
        ]
        await asyncio.gather(*futs)
        produced = time.monotonic() - t0
        while True:
            met = await pool.fetchval(  # met, or stopped when the reply came after a breach
                "SELECT count(*) FROM sla_clocks WHERE ticket_id LIKE $1"
                " AND state IN ('met', 'stopped')",
                run + "%",
            )
            if met >= tickets:
                break
            if time.monotonic() - t0 > 300:
                raise TimeoutError(
                    f"{met} of {tickets} clocks stopped after 300 s; see {svc.log_file}"
                )
            await asyncio.sleep(0.05)
        took = time.monotonic() - t0
    finally:
        await producer.stop()
        svc.stop()
    return 2 * tickets / took, 2 * tickets / produced


def call_at_probe(deadlines: list[float]) -> list[float]:
    """Schedule a bare loop.call_at for each deadline; returns the list lateness lands in."""
    loop = asyncio.get_running_loop()
    out: list[float] = []
    offset = time.time() - loop.time()
    for d in deadlines:
        loop.call_at(d - offset, lambda d=d: out.append(time.time() - d))
    return out


async def run_size(
    pool: asyncpg.Pool, env: dict[str, str], tmp: Path, n: int, outage: float
) -> dict[str, object]:
    await reset(pool)
    spread = spread_for(n)
    first = utcnow() + timedelta(seconds=LEAD)
    t = time.monotonic()
    await copy_clocks(pool, n, first, spread)
    copy_s = time.monotonic() - t
    db_bytes = await pool.fetchval("SELECT pg_total_relation_size('sla_clocks')")
    f0 = first.timestamp()
    deadlines = [f0 + spread * i / n for i in range(n)]
    kill_at = f0 + spread / 2

    port = free_port()
    svc = ServiceProc(
        "sla_watch", port, {**env, "SLA_WATCH_HTTP_PORT": str(port)}, tmp / f"sla-{n}.log"
    )
    t_start = time.monotonic()
    svc.start()
    ready1 = await wait_ready(svc)
    assert svc.proc is not None
    rss_ready, _ = rss_kib(svc.proc.pid)
    probe = call_at_probe([d for d in deadlines if d < kill_at - 0.5])
    print(
        f"  N={n:,}: COPY {copy_s:.1f}s, ready after {ready1 - t_start:.1f}s,"
        f" RSS {rss_ready / 1024:.0f} MiB"
    )

    await asyncio.sleep(max(0.0, kill_at - time.time()))
    rss_peak_kib = rss_kib(svc.proc.pid)[1]
    svc.stop(signal.SIGKILL)
    killed = time.time()
    await asyncio.sleep(outage)
    restart_wall = time.time()
    t_restart = time.monotonic()
    svc.start()
    overdue_n = await pool.fetchval(
        "SELECT count(*) FROM sla_clocks WHERE state = 'running' AND deadline <= $1",
        datetime.fromtimestamp(restart_wall, UTC),
    )
    cutoff = datetime.fromtimestamp(restart_wall, UTC)
    recovered_at = None
    ready2 = None
    while recovered_at is None or ready2 is None:
        if ready2 is None:
            try:
                async with httpx.AsyncClient() as c:
                    if (await c.get(svc.url + "/readyz", timeout=0.5)).status_code == 200:
                        ready2 = time.monotonic()
            except httpx.HTTPError:
                pass
        if recovered_at is None:
            left = await pool.fetchval(
                "SELECT count(*) FROM sla_clocks WHERE state = 'running' AND deadline <= $1",
                cutoff,
            )
            if left == 0:
                recovered_at = time.monotonic()
        await asyncio.sleep(0.05)
        if time.monotonic() - t_restart > 180:
            raise TimeoutError("no recovery within 180 s")
    # the rest of the spread, fired by the restarted process
    end = f0 + spread + 2.0
    while True:
        left = await pool.fetchval("SELECT count(*) FROM sla_clocks WHERE state = 'running'")
        if left == 0 or (time.time() > end + 30):
            break
        await asyncio.sleep(0.5)
    rss_after, hwm_after = rss_kib(svc.proc.pid)
    svc.stop()

    rows = await pool.fetch(
        "SELECT extract(epoch FROM deadline)::float8 AS d, lateness_seconds AS l, state"
        " FROM sla_clocks"
    )
    breached = [r for r in rows if r["state"] == "breached"]
    missed = len(rows) - len(breached)
    before = [r["l"] for r in breached if r["d"] < killed - 0.5]
    after = [r["l"] for r in breached if r["d"] > restart_wall + (ready2 - t_restart) + 1]
    late_outage = [r["l"] for r in breached if killed <= r["d"] <= restart_wall]
    warnings = await pool.fetchval("SELECT count(*) FROM sla_clocks WHERE warned_at IS NOT NULL")
    return {
        "n": n,
        "spread": spread,
        "before": before,
        "after": after,
        "probe": list(probe),
        "rss_ready": rss_ready,
        "rss_peak": max(rss_peak_kib, hwm_after),
        "rss_after": rss_after,
        "db_bytes": db_bytes,
        "overdue": overdue_n,
        "late_outage": late_outage,
        "recovery_from_restart": recovered_at - t_restart,
        "recovery_from_ready": recovered_at - ready2,
        "ready1": ready1 - t_start,
        "ready2": ready2 - t_restart,
        "missed": missed,
        "breached": len(breached),
        "warnings": warnings,
    }


async def hold_only(pool: asyncpg.Pool, env: dict[str, str], tmp: Path, n: int) -> None:
    """Memory and load time with N clocks all due within the window (the worst case for
    the heap: every one of them is held), without waiting for them to fire."""
    await reset(pool)
    t = time.monotonic()
    await copy_clocks(pool, n, utcnow() + timedelta(seconds=60), 50.0)
    copy_s = time.monotonic() - t
    db_bytes = await pool.fetchval("SELECT pg_total_relation_size('sla_clocks')")
    port = free_port()
    log = tmp / f"sla-hold-{n}.log"
    svc = ServiceProc(
        "sla_watch",
        port,
        {**env, "SLA_WATCH_HTTP_PORT": str(port), "SLA_WATCH_LOG_LEVEL": "INFO"},
        log,
    )
    t0 = time.monotonic()
    svc.start()
    loaded_s = None
    try:
        while loaded_s is None:
            for line in log.read_text().splitlines():
                if "clocks loaded" in line:
                    loaded_s = json.loads(line).get("seconds")
            if time.monotonic() - t0 > 300:
                raise TimeoutError("clocks not loaded within 300 s")
            await asyncio.sleep(0.2)
        await wait_ready(svc)
        assert svc.proc is not None
        rss, hwm = rss_kib(svc.proc.pid)
    finally:
        svc.stop(signal.SIGKILL)
    print(f"\n== N = {n:,} open clocks all held in the heap (due within the window) ==")
    print(
        f"COPY {copy_s:.1f} s; loaded into the heap in {loaded_s} s at start;"
        f" RSS {rss / 1024:.0f} MiB (peak {hwm / 1024:.0f} MiB; target <= 1024 MiB)"
        f" = {hwm * 1024 / n:.0f} B per open clock;"
        f" database {db_bytes / 2**20:.0f} MiB = {db_bytes / n:.0f} B per clock"
    )
    await reset(pool)


def report(r: dict[str, object]) -> None:
    n = r["n"]
    before, after, probe = r["before"], r["after"], r["probe"]
    assert isinstance(n, int) and isinstance(before, list) and isinstance(after, list)
    assert isinstance(probe, list)
    print(f"\n== N = {n:,} open clocks, deadlines spread over {r['spread']:.0f} s ==")
    print(f"{'breach lateness':32s} {'p50':>11s} {'p99':>11s} {'max':>11s} {'count':>8s}")
    for label, vals in (
        ("sla_watch (before kill -9)", before),
        ("sla_watch (after restart)", after),
        ("baseline: bare loop.call_at", probe),
    ):
        if vals:
            p50, p99 = ms(pct(vals, 50)), ms(pct(vals, 99))
            print(f"{label:32s} {p50} {p99} {ms(max(vals))} {len(vals):8d}")
    if probe and before:
        print(f"p99 ratio sla_watch / call_at: {pct(before, 99) / max(pct(probe, 99), 1e-6):.1f}x")
    rss_ready, rss_peak, db = r["rss_ready"], r["rss_peak"], r["db_bytes"]
    assert isinstance(rss_ready, int) and isinstance(rss_peak, int) and isinstance(db, int)
    print(
        f"RSS at ready {rss_ready / 1024:.0f} MiB, peak {rss_peak / 1024:.0f} MiB"
        f" = {rss_peak * 1024 / n:.0f} B per open clock (whole process)"
    )
    print(f"database (sla_clocks + indexes) {db / 2**20:.0f} MiB = {db / n:.0f} B per clock")
    lo = r["late_outage"]
    assert isinstance(lo, list)
    print(
        f"kill -9 for the outage: {r['overdue']} clocks overdue at restart; all breached"
        f" {r['recovery_from_restart']:.2f} s after the restart, ready at {r['ready2']:.2f} s"
        f" ({r['recovery_from_ready']:+.2f} s from ready; target <= 5 s);"
        f" lateness of those max {max(lo) if lo else 0:.1f} s (marked late)"
    )
    print(
        f"time to ready (/readyz 200, from process start): first start {r['ready1']:.1f} s,"
        f" after kill -9 {r['ready2']:.1f} s"
    )
    print(
        f"breached {r['breached']:,} of {n:,} (missed {r['missed']}; one transition per clock:"
        f" duplicates impossible), warnings {r['warnings']:,}"
    )
    from tools.bench_summary import write_result

    write_result(
        f"sla_{n}",
        {
            "open clocks": n,
            "lateness p99 ms": pct(before, 99) * 1000 if before else None,
            "peak RSS B/clock": rss_peak * 1024 // n,
            "DB B/clock": db // n,
            "recovery after restart s": r["recovery_from_restart"],
            "ready after start s": r["ready1"],
            "ready after kill -9 s": r["ready2"],
            "missed": r["missed"],
        },
        {"bare loop.call_at p99 ms": pct(probe, 99) * 1000 if probe else None},
        "breach p99 lateness small vs call_at; recovery <= 5 s",
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    env_n = os.environ.get("N")
    ap.add_argument("--sizes", default=env_n or "10000,100000")
    ap.add_argument("--outage", type=float, default=5.0)
    ap.add_argument("--hold", type=int, default=1_000_000, help="memory check size; 0: skip")
    ap.add_argument("--tp-tickets", type=int, default=20_000, help="throughput run; 0: skip")
    ap.add_argument("--tp-batch", type=int, default=500, help="SLA_WATCH_BATCH_MAX_RECORDS")
    ap.add_argument(
        "--only-throughput",
        action="store_true",
        help="run only the starts+stops throughput part (no lateness sizes, no memory check)",
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.only_throughput:
        sizes, args.hold = [], 0

    tmp = Path(tempfile.mkdtemp(prefix="bench-sla-"))
    pg = Postgres(tmp / "pg", port=free_port(), log_file=tmp / "pg.log")
    broker = Broker(port=free_port(), log_file=tmp / "broker.log")
    print(f"machine: {os.cpu_count()} cores (shared with other engineers: figures are noisy)")
    try:
        pg.start()
        broker.start()
        await migrate(pg.dsn)
        pool = await create_pool(pg.dsn, min_size=2, max_size=4)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "DATABASE_URL": pg.dsn,
            "TICKETFLOW_LOCAL_STACK": "true",
            "SLA_WATCH_LOG_LEVEL": "WARNING",
        }
        await ensure_topics(broker.bootstrap)
        if args.tp_tickets:
            base_n = max(250, args.tp_tickets // 20)
            base, _ = await throughput(pool, env, tmp, broker.bootstrap, base_n, 1)
            rate, sent = await throughput(
                pool, env, tmp, broker.bootstrap, args.tp_tickets, args.tp_batch
            )
            print(
                f"clock starts+stops end to end (Kafka -> sla_watch -> PostgreSQL):"
                f" {rate:,.0f}/s with batches of up to {args.tp_batch}"
                f" ({args.tp_tickets:,} tickets; target >= 5,000/s);"
                f" baseline one transaction per message: {base:,.0f}/s"
                f" ({base_n:,} tickets) = {rate / base:.1f}x;"
                f" producer alone {sent:,.0f} records/s"
            )
        for n in sizes:
            report(await run_size(pool, env, tmp, n, args.outage))
        if args.hold:
            await hold_only(pool, env, tmp, args.hold)
        await pool.close()
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
