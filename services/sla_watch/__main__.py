from services.sla_watch.app import build
from services.sla_watch.settings import SlaWatchSettings
from shared.service import serve

if __name__ == "__main__":
    settings = SlaWatchSettings()
    serve(build(settings), settings, "sla_watch")
