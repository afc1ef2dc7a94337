"""Chaos suite: under steady load, break the stack one part at a time and prove that
nothing was lost or duplicated.

``make chaos`` (full) or ``CHAOS_SHORT=1`` / ``--short`` (the variant ``make test`` runs
through tests/e2e/test_chaos.py). On its own local stack (free ports, see tools/load.py)
it injects, one after the other: ``kill -9`` of intake, router, sla_watch and notifier
(restarted after the hold, as a supervisor would), a broker stop and restart (Tansu's
memory storage starts empty: topics are created again, the outboxes re-publish), and a
PostgreSQL stop and restart. After each fault it waits until every service is ready again.
Then it drains and counts by event id (tools/verify.py): every acknowledged webhook
accepted and routed once, every due first-response clock breached or met once, every
breach escalated once, every escalation delivered or dead-lettered once. It prints the
faults with lost/duplicated per fault and exits 1 unless both are zero everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.localstack import LocalStack
from tools.load import (
    Fault,
    Sender,
    Target,
    drive,
    own_stack,
    passed,
    print_report,
    run_async,
    steady_times,
)
from tools.verify import Ledger, Report, TopicCollector, drain

SERVICE_ORDER = ("intake", "router", "sla_watch", "notifier")
NO_FAULT = "no fault"


@dataclass(frozen=True)
class ChaosConfig:
    rate: float = 15.0  # conversations/s
    hold: float = 5.0  # how long a part stays down
    gap: float = 6.0  # steady load between two faults
    warmup: float = 5.0
    tail: float = 5.0  # load after the last fault
    sla_seconds: float = 5.0
    drain_seconds: float = 90.0
    recover_timeout: float = 90.0
    faults: tuple[str, ...] = ()  # empty: every fault

    @classmethod
    def short(cls) -> ChaosConfig:
        """The variant ``make test`` runs: a killed consumer waits for its old group
        member's session to time out before it is ready again, so only intake, router and
        notifier are killed; then the broker and PostgreSQL are restarted."""
        return cls(
            rate=8.0,
            hold=1.0,
            gap=1.0,
            warmup=2.0,
            tail=2.0,
            sla_seconds=3.0,
            drain_seconds=30.0,
            faults=SHORT_FAULTS,
        )

    def selected(self) -> list[str]:
        return [f for f in fault_names() if not self.faults or f in self.faults]


def fault_names() -> list[str]:
    return [*(f"kill -9 {s}" for s in SERVICE_ORDER), "broker restart", "postgres restart"]


SHORT_FAULTS = (
    "kill -9 intake",
    "kill -9 router",
    "kill -9 notifier",
    "broker restart",
    "postgres restart",
)


def make_faults(
    stack: LocalStack, collector: TopicCollector, cfg: ChaosConfig
) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    async def recovered() -> None:
        await asyncio.to_thread(stack.wait_ready, cfg.recover_timeout)

    def kill(name: str) -> Callable[[], Awaitable[None]]:
        async def act() -> None:
            svc = stack.services[name]
            await asyncio.to_thread(svc.stop, signal.SIGKILL)  # kill -9, then reaped
            await asyncio.sleep(cfg.hold)
            svc.start()
            await recovered()

        return act

    async def broker() -> None:
        await asyncio.to_thread(stack.broker.stop)
        await asyncio.sleep(cfg.hold)
        await asyncio.to_thread(stack.broker.start)  # creates the topics again
        await collector.reset()  # the new broker's topics start empty
        await recovered()

    async def postgres() -> None:
        await asyncio.to_thread(stack.pg.stop)
        await asyncio.sleep(cfg.hold)
        await asyncio.to_thread(stack.pg.start)
        await recovered()

    acts = [kill(s) for s in SERVICE_ORDER] + [broker, postgres]
    chosen = cfg.selected()
    return [(n, a) for n, a in zip(fault_names(), acts, strict=True) if n in chosen]


def fault_table(report: Report, timings: list[tuple[str, float, float]]) -> Table:
    """Faults injected, how long until the stack was ready again, lost/duplicated each."""
    t = Table(title="faults injected (lost/duplicated by the webhooks sent meanwhile)")
    for col in ("fault", "at", "recovered after", "sent", "lost", "duplicated"):
        t.add_column(col, justify="left" if col == "fault" else "right")
    rows = [(n, f"{a:.1f} s", f"{b - a:.1f} s") for n, a, b in timings]
    rows.append((NO_FAULT, "-", "-"))
    for name, at, took in rows:
        c: Counter[str] = report.by_phase.get(name) or Counter()
        lost, dup = c["lost"], c["duplicated"]
        t.add_row(
            name,
            at,
            took,
            str(c["sent"]),
            f"[red]{lost}[/]" if lost else "0",
            f"[red]{dup}[/]" if dup else "0",
        )
    return t


async def run(
    cfg: ChaosConfig, console: Console | None = None
) -> tuple[Report, list[tuple[str, float, float]]]:
    """The whole chaos run on a fresh stack; returns the report and the fault timings."""
    console = console or Console()
    ledger = Ledger()
    async with own_stack(ledger, cfg.sla_seconds, console=console) as target:
        assert isinstance(target, Target) and target.stack is not None
        collector = TopicCollector(target.bootstrap, ledger)
        await collector.start()
        sender = Sender(target.intake, ledger, cfg.sla_seconds)
        try:
            faults = [
                Fault(cfg.warmup + i * 1e-3, name, act)
                for i, (name, act) in enumerate(make_faults(target.stack, collector, cfg))
            ]
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TextColumn("{task.completed} sent"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                timings = await drive(
                    sender,
                    steady_times(cfg.rate),
                    lambda _t: NO_FAULT,
                    faults,
                    progress,
                    gap=cfg.gap,
                    tail=cfg.tail,
                )
                progress.add_task("draining: replies, clocks, notices", total=None)
                await sender.close()
                report = await drain(target.dsn, ledger, cfg.drain_seconds + cfg.sla_seconds)
                target.failed = not passed(report)  # keep the stack's logs
        finally:
            await sender.close()
            await collector.stop()
    return report, timings


def summarize(
    console: Console, report: Report, timings: list[tuple[str, float, float]], cfg: ChaosConfig
) -> int:
    print_report(console, report, [n for n, _, _ in timings] + [NO_FAULT], "chaos: counted")
    console.print(fault_table(report, timings))
    missing = set(cfg.selected()) - {n for n, _, _ in timings}
    if missing:
        console.print(f"[red]faults not injected: {', '.join(sorted(missing))}[/]")
    ok = passed(report) and not missing
    return 0 if ok else 1


async def main_async(args: argparse.Namespace) -> int:
    console = Console()
    cfg = ChaosConfig.short() if args.short else ChaosConfig()
    if args.rate:
        cfg = replace(cfg, rate=args.rate)
    if args.faults:
        cfg = replace(cfg, faults=tuple(f.strip() for f in args.faults.split(",")))
        unknown = set(cfg.faults) - set(fault_names())
        if unknown:
            console.print(f"unknown faults {sorted(unknown)}; known: {fault_names()}")
            return 2
    t0 = time.monotonic()
    report, timings = await run(cfg, console)
    code = summarize(console, report, timings, cfg)
    console.print(f"chaos run took {time.monotonic() - t0:.0f} s")
    if args.json:
        data: dict[str, Any] = {**report.to_json(), "faults": timings}
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(data, indent=2))
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__.split("\n")[0])
    p.add_argument(
        "--short",
        action="store_true",
        default=os.environ.get("CHAOS_SHORT", "") not in ("", "0"),
        help="the shortened variant (also CHAOS_SHORT=1)",
    )
    p.add_argument("--rate", type=float, default=None, help="conversations/s")
    p.add_argument("--faults", help="comma-separated subset, e.g. 'kill -9 router,broker restart'")
    p.add_argument("--json", help="also write the report as JSON here")
    return run_async(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
