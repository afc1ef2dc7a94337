from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class SlaWatchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SLA_WATCH_", extra="ignore", frozen=True)

    http_port: int = 8082
    group_id: str = "sla_watch"
    first_response_seconds: float = Field(30.0, gt=0, description="First-response limit.")
    resolution_seconds: float = Field(86_400.0, gt=0, description="Complaint resolution limit.")
    warning_fraction: float = Field(0.8, gt=0, lt=1, description="Warn at this share of the limit.")
    sweep_interval_seconds: float = Field(
        1.0, gt=0, description="Safety-net scan for due clocks no in-memory timer holds."
    )
