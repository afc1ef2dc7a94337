"""Each channel against a local receiver that checks the vendor's documented format and
signature (robots/outbound_robot_formats.json, SIGNATURE_TEST_VECTORS.json), and e-mail
against a real local SMTP server (aiosmtpd).

``VendorReceiver`` verifies with its own implementation of each vendor's algorithm (not
the channel's), proven first against the published vectors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.notifier.channels.base import Outcome
from services.notifier.channels.dingtalk import DingTalkRobot
from services.notifier.channels.email import EmailChannel
from services.notifier.channels.feishu import FeishuBot
from services.notifier.channels.generic import GenericWebhook
from services.notifier.channels.slack import SlackWebhook
from services.notifier.channels.wecom import WeComRobot
from services.notifier.messages import render_digest, render_escalation, summarise
from shared.events import Category, EscalationEvent, EscalationReason, Priority, Tier
from shared.signing import SignatureError, verify
from tests.helpers import FIXTURES, free_port, serving, uid

VECTORS = json.loads((FIXTURES / "SIGNATURE_TEST_VECTORS.json").read_text())
FORMATS = json.loads((FIXTURES / "robots" / "outbound_robot_formats.json").read_text())


# -- the receiver's own checks --------------------------------------------------------------


def ding_expected(secret: str, ts_ms: str) -> str:
    string_to_sign = f"{ts_ms}\n{secret}"
    return base64.b64encode(
        hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).digest()
    ).decode()


def feishu_expected(secret: str, ts_s: str) -> str:
    key = f"{ts_s}\n{secret}"
    return base64.b64encode(hmac.new(key.encode(), b"", hashlib.sha256).digest()).decode()


def raw_query_param(query: str, name: str) -> str | None:
    for part in query.split("&"):
        k, _, v = part.partition("=")
        if k == name:
            return v
    return None


def test_receiver_checks_match_the_vectors() -> None:
    for v in VECTORS["dingtalk"]:
        assert ding_expected(v["secret"], v["timestamp_ms"]) == v["sign_base64"]
        assert raw_query_param(v["url"].split("?", 1)[1], "sign") == v["sign_urlencoded"]
    for v in VECTORS["feishu"]:
        assert feishu_expected(v["secret"], v["timestamp_s"]) == v["sign"]
        assert v["wrong_dingtalk_style_sign_should_be_rejected"] != v["sign"]


@dataclass
class Got:
    vendor: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class VendorReceiver:
    """Answers like the vendors do: HTTP 200 with an error code for a bad request."""

    ding_token: str = "ding-token"
    ding_secret: str = "SEC-ding-secret"
    wecom_key: str = "wecom-key"
    feishu_hook: str = "feishu-hook"
    feishu_secret: str = "feishu-secret"
    generic_secret: bytes = b"generic-secret"
    rate: int | None = None  # per window, counted on arrival (robots' 20 a minute)
    window: float = 60.0
    fail_first: int = 0  # 503 to the first N requests on any path
    always_status: dict[str, int] = field(default_factory=dict)  # vendor -> forced status
    got: list[Got] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    throttled: int = 0
    requests: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)
    _arrivals: dict[str, deque[float]] = field(default_factory=dict)

    def _over_rate(self, vendor: str) -> bool:
        if self.rate is None:
            return False
        now = time.monotonic()
        q = self._arrivals.setdefault(vendor, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.rate:
            self.throttled += 1
            return True
        q.append(now)
        return False

    def _accept(self, vendor: str, body: dict[str, Any], request: Request) -> None:
        self.got.append(Got(vendor, body, dict(request.headers), time.time()))
        self.event.set()

    def _refuse(self, vendor: str, why: str) -> None:
        self.refused.append((vendor, why))
        self.event.set()

    async def _pre(self, vendor: str) -> Response | None:
        self.requests += 1
        if self.requests <= self.fail_first:
            return JSONResponse({"error": "try later"}, status_code=503)
        if vendor in self.always_status:
            return JSONResponse({"error": "forced"}, status_code=self.always_status[vendor])
        return None

    def app(self) -> Starlette:
        async def dingtalk(request: Request) -> Response:
            if (r := await self._pre("dingtalk")) is not None:
                return r
            q = request.url.query
            ts, sign = raw_query_param(q, "timestamp"), raw_query_param(q, "sign")
            if request.query_params.get("access_token") != self.ding_token:
                self._refuse("dingtalk", "token")
                return JSONResponse({"errcode": 300001, "errmsg": "token is not exist"})
            if (
                ts is None
                or sign is None
                or abs(time.time() * 1000 - int(ts)) > 3600_000
                or unquote(sign) != ding_expected(self.ding_secret, ts)
                or "%" not in sign  # base64 '+', '/', '=' must arrive URL-encoded
            ):
                self._refuse("dingtalk", "sign")
                return JSONResponse({"errcode": 310000, "errmsg": "sign not match"})
            if not request.headers.get("content-type", "").startswith("application/json"):
                self._refuse("dingtalk", "content-type")
                return JSONResponse({"errcode": 40035, "errmsg": "缺少参数 json"})
            body = orjson.loads(await request.body())
            ok = body.get("msgtype") in FORMATS["dingtalk_custom_robot"]["msgtypes"] and (
                body["msgtype"] != "markdown"
                or (
                    isinstance(body["markdown"].get("title"), str)
                    and isinstance(body["markdown"].get("text"), str)
                )
            )
            if not ok:
                self._refuse("dingtalk", "format")
                return JSONResponse({"errcode": 40035, "errmsg": "缺少参数 json"})
            if self._over_rate("dingtalk"):
                return JSONResponse(
                    {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
                )
            self._accept("dingtalk", body, request)
            return JSONResponse({"errcode": 0, "errmsg": "ok"})

        async def wecom(request: Request) -> Response:
            if (r := await self._pre("wecom")) is not None:
                return r
            if request.query_params.get("key") != self.wecom_key:
                self._refuse("wecom", "key")
                return JSONResponse({"errcode": 93000, "errmsg": "invalid webhook url"})
            body = orjson.loads(await request.body())
            kind = body.get("msgtype")
            ok = kind in FORMATS["wecom_group_robot"]["msgtypes"] and (
                kind != "markdown" or len(body["markdown"].get("content", "").encode()) <= 4096
            )
            if not ok:
                self._refuse("wecom", "format")
                return JSONResponse({"errcode": 40008, "errmsg": "invalid message type"})
            if self._over_rate("wecom"):
                return JSONResponse({"errcode": 45009, "errmsg": "api freq out of limit"})
            self._accept("wecom", body, request)
            return JSONResponse({"errcode": 0, "errmsg": "ok"})

        async def feishu(request: Request) -> Response:
            if (r := await self._pre("feishu")) is not None:
                return r
            if request.path_params["hook"] != self.feishu_hook:
                self._refuse("feishu", "hook")
                return JSONResponse(
                    {"code": 19001, "msg": "param invalid: incoming webhook access token invalid"}
                )
            raw = await request.body()
            if len(raw) > 20 * 1024:
                self._refuse("feishu", "size")
                return JSONResponse({"code": 9499, "msg": "Bad Request"})
            body = orjson.loads(raw)
            ts, sign = body.get("timestamp"), body.get("sign")
            if (
                not isinstance(ts, str)
                or abs(time.time() - int(ts)) > 3600
                or sign != feishu_expected(self.feishu_secret, ts)
            ):
                self._refuse("feishu", "sign")
                return JSONResponse(
                    {
                        "code": 19021,
                        "msg": "sign match fail or timestamp is not within one hour"
                        " from current time",
                    }
                )
            if body.get("msg_type") != "text" or not isinstance(
                body.get("content", {}).get("text"), str
            ):
                self._refuse("feishu", "format")
                return JSONResponse({"code": 9499, "msg": "Bad Request"})
            if self._over_rate("feishu"):
                return JSONResponse(
                    {
                        "code": 11232,
                        "msg": "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]",
                    }
                )
            self._accept("feishu", body, request)
            return JSONResponse(FORMATS["feishu_lark_custom_bot"]["success_response"])

        async def slack(request: Request) -> Response:
            if (r := await self._pre("slack")) is not None:
                return r
            body = orjson.loads(await request.body())
            blocks = body.get("blocks", [])
            ok = isinstance(body.get("text"), str) and all(
                b.get("type") == "section" and b["text"]["type"] in ("mrkdwn", "plain_text")
                for b in blocks
            )
            if not ok:
                self._refuse("slack", "format")
                return PlainTextResponse("invalid_payload", status_code=400)
            if self._over_rate("slack"):
                return PlainTextResponse(
                    "rate_limited", status_code=429, headers={"Retry-After": "1"}
                )
            self._accept("slack", body, request)
            return PlainTextResponse("ok")

        async def generic(request: Request) -> Response:
            if (r := await self._pre("generic")) is not None:
                return r
            raw = await request.body()
            try:
                verify(
                    [self.generic_secret],
                    request.headers.get("x-timestamp"),
                    request.headers.get("x-signature"),
                    raw,
                    time.time(),
                )
            except SignatureError as exc:
                self._refuse("generic", str(exc))
                return JSONResponse({"error": "bad signature"}, status_code=401)
            self._accept("generic", orjson.loads(raw), request)
            return JSONResponse({"ok": True})

        return Starlette(
            routes=[
                Route("/robot/send", dingtalk, methods=["POST"]),
                Route("/cgi-bin/webhook/send", wecom, methods=["POST"]),
                Route("/open-apis/bot/v2/hook/{hook}", feishu, methods=["POST"]),
                Route("/services/T000/B000/XXXX", slack, methods=["POST"]),
                Route("/hook", generic, methods=["POST"]),
            ]
        )

    def urls(self, base: str) -> dict[str, str]:
        return {
            "dingtalk": f"{base}/robot/send?access_token={self.ding_token}",
            "wecom": f"{base}/cgi-bin/webhook/send?key={self.wecom_key}",
            "feishu": f"{base}/open-apis/bot/v2/hook/{self.feishu_hook}",
            "slack": f"{base}/services/T000/B000/XXXX",
            "generic": f"{base}/hook",
        }

    async def wait_count(self, vendor: str, n: int, timeout: float = 15) -> list[Got]:
        deadline = time.monotonic() + timeout
        while True:
            found = [g for g in self.got if g.vendor == vendor]
            if len(found) >= n:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(found)} of {n} {vendor} messages; refused {self.refused}")
            self.event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), min(left, 0.5))


class Mailbox:
    """aiosmtpd handler: keeps every message it is handed."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


