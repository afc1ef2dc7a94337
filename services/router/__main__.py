from services.router.app import build
from services.router.settings import RouterSettings
from shared.service import serve

if __name__ == "__main__":
    settings = RouterSettings()
    serve(build(settings), settings, "router")
