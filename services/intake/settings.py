"""Intake's settings (prefix ``INTAKE_``).

Sources: ``INTAKE_SOURCES`` is the comma-separated list of enabled source adapters
(default: every registered adapter). A request to a source that is not enabled gets 404.
Secrets: ``INTAKE_<SOURCE>_SECRET`` and, during a rotation, ``INTAKE_<SOURCE>_SECRET_PREVIOUS``
(both are accepted). Outside the local stack (``TICKETFLOW_LOCAL_STACK`` unset) the service
refuses to start unless every enabled source has its secret (and WhatsApp its verify
token, and sources that pseudonymise phone numbers the pseudonym key); on the local stack
a missing one falls back to a development value, and start-up says so loudly.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.intake.adapters import ADAPTERS
from shared.settings import ServiceSettings

# Development values, used only on the local stack (TICKETFLOW_LOCAL_STACK=true).
DEV_SECRET = "ticketflow-local-development-secret"  # noqa: S105
DEV_VERIFY_TOKEN = "ticketflow-local-verify-token"  # noqa: S105
DEV_PSEUDONYM_KEY = "ticketflow-local-pseudonym-key"


def _secret_env(source: str, previous: bool = False) -> str:
    return f"INTAKE_{source.upper()}_SECRET" + ("_PREVIOUS" if previous else "")


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", frozen=True)

    http_port: int = 8080
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes (see __main__).")
    sources: str = Field(
        "", description="Comma-separated enabled sources; empty means every registered one."
    )
    generic_secret: SecretStr | None = Field(None, description="HMAC secret of the generic source.")
    generic_secret_previous: SecretStr | None = Field(
        None, description="The secret being rotated out; both are valid during rotation."
    )
    source_secrets: dict[str, tuple[SecretStr | None, SecretStr | None]] = Field(
        default_factory=dict,
        description="Filled from INTAKE_<SOURCE>_SECRET[_PREVIOUS] for every registered source.",
    )
    whatsapp_verify_token: SecretStr | None = Field(
        None, description="Token Meta echoes in the subscription handshake (hub.verify_token)."
    )
    pseudonym_key: SecretStr | None = Field(
        None, description="HMAC key that turns phone-number ids (WhatsApp) into pseudonyms."
    )
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    replay_window_seconds: int = Field(300, ge=1)
    # Backpressure: answer 429 + Retry-After past either bound.
    max_outbox_backlog: int = Field(
        50_000, ge=1, description="Unpublished outbox rows past which intake answers 429."
    )
    max_db_latency_seconds: float = Field(
        0.5, gt=0, description="Database round-trip time past which intake answers 429."
    )
    max_loop_lag_seconds: float = Field(
        1.0, gt=0, description="Event-loop lag (CPU saturation) past which intake answers 429."
    )
    load_probe_interval_seconds: float = Field(0.5, gt=0, le=10)
    retry_after_seconds: int = Field(2, ge=1, le=3600)
    # Group commit: concurrent webhooks share one transaction (0 s = one per webhook).
    group_commit_wait_seconds: float = Field(
        0.002, ge=0, le=0.1, description="How long the first webhook of a batch waits for others."
    )
    group_commit_max_batch: int = Field(256, ge=1, le=10_000)
    group_commit_connections: int = Field(
        2,
        ge=1,
        le=32,
        description="Statements in flight per worker; webhooks gather while all are busy.",
    )

    @model_validator(mode="before")
    @classmethod
    def _collect_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        collected: dict[str, tuple[Any, Any]] = {}
        for name in ADAPTERS:
            pair = []
            for previous in (False, True):
                key = f"{name}_secret" + ("_previous" if previous else "")
                value = data.get(key)
                if value is None:
                    value = os.environ.get(_secret_env(name, previous)) or None
                pair.append(value)
            collected[name] = (pair[0], pair[1])
        data["source_secrets"] = {**collected, **data.get("source_secrets", {})}
        return data

    @model_validator(mode="after")
    def _check(self) -> IntakeSettings:
        unknown = [s for s in self.enabled_sources() if s not in ADAPTERS]
        if unknown:
            raise ValueError(
                f"INTAKE_SOURCES names unknown sources {unknown}; known {list(ADAPTERS)}"
            )
        if self.local_stack:
            return self
        missing = [
            _secret_env(s) for s in self.enabled_sources() if self.source_secrets[s][0] is None
        ]
        if "whatsapp" in self.enabled_sources() and self.whatsapp_verify_token is None:
            missing.append("INTAKE_WHATSAPP_VERIFY_TOKEN")
        if self.pseudonym_key is None and any(
            getattr(ADAPTERS[s], "needs_pseudonym_key", False) for s in self.enabled_sources()
        ):
            missing.append("INTAKE_PSEUDONYM_KEY")
        if missing:
            raise ValueError(
                f"{', '.join(missing)} not set: refusing to start outside the local stack"
                " (set them, or narrow INTAKE_SOURCES to the sources you use)"
            )
        return self

    def enabled_sources(self) -> list[str]:
        names = [s.strip().lower() for s in self.sources.split(",") if s.strip()]
        return names or list(ADAPTERS)

    def secrets_for(self, source: str) -> list[bytes]:
        """Current and previous secret of a source (the development one on the local stack
        when it has none)."""
        current, previous = self.source_secrets.get(source, (None, None))
        if current is None and self.local_stack:
            current = SecretStr(DEV_SECRET)
        return [s.get_secret_value().encode() for s in (current, previous) if s is not None]

    def dev_fallbacks(self) -> list[str]:
        """Settings that run on a development value (local stack only), for the start-up log."""
        if not self.local_stack:
            return []
        out = [_secret_env(s) for s in self.enabled_sources() if self.source_secrets[s][0] is None]
        if "whatsapp" in self.enabled_sources() and self.whatsapp_verify_token is None:
            out.append("INTAKE_WHATSAPP_VERIFY_TOKEN")
        if self.pseudonym_key is None:
            out.append("INTAKE_PSEUDONYM_KEY")
        return out

    def uses_dev_secret(self) -> bool:
        return bool(self.dev_fallbacks())

    def verify_token(self) -> bytes:
        if self.whatsapp_verify_token is not None:
            return self.whatsapp_verify_token.get_secret_value().encode()
        return DEV_VERIFY_TOKEN.encode() if self.local_stack else b""

    def pseudonym_bytes(self) -> bytes:
        if self.pseudonym_key is not None:
            return self.pseudonym_key.get_secret_value().encode()
        return DEV_PSEUDONYM_KEY.encode() if self.local_stack else b""
