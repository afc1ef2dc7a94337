"""HTTP adapter: ``POST /v1/webhooks/{source}``."""

from __future__ import annotations

import time

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.intake.adapters import ADAPTERS, InvalidPayload, SourceAdapter
from services.intake.adapters.generic import GenericWebhookV1
from services.intake.domain import PRODUCER, normalise
from services.intake.problems import problem
from services.intake.settings import IntakeSettings
from services.intake.store import accept
from shared import metrics
from shared.events import utcnow
from shared.logging import correlation, get_logger
from shared.service import Runtime, create_app
from shared.signing import SignatureError

log = get_logger(__name__)


def build(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    # Intake stays ready while the broker is down: events are durable in PostgreSQL and the
    # outbox relay publishes them when the broker is back.
    runtime = Runtime(PRODUCER, settings, relay=True, broker_required_for_ready=False)
    adapters: dict[str, SourceAdapter] = {
        name: cls(settings.secrets_for(name), settings.replay_window_seconds)
        for name, cls in ADAPTERS.items()
    }
    if settings.uses_dev_secret():
        log.warning(
            "INTAKE_GENERIC_SECRET is not set: using the DEVELOPMENT secret of the local stack;"
            " never run like this anywhere else"
        )

    app = create_app(
        runtime,
        title="ticketflow intake",
        description="Receives platform webhooks, verifies and normalises them.",
    )

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        from services.intake.adapters.base import FieldError

        return problem(
            422,
            "invalid",
            "Invalid request",
            "the request is not valid",
            errors=[FieldError(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()],
        )

    @app.post(
        "/v1/webhooks/{source}",
        status_code=202,
        tags=["webhooks"],
        summary="Receive one platform webhook",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": GenericWebhookV1.model_json_schema()}},
            },
            "parameters": [
                {
                    "name": "X-Timestamp",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                },
                {
                    "name": "X-Signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                },
            ],
        },
        responses={
            200: {"description": "Duplicate: already accepted, nothing changed"},
            401: {"description": "Bad or missing signature"},
            404: {"description": "Unknown source"},
            413: {"description": "Body too large"},
            415: {"description": "Not JSON"},
            422: {"description": "Invalid body (RFC 9457 problem with field errors)"},
            503: {"description": "Not ready (database unavailable)"},
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

    async def _handle(source: str, adapter: SourceAdapter | None, request: Request) -> Response:
        if adapter is None:
            return _tag(
                problem(
                    404,
                    "unknown-source",
                    "Unknown source",
                    f"no adapter named {source!r}; known: {sorted(adapters)}",
                ),
                "unknown_source",
            )
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
            inbounds = adapter.parse(raw)
        except InvalidPayload as exc:
            return _tag(
                problem(422, "invalid", "Invalid webhook", exc.detail, errors=exc.errors), "invalid"
            )
        try:
            pool = runtime.pool
        except RuntimeError:
            return _tag(
                problem(
                    503,
                    "not-ready",
                    "Not ready",
                    "the database is not connected yet",
                    headers={"Retry-After": "5"},
                ),
                "not_ready",
            )
        received_at = utcnow()
        results = []
        try:
            for inbound in inbounds:
                event = normalise(source, inbound, received_at)
                with correlation(event.correlation_id):
                    new = await accept(pool, event)
                    log.info(
                        "webhook accepted" if new else "duplicate webhook",
                        source=source,
                        kind=event.kind.value,
                        ticket_id=event.ticket_id,
                    )
                results.append((event, new))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("database unavailable; refusing webhook", error=repr(exc))
            return _tag(
                problem(
                    503,
                    "unavailable",
                    "Database unavailable",
                    "the event was not stored; retry later",
                    headers={"Retry-After": "5"},
                ),
                "unavailable",
            )
        any_new = any(new for _, new in results)
        body_out = {
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

    return app


def _too_large(limit: int) -> JSONResponse:
    return problem(413, "too-large", "Body too large", f"the body exceeds {limit} bytes")


def _tag(resp: Response, outcome: str) -> Response:
    resp.headers["x-outcome"] = outcome
    return resp
