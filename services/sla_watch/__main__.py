"""sla_watch: holds an SLA clock for every ticket and emits started, warning, breached,
met and stopped events on time, exactly once per ticket, clock and instance."""

import sys

from services.sla_watch.app import build
from services.sla_watch.policy import PolicyError
from services.sla_watch.settings import SlaWatchSettings
from shared.logging import get_logger, setup_logging
from shared.service import serve

if __name__ == "__main__":
    settings = SlaWatchSettings()
    try:
        app = build(settings)
    except PolicyError as exc:  # a bad policy file: refuse to start, and say why
        setup_logging("sla_watch", settings.log_level, settings.log_format)
        get_logger("sla_watch").error("refusing to start: bad SLA policy file", reason=str(exc))
        print(f"sla_watch: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings, "sla_watch")
