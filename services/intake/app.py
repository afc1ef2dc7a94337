"""HTTP adapter: ``POST /v1/webhooks/{source}`` (and ``GET`` for subscription handshakes)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from services.intake.adapters import ADAPTERS, Ignored, InvalidPayload, SourceAdapter
from services.intake.adapters.base import FieldError
from services.intake.adapters.generic import GenericWebhookV1
from services.intake.backpressure import Limits, LoadGuard
from services.intake.batcher import GroupCommitter
from services.intake.domain import PRODUCER, EventIds, invalid_fields, to_stored
from services.intake.problems import PROBLEM_RESPONSES, problem
from services.intake.relay import POLL_SECONDS
from services.intake.settings import IntakeSettings
from services.intake.store import LOG, accept
from shared import metrics
from shared.events import utcnow
from shared.heap import freeze_startup_heap
from shared.logging import get_logger
from shared.service import Runtime, create_app
from shared.signing import SignatureError

log = get_logger(__name__)


_STDLIB_LOG = logging.getLogger(__name__)  # the level structlog's calls go through


def debug_log() -> bool:
    return _STDLIB_LOG.isEnabledFor(logging.DEBUG)  # cached by logging until a level changes


DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def build_adapters(settings: IntakeSettings) -> dict[str, SourceAdapter]:
    out: dict[str, SourceAdapter] = {}
    for name in settings.enabled_sources():
        cls = ADAPTERS[name]
        kwargs: dict[str, Any] = {"pseudonym_key": settings.pseudonym_bytes()}
        if name == "whatsapp":
            kwargs["verify_token"] = settings.verify_token()
        out[name] = cls(settings.secrets_for(name), settings.replay_window_seconds, **kwargs)
    return out


def build_worker() -> IntakeApp:
    """A worker of ``python -m services.intake``: its outbox relay runs in a process of its
    own (``services/intake/relay.py``), and its start-up heap is frozen once the pool is
    connected (``shared/heap.py``: no full collection walks it under load)."""
    app = build(relay_elsewhere=True)

    async def _freeze() -> None:
        log.info("start-up heap frozen", objects=freeze_startup_heap())

    app.state.runtime.on_ready(_freeze)
    return app


def build(settings: IntakeSettings | None = None, *, relay_elsewhere: bool = False) -> IntakeApp:
    """The intake app; its outbox relay runs in it unless ``relay_elsewhere``."""
    settings = settings or IntakeSettings()
    # Intake stays ready while the broker is down: events are durable in PostgreSQL and the
    # outbox relay publishes them when the broker is back.
    runtime = Runtime(
        PRODUCER,
        settings,
        relay=not relay_elsewhere,
        relay_elsewhere=relay_elsewhere,
        broker_required_for_ready=False,
        relay_source=LOG,
        relay_poll_interval=POLL_SECONDS,
    )
    adapters = build_adapters(settings)
    guard = LoadGuard(
        LOG,
        Limits(
            settings.max_outbox_backlog,
            settings.max_db_latency_seconds,
            settings.max_loop_lag_seconds,
        ),
        settings.load_probe_interval_seconds,
    )

    async def _start_guard() -> None:
        guard.start(runtime.pool)

    runtime.on_ready(_start_guard)
    runtime.on_stop(guard.stop)
    committer: GroupCommitter | None = None
    if settings.group_commit_wait_seconds > 0:
        committer = GroupCommitter(
            lambda: runtime.pool,
            max_batch=settings.group_commit_max_batch,
            max_wait=settings.group_commit_wait_seconds,
            connections=settings.group_commit_connections,
        )
        runtime.on_stop(committer.close)
    event_ids = EventIds()
    # Per-webhook counts and durations, added to the metric values a few times a second
    # (shared/metrics.py, Tally: a multiprocess-mode write per value cost more).
    tally = metrics.Tally(metrics.INTAKE_WEBHOOKS, metrics.INTAKE_REQUEST_SECONDS)

    async def _flush_tally() -> None:
        tally.flush()

    runtime.on_stop(_flush_tally)
    fallbacks = settings.dev_fallbacks()
    if fallbacks:
        log.warning(
            "LOCAL STACK: development values in use; never run like this anywhere else",
            unset=fallbacks,
        )

    app = create_app(
        runtime,
        title="ticketflow intake",
        description="Receives platform webhooks, verifies and normalises them.",
        app_class=IntakeApp,
    )
    assert isinstance(app, IntakeApp)
    app.state.guard = guard

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(
            422,
            "invalid",
            "Invalid request",
            "the request is not valid",
            errors=[
                FieldError(".".join(map(str, e["loc"])), str(e["msg"])) for e in exc.errors()[:20]
            ],
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(
            exc.status_code,
            slug,
            str(exc.detail),
            str(exc.detail),
            headers=dict(exc.headers or {}),
        )

    headers_doc = sorted({h for a in ADAPTERS.values() for h in a.signature_headers})
    body_schema = GenericWebhookV1.model_json_schema(ref_template="#/components/schemas/{model}")
    body_defs = body_schema.pop("$defs", {})

    @app.post(
        "/v1/webhooks/{source}",
        status_code=202,
        tags=["webhooks"],
        summary="Receive one platform webhook",
        description=(
            "`source` names the adapter (`generic`, `shopify`, `zendesk`, `whatsapp`, "
            "`taobao`, `pinduoduo`); the body and signature headers are the platform's own "
            "(see docs/adapters.md). The schema shown is the generic format."
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            },
            "parameters": [
                {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                for h in headers_doc
            ],
        },
        responses={
            200: {"description": "Duplicate (already accepted) or ignored event; nothing changed"},
            202: {"description": "Accepted: durable in PostgreSQL, queued for publishing"},
            **PROBLEM_RESPONSES,
        },
    )
    async def webhook(source: str, request: Request) -> Response:
        # Documents the endpoint; requests are answered by ``IntakeApp.__call__`` below,
        # which reaches the same ``answer`` without FastAPI's routing and middleware.
        reply = await answer(source, request.scope, request.receive)
        return Response(
            reply.body,
            reply.status,
            headers={k.decode(): v.decode() for k, v in reply.headers if k != b"content-length"},
        )

    async def answer(source: str, scope: Scope, receive: Receive) -> Reply:
        started = time.perf_counter()
        adapter = adapters.get(source)
        label = source if adapter is not None else "unknown"
        try:
            reply = await _handle(source, adapter, scope, receive)
        except Exception:
            log.exception("webhook failed", source=label)
            reply = _reply(
                problem(500, "internal", "Internal error", "the webhook was not stored"), "error"
            )
        tally.record((label, reply.outcome), (label,), time.perf_counter() - started)
        return reply

    async def fast_path(source: str, scope: Scope, receive: Receive, send: Send) -> None:
        reply = await answer(source, scope, receive)
        await send(
            {"type": "http.response.start", "status": reply.status, "headers": reply.headers}
        )
        await send({"type": "http.response.body", "body": reply.body})

    app.fast_path = fast_path

    @app.get(
        "/v1/webhooks/{source}",
        tags=["webhooks"],
        summary="Subscription handshake (WhatsApp/Meta: hub.mode, hub.verify_token, hub.challenge)",
        response_class=PlainTextResponse,
        responses={
            200: {"description": "The challenge, echoed", "content": {"text/plain": {}}},
            **{k: v for k, v in PROBLEM_RESPONSES.items() if k in (403, 404, 405)},
        },
    )
    async def handshake(source: str, request: Request) -> Response:
        adapter = adapters.get(source)
        label = source if adapter is not None else "unknown"
        resp: Response
        if adapter is None:
            resp, outcome = _unknown(source, adapters), "unknown_source"
        elif not hasattr(adapter, "handshake"):
            outcome = "method_not_allowed"
            resp = problem(
                405,
                "method-not-allowed",
                "Method not allowed",
                f"source {source!r} has no subscription handshake; POST webhooks to it",
                headers={"Allow": "POST"},
            )
        else:
            try:
                challenge = adapter.handshake(dict(request.query_params))
                resp, outcome = PlainTextResponse(challenge), "handshake"
            except SignatureError as exc:
                outcome = "handshake_refused"
                resp = problem(403, "forbidden", "Handshake refused", str(exc))
        _count(label, outcome).inc()
        return resp

    async def _handle(
        source: str, adapter: SourceAdapter | None, scope: Scope, receive: Receive
    ) -> Reply:
        if adapter is None:
            return _reply(_unknown(source, adapters), "unknown_source")
        # ASGI header names are lower-case bytes; the last of a repeated header wins.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _reply(
                problem(
                    415,
                    "unsupported-media-type",
                    "Unsupported media type",
                    "send the body as application/json",
                ),
                "unsupported_media_type",
            )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            return _reply(_too_large(settings.max_body_bytes), "too_large")
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _reply(problem(400, "disconnected", "Client disconnected", ""), "invalid")
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > settings.max_body_bytes:
                return _reply(_too_large(settings.max_body_bytes), "too_large")
        raw = bytes(body)
        try:
            adapter.verify(headers, raw, time.time())
        except SignatureError as exc:
            return _reply(
                problem(401, "unauthorized", "Signature refused", str(exc)), "unauthorized"
            )
        try:
            inbounds = adapter.parse(raw, headers)
        except InvalidPayload as exc:
            return _reply(
                problem(422, "invalid", "Invalid webhook", exc.detail, errors=exc.errors), "invalid"
            )
        except Ignored as exc:
            return _reply(JSONResponse({"status": "ignored", "reason": exc.reason}), "ignored")
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            # An input the adapter did not foresee: still the client's, never a 500.
            log.warning("adapter could not read a body", source=source, error=type(exc).__name__)
            return _reply(
                problem(422, "invalid", "Invalid webhook", "the body could not be read"), "invalid"
            )
        unstorable = [e for inbound in inbounds for e in invalid_fields(inbound)]
        if unstorable:
            return _reply(
                problem(
                    422,
                    "invalid",
                    "Invalid webhook",
                    "values the event cannot hold",
                    errors=unstorable,
                ),
                "invalid",
            )
        try:
            pool = runtime.pool
        except RuntimeError:
            return _reply(_unavailable("the database is not connected yet"), "not_ready")
        if guard.reason is not None:
            return _reply(
                problem(
                    429,
                    "overloaded",
                    "Overloaded",
                    f"{guard.reason}; retry later",
                    headers={"Retry-After": str(settings.retry_after_seconds)},
                ),
                "overloaded",
            )
        received_at = utcnow()
        events = [to_stored(source, i, received_at, event_ids.next()) for i in inbounds]
        try:
            if committer is not None:
                news = await committer.submit(events)
            else:
                news = await accept(pool, events)
        except asyncpg.DataError as exc:  # a value the database refuses: still the client's
            log.warning("database refused a value", source=source, error=type(exc).__name__)
            return _reply(
                problem(422, "invalid", "Invalid webhook", "a value cannot be stored"), "invalid"
            )
        except DB_ERRORS as exc:
            log.warning("database unavailable; refusing webhook", error=type(exc).__name__)
            return _reply(_unavailable("the event was not stored; retry later"), "unavailable")
        results = list(zip(events, news, strict=True))
        if debug_log():  # one line per webhook only when asked for (LOG_LEVEL=DEBUG)
            for event, new in results:
                log.debug(
                    "webhook accepted" if new else "duplicate webhook",
                    correlation_id=event.correlation_id,
                    source=source,
                    kind=event.kind.value,
                    ticket_id=event.ticket_id,
                )
        any_new = any(new for _, new in results)
        body_out: dict[str, Any] = {
            "status": "accepted" if any_new else "duplicate",
            "messages": [
                {
                    "message_id": e.message_id,
                    "ticket_id": e.ticket_id,
                    "event_id": e.source_event_id,
                    "duplicate": not new,
                }
                for e, new in results
            ],
        }
        if len(results) == 1:
            body_out["message_id"] = results[0][0].message_id
            body_out["ticket_id"] = results[0][0].ticket_id
        encoded = orjson.dumps(body_out)
        return Reply(
            202 if any_new else 200,
            encoded,
            [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(encoded))],
            "accepted" if any_new else "duplicate",
        )

    plain_openapi = app.openapi

    def openapi_with_body_models() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = plain_openapi()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(body_defs)
        return app.openapi_schema or plain_openapi()

    app.openapi = openapi_with_body_models  # type: ignore[method-assign]
    return app


class IntakeApp(FastAPI):
    """Answers ``POST /v1/webhooks/<source>`` straight from ASGI, before FastAPI's routing,
    dependency machinery and middleware stack (a fifth of intake's CPU per webhook under
    load); every other request, and the OpenAPI document of the webhook route, is
    FastAPI's. ``fast_path`` catches its own errors (a problem+json 500)."""

    PREFIX = "/v1/webhooks/"
    fast_path: Callable[[str, Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None and scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(self.PREFIX):
                source = path[len(self.PREFIX) :]
                if source and "/" not in source:
                    await self.fast_path(source, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]
    outcome: str


def _reply(resp: Response, outcome: str) -> Reply:
    return Reply(resp.status_code, bytes(resp.body), list(resp.raw_headers), outcome)


@functools.cache
def _count(source: str, outcome: str) -> Any:
    """The labelled child, looked up once per (source, outcome): both are bounded."""
    return metrics.INTAKE_WEBHOOKS.labels(source, outcome)


def _unknown(source: str, adapters: dict[str, SourceAdapter]) -> Response:
    return problem(
        404,
        "unknown-source",
        "Unknown source",
        f"no enabled adapter named {source[:64]!r}; enabled: {sorted(adapters)}",
    )


def _unavailable(detail: str) -> JSONResponse:
    return problem(503, "unavailable", "Service unavailable", detail, headers={"Retry-After": "5"})


def _too_large(limit: int) -> JSONResponse:
    return problem(413, "too-large", "Body too large", f"the body exceeds {limit} bytes")
