from services.intake.app import build
from services.intake.settings import IntakeSettings
from shared.service import serve

if __name__ == "__main__":
    settings = IntakeSettings()
    serve(build(settings), settings, "intake")
