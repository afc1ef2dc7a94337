"""Surge simulator: replay a named load profile of signed webhooks, then count the run.

``make load PROFILE=steady|double11|broker-outage [RATE=...] [SECONDS=...]``

By default it starts its OWN local stack (embedded PostgreSQL, Tansu, the four services;
``shared.localstack.LocalStack`` on free ports, so a running ``make run`` is untouched) with
a short first-response limit (``--sla-seconds``, 5 s) and the notifier's generic webhook
pointing at a receiver inside this process. ``--intake/--database-url/--bootstrap`` use a
running stack instead (then "notified" is read from the notifier's table).

Customers write on fresh conversations; a share of them (``--reply-share``) get an agent
reply after 0.2-1.6 times the limit, so that clocks are both met and breached. The sender
acts like a platform: it retries a webhook (same event id) until it is acknowledged. At
the end the run is counted by event id (tools/verify.py) and the exit code is 1 if
anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.intake.settings import DEV_SECRET
from shared.localstack import SERVICES, LocalStack, free_port
from shared.signing import signed_headers
from tools.demo import MESSAGES, REPLIES
from tools.verify import (
    Ledger,
    Receiver,
    Report,
    Sent,
    TopicCollector,
    drain,
    render,
    render_phases,
    serve,
)

PROFILES = ("steady", "double11", "broker-outage")
# What this 2-core machine holds with the whole stack and the simulator on it: at a 60/s
# peak the simulator's own acknowledgements took seconds (CPU starved), at 30/s tens of ms.
DEFAULT_RATE = {"steady": 20.0, "double11": 1.5, "broker-outage": 15.0}
DEFAULT_SECONDS = {"steady": 60.0, "double11": 90.0, "broker-outage": 75.0}
SPIKE = 20.0  # 双11: the rate at midnight is 20 times the evening's
RECEIVER_SECRET = b"ticketflow-load-receiver-secret"


# ------------------------------------------------------------------------ profiles (pure)


@dataclass(frozen=True)
class Profile:
    name: str
    seconds: float
    rate: float  # base rate, messages/s
    outage_seconds: float = 10.0

    @property
    def ramp(self) -> tuple[float, float, float]:
        """double11: (ramp start, ramp end, peak end) in seconds."""
        start = 0.2 * self.seconds
        end = start + min(60.0, 0.5 * self.seconds)
        return start, end, max(end, 0.85 * self.seconds)

    @property
    def outage(self) -> tuple[float, float] | None:
        """broker-outage: (stop at, start again at)."""
        if self.name != "broker-outage":
            return None
        start = 0.35 * self.seconds
        return start, min(start + self.outage_seconds, self.seconds)

    def rate_at(self, t: float) -> float:
        if self.name != "double11":
            return self.rate
        start, end, peak_end = self.ramp
        if t < start or t >= peak_end:
            return self.rate
        if t < end:
            return self.rate * (1 + (SPIKE - 1) * (t - start) / (end - start))
        return self.rate * SPIKE

    def phase_at(self, t: float) -> str:
        if self.name == "double11":
            start, end, peak_end = self.ramp
            if t < start:
                return "evening"
            if t < end:
                return "midnight ramp"
            return "peak" if t < peak_end else "after"
        outage = self.outage
        if outage is not None:
            if t < outage[0]:
                return "before outage"
            return "broker down" if t < outage[1] else "after outage"
        return self.name

    def phases(self) -> list[str]:
        ts = [i * self.seconds / 200 for i in range(200)]
        return list(dict.fromkeys(self.phase_at(t) for t in ts))

    def send_times(self, step: float = 0.01) -> list[float]:
        """Deterministic send times: one message each time the integral of the rate
        passes a whole number."""
        out: list[float] = []
        acc = 0.0
        t = 0.0
        while t < self.seconds:
            acc += self.rate_at(t) * step
            while acc >= 1.0:
                acc -= 1.0
                out.append(round(t, 3))
            t += step
        return out


def make_profile(
    name: str, rate: float | None = None, seconds: float | None = None, outage: float = 10.0
) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; one of {', '.join(PROFILES)}")
    return Profile(
        name, seconds or DEFAULT_SECONDS[name], rate or DEFAULT_RATE[name], outage_seconds=outage
    )


def steady_times(rate: float) -> Iterable[float]:
    """An endless steady schedule (chaos runs until its faults are done)."""
    i = 0
    while True:
        yield i / rate
        i += 1


# ------------------------------------------------------------------------ the sender


@dataclass
class Sender:
    """Sends customer webhooks and the agents' replies, retrying like a platform would."""

    intake: str
    ledger: Ledger
    sla_seconds: float
    reply_share: float = 0.5
    secret: bytes = DEV_SECRET.encode()
    give_up_seconds: float = 90.0
    seed: int = 7
    phase: str = "steady"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    n: int = 0
    acked: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.client = httpx.AsyncClient(
            timeout=10.0, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)
        )

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    def customer(self) -> None:
        self.n += 1
        conv = f"load-{self.run_id}-c{self.n}"
        text, vip = self.rng.choice(MESSAGES)
        body = {
            "event_id": f"load-{self.run_id}-m{self.n}",
            "type": "message.created",
            "shop_id": f"shop-{self.rng.randint(1, 5)}",
            "channel": self.rng.choice(["chat", "chat", "app", "email"]),
            "conversation_id": conv,
            "customer": {"id": f"cust-{self.rng.randint(1, 5000)}", "vip_level": vip},
            "author": {"role": "customer", "id": "c"},
            "text": text,
        }
        reply_after = (
            self.rng.uniform(0.2, 1.6) * self.sla_seconds
            if self.rng.random() < self.reply_share
            else None
        )
        self.spawn(self._conversation(body, reply_after))

    async def _conversation(self, body: dict[str, Any], reply_after: float | None) -> None:
        s = Sent(body["event_id"], body["conversation_id"], "customer", self.phase)
        self.ledger.add(s)
        await self.post(s, body)
        if reply_after is None or not s.acknowledged:
            return
        await asyncio.sleep(reply_after)
        reply = {
            **{k: body[k] for k in ("shop_id", "channel", "conversation_id")},
            "event_id": body["event_id"] + "-r",
            "type": "message.created",
            "author": {"role": "agent", "id": "load-agent"},
            "text": self.rng.choice(REPLIES),
        }
        r = Sent(reply["event_id"], body["conversation_id"], "agent", self.phase)
        self.ledger.add(r)
        await self.post(r, reply)

    async def post(self, s: Sent, body: dict[str, Any]) -> None:
        body["occurred_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        raw = json.dumps(body, ensure_ascii=False).encode()
        give_up = time.monotonic() + self.give_up_seconds
        delay = 0.2
        while time.monotonic() < give_up:
            s.attempts += 1
            headers = {
                **signed_headers(self.secret, raw, time.time()),
                "Content-Type": "application/json",
            }
            t0 = time.monotonic()
            try:
                resp = await self.client.post(
                    self.intake + "/v1/webhooks/generic", content=raw, headers=headers
                )
            except httpx.HTTPError:
                s.status = None
            else:
                s.status = resp.status_code
                if resp.status_code in (200, 202):
                    s.accept_seconds = time.monotonic() - t0
                    self.acked += 1
                    with contextlib.suppress(ValueError, KeyError):
                        s.ticket_id = resp.json().get("ticket_id")
                    return
                if resp.status_code < 500 and resp.status_code != 429:
                    return  # the client's mistake: retrying does not help
                with contextlib.suppress(ValueError):
                    delay = max(delay, float(resp.headers.get("retry-after", 0)))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        if self.inflight:
            await asyncio.gather(*list(self.inflight), return_exceptions=True)
        await self.client.aclose()


@dataclass
class Fault:
    """Something done to the stack at ``at`` seconds; ``act`` returns once recovered.
    Webhooks sent meanwhile are tagged with ``name``."""

    at: float
    name: str
    act: Callable[[], Awaitable[None]]


async def drive(
    sender: Sender,
    times: Iterable[float],
    phase_at: Callable[[float], str],
    faults: list[Fault],
    progress: Progress | None = None,
    total: int | None = None,
    gap: float = 0.0,
    tail: float | None = None,
) -> list[tuple[str, float, float]]:
    """Open-loop sending on the schedule (a late send goes at once, none is skipped);
    faults run beside it, one after the other, ``gap`` seconds apart. With ``tail`` the
    sending stops that long after the last fault (for endless schedules). Returns
    (fault, start, end) offsets in seconds."""
    done: list[tuple[str, float, float]] = []
    current: list[str] = []
    finished = asyncio.Event()
    t0 = time.monotonic()

    async def run_faults() -> None:
        for f in sorted(faults, key=lambda f: f.at):
            await asyncio.sleep(max(0.0, t0 + f.at - time.monotonic()))
            current.append(f.name)
            start = time.monotonic() - t0
            try:
                await f.act()
            finally:
                current.remove(f.name)
                done.append((f.name, start, time.monotonic() - t0))
            await asyncio.sleep(gap)
        if tail is not None:
            await asyncio.sleep(tail)
            finished.set()

    fault_task = asyncio.create_task(run_faults())
    task = progress.add_task("sending", total=total) if progress is not None else None
    try:
        for at in times:
            if finished.is_set():
                break
            if fault_task.done() and fault_task.exception() is not None:
                break
            wait = t0 + at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            sender.phase = current[-1] if current else phase_at(at)
            sender.customer()
            if progress is not None and task is not None:
                acked = sum(1 for s in sender.ledger.sent.values() if s.acknowledged)
                progress.update(task, advance=1, description=f"{sender.phase:<16} acked {acked:>6}")
        await fault_task
    finally:
        fault_task.cancel()
    return done


# ------------------------------------------------------------------------ the stack


@dataclass
class Target:
    intake: str
    dsn: str
    bootstrap: str
    stack: LocalStack | None = None
    receiver: bool = True
    failed: bool = False  # set by the caller when the run lost or duplicated something


@contextlib.asynccontextmanager
async def own_stack(
    ledger: Ledger, sla_seconds: float, keep: bool = False, console: Console | None = None
) -> AsyncIterator[Target]:
    """A fresh local stack on free ports, its notifier delivering to our receiver. Its data
    and logs are deleted afterwards unless ``keep``, the block raised, or the caller marked
    the run ``failed`` (a run that lost something keeps what explains it)."""
    data = Path(tempfile.mkdtemp(prefix="ticketflow-load-"))
    receiver = Receiver(RECEIVER_SECRET, ledger)
    async with serve(receiver.app(), free_port()) as rx:
        stack = LocalStack(
            data,
            pg_port=free_port(),
            kafka_port=free_port(),
            service_ports={name: free_port() for name, _, _ in SERVICES},
            extra_env={
                "SLA_WATCH_FIRST_RESPONSE_SECONDS": str(sla_seconds),
                "NOTIFIER_GENERIC_WEBHOOK_URL": rx + "/hook",
                "NOTIFIER_GENERIC_WEBHOOK_SECRET": RECEIVER_SECRET.decode(),
                "LOG_LEVEL": "WARNING",
            },
        )
        ok = False
        try:
            if console:
                console.print(f"starting a local stack on free ports (logs: {stack.logs}) ...")
            await asyncio.to_thread(stack.start_infra)
            stack.start_services()
            await asyncio.to_thread(stack.wait_ready, 90)
            target = Target(stack.services["intake"].url, stack.dsn, stack.bootstrap, stack)
            yield target
            ok = not target.failed
        finally:
            await asyncio.to_thread(stack.stop)
            if ok and not keep:
                shutil.rmtree(data, ignore_errors=True)
            elif console:
                console.print(f"stack data and logs kept in {data}")


def broker_outage(target: Target, at: float, seconds: float, collector: TopicCollector) -> Fault:
    stack = target.stack
    assert stack is not None

    async def act() -> None:
        await asyncio.to_thread(stack.broker.stop)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(stack.broker.start)  # creates the topics again
        await collector.reset()  # memory storage: the topics start empty

    return Fault(at, "broker down", act)


def print_report(console: Console, report: Report, phases: list[str], title: str) -> None:
    for table in render(report, title):
        console.print(table)
    console.print(render_phases(report, phases, "lost and duplicated by phase"))
    for p in report.problems:
        console.print(f"  [red]{p}[/]")
    verdict = "[green]OK[/]" if report.ok() else "[red]FAILED[/]"
    console.print(
        f"{verdict}: lost {report.lost}, duplicated {report.duplicated}"
        f" (redelivered, same id: {report.redelivered})"
    )


async def main_async(args: argparse.Namespace) -> int:
    console = Console()
    profile = make_profile(args.profile, args.rate, args.seconds, args.outage_seconds)
    times = profile.send_times()
    ledger = Ledger()
    async with contextlib.AsyncExitStack() as es:
        if args.intake:
            if profile.outage is not None:
                console.print("broker-outage needs its own stack (it stops the broker)")
                return 2
            target = Target(args.intake, args.database_url, args.bootstrap, receiver=False)
            ledger.receiving = False
        else:
            target = await es.enter_async_context(
                own_stack(ledger, args.sla_seconds, args.keep, console)
            )
        collector = TopicCollector(target.bootstrap, ledger)
        await collector.start()
        es.push_async_callback(collector.stop)
        sender = Sender(target.intake, ledger, args.sla_seconds, args.reply_share)
        es.push_async_callback(sender.close)
        faults = []
        if profile.outage is not None:
            start, end = profile.outage
            faults.append(broker_outage(target, start, end - start, collector))
        console.print(
            f"profile {profile.name}: {len(times)} conversations in {profile.seconds:.0f} s,"
            f" base {profile.rate:g}/s, peak {max(profile.rate_at(t) for t in times):g}/s;"
            f" first-response limit {args.sla_seconds:g} s"
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            await drive(sender, times, profile.phase_at, faults, progress, len(times))
            waiting = progress.add_task("replies and retries in flight", total=None)
            await sender.close()
            progress.update(waiting, description="draining: waiting for clocks and notices")
            report = await drain(target.dsn, ledger, args.drain_seconds + args.sla_seconds)
            target.failed = not passed(report)
    print_report(console, report, profile.phases(), f"{profile.name}: counted by event id")
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(report.to_json(), indent=2))
    return 0 if passed(report) else 1


def passed(report: Report) -> bool:
    """Nothing lost or duplicated, and every webhook acknowledged."""
    return report.ok() and report.unanswered == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.load", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=PROFILES, default="steady")
    p.add_argument("--rate", type=float, default=None, help="base rate, conversations/s")
    p.add_argument("--seconds", type=float, default=None, help="profile duration")
    p.add_argument("--outage-seconds", type=float, default=10.0, help="broker-outage length")
    p.add_argument("--sla-seconds", type=float, default=5.0, help="first-response limit")
    p.add_argument("--reply-share", type=float, default=0.5, help="conversations answered")
    p.add_argument("--drain-seconds", type=float, default=60.0, help="most wait at the end")
    p.add_argument("--intake", help="use a running stack: intake base URL")
    p.add_argument("--database-url", help="with --intake: its DATABASE_URL")
    p.add_argument("--bootstrap", help="with --intake: its KAFKA_BOOTSTRAP_SERVERS")
    p.add_argument("--keep", action="store_true", help="keep the stack's data and logs")
    p.add_argument("--json", help="also write the report as JSON here")
    args = p.parse_args(argv)
    if args.intake and not (args.database_url and args.bootstrap):
        p.error("--intake needs --database-url and --bootstrap")
    return run_async(main_async(args))


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """uvloop when installed (it is, with uvicorn[standard]): less of the simulator's own
    overhead in the figures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    sys.exit(main())
