"""notifier: pushes escalations to second-line staff over configured channels, once."""

from services.notifier.app import build
from services.notifier.routes import RoutesError
from services.notifier.settings import NotifierSettings
from shared.service import main

if __name__ == "__main__":
    main("notifier", NotifierSettings(), build, RoutesError, "bad routes file")
