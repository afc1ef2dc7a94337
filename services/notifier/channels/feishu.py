"""Feishu / Lark custom bot (自定义机器人), 签名校验 mode: ``timestamp`` (s) and ``sign``
go into the JSON body.

sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")). Not DingTalk's: there
the secret is the key and the string is the message. The bot answers ``code`` 0 when
sent; 11232 is its rate limit ("frequency limited").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx
import orjson

from services.notifier.channels.base import (
    Result,
    SignedGroupBot,
    classify_errcode,
    clip_utf8,
    post,
)
from services.notifier.messages import Notice

RATE_LIMITED = frozenset({11232})
MAX_BYTES = 18_000  # the body must stay under 20 KB


def feishu_sign(secret: str, timestamp_s: str) -> str:
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def feishu_body(
    notice: Notice, secret: str | None, now: float, mention: list[str], mention_all: bool
) -> dict[str, Any]:
    text = notice.text()
    tags = [f'<at user_id="{m}"></at>' for m in mention]
    if mention_all:
        tags.append('<at user_id="all"></at>')
    if tags:
        text += "\n" + " ".join(tags)
    body: dict[str, Any] = {}
    if secret:
        ts = str(int(now))
        body = {"timestamp": ts, "sign": feishu_sign(secret, ts)}
    body.update({"msg_type": "text", "content": {"text": clip_utf8(text, MAX_BYTES)}})
    return body


class FeishuBot(SignedGroupBot):
    kind = "feishu"

    async def send(self, client: httpx.AsyncClient, notice: Notice, now: float) -> Result:
        body = orjson.dumps(feishu_body(notice, self.secret, now, self.mention, self.mention_all))
        resp = await post(client, self.url, body, {"Content-Type": "application/json"})
        if isinstance(resp, Result):
            return resp
        return classify_errcode(resp, "code", "msg", RATE_LIMITED)
