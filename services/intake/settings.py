from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

DEV_SECRET = "ticketflow-local-development-secret"


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", frozen=True)

    http_port: int = 8080
    generic_secret: SecretStr | None = Field(None, description="HMAC secret of the generic source.")
    generic_secret_previous: SecretStr | None = Field(
        None, description="The secret being rotated out; both are valid during rotation."
    )
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    replay_window_seconds: int = Field(300, ge=1)

    @model_validator(mode="after")
    def _secrets(self) -> IntakeSettings:
        if self.generic_secret is None and not self.local_stack:
            raise ValueError(
                "INTAKE_GENERIC_SECRET is not set: refusing to start outside the local stack"
            )
        return self

    def secrets_for(self, source: str) -> list[bytes]:
        """Current and previous secret of a source (empty when the source has none)."""
        current = getattr(self, f"{source}_secret", None)
        previous = getattr(self, f"{source}_secret_previous", None)
        if current is None and source == "generic" and self.local_stack:
            current = SecretStr(DEV_SECRET)
        return [s.get_secret_value().encode() for s in (current, previous) if s is not None]

    def uses_dev_secret(self) -> bool:
        return self.generic_secret is None and self.local_stack
