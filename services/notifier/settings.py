from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

DEV_SECRET = "ticketflow-local-notifier-secret"


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", frozen=True)

    http_port: int = 8083
    group_id: str = "notifier"
    generic_webhook_url: str | None = Field(
        None, description="Receiver of signed JSON escalations."
    )
    generic_webhook_secret: SecretStr | None = None
    max_attempts: int = Field(5, ge=1, le=20)
    attempt_timeout_seconds: float = Field(5.0, gt=0)
    backoff_base_seconds: float = Field(0.5, gt=0)
    backoff_max_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _secret(self) -> NotifierSettings:
        if (
            self.generic_webhook_url
            and self.generic_webhook_secret is None
            and not self.local_stack
        ):
            raise ValueError(
                "NOTIFIER_GENERIC_WEBHOOK_SECRET is not set: refusing to start outside the local stack"
            )
        return self

    def generic_secret(self) -> bytes:
        if self.generic_webhook_secret is not None:
            return self.generic_webhook_secret.get_secret_value().encode()
        return DEV_SECRET.encode()
