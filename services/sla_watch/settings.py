from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class SlaWatchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SLA_WATCH_", extra="ignore", frozen=True)

    http_port: int = 8082
    group_id: str = "sla_watch"
    policy_file: str | None = Field(
        None, description="SLA policy file (YAML, or TOML by extension); default: the contract."
    )
    first_response_seconds: float | None = Field(
        None, gt=0, description="Overrides the first_response limit of every policy."
    )
    resolution_seconds: float | None = Field(
        None, gt=0, description="Overrides the resolution limit of every policy."
    )
    warning_fraction: float | None = Field(
        None, gt=0, lt=1, description="Overrides the warning share of every clock that warns."
    )
    window_seconds: float = Field(
        120.0, gt=0, description="Hold in memory only the timers due within this window."
    )
    sweep_interval_seconds: float = Field(
        1.0, gt=0, description="Safety-net scan for due clocks no in-memory timer holds."
    )
    fire_batch: int = Field(1000, gt=0, description="Most clocks fired in one transaction.")
    batch_max_records: int = Field(
        500,
        ge=1,
        le=5000,
        description="Events of one topic applied in one transaction and one offset commit.",
    )
    batch_timeout_ms: int = Field(
        100, ge=1, description="Longest wait for records when none are buffered."
    )
