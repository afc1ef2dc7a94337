"""intake: verifies and normalises platform webhooks, stores them durably, and publishes
them to ``cs.messages.v1`` through the transactional outbox.

``INTAKE_WORKERS`` > 1 runs that many uvicorn worker processes on the same port (each
with its own pool and group committer; one outbox relay leads at a time). Each worker
keeps its own Prometheus registry, so a scrape sees one worker: run one worker per
container where per-process metrics matter."""

from services.intake.app import build
from services.intake.settings import IntakeSettings
from shared.logging import setup_logging
from shared.service import serve

if __name__ == "__main__":
    settings = IntakeSettings()
    if settings.workers > 1:
        import uvicorn

        setup_logging("intake", settings.log_level, settings.log_format)
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
    else:
        serve(build(settings), settings, "intake")
