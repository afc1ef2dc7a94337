"""intake's outbox relay in a process of its own.

``python -m services.intake`` starts it next to the uvicorn workers (``RelayProcess``),
with the same environment: the relay's publishing (fetching up to 500 rows of
``intake_events`` above its cursor, handing them to the producer, recording the cursor
and the acks: ``shared/outbox_log.py``) runs on a core the operating system shares out,
instead of in bursts on one worker's event loop in front of its requests. Its metrics go
to the workers' multiprocess directory, so a scrape of any worker shows them, and a
worker's ``/readyz`` says whether a relay holds the producer's lock
(``outbox_relay_leader``). Only one relay of a producer publishes at a time (the
advisory lock), so the order per key is the same as with the relay inside a worker.

The process stops gracefully on SIGTERM or SIGINT (the batch in flight finishes, the
producer flushes), gets SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and is
started again by its parent if it ends while the parent runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading

from services.intake.domain import PRODUCER
from services.intake.settings import IntakeSettings
from services.intake.store import LOG
from shared import metrics
from shared.heap import freeze_startup_heap
from shared.logging import get_logger, setup_logging
from shared.service import make_relay

log = get_logger(__name__)

PR_SET_PDEATHSIG = 1
# After a batch smaller than 500 rows the relay fetches again this much later (a log table
# sends no NOTIFY): the rows of the group commits meanwhile go out together (a few larger
# batches instead of one per commit).
POLL_SECONDS = 0.02
PARENT_ENV = "INTAKE_RELAY_PARENT_PID"


def _die_with_parent() -> None:
    """SIGTERM when the parent dies; exit now if it is already gone."""
    parent = int(os.environ.get(PARENT_ENV, "0"))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent and os.getppid() != parent:
        sys.exit(0)


async def run(settings: IntakeSettings) -> None:
    relay, producer = make_relay(
        PRODUCER, settings, poll_interval=POLL_SECONDS, wake_on_notify=False, source=LOG
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop)
    log.info("outbox relay process started", frozen_objects=freeze_startup_heap())
    try:
        await relay.run()
    finally:
        await producer.stop()
        metrics.process_stopped()
        log.info("outbox relay process stopped")


def main() -> None:
    _die_with_parent()
    settings = IntakeSettings()
    setup_logging("intake", settings.log_level, settings.log_format)
    import uvloop

    uvloop.run(run(settings))


class RelayProcess:
    """Runs ``python -m services.intake.relay`` from a watcher thread and starts it again
    (after ``restart_delay``) whenever it ends before ``stop``, which ends it with SIGTERM
    and waits for it."""

    def __init__(self, *, restart_delay: float = 1.0) -> None:
        self._restart_delay = restart_delay
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="intake-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
            self._proc = subprocess.Popen([sys.executable, "-m", "services.intake.relay"], env=env)
            return self._proc

    def _watch(self) -> None:
        # Started from this thread, which lives as long as the process: PR_SET_PDEATHSIG
        # fires when the thread that started the child ends.
        while (proc := self._spawn()) is not None:
            code = proc.wait()
            if self._stopping.wait(self._restart_delay):
                return
            log.error("outbox relay process ended; starting it again", code=code)

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("outbox relay process did not stop; killing it")
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
