"""intake: verifies and normalises platform webhooks, stores them durably, and publishes
them to ``cs.messages.v1`` through the transactional outbox.

``python -m services.intake`` runs ``INTAKE_WORKERS`` uvicorn worker processes on one
port (each with its own pool and group committer) and the outbox relay in a process of
its own next to them (``services/intake/relay.py``). With more than one worker each binds
a listening socket of its own to the port with ``SO_REUSEPORT``, so the kernel spreads
new connections over the workers (with one shared socket, whichever worker woke first
accepted, and one could get them all; ``services/intake/workers.py``); uvicorn's
supervisor still starts, restarts and stops them. Their metrics go to
prometheus_client's multiprocess files in a fresh directory, so a scrape of any worker
shows the sum over all of them, the relay's included (gauges: the largest value among the
live processes). The directory is set before anything imports prometheus_client."""

import os
import shutil
import socket
import tempfile

# Handed to the whole uvicorn configuration: one write per response (see http.py).
HTTP_PROTOCOL = "services.intake.http:JoinedWritesProtocol"
APP = "services.intake.app:build_worker"


def main() -> None:
    # A fresh directory, so no count of an earlier run is added in; set before the
    # project's modules (and prometheus_client) are imported here, in the workers (spawned)
    # and in the relay process.
    metrics_dir = tempfile.mkdtemp(prefix="intake-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    import uvicorn

    from services.intake.relay import RelayProcess
    from services.intake.settings import IntakeSettings
    from services.intake.workers import serve_workers
    from shared.logging import setup_logging
    from shared.service import uvicorn_options

    settings = IntakeSettings()
    setup_logging("intake", settings.log_level, settings.log_format)
    relay = RelayProcess()
    relay.start()
    try:
        options = uvicorn_options(settings) | {
            "http": HTTP_PROTOCOL,
            # No X-Forwarded-* rewriting of the client address: intake never uses it, and
            # the middleware ran on every request.
            "proxy_headers": False,
        }
        if settings.workers > 1 and hasattr(socket, "SO_REUSEPORT"):
            serve_workers(uvicorn.Config(APP, factory=True, workers=settings.workers, **options))
        else:  # one worker, or no SO_REUSEPORT: one socket, shared by the workers
            uvicorn.run(APP, factory=True, workers=settings.workers, **options)
    finally:
        relay.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
