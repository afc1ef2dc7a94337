"""Notification channels: one small adapter per destination, behind ``Channel``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
import orjson

from services.notifier.messages import Locale, Notice


class Outcome(StrEnum):
    delivered = "delivered"
    retry = "retry"  # timeout, 5xx, 429, vendor "too fast": try again later
    failed = "failed"  # permanent: 4xx other than 429, vendor refusal, bad configuration


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str = ""
    status_code: int | None = None
    retry_after: float | None = None
    rate_limited: bool = False


def classify_response(resp: httpx.Response) -> Result:
    if 200 <= resp.status_code < 300:
        return Result(Outcome.delivered, status_code=resp.status_code)
    if resp.status_code == 429 or resp.status_code >= 500:
        retry_after = None
        ra = resp.headers.get("retry-after")
        if ra is not None and ra.replace(".", "", 1).isdigit():
            retry_after = float(ra)
        return Result(
            Outcome.retry,
            f"HTTP {resp.status_code}",
            resp.status_code,
            retry_after,
            rate_limited=resp.status_code == 429,
        )
    return Result(Outcome.failed, f"HTTP {resp.status_code}", resp.status_code)


def classify_errcode(
    resp: httpx.Response, code_field: str, msg_field: str, rate_codes: frozenset[int]
) -> Result:
    """Robots answer HTTP 200 with their own error code in the body (0 = sent)."""
    base = classify_response(resp)
    if base.outcome is not Outcome.delivered:
        return base
    try:
        body: Any = orjson.loads(resp.content)
        code = int(body.get(code_field, 0))
        msg = str(body.get(msg_field, ""))[:200]
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return Result(Outcome.failed, "answer is not the vendor's JSON", resp.status_code)
    if code == 0:
        return base
    if code in rate_codes:
        return Result(
            Outcome.retry, f"{code_field} {code}: {msg}", resp.status_code, rate_limited=True
        )
    return Result(Outcome.failed, f"{code_field} {code}: {msg}", resp.status_code)


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> httpx.Response | Result:
    try:
        return await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        return Result(Outcome.retry, f"timeout: {exc.__class__.__name__}")
    except httpx.HTTPError as exc:
        return Result(Outcome.retry, f"transport: {exc.__class__.__name__}")


def clip_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "..."


class Channel(ABC):
    """A destination for notices. ``send`` makes one attempt and never raises for an
    answer or a network fault; the delivery worker decides about retries."""

    kind: str

    def __init__(self, name: str, *, rate: int | None = None, locale: Locale | None = None) -> None:
        self.name = name
        self.rate = rate
        self.locale: Locale | None = locale

    @abstractmethod
    async def send(self, client: httpx.AsyncClient, notice: Notice, now: float) -> Result: ...


class SignedGroupBot(Channel, ABC):
    """A group chat robot reached by a webhook URL with an optional signing secret, that
    can @-mention people or everyone (DingTalk, Feishu/Lark)."""

    def __init__(
        self,
        name: str,
        url: str,
        secret: str | None,
        mention: list[str] | None = None,
        mention_all: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(name, **kw)
        self.url, self.secret = url, secret
        self.mention, self.mention_all = mention or [], mention_all
