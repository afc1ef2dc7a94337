"""A real local HTTP receiver for notifications: records bodies and checks signatures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.signing import SignatureError, verify


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    signature_ok: bool
    at: float


@dataclass
class Receiver:
    secret: bytes
    fail_first: int = 0  # answer 503 to the first N requests (retry tests)
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        async def hook(request: Request) -> JSONResponse:
            raw = await request.body()
            self.attempts += 1
            if self.attempts <= self.fail_first:
                return JSONResponse({"error": "try later"}, status_code=503)
            try:
                verify(
                    [self.secret],
                    request.headers.get("x-timestamp"),
                    request.headers.get("x-signature"),
                    raw,
                    time.time(),
                )
                ok = True
            except SignatureError:
                ok = False
            self.received.append(
                Received(dict(request.headers), orjson.loads(raw), ok, time.time())
            )
            self.event.set()
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    async def wait(self, pred: Any, timeout: float) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            for r in self.received:
                if pred(r):
                    return r
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching notification received")
            self.event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), min(left, 0.5))
