"""Intake with two uvicorn worker processes: a scrape of either worker counts the
webhooks both of them accepted (prometheus_client multiprocess mode)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import pytest

from shared.localstack import ServiceProc, free_port
from tests.helpers import generic_body, signed

pytestmark = pytest.mark.integration

N = 40


def accepted(text: str) -> float:
    m = re.search(
        r'^intake_webhooks_total\{outcome="accepted",source="generic"\} (\S+)$', text, re.M
    )
    return float(m.group(1)) if m else 0.0


async def test_every_worker_reports_the_sum(infra, tmp_path: Path) -> None:
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
    try:
        for _ in range(300):
            if await asyncio.to_thread(svc.ready):
                break
            assert svc.proc is not None and svc.proc.poll() is None, "intake exited"
            await asyncio.sleep(0.2)

        async def post() -> int:
            raw, headers = signed(generic_body())
            async with httpx.AsyncClient(base_url=svc.url) as c:  # a new connection each
                r = await c.post("/v1/webhooks/generic", content=raw, headers=headers)
                return r.status_code

        assert await asyncio.gather(*(post() for _ in range(N))) == [202] * N
        seen = []
        for _ in range(8):
            async with httpx.AsyncClient(base_url=svc.url) as c:
                seen.append(accepted((await c.get("/metrics")).text))
        assert seen == [N] * 8
    finally:
        svc.stop()
