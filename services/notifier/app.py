"""Kafka and HTTP adapters of the notifier.

The escalation consumer only stores the escalation and queues its level-1 deliveries in
PostgreSQL (one short transaction), then the offset is committed: retries, rate limits
and digests happen in the per-channel delivery workers, from the table, so a slow or
throttled channel never holds up the partition and a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import html
from typing import Annotated
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from faststream.kafka import KafkaMessage
from pydantic import BaseModel, Field

from services.notifier import store
from services.notifier.channels import Channel, make_channel
from services.notifier.channels.generic import GenericWebhook
from services.notifier.domain import ack_ok
from services.notifier.routes import GENERIC, RoutesConfig, load_routes
from services.notifier.settings import NotifierSettings
from services.notifier.worker import ChannelWorker, Context, Escalator, stats_loop
from shared import metrics
from shared.deadletter import DeadLetters
from shared.events import EscalationEvent, MessageEvent, MessageKind
from shared.kafka import consume, subscriber_options
from shared.logging import get_logger
from shared.service import Runtime, create_app
from shared.topics import ESCALATIONS, MESSAGES

log = get_logger(__name__)
PRODUCER = "notifier"


def channels_from(settings: NotifierSettings, routes: RoutesConfig | None) -> dict[str, Channel]:
    out: dict[str, Channel] = {}
    if settings.generic_webhook_url:
        out[GENERIC] = GenericWebhook(
            GENERIC, settings.generic_webhook_url, settings.generic_secret()
        )
    if routes is not None:
        for name, conf in routes.channels.items():
            out[name] = make_channel(name, conf, smtp_timeout=settings.attempt_timeout_seconds)
    return out


class AckBody(BaseModel):
    by: str | None = Field(None, max_length=200, description="Who acknowledges (staff id).")


def build(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    # A bad routes file stops the service here, with the reason (RoutesError).
    routes = load_routes(settings.routes_file) if settings.routes_file else None
    # The relay publishes the dead letters (failed deliveries, poison records).
    runtime = Runtime(PRODUCER, settings, relay=True)
    dead = DeadLetters(runtime)
    broker = runtime.broker
    channels = channels_from(settings, routes)
    if not channels:
        log.warning(
            "no notification channel configured: set NOTIFIER_ROUTES_FILE or"
            " NOTIFIER_GENERIC_WEBHOOK_URL"
        )
    client = httpx.AsyncClient(timeout=settings.attempt_timeout_seconds)
    runtime.on_stop(client.aclose)
    workers: dict[str, ChannelWorker] = {}
    escalator: list[Escalator] = []

    async def start_workers() -> None:
        ctx = Context(runtime.pool, client, settings, routes, settings.lease_owner())
        for name, ch in channels.items():
            workers[name] = ChannelWorker(ctx, ch)
        failed = await store.fail_unknown_channels(runtime.pool, list(channels))
        if failed:
            log.warning("queued deliveries for removed channels failed", count=failed)
        escalator.append(Escalator(ctx, workers))

    runtime.on_ready(start_workers)

    async def run_workers() -> None:
        jobs = [w.run() for w in workers.values()]
        jobs += [escalator[0].run(), stats_loop(escalator[0].ctx, list(channels))]
        await asyncio.gather(*jobs)

    runtime.background("delivery", run_workers)

    async def handle(esc: EscalationEvent) -> str:
        route = routes.route_for(esc) if routes else None
        names = [GENERIC] if GENERIC in channels else []
        if route is not None:
            names += [c for c in route.levels[0].channels if c not in names]
        if not names:
            log.warning("escalation matches no route", ticket_id=esc.ticket_id)
            return "no_channel"
        next_in = route.levels[1].after_minutes * 60 if route and len(route.levels) > 1 else None
        fresh = await store.record_escalation(
            runtime.pool, esc, route.name if route else None, names, next_in
        )
        for n in names:
            if fresh:
                metrics.NOTIFIER_QUEUED.labels(channels[n].kind, "1").inc()
                if n in workers:
                    workers[n].wake.set()
            else:
                metrics.NOTIFIER_DELIVERIES.labels(channels[n].kind, "duplicate").inc()
        return "ok" if fresh else "duplicate"

    # FastStream's decorator is untyped; the handler's own signature is checked.
    @broker.subscriber(  # type: ignore[untyped-decorator]
        ESCALATIONS.name,
        **subscriber_options(settings.group_id, runtime.tracker()),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    async def on_escalation(message: KafkaMessage) -> None:
        await consume(dead, ESCALATIONS, message, EscalationEvent, handle)

    async def on_activity(ev: MessageEvent) -> str:
        if ev.kind is not MessageKind.ticket_resolved:
            return "ignored"
        n = await store.resolve_ticket(runtime.pool, ev.ticket_id)
        if n:
            log.info("ticket resolved: escalation stops", ticket_id=ev.ticket_id)
        return "ok" if n else "ignored"

    @broker.subscriber(  # type: ignore[untyped-decorator]
        MESSAGES.name, **subscriber_options(settings.resolution_group_id, runtime.tracker())
    )
    async def on_message(message: KafkaMessage) -> None:
        await consume(dead, MESSAGES, message, MessageEvent, on_activity)

    app = create_app(runtime, title="ticketflow notifier", description="Escalation delivery.")

    # -- acknowledgement ---------------------------------------------------------------
    def check_link(escalation_id: str, sig: str | None) -> None:
        key = settings.ack_key()
        if key is None or not ack_ok(key, escalation_id, sig):
            raise HTTPException(403, "bad or missing acknowledgement signature")

    def check_token(authorization: str | None) -> None:
        token = settings.api_token.get_secret_value() if settings.api_token else None
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not token or not hmac.compare_digest(given, token):
            raise HTTPException(401, "bearer token required (NOTIFIER_API_TOKEN)")

    async def do_ack(escalation_id: str, by: str | None, via: str) -> dict[str, object]:
        row = await store.acknowledge(runtime.pool, escalation_id, by, via)
        if row is None:
            raise HTTPException(404, "unknown escalation")
        metrics.NOTIFIER_ACKS.labels(via).inc()
        log.info("escalation acknowledged", escalation_id=escalation_id, via=via)
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}

    @app.get("/v1/ack/{escalation_id}", response_class=HTMLResponse, tags=["ack"])
    async def ack_page(escalation_id: str, sig: Annotated[str | None, Query()] = None) -> str:
        """The link in a message: a confirmation page. It does not acknowledge by itself,
        because chat apps fetch links to preview them."""
        check_link(escalation_id, sig)
        e = html.escape(escalation_id)
        s = html.escape(sig or "")
        return (
            "<!doctype html><meta charset=utf-8><title>Acknowledge</title>"
            f"<p>工单升级 / Escalation <code>{e}</code></p>"
            f'<form method="post" action="?sig={s}">'
            '<label>工号 / Staff id <input name="by" maxlength="200"></label> '
            "<button>确认已处理 / Acknowledge</button></form>"
        )

    @app.post("/v1/ack/{escalation_id}", response_class=HTMLResponse, tags=["ack"])
    async def ack_link(
        escalation_id: str,
        request: Request,
        sig: Annotated[str | None, Query()] = None,
        by: Annotated[str | None, Query(max_length=200)] = None,
    ) -> str:
        """Acknowledge through the signed link (the page's form, or a POST with ``?by=``)."""
        check_link(escalation_id, sig)
        if by is None and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            form = parse_qs((await request.body())[:2000].decode(errors="replace"))
            by = (form.get("by") or [""])[0][:200] or None
        await do_ack(escalation_id, by, "link")
        return "<!doctype html><meta charset=utf-8><p>已确认 / Acknowledged.</p>"

    @app.post("/v1/escalations/{escalation_id}/ack", tags=["ack"])
    async def ack_api(
        escalation_id: str,
        body: AckBody | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, object]:
        check_token(authorization)
        return await do_ack(escalation_id, body.by if body else None, "api")

    @app.get("/v1/escalations/{escalation_id}", tags=["ack"])
    async def escalation(
        escalation_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, object]:
        check_token(authorization)
        row = await store.escalation_status(runtime.pool, escalation_id)
        if row is None:
            raise HTTPException(404, "unknown escalation")
        return row

    return app
