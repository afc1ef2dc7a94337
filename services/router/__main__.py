"""router: classifies every message, decides priority and tier, assigns an agent."""

from services.router.app import build_process
from services.router.classify.rules import RulesError
from services.router.settings import RouterSettings
from shared.service import main

if __name__ == "__main__":
    main("router", RouterSettings(), build_process, RulesError, "bad rules file")
