"""intake: verifies and normalises platform webhooks, stores them durably, and publishes
them to ``cs.messages.v1`` through the transactional outbox.

``INTAKE_WORKERS`` > 1 runs that many uvicorn worker processes on the same port (each
with its own pool and group committer; one outbox relay leads at a time). Their metrics
go to prometheus_client's multiprocess files in a fresh directory, so a scrape of any
worker shows the sum over all of them (gauges: the largest value among live workers)."""

import os
import shutil
import tempfile

from services.intake.app import build
from services.intake.settings import IntakeSettings
from shared.logging import setup_logging
from shared.service import serve

if __name__ == "__main__":
    settings = IntakeSettings()
    if settings.workers > 1:
        import uvicorn

        setup_logging("intake", settings.log_level, settings.log_format)
        # Set before the workers start (they are spawned, and prometheus_client reads it
        # at import); a fresh directory, so no count of an earlier run is added in.
        metrics_dir = tempfile.mkdtemp(prefix="intake-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            uvicorn.run(
                "services.intake.app:build",
                factory=True,
                workers=settings.workers,
                host=settings.http_host,
                port=settings.http_port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=15,
                loop="uvloop",
                http="httptools",
            )
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        serve(build(settings), settings, "intake")
