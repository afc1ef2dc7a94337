from services.notifier.app import build
from services.notifier.settings import NotifierSettings
from shared.service import serve

if __name__ == "__main__":
    settings = NotifierSettings()
    serve(build(settings), settings, "notifier")
