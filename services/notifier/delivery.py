"""Delivery policy (pure): exponential backoff with full jitter, and what one attempt's
result means for its queue row."""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.notifier.channels.base import Outcome, Result


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is a floor."""
    delay = random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
    return max(delay, retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class Decision:
    status: str  # delivered | pending (retry later) | failed (dead-letter it)
    outcome: str  # metric label: delivered | retry | failed
    detail: str
    retry_in: float | None


def decide(result: Result, attempt: int, max_attempts: int, base: float, cap: float) -> Decision:
    if result.outcome is Outcome.delivered:
        return Decision("delivered", "delivered", result.detail, None)
    if result.outcome is Outcome.failed:
        return Decision("failed", "failed", result.detail, None)
    if attempt >= max_attempts:
        return Decision(
            "failed", "failed", f"gave up after {attempt} attempts: {result.detail}", None
        )
    return Decision(
        "pending", "retry", result.detail, backoff(attempt, base, cap, result.retry_after)
    )
