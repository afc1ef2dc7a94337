from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

# Used only on the embedded local stack (TICKETFLOW_LOCAL_STACK); elsewhere a secret is required.
DEV_SECRET = "ticketflow-local-notifier-secret"  # noqa: S105
DEV_ACK_SECRET = "ticketflow-local-ack-secret"  # noqa: S105


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", frozen=True)

    http_port: int = 8083
    group_id: str = "notifier"
    resolution_group_id: str = Field(
        "notifier-resolutions",
        description="Consumer group that reads ticket.resolved from cs.messages.v1.",
    )
    generic_webhook_url: str | None = Field(
        None, description="Receiver of signed JSON escalations."
    )
    generic_webhook_secret: SecretStr | None = None
    routes_file: Path | None = Field(
        None, description="YAML file of channels and escalation routes (docs/notifier.md)."
    )
    fetch_max_wait_ms: int = Field(
        50, ge=1, le=500, description="Escalation consumer's fetch wait (latency vs polls)."
    )
    max_attempts: int = Field(5, ge=1, le=20)
    attempt_timeout_seconds: float = Field(5.0, gt=0)
    backoff_base_seconds: float = Field(0.5, gt=0)
    backoff_max_seconds: float = Field(30.0, gt=0)
    # Rate limits: a channel's `rate_per_window` messages per this window (60 s in production;
    # tests shorten it so that a surge runs in seconds).
    rate_window_seconds: float = Field(60.0, gt=0)
    poll_interval_seconds: float = Field(
        0.5, gt=0, description="Delivery worker's poll when not woken by a new escalation."
    )
    escalate_interval_seconds: float = Field(
        1.0, gt=0, description="How often unacknowledged escalations are checked."
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="A claimed delivery is retried by anyone after this (by its own instance"
        " at once when that instance restarts).",
    )
    digest_max_items: int = Field(5000, ge=2, description="Most escalations in one digest.")
    # Messages: links and language.
    ticket_base_url: str = Field(
        "http://127.0.0.1:8081/v1/tickets/",
        description="Ticket link = this + ticket id (default: the router's ticket query API).",
    )
    public_base_url: str = Field(
        "http://127.0.0.1:8083", description="Where people reach this service (ack links)."
    )
    ack_secret: SecretStr | None = Field(None, description="Signs acknowledgement links.")
    api_token: SecretStr | None = Field(
        None, description="Bearer token of the acknowledgement API; unset disables it."
    )
    locale: str = Field("zh", pattern="^(zh|en)$")

    @model_validator(mode="after")
    def _secret(self) -> NotifierSettings:
        if self.local_stack:
            return self
        if self.generic_webhook_url and self.generic_webhook_secret is None:
            raise ValueError(
                "NOTIFIER_GENERIC_WEBHOOK_SECRET is not set:"
                " refusing to start outside the local stack"
            )
        if self.routes_file is not None and self.ack_secret is None:
            raise ValueError(
                "NOTIFIER_ACK_SECRET is not set: refusing to start outside the local stack"
            )
        return self

    def generic_secret(self) -> bytes:
        if self.generic_webhook_secret is not None:
            return self.generic_webhook_secret.get_secret_value().encode()
        return DEV_SECRET.encode()

    def ack_key(self) -> bytes | None:
        """Key of acknowledgement links; None (no links) outside the local stack unset."""
        if self.ack_secret is not None:
            return self.ack_secret.get_secret_value().encode()
        return DEV_ACK_SECRET.encode() if self.local_stack else None

    def lease_owner(self) -> str:
        """This instance's name on the delivery leases it takes: TICKETFLOW_INSTANCE_ID, or
        host:port (no two live processes share it; a restarted one keeps it, and so
        recognises the leases its previous process died holding)."""
        return self.instance_id or f"{socket.gethostname()}:{self.http_port}"
