"""notifier: pushes escalations to second-line staff over configured channels, once."""

import sys

from services.notifier.app import build
from services.notifier.routes import RoutesError
from services.notifier.settings import NotifierSettings
from shared.logging import get_logger, setup_logging
from shared.service import serve

if __name__ == "__main__":
    settings = NotifierSettings()
    try:
        app = build(settings)
    except RoutesError as exc:  # a bad routes file: refuse to start, and say why
        setup_logging("notifier", settings.log_level, settings.log_format)
        get_logger("notifier").error("refusing to start: bad routes file", reason=str(exc))
        print(f"notifier: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings, "notifier")