class RefusingMailbox(Mailbox):
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return "550 5.1.1 no such user"


def sample(**kw: Any) -> EscalationEvent:
    base: dict[str, Any] = {
        "correlation_id": "msg-1",
        "producer": "sla_watch",
        "escalation_id": uid("esc"),
        "ticket_id": uid("tkt"),
        "conversation_id": "conv-1",
        "reason": EscalationReason.first_response_breached,
        "priority": Priority.urgent,
        "tier": Tier.L2,
        "category": Category.complaint,
        "shop_id": "shop-1",
        "agent_id": "agent-7",
        "waiting_seconds": 95.0,
        "lateness_seconds": 65.0,
        "customer_ref": "cust-***1234",
        "occurred_at": datetime.now(UTC),
    }
    base.update(kw)
    return EscalationEvent.model_validate(base)


def rendered(e: EscalationEvent, locale: str = "zh"):  # type: ignore[no-untyped-def]
    return render_escalation(
        e,
        locale,
        ticket_url=f"https://desk.example/t/{e.ticket_id}",  # type: ignore[arg-type]
        ack_url=f"https://notifier.example/v1/ack/{e.escalation_id}?sig=abc",
    )


@pytest.fixture
async def rx() -> Any:
    receiver = VendorReceiver()
    async with serving(receiver.app()) as base:
        yield receiver, receiver.urls(base)


