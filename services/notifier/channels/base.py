from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum

import httpx

from shared.events import EscalationEvent


class Outcome(StrEnum):
    delivered = "delivered"
    retry = "retry"  # timeout, 5xx, 429: try again later
    failed = "failed"  # permanent: 4xx other than 429, bad configuration


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str = ""
    status_code: int | None = None
    retry_after: float | None = None


def classify_response(resp: httpx.Response) -> Result:
    if 200 <= resp.status_code < 300:
        return Result(Outcome.delivered, status_code=resp.status_code)
    if resp.status_code == 429 or resp.status_code >= 500:
        retry_after = None
        ra = resp.headers.get("retry-after")
        if ra is not None and ra.replace(".", "", 1).isdigit():
            retry_after = float(ra)
        return Result(Outcome.retry, f"HTTP {resp.status_code}", resp.status_code, retry_after)
    return Result(Outcome.failed, f"HTTP {resp.status_code}", resp.status_code)


class Channel(ABC):
    """A destination for escalations. ``send`` makes one attempt and never raises for an
    HTTP answer; the delivery loop decides about retries."""

    kind: str

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def send(self, client: httpx.AsyncClient, esc: EscalationEvent, now: float) -> Result: ...
