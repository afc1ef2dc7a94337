"""HTTP adapter: ``POST /v1/webhooks/{source}`` (and ``GET`` for subscription handshakes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from services.intake.adapters import ADAPTERS, Ignored, InvalidPayload, SourceAdapter
from services.intake.adapters.base import FieldError
from services.intake.adapters.generic import GenericWebhookV1
from services.intake.backpressure import Limits, LoadGuard
from services.intake.batcher import GroupCommitter
from services.intake.domain import PRODUCER, normalise, unstorable_fields
from services.intake.problems import PROBLEM_RESPONSES, problem
from services.intake.settings import IntakeSettings
from services.intake.store import accept
from shared import metrics
from shared.events import utcnow
from shared.logging import get_logger
from shared.service import Runtime, create_app
from shared.signing import SignatureError

log = get_logger(__name__)


def debug_log() -> bool:
    return logging.getLogger(__name__).isEnabledFor(logging.DEBUG)


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


def build(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    # Intake stays ready while the broker is down: events are durable in PostgreSQL and the
    # outbox relay publishes them when the broker is back.
    runtime = Runtime(PRODUCER, settings, relay=True, broker_required_for_ready=False)
    adapters = build_adapters(settings)
    guard = LoadGuard(
        PRODUCER,
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
        )
        runtime.on_stop(committer.close)
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
    )
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
        started = time.perf_counter()
        adapter = adapters.get(source)
        label = source if adapter is not None else "unknown"
        response = await _handle(source, adapter, request)
        outcome = response.headers.get("x-outcome", "error")
        metrics.INTAKE_WEBHOOKS.labels(label, outcome).inc()
        metrics.INTAKE_REQUEST_SECONDS.labels(label).observe(time.perf_counter() - started)
        return response

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
        if adapter is None:
            resp = _unknown(source, adapters)
        elif not hasattr(adapter, "handshake"):
            resp = _tag(
                problem(
                    405,
                    "method-not-allowed",
                    "Method not allowed",
                    f"source {source!r} has no subscription handshake; POST webhooks to it",
                    headers={"Allow": "POST"},
                ),
                "method_not_allowed",
            )
        else:
            try:
                challenge = adapter.handshake(dict(request.query_params))
                resp = _tag(PlainTextResponse(challenge), "handshake")
            except SignatureError as exc:
                resp = _tag(
                    problem(403, "forbidden", "Handshake refused", str(exc)), "handshake_refused"
                )
        metrics.INTAKE_WEBHOOKS.labels(label, resp.headers["x-outcome"]).inc()
        return resp

    async def _handle(source: str, adapter: SourceAdapter | None, request: Request) -> Response:
        if adapter is None:
            return _unknown(source, adapters)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _tag(
                problem(
                    415,
                    "unsupported-media-type",
                    "Unsupported media type",
                    "send the body as application/json",
                ),
                "unsupported_media_type",
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            return _tag(_too_large(settings.max_body_bytes), "too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                return _tag(_too_large(settings.max_body_bytes), "too_large")
        raw = bytes(body)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            adapter.verify(headers, raw, time.time())
        except SignatureError as exc:
            return _tag(problem(401, "unauthorized", "Signature refused", str(exc)), "unauthorized")
        try:
            inbounds = adapter.parse(raw, headers)
        except InvalidPayload as exc:
            return _tag(
                problem(422, "invalid", "Invalid webhook", exc.detail, errors=exc.errors), "invalid"
            )
        except Ignored as exc:
            return _tag(JSONResponse({"status": "ignored", "reason": exc.reason}), "ignored")
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            # An input the adapter did not foresee: still the client's, never a 500.
            log.warning("adapter could not read a body", source=source, error=type(exc).__name__)
            return _tag(
                problem(422, "invalid", "Invalid webhook", "the body could not be read"), "invalid"
            )
        unstorable = [e for inbound in inbounds for e in unstorable_fields(inbound)]
        if unstorable:
            return _tag(
                problem(
                    422,
                    "invalid",
                    "Invalid webhook",
                    "text that cannot be stored",
                    errors=unstorable,
                ),
                "invalid",
            )
        try:
            pool = runtime.pool
        except RuntimeError:
            return _tag(_unavailable("the database is not connected yet"), "not_ready")
        if guard.reason is not None:
            return _tag(
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
        events = [normalise(source, inbound, received_at) for inbound in inbounds]
        try:
            if committer is not None:
                news = await committer.submit(events)
            else:
                news = [await accept(pool, event) for event in events]
        except asyncpg.DataError as exc:  # a value the database refuses: still the client's
            log.warning("database refused a value", source=source, error=type(exc).__name__)
            return _tag(
                problem(422, "invalid", "Invalid webhook", "a value cannot be stored"), "invalid"
            )
        except DB_ERRORS as exc:
            log.warning("database unavailable; refusing webhook", error=type(exc).__name__)
            return _tag(_unavailable("the event was not stored; retry later"), "unavailable")
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
        return _tag(
            JSONResponse(body_out, status_code=202 if any_new else 200),
            "accepted" if any_new else "duplicate",
        )

    # The hot path skips FastAPI's routing, dependency machinery and exception middleware:
    # a pure ASGI middleware answers POST /v1/webhooks/<source> with the same handler. The
    # FastAPI route above stays for the OpenAPI document and for every other method.
    app.add_middleware(WebhookFastPath, handler=webhook)

    plain_openapi = app.openapi

    def openapi_with_body_models() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = plain_openapi()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(body_defs)
        return app.openapi_schema or plain_openapi()

    app.openapi = openapi_with_body_models  # type: ignore[method-assign]
    return app


class WebhookFastPath:
    PREFIX = "/v1/webhooks/"

    def __init__(self, app: ASGIApp, handler: Callable[[str, Request], Awaitable[Response]]):
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "POST" and path.startswith(self.PREFIX):
            source = path[len(self.PREFIX) :]
            if source and "/" not in source:
                response = await self.handler(source, Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _unknown(source: str, adapters: dict[str, SourceAdapter]) -> Response:
    return _tag(
        problem(
            404,
            "unknown-source",
            "Unknown source",
            f"no enabled adapter named {source[:64]!r}; enabled: {sorted(adapters)}",
        ),
        "unknown_source",
    )


def _unavailable(detail: str) -> JSONResponse:
    return problem(503, "unavailable", "Service unavailable", detail, headers={"Retry-After": "5"})


def _too_large(limit: int) -> JSONResponse:
    return problem(413, "too-large", "Body too large", f"the body exceeds {limit} bytes")


def _tag(resp: Response, outcome: str) -> Response:
    resp.headers["x-outcome"] = outcome
    return resp
