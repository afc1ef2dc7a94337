"""intake's uvicorn workers, each on a listening socket of its own.

uvicorn's supervisor binds one socket in the parent and every worker accepts from it, so
which worker gets a new connection is whichever wakes first (a benchmark's 128 keep-alive
connections were seen split 128/0 between two workers). Here each worker binds its own
socket to the same host and port with ``SO_REUSEPORT`` and the kernel hashes new
connections over them; the supervision stays uvicorn's (start, restart of a dead or hung
worker, SIGHUP/SIGTTIN/SIGTTOU, graceful stop on SIGTERM/SIGINT).

A module of its own: uvicorn pickles each worker's bound ``target`` to the spawned
process, which must import the class by name (``__main__`` is not imported there).
"""

from __future__ import annotations

import contextlib
import socket
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE, logger
from uvicorn.supervisors import multiprocess


def reuse_port_socket(config: uvicorn.Config) -> socket.socket:
    """A socket bound to the configured host and port with ``SO_REUSEPORT``: each worker
    binds one, and the kernel hashes new connections over their listen queues."""
    family = socket.AF_INET6 if config.host and ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        logger.error(exc)
        sys.exit(STARTUP_FAILURE)  # the supervisor stops instead of restarting it
    return sock


class ReusePortProcess(multiprocess.Process):
    """uvicorn's worker process, serving on a ``SO_REUSEPORT`` socket it binds itself
    (uvicorn pickles the bound ``target`` to the spawned worker and calls it there)."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        super().target([reuse_port_socket(self.config)])


def serve_workers(config: uvicorn.Config) -> None:
    """``config.workers`` processes under uvicorn's supervisor, each serving on a socket
    of its own instead of one the parent binds and shares."""
    # The supervisor makes every worker (first start, restarts, SIGTTIN) from this name.
    multiprocess.Process = ReusePortProcess  # type: ignore[misc]
    with contextlib.suppress(KeyboardInterrupt):
        multiprocess.Multiprocess(config, sockets=[]).run()
