"""A local pager inbox: a real HTTP receiver of the notifier's signed JSON webhooks.

``make run`` starts it (port 8084, ``LOCAL_INBOX_PORT``) and points the notifier's generic
webhook at it unless ``NOTIFIER_GENERIC_WEBHOOK_URL`` or ``NOTIFIER_ROUTES_FILE`` is set,
so that a newcomer sees the push a second-line agent would get: each escalation is
printed on the console as it arrives and listed, newest first, at ``GET /v1/received``.
It checks the signature as a real receiver must (``X-Timestamp``/``X-Signature``,
``shared.signing``) and answers ``401`` to a bad one, which it still records with
``signature_ok: false``. The tests use the same class in-process (``fail_first`` answers
``503`` to the first requests, to exercise the notifier's retries).

Run alone: ``python -m tools.inbox --port 8084`` (secret from
``NOTIFIER_GENERIC_WEBHOOK_SECRET``, else the local stack's development secret).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify

KEEP = 500  # most notifications kept for GET /v1/received


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    signature_ok: bool
    at: float  # unix time of arrival


@dataclass
class Inbox:
    secret: bytes
    fail_first: int = 0  # answer 503 to the first N requests (retry tests)
    on_receive: Callable[[Received], None] | None = None
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            raw = await request.body()
            self.attempts += 1
            if self.attempts <= self.fail_first:
                return JSONResponse({"error": "try later"}, status_code=503)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return JSONResponse({"error": "body is not JSON"}, status_code=400)
            try:
                verify(
                    [self.secret],
                    request.headers.get(TIMESTAMP_HEADER),
                    request.headers.get(SIGNATURE_HEADER),
                    raw,
                    time.time(),
                )
                ok = True
            except SignatureError:
                ok = False
            got = Received(dict(request.headers), body, ok, time.time())
            self.received.append(got)
            del self.received[:-KEEP]
            self.event.set()
            if self.on_receive is not None:
                self.on_receive(got)
            if not ok:
                return JSONResponse({"error": "bad signature"}, status_code=401)
            return JSONResponse({"ok": True})

        async def listing(_request: Request) -> Response:
            return JSONResponse(
                [
                    {"received_at": r.at, "signature_ok": r.signature_ok, "body": r.body}
                    for r in reversed(self.received)
                ]
            )

        async def ok(_request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        return Starlette(
            routes=[
                Route("/hook", hook, methods=["POST"]),
                Route("/v1/received", listing, methods=["GET"]),
                Route("/healthz", ok, methods=["GET"]),
                Route("/readyz", ok, methods=["GET"]),
            ]
        )

    async def wait(self, pred: Callable[[Received], bool], timeout: float) -> Received:
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


def summary(r: Received) -> str:
    """A notification on the console: what it is about, then its links (the ticket, the
    acknowledgement); no customer data (the body's ``customer_ref`` is not printed)."""
    b = r.body
    sig = "" if r.signature_ok else "  BAD SIGNATURE (answered 401)"
    if b.get("kind") == "digest":
        return f"PAGE digest {b.get('escalation_id')}{sig}"
    links = b.get("links") or {}
    return (
        f"PAGE level {b.get('level')} {b.get('reason')}: ticket {b.get('ticket_id')}"
        f" {b.get('priority')}/{b.get('tier')} {b.get('category')}"
        f" agent {b.get('agent_id') or '-'}{sig}"
        + "".join(f"\n     {label}: {url}" for label, url in links.items())
    )


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from services.notifier.settings import DEV_SECRET

    parser = argparse.ArgumentParser(prog="python -m tools.inbox", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOCAL_INBOX_PORT", 8084)))
    args = parser.parse_args(argv)
    secret = os.environ.get("NOTIFIER_GENERIC_WEBHOOK_SECRET") or DEV_SECRET
    inbox = Inbox(secret.encode(), on_receive=lambda r: print(summary(r), flush=True))
    uvicorn.run(inbox.app(), host="127.0.0.1", port=args.port, log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
