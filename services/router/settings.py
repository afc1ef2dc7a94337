from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.events import Priority
from shared.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTER_", extra="ignore", frozen=True)

    http_port: int = 8081
    group_id: str = "router"
    escalations_group_id: str = Field(
        "router.escalations", description="Consumer group of the SLA escalations subscriber."
    )
    batch_max_records: int = Field(
        500,
        ge=1,
        le=5000,
        description="Messages handled in one transaction and one offset commit; 1 = one by one.",
    )
    batch_timeout_ms: int = Field(100, ge=1, description="Longest wait to fill a batch.")
    rules_file: str | None = Field(
        None,
        description="The team's rules file (YAML; validated at start, a bad file refuses the"
        " start with its line and reason); the bundled services/router/rules.yaml when unset.",
    )
    roster_seed_file: str | None = Field(
        None, description="YAML roster loaded at start when the roster is empty (local stack)."
    )
    first_response_urgent_seconds: float = Field(30.0, gt=0)
    first_response_important_seconds: float = Field(30.0, gt=0)
    first_response_normal_seconds: float = Field(30.0, gt=0)
    sweep_seconds: float = Field(
        2.0,
        gt=0,
        description="How often waiting tickets are offered to free agents and the"
        " queue gauges refreshed (the safety net; frees and presence changes assign at once).",
    )

    def first_response_limits(self) -> dict[Priority, float]:
        """Queue due time = message received time + this limit (SLA first response)."""
        return {
            Priority.urgent: self.first_response_urgent_seconds,
            Priority.important: self.first_response_important_seconds,
            Priority.normal: self.first_response_normal_seconds,
        }