async def test_dingtalk_robot_signed_url_and_markdown(rx: Any) -> None:
    receiver, urls = rx
    ch = DingTalkRobot("l2", urls["dingtalk"], receiver.ding_secret, mention=["u1"])
    e = sample()
    async with httpx.AsyncClient() as client:
        r = await ch.send(client, rendered(e), time.time())
        assert r.outcome is Outcome.delivered, r
        [got] = await receiver.wait_count("dingtalk", 1)
        assert e.ticket_id in got.body["markdown"]["text"]
        assert "首次响应超时" in got.body["markdown"]["title"]
        assert got.body["at"]["atUserIds"] == ["u1"]
        # a wrong secret is refused by the receiver and is a permanent failure
        bad = DingTalkRobot("l2", urls["dingtalk"], "wrong-secret")
        r2 = await bad.send(client, rendered(e), time.time())
    assert r2.outcome is Outcome.failed and "310000" in r2.detail
    assert ("dingtalk", "sign") in receiver.refused


async def test_feishu_bot_signed_body(rx: Any) -> None:
    receiver, urls = rx
    e = sample(reason=EscalationReason.routed_to_l2, lateness_seconds=None)
    async with httpx.AsyncClient() as client:
        ok = await FeishuBot("ops", urls["feishu"], receiver.feishu_secret).send(
            client, rendered(e, "en"), time.time()
        )
        assert ok.outcome is Outcome.delivered, ok
        [got] = await receiver.wait_count("feishu", 1)
        assert "routed straight to second line" in got.body["content"]["text"]
        bad = await FeishuBot("ops", urls["feishu"], "other").send(client, rendered(e), time.time())
    assert bad.outcome is Outcome.failed and "19021" in bad.detail


