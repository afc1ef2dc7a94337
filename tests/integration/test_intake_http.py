"""Intake over real HTTP against the real database and broker: every adapter's fixture,
every status of the contract with an RFC 9457 body, the handshake, and backpressure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.intake.adapters.shopify import shopify_signature
from services.intake.adapters.whatsapp import whatsapp_signature
from services.intake.adapters.zendesk import zendesk_signature
from services.intake.settings import DEV_SECRET, DEV_VERIFY_TOKEN, IntakeSettings
from shared.kafka import ensure_topics
from shared.localstack import Broker, free_port
from shared.outbox_log import LogSource
from tests.helpers import (
    FIXTURES,
    Sink,
    TopicReader,
    generic_body,
    serving,
    signed,
    uid,
    wait_ready,
)

pytestmark = pytest.mark.integration

DEV = DEV_SECRET.encode()
PHONE = "13800138000"


@pytest.fixture
async def intake(service_env) -> AsyncIterator[str]:
    from services.intake.app import build

    async with serving(build(IntakeSettings(max_body_bytes=4096, max_loop_lag_seconds=60))) as url:
        await wait_ready(url)
        yield url


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["type"].startswith("https://") and body["title"]
    return body


async def test_generic_accept_duplicate_and_publish(intake, pool, service_env):
    body = generic_body()
    raw, headers = signed(body)
    async with (
        httpx.AsyncClient(base_url=intake) as c,
        TopicReader(service_env.bootstrap, "cs.messages.v1") as messages,
    ):
        r = await c.post("/v1/webhooks/generic", content=raw, headers=headers)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "accepted"
        again = await c.post("/v1/webhooks/generic", content=raw, headers=headers)
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        assert again.json()["message_id"] == r.json()["message_id"]
        [published] = await messages.wait_for(lambda e: e["source_event_id"] == body["event_id"])
        await messages.drain(0.5)
        assert sum(1 for e in messages.seen if e["source_event_id"] == body["event_id"]) == 1
    stored = await pool.fetchval(
        "SELECT event::text FROM intake_events WHERE source='generic' AND source_event_id=$1",
        body["event_id"],
    )
    for private in ("张三", PHONE):
        assert private not in stored and private not in json.dumps(published, ensure_ascii=False)


async def test_every_adapter_accepts_its_fixture_over_http(intake, pool):
    vectors = json.loads((FIXTURES / "SIGNATURE_TEST_VECTORS.json").read_text())
    async with httpx.AsyncClient(base_url=intake) as c:
        # shopify orders/paid: genuine, acknowledged and ignored (signed with the dev secret).
        body = (FIXTURES / vectors["shopify"][0]["body_file"]).read_bytes()
        h = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/paid",
            "X-Shopify-Shop-Domain": "test.myshopify.com",
            "X-Shopify-Hmac-Sha256": shopify_signature(DEV, body),
        }
        r = await c.post("/v1/webhooks/shopify", content=body, headers=h)
        assert r.status_code == 200 and r.json()["status"] == "ignored", r.text
        h["X-Shopify-Hmac-Sha256"] = vectors["shopify"][0]["X-Shopify-Hmac-Sha256"]
        is_problem(await c.post("/v1/webhooks/shopify", content=body, headers=h), 401)

        # whatsapp: a real message; the phone number never reaches the database.
        wa = json.loads((FIXTURES / "whatsapp/pywa_message_text.json").read_text())
        wa["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = uid("wamid")
        body = json.dumps(wa).encode()
        h = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": whatsapp_signature(DEV, body),
        }
        r = await c.post("/v1/webhooks/whatsapp", content=body, headers=h)
        assert r.status_code == 202, r.text
        stored = await pool.fetchval(
            "SELECT event::text FROM intake_events WHERE message_id=$1", r.json()["message_id"]
        )
        assert "972987654321" not in stored and "Test Name" not in stored
        h["X-Hub-Signature-256"] = whatsapp_signature(b"wrong", body)
        is_problem(await c.post("/v1/webhooks/whatsapp", content=body, headers=h), 401)

        # zendesk: the vector's body, signed now (the vector's own timestamp is years old).
        zbody = json.dumps({"ticket_id": uid("z"), "subject": "Where is my order?"}).encode()
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        h = {
            "Content-Type": "application/json",
            "X-Zendesk-Webhook-Signature": zendesk_signature(DEV, ts, zbody),
            "X-Zendesk-Webhook-Signature-Timestamp": ts,
        }
        assert (await c.post("/v1/webhooks/zendesk", content=zbody, headers=h)).status_code == 202
        old = "2021-03-25T05:09:27Z"
        h["X-Zendesk-Webhook-Signature-Timestamp"] = old
        h["X-Zendesk-Webhook-Signature"] = zendesk_signature(DEV, old, zbody)
        is_problem(await c.post("/v1/webhooks/zendesk", content=zbody, headers=h), 401)

        # taobao TMC and pinduoduo, forwarded by their bridges with the generic scheme.
        tmc = json.loads((FIXTURES / "taobao_tmc/tmc_message_format.json").read_text())
        msg = tmc["example_message_CONSTRUCTED_not_captured"] | {"id": uid("tmc")}
        pdd = json.loads((FIXTURES / "pinduoduo/pdd_message_format.json").read_text())
        content = json.loads(pdd["captured_message"]["content"]) | {"refund_id": uid("r")}
        pmsg = pdd["captured_message"] | {"content": json.dumps(content)}
        for source, payload in (("taobao", msg), ("pinduoduo", pmsg)):
            raw, headers = signed(payload)
            r = await c.post(f"/v1/webhooks/{source}", content=raw, headers=headers)
            assert r.status_code == 202, r.text
            headers["X-Signature"] = "sha256=" + "0" * 64
            is_problem(await c.post(f"/v1/webhooks/{source}", content=raw, headers=headers), 401)


async def test_contract_statuses_have_problem_bodies(intake):
    async with httpx.AsyncClient(base_url=intake) as c:
        raw, headers = signed(generic_body())
        body = is_problem(await c.post("/v1/webhooks/nope", content=raw, headers=headers), 404)
        assert "generic" in body["detail"]
        is_problem(await c.post("/v1/webhooks/generic", content=raw), 415)
        is_problem(
            await c.post(
                "/v1/webhooks/generic",
                content=raw,
                headers=headers | {"Content-Type": "text/plain"},
            ),
            415,
        )
        is_problem(
            await c.post(
                "/v1/webhooks/generic", content=raw, headers=headers | {"X-Signature": "x"}
            ),
            401,
        )
        stale = signed(generic_body(), now=time.time() - 3600)
        is_problem(await c.post("/v1/webhooks/generic", content=stale[0], headers=stale[1]), 401)
        big = signed(generic_body(text="长" * 5000))
        is_problem(await c.post("/v1/webhooks/generic", content=big[0], headers=big[1]), 413)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: streamed
            for _ in range(10):
                yield b" " * 1000

        is_problem(
            await c.post(
                "/v1/webhooks/generic",
                content=chunks(),
                headers={"Content-Type": "application/json"},
            ),
            413,
        )
        bad = signed(generic_body(channel="pigeon", occurred_at="yesterday"))
        p = is_problem(await c.post("/v1/webhooks/generic", content=bad[0], headers=bad[1]), 422)
        assert {e["field"] for e in p["errors"]} == {"channel", "occurred_at"}
        is_problem(await c.put("/v1/webhooks/generic", content=raw, headers=headers), 405)
        is_problem(await c.get("/nowhere"), 404)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"null",
        b'{"event_id": "\\ud800"}',
        b"\xff\xfe\x00garbage",
        ("[" * 2000 + "]" * 2000).encode(),
        ('{"a":' * 1000 + "1" + "}" * 1000).encode(),
        json.dumps(generic_body(text="😀👍🏽 \u202e\u0000 テスト"), ensure_ascii=False).encode(),
        json.dumps(generic_body(event_id="x" * 300)).encode(),
        json.dumps(generic_body(customer={"id": "c", "vip_level": 10**30})).encode(),
        json.dumps(generic_body(order={"id": "o", "amount": 1e308})).encode(),
        json.dumps(generic_body(order={"id": "o", "amount": "NaN"})).encode(),
    ],
)
async def test_malformed_unicode_nested_bodies_never_500(intake, raw):
    async with httpx.AsyncClient(base_url=intake) as c:
        for source in ("generic", "taobao", "pinduoduo", "zendesk"):
            body, headers = signed(raw)
            if source == "zendesk":
                ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                headers |= {
                    "X-Zendesk-Webhook-Signature": base64.b64encode(
                        hmac.new(DEV, ts.encode() + body, hashlib.sha256).digest()
                    ).decode(),
                    "X-Zendesk-Webhook-Signature-Timestamp": ts,
                }
            r = await c.post(f"/v1/webhooks/{source}", content=body, headers=headers)
            assert r.status_code < 500, (source, r.status_code, r.text)
            assert r.status_code in (200, 202, 413, 422), (source, r.status_code, r.text)


async def test_whatsapp_subscription_handshake(intake):
    q = {"hub.mode": "subscribe", "hub.verify_token": DEV_VERIFY_TOKEN, "hub.challenge": "8472"}
    async with httpx.AsyncClient(base_url=intake) as c:
        r = await c.get("/v1/webhooks/whatsapp", params=q)
        assert r.status_code == 200 and r.text == "8472"
        is_problem(await c.get("/v1/webhooks/whatsapp", params=q | {"hub.verify_token": "x"}), 403)
        is_problem(await c.get("/v1/webhooks/generic", params=q), 405)
        is_problem(await c.get("/v1/webhooks/unknown", params=q), 404)


async def test_disabled_source_is_404(service_env):
    from services.intake.app import build

    async with serving(build(IntakeSettings(sources="generic"))) as url:
        raw, headers = signed({"topic": "x"})
        async with httpx.AsyncClient(base_url=url) as c:
            is_problem(await c.post("/v1/webhooks/taobao", content=raw, headers=headers), 404)


async def post_until(c: httpx.AsyncClient, status: int, timeout: float = 15) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        raw, headers = signed(generic_body())
        r = await c.post("/v1/webhooks/generic", content=raw, headers=headers)
        if r.status_code == status or time.monotonic() > deadline:
            return r


async def test_429_when_outbox_backlog_passes_its_bound(service_env, own_dsn, monkeypatch):
    """Intake's own broker stops after start-up, so the relay cannot publish and accepted
    events pile up in the outbox; past the bound intake sheds load with 429 + Retry-After.
    On a database of its own: a relay on a broker of its own finds the kept rows of earlier
    tests missing there and records a loss, which the other tests' relays would act on."""
    from services.intake.app import build

    broker = Broker(port=free_port())
    broker.start()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("DATABASE_URL", own_dsn)
    settings = IntakeSettings(
        max_outbox_backlog=3, load_probe_interval_seconds=0.05, max_loop_lag_seconds=60
    )
    try:
        async with serving(build(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            await wait_ready(url)
            broker.stop()
            r = await post_until(c, 429)
            body = is_problem(r, 429)
            assert "backlog" in body["detail"] and int(r.headers["Retry-After"]) >= 1
            m = (await c.get("/metrics")).text
            assert 'intake_webhooks_total{outcome="overloaded",source="generic"}' in m
            assert "intake_overloaded 1.0" in m
            # Back to normal once the broker returns and the relay drains the backlog.
            broker.start()
            await ensure_topics(broker.bootstrap)
            r = await post_until(c, 202, timeout=60)
            assert r.status_code == 202, r.text
    finally:
        broker.stop()


async def test_load_probe_counts_only_when_the_seq_bound_reaches_the_limit(pool):
    """The probe takes the seq values handed out above the highest one published as the
    backlog (an upper bound) and counts the rows above the relay's cursor only once that
    bound reaches the limit: values drawn by inserts that stored nothing (a duplicate's
    ``ON CONFLICT DO NOTHING``) widen the bound without refusing anything."""
    from services.intake.backpressure import Limits, LoadGuard

    sink = Sink("log")
    me = uid("probe")
    source = await sink.source(pool, me)
    assert isinstance(source, LogSource)
    table = sink.tables[me]
    await pool.execute(f"CREATE UNIQUE INDEX ON {table} (correlation_id)")

    async def add(ids: list[str]) -> None:
        await pool.execute(
            f"INSERT INTO {table} (topic, payload, correlation_id)"
            " SELECT 'x', '\\x00'::bytea, i FROM unnest($1::text[]) i ON CONFLICT DO NOTHING",
            ids,
        )

    for one in ("a", "b", "c"):  # seq 1, 2, 3: a transaction each
        await add([one])
    await add(["d", "e", "f"])  # seq 4-6
    guard = LoadGuard(source, Limits(max_backlog=10, max_latency=60))
    await guard.probe(pool)
    assert (guard.backlog, guard.reason) == (6, None)  # the bound, below the limit
    await add(["d", "e", "f"])  # seq 7-9 drawn, nothing stored
    await add(["d", "e", "f"])  # seq 10-12
    await guard.probe(pool)
    assert (guard.backlog, guard.reason) == (6, None)  # the bound reached 12: counted
    tight = LoadGuard(source, Limits(max_backlog=4, max_latency=60))
    await tight.probe(pool)
    assert tight.backlog == 4 and tight.reason is not None and "backlog" in tight.reason
    # The relay published up to c: three rows are left (the bound, 12 - 3, is above 4).
    c = await pool.fetchrow(f"SELECT xid::text AS xid, seq FROM {table} WHERE seq = 3")
    await pool.execute(
        "INSERT INTO outbox_log_cursor (producer, xid, seq, max_seq)"
        " VALUES ($1, $2::text::xid8, $3, $3)",
        me,
        c["xid"],
        c["seq"],
    )
    await tight.probe(pool)
    assert (tight.backlog, tight.reason) == (3, None)


async def test_429_when_database_latency_passes_its_bound(service_env):
    from services.intake.app import build

    settings = IntakeSettings(
        max_db_latency_seconds=1e-9, load_probe_interval_seconds=0.05, max_loop_lag_seconds=60
    )
    async with serving(build(settings)) as url, httpx.AsyncClient(base_url=url) as c:
        await wait_ready(url)
        body = is_problem(await post_until(c, 429), 429)
        assert "latency" in body["detail"]


async def test_503_when_database_is_unreachable(service_env, monkeypatch):
    from services.intake.app import build

    monkeypatch.setenv("DATABASE_URL", f"postgresql://x@127.0.0.1:{free_port()}/x")
    async with serving(build()) as url, httpx.AsyncClient(base_url=url) as c:
        raw, headers = signed(generic_body())
        r = await c.post("/v1/webhooks/generic", content=raw, headers=headers)
        is_problem(r, 503)
        assert r.headers["Retry-After"]
        assert (await c.get("/readyz")).status_code == 503


async def test_metrics_carry_bounded_labels_only(intake):
    async with httpx.AsyncClient(base_url=intake) as c:
        raw, headers = signed(generic_body(shop_id="shop-" + PHONE))
        await c.post(f"/v1/webhooks/{PHONE}", content=raw, headers=headers)
        await c.post("/v1/webhooks/generic", content=raw, headers=headers)
        m = (await c.get("/metrics")).text
    assert PHONE not in m
    assert 'intake_webhooks_total{outcome="unknown_source",source="unknown"}' in m
    assert "intake_request_seconds_bucket" in m


async def test_no_personal_data_in_logs(intake, capfd):
    """With the per-webhook debug lines on, as when someone traces a problem."""
    logger = logging.getLogger("services.intake.app")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        await _post_private(intake)
    finally:
        logger.setLevel(old_level)
    out, err = capfd.readouterr()
    assert "webhook accepted" in out + err
    for private in ("李四", PHONE):
        assert private not in out + err


async def _post_private(intake: str) -> None:
    body = generic_body(
        customer={"id": uid("c"), "name": "李四", "phone": PHONE, "vip_level": 1},
        shop_id="shop-1",
    )
    raw, headers = signed(body)
    async with httpx.AsyncClient(base_url=intake) as c:
        assert (
            await c.post("/v1/webhooks/generic", content=raw, headers=headers)
        ).status_code == 202
        bad = signed(generic_body(customer={"id": "c", "name": "李四", "phone": "x" * 100}))
        assert (
            await c.post("/v1/webhooks/generic", content=bad[0], headers=bad[1])
        ).status_code == 422


async def test_429_when_the_event_loop_lags(service_env):
    """A CPU-saturated process: the test blocks the event loop (as a busy CPU would) and
    intake sheds the next webhooks with 429."""
    from services.intake.app import build

    settings = IntakeSettings(max_loop_lag_seconds=0.1, load_probe_interval_seconds=0.02)
    async with serving(build(settings)) as url, httpx.AsyncClient(base_url=url) as c:
        await wait_ready(url)
        deadline = time.monotonic() + 15
        while True:
            time.sleep(0.3)  # noqa: ASYNC251 - blocking on purpose: this is the lag
            raw, headers = signed(generic_body())
            r = await c.post("/v1/webhooks/generic", content=raw, headers=headers)
            if r.status_code == 429 or time.monotonic() > deadline:
                break
        body = is_problem(r, 429)
        assert "loop lag" in body["detail"]


async def test_a_fault_of_ours_is_a_500_problem_and_counted(intake, monkeypatch):
    """The webhook path runs outside FastAPI's error middleware: an unforeseen error of
    intake's own still answers an RFC 9457 500 (nothing stored) and is counted."""
    from services.intake.adapters.generic import GenericAdapter

    def broken(self: object, body: bytes, headers: object) -> list[object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(GenericAdapter, "parse", broken)
    raw, headers = signed(generic_body())
    async with httpx.AsyncClient(base_url=intake) as c:
        r = await c.post("/v1/webhooks/generic", content=raw, headers=headers)
        is_problem(r, 500)
        m = (await c.get("/metrics")).text
    assert 'intake_webhooks_total{outcome="error",source="generic"}' in m
