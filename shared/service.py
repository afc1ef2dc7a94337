"""The runtime every service shares: resources, health, readiness, metrics, shutdown.

A service builds a ``Runtime``, registers its subscribers on ``runtime.broker`` and its
background jobs with ``runtime.background``, and serves ``create_app(runtime)`` with
uvicorn. Start-up never crashes on a dependency that is not up yet: the runtime keeps
connecting (``/healthz`` answers, ``/readyz`` says what is missing) and starts the
consumers and background jobs once PostgreSQL and the broker answer. Shutdown closes
everything it opened, consumers first, so that their group membership ends cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST

from shared import metrics
from shared.db import create_pool, ping
from shared.kafka import AssignmentTracker, RelayProducer, make_broker, update_lag
from shared.logging import get_logger, setup_logging
from shared.outbox import OutboxRelay, RowSource, leads
from shared.settings import ServiceSettings

log = get_logger(__name__)

_S = TypeVar("_S", bound=ServiceSettings)

Job = Callable[[], Awaitable[None]]


class Runtime:
    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        *,
        relay: bool = False,
        relay_elsewhere: bool = False,
        broker_required_for_ready: bool = True,
        relay_source: RowSource | None = None,
        relay_poll_interval: float = 1.0,
    ) -> None:
        """``relay``: run the service's outbox relay in this process, reading
        ``relay_source`` (the shared outbox unless given; a source that sends no NOTIFY is
        polled every ``relay_poll_interval``). ``relay_elsewhere``: another process runs
        it (intake's relay process); readiness then reports whether a relay of this
        producer holds the lock."""
        self.name = name
        self.settings = settings
        self.broker: KafkaBroker = make_broker(settings.kafka_bootstrap_servers, name)
        self._pool: asyncpg.Pool | None = None
        self._trackers: list[AssignmentTracker] = []
        self._jobs: list[tuple[str, Job]] = []
        self._on_ready: list[Job] = []
        self._on_stop: list[Job] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._broker_started = False
        self._broker_required = broker_required_for_ready
        self.started = asyncio.Event()
        self._stopping = asyncio.Event()
        self.relay: OutboxRelay | None = None
        self._relay_producer: RelayProducer | None = None
        self._relay_elsewhere = relay_elsewhere
        if relay:
            self.relay, self._relay_producer = make_relay(
                name,
                settings,
                source=relay_source,
                poll_interval=relay_poll_interval,
                wake_on_notify=relay_source is None or relay_source.notifies,
            )

    # -- registration ---------------------------------------------------------------
    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database pool not connected yet")
        return self._pool

    def tracker(self) -> AssignmentTracker:
        """A rebalance listener for one subscriber; readiness waits for all of them."""
        t = AssignmentTracker()
        self._trackers.append(t)
        return t

    def background(self, name: str, job: Job) -> None:
        """A coroutine run once resources are up, cancelled at shutdown."""
        self._jobs.append((name, job))

    def on_ready(self, hook: Job) -> None:
        """Runs once after the pool is connected, before consumers start."""
        self._on_ready.append(hook)

    def on_stop(self, hook: Job) -> None:
        self._on_stop.append(hook)

    # -- lifecycle ------------------------------------------------------------------
    async def _connect(self) -> None:
        delay = 0.2
        dsn = self.settings.database_url.get_secret_value()
        while self._pool is None and not self._stopping.is_set():
            try:
                self._pool = await create_pool(
                    dsn, min_size=self.settings.db_pool_min, max_size=self.settings.db_pool_max
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("database not reachable yet", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for hook in self._on_ready:
            await hook()
        if self._broker_required:
            await self._connect_broker()
        else:
            # Work that does not need the broker (intake accepting durably) starts now; the
            # relay retries its publishes until the broker answers.
            self._spawn("broker-connect", self._connect_broker)
        if self.relay is not None:
            self._spawn("outbox-relay", self.relay.run)
        for name, job in self._jobs:
            self._spawn(name, job)
        self._spawn("lag", self._lag_loop)
        self.started.set()
        log.info("service started", settings=self.settings.masked())

    async def _connect_broker(self) -> None:
        delay = 0.2
        while not self._broker_started and not self._stopping.is_set():
            try:
                await self._start_broker()
                self._broker_started = True
            except Exception as exc:
                log.warning("broker not reachable yet", error=repr(exc), retry_in=delay)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _start_broker(self) -> None:
        """``broker.start()`` with the subscribers started at once instead of one after
        the other. aiokafka's ``consumer.start()`` returns only when its group has assigned
        partitions, and a join is slow: about 5 s on Tansu, Kafka's
        ``group.initial.rebalance.delay.ms`` (3 s by default) for a new group, and up to a
        session timeout (10 s) after a kill -9 while the dead member is still in the group.
        FastStream's ``broker.start()`` awaits each subscriber in turn, so a service with
        three consumer groups (sla_watch) was ready after three joins (about 17 s after
        its start on Tansu); started together they take one (about 7 s)."""
        broker = self.broker
        t0 = time.perf_counter()
        await broker.connect()

        async def start(sub: Any) -> None:
            await sub.start()
            seconds = round(time.perf_counter() - t0, 2)
            log.info("consumer joined", group=getattr(sub, "group_id", None), seconds=seconds)

        async with asyncio.TaskGroup() as tasks:  # a failed start cancels the others
            for sub in broker.subscribers:
                tasks.create_task(start(sub))
        for pub in broker.publishers:
            await pub.start()
        broker.running = True  # what broker.start() sets last

    def _spawn(self, name: str, job: Job) -> None:
        async def guarded() -> None:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background job crashed", job=name)
                raise

        self._tasks.append(asyncio.create_task(guarded(), name=f"{self.name}:{name}"))

    async def _lag_loop(self) -> None:
        while True:
            await update_lag(self.broker, self.name)
            await asyncio.sleep(5)

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._connect(), name=f"{self.name}:connect"))

    async def stop(self) -> None:
        self._stopping.set()
        if self.relay is not None:
            self.relay.stop()
        for hook in self._on_stop:
            with contextlib.suppress(Exception):
                await hook()
        if self._broker_started:
            # Stops subscribers (leaving their groups) after in-flight handlers finish.
            with contextlib.suppress(Exception):
                await self.broker.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._relay_producer is not None:
            await self._relay_producer.stop()
        if self._pool is not None:
            await self._pool.close()
        metrics.process_stopped()
        log.info("service stopped")

    # -- probes -----------------------------------------------------------------------
    async def checks(self) -> dict[str, bool]:
        db = self._pool is not None and await ping(self._pool)
        broker = False
        if self._broker_started:
            try:
                broker = bool(await self.broker.ping(timeout=1.0))
            except Exception:
                broker = False
        out = {
            "database": db,
            "broker": broker,
            "consumers_assigned": all(t.assigned.is_set() for t in self._trackers),
            "started": self.started.is_set(),
        }
        if self.relay is not None:
            out["outbox_relay_leader"] = self.relay.is_leader
        elif self._relay_elsewhere:
            out["outbox_relay_leader"] = db and await _relay_leads(self.pool, self.name)
        return out

    async def is_ready(self) -> tuple[bool, dict[str, bool]]:
        checks = await self.checks()
        required = ["database", "consumers_assigned", "started"]
        if self._broker_required:
            required.append("broker")
        ok = all(checks[k] for k in required)
        metrics.READY.labels(self.name).set(1 if ok else 0)
        return ok, checks


def make_relay(
    name: str,
    settings: ServiceSettings,
    *,
    poll_interval: float = 1.0,
    wake_on_notify: bool = True,
    source: RowSource | None = None,
) -> tuple[OutboxRelay, RelayProducer]:
    """A service's outbox relay and the producer it publishes with (stop both); the
    options are ``OutboxRelay``'s."""
    producer = RelayProducer(settings.kafka_bootstrap_servers, name)
    relay = OutboxRelay(
        settings.database_url.get_secret_value(),
        name,
        producer.publish_batch,
        retention_seconds=settings.outbox_retention_seconds,
        poll_interval=poll_interval,
        wake_on_notify=wake_on_notify,
        source=source,
    )
    return relay, producer


async def _relay_leads(pool: asyncpg.Pool, name: str) -> bool:
    try:
        return await leads(pool, name)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False


def create_app(
    runtime: Runtime,
    *,
    title: str,
    description: str = "",
    app_class: type[FastAPI] = FastAPI,
    **kwargs: Any,
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = app_class(title=title, description=description, lifespan=lifespan, **kwargs)
    app.state.runtime = runtime

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @app.get("/readyz", tags=["ops"], summary="Readiness: dependencies answer")
    async def readyz() -> JSONResponse:
        ok, checks = await runtime.is_ready()
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "service": runtime.name, "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.metrics_text(), media_type=CONTENT_TYPE_LATEST)

    return app


def uvicorn_options(settings: ServiceSettings) -> dict[str, Any]:
    """How every service runs uvicorn (``uvicorn.run(app, **options)``)."""
    return {
        "host": settings.http_host,
        "port": settings.http_port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 15,
        "loop": "uvloop",
        "http": "httptools",
    }


def serve(app: FastAPI, settings: ServiceSettings, service: str) -> None:
    """Run a service's app with uvicorn; SIGTERM/SIGINT shut it down gracefully."""
    import uvicorn

    setup_logging(service, settings.log_level, settings.log_format)
    uvicorn.run(app, **uvicorn_options(settings))


def main(
    service: str,
    settings: _S,
    build: Callable[[_S], FastAPI],
    config_error: type[Exception],
    what: str,
) -> None:
    """A service's entry point: build the app and serve it; a bad configuration file
    (``build`` raises ``config_error``) refuses the start with exit status 2, saying
    ``what`` is wrong and why, in the log and on stderr."""
    try:
        app = build(settings)
    except config_error as exc:
        setup_logging(service, settings.log_level, settings.log_format)
        get_logger(service).error(f"refusing to start: {what}", reason=str(exc))
        print(f"{service}: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings, service)