async def test_wecom_robot_markdown(rx: Any) -> None:
    receiver, urls = rx
    e = sample()
    async with httpx.AsyncClient() as client:
        ok = await WeComRobot("l2", urls["wecom"], mention=["zhangsan"]).send(
            client, rendered(e), time.time()
        )
        assert ok.outcome is Outcome.delivered, ok
        [got] = await receiver.wait_count("wecom", 1)
        bad_url = urls["wecom"].replace(receiver.wecom_key, "stolen")
        bad = await WeComRobot("l2", bad_url).send(client, rendered(e), time.time())
    content = got.body["markdown"]["content"]
    assert e.ticket_id in content and "<@zhangsan>" in content and "cust-***1234" in content
    assert bad.outcome is Outcome.failed and "93000" in bad.detail


async def test_slack_incoming_webhook_and_its_429(rx: Any) -> None:
    receiver, urls = rx
    receiver.rate, receiver.window = 1, 60.0
    ch = SlackWebhook("intl", urls["slack"])
    async with httpx.AsyncClient() as client:
        first = await ch.send(client, rendered(sample(), "en"), time.time())
        second = await ch.send(client, rendered(sample(), "en"), time.time())
    [got] = await receiver.wait_count("slack", 1)
    assert first.outcome is Outcome.delivered
    assert "first response breached" in got.body["blocks"][0]["text"]["text"]
    assert second.outcome is Outcome.retry and second.rate_limited and second.retry_after == 1


async def test_robot_rate_limit_answers_are_retries_not_failures(rx: Any) -> None:
    receiver, urls = rx
    receiver.rate = 1
    async with httpx.AsyncClient() as client:
        ding = DingTalkRobot("d", urls["dingtalk"], receiver.ding_secret)
        wecom = WeComRobot("w", urls["wecom"])
        results = [
            await ch.send(client, rendered(sample()), time.time())
            for ch in (ding, ding, wecom, wecom)
        ]
    assert [r.outcome for r in results] == [Outcome.delivered, Outcome.retry] * 2
    assert results[1].rate_limited and results[3].rate_limited


async def test_generic_webhook_digest_is_signed(rx: Any) -> None:
    receiver, urls = rx
    escs = [sample() for _ in range(3)]
    digest = render_digest("dig-x", summarise(escs), "en", ticket_base_url="https://d/t/")
    async with httpx.AsyncClient() as client:
        r = await GenericWebhook("generic", urls["generic"], receiver.generic_secret).send(
            client, digest, time.time()
        )
    assert r.outcome is Outcome.delivered
    [got] = await receiver.wait_count("generic", 1)
    assert got.body["kind"] == "digest" and got.body["digest"]["count"] == 3
    assert got.headers["x-escalation-id"] == "dig-x"


async def test_email_over_smtp_to_a_real_local_server() -> None:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        ch = EmailChannel(
            "duty",
            host="127.0.0.1",
            port=port,
            from_addr="notifier@example.com",
            to=["duty-lead@example.com", "backup@example.com"],
        )
        e = sample(customer_ref="13800138000")
        r = await ch.send(httpx.AsyncClient(), rendered(e), time.time())
        assert r.outcome is Outcome.delivered, r
        [(sender, rcpts, msg)] = box.messages
        assert sender == "notifier@example.com"
        assert rcpts == ["duty-lead@example.com", "backup@example.com"]
        assert "首次响应超时" in str(msg["Subject"])
        assert msg["X-Escalation-Id"] == e.escalation_id
        text = msg.get_content()
        assert f"https://desk.example/t/{e.ticket_id}" in text
        assert "13800138000" not in text  # masked again even if upstream leaked it
    finally:
        controller.stop()
    # a recipient the server refuses for good (5xx) is a permanent failure
    refusing = Controller(RefusingMailbox(), hostname="127.0.0.1", port=port)
    refusing.start()
    try:
        r_bad = await ch.send(httpx.AsyncClient(), rendered(sample()), time.time())
    finally:
        refusing.stop()
    assert r_bad.outcome is Outcome.failed and "550" in r_bad.detail
    # the server is gone: a transport fault is retried, not dropped
    r2 = await ch.send(httpx.AsyncClient(), rendered(sample()), time.time())
    assert r2.outcome is Outcome.retry
