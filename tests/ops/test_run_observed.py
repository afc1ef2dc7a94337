"""`make run-observed` as users run it (deploy/run_observed.py): the four services and
Debian's Prometheus, which scrapes all four with the rules loaded and sees their metrics;
Ctrl-C (SIGINT) stops everything. Own PostgreSQL and broker on free ports (the script
uses external ones when DATABASE_URL/KAFKA_BOOTSTRAP_SERVERS are set, as `make run` does),
free service and Prometheus ports, Prometheus data in a temporary folder."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.localstack import SERVICES, Broker, Postgres, _port_open, free_port
from tests.ops.exported import DEPLOY

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus not installed (Debian package `prometheus`; `make test` installs "
        "it as root through deploy/ensure-promtool.sh)",
    ),
]


@pytest.fixture
def own_infra(tmp_path: Path) -> Iterator[tuple[str, str]]:
    from shared.db import migrate

    pg = Postgres(tmp_path / "pgdata", port=free_port(), log_file=tmp_path / "pg.log")
    broker = Broker(port=free_port(), log_file=tmp_path / "broker.log")
    try:
        pg.start()
        broker.start()
        asyncio.run(migrate(pg.dsn))
        yield pg.dsn, broker.bootstrap
    finally:
        broker.stop()
        pg.stop()


def _until(pred: Any, timeout: float, what: str, proc: subprocess.Popen[Any]) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # say why: its output is what a failed CI run keeps
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(
                f"run_observed exited ({proc.returncode}) before {what}:\n{out[-4000:]}"
            )
        try:
            last = pred()
            if last:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached in {timeout}s; last: {last!r}")


def test_prometheus_scrapes_the_four_services_and_ctrl_c_stops_all(
    own_infra: tuple[str, str], tmp_path: Path
) -> None:
    dsn, bootstrap = own_infra
    ports = {name: free_port() for name, _, _ in SERVICES}
    prom_port = free_port()
    env = dict(os.environ, DATABASE_URL=dsn, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    env["PROMETHEUS_PORT"] = str(prom_port)
    for name, prefix, _ in SERVICES:
        env[f"{prefix}_HTTP_PORT"] = str(ports[name])
    proc = subprocess.Popen(
        [
            sys.executable,
            str(DEPLOY / "run_observed.py"),
            "--no-install",
            "--data-dir",
            str(tmp_path / "prom"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    prom = f"http://127.0.0.1:{prom_port}"
    try:

        def targets_up() -> dict[str, str] | None:
            r = httpx.get(prom + "/api/v1/targets", timeout=2).json()
            got = {
                t["labels"]["job"]: t["scrapeUrl"]
                for t in r["data"]["activeTargets"]
                if t["health"] == "up"
            }
            return got if len(got) == 4 else None

        up = _until(targets_up, 90, "four targets up", proc)
        assert up == {n: f"http://127.0.0.1:{p}/metrics" for n, p in ports.items()}

        rules = httpx.get(prom + "/api/v1/rules", timeout=2).json()["data"]["groups"]
        assert {g["name"] for g in rules} == {"ticketflow.recording", "ticketflow.alerts"}
        assert all(r["health"] != "err" for g in rules for r in g["rules"])

        def ready_series() -> set[str] | None:
            q = httpx.get(prom + "/api/v1/query", params={"query": "ticketflow_ready == 1"})
            got = {s["metric"]["service"] for s in q.json()["data"]["result"]}
            return got if len(got) == 4 else None

        assert _until(ready_series, 60, "ticketflow_ready scraped", proc) == {
            "intake",
            "router",
            "sla_watch",
            "notifier",
        }
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert f"prometheus {prom}" in out
    assert "prometheus stopped." in out and "stopped." in out
    assert not _port_open("127.0.0.1", prom_port)
    assert not any(_port_open("127.0.0.1", p) for p in ports.values())
