import sys

from services.router.app import build
from services.router.classify.rules import RulesError
from services.router.settings import RouterSettings
from shared.service import serve

if __name__ == "__main__":
    settings = RouterSettings()
    try:
        app = build(settings)
    except RulesError as exc:
        print(f"router: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings, "router")
