"""One settings base for every service.

Shared settings (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``, ...) carry the same
environment name in every service; a service's own settings carry its prefix
(``INTAKE_``, ``ROUTER_``, ``SLA_WATCH_``, ``NOTIFIER_``).
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql://ticketflow@127.0.0.1:5433/ticketflow"


def shared_env(name: str) -> AliasChoices:
    """A setting read from the same, unprefixed variable in every service."""
    return AliasChoices(name)


class ServiceSettings(BaseSettings):
    """Base of every service's settings object. Subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        DEFAULT_KAFKA, validation_alias=shared_env("KAFKA_BOOTSTRAP_SERVERS")
    )
    database_url: SecretStr = Field(
        SecretStr(DEFAULT_DATABASE_URL), validation_alias=shared_env("DATABASE_URL")
    )
    local_stack: bool = Field(
        False,
        validation_alias=shared_env("TICKETFLOW_LOCAL_STACK"),
        description="True only on the embedded local stack: allows development secrets.",
    )
    log_level: str = Field("INFO", validation_alias=shared_env("LOG_LEVEL"))
    log_format: str = Field(
        "json", validation_alias=shared_env("LOG_FORMAT"), pattern="^(json|console)$"
    )
    db_pool_min: int = Field(1, validation_alias=shared_env("DB_POOL_MIN"), ge=0)
    db_pool_max: int = Field(10, validation_alias=shared_env("DB_POOL_MAX"), ge=1)
    instance_id: str = Field("", validation_alias=shared_env("TICKETFLOW_INSTANCE_ID"))
    outbox_retention_seconds: float = Field(
        300.0,
        validation_alias=shared_env("OUTBOX_RETENTION_SECONDS"),
        ge=0,
        description="How long published outbox rows are kept to re-publish after a broker "
        "lost records it had acknowledged (0: deleted at once).",
    )

    http_host: str = "127.0.0.1"
    http_port: int = 8080

    def masked(self) -> dict[str, Any]:
        """Settings as a dict fit for the start-up log: secrets stay masked."""
        return {k: (str(v) if isinstance(v, SecretStr) else v) for k, v in self}
