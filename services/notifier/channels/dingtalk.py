"""DingTalk custom robot (自定义机器人), 加签 mode: ``timestamp`` (ms) and ``sign`` in the URL.

sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))).
The robot answers HTTP 200 with ``errcode``; 130101 means "sending too fast" (over 20 a
minute), which is a rate limit, not a failure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import quote

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

RATE_LIMITED = frozenset({130101})


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """The base64 signature (not yet URL-encoded)."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def signed_url(url: str, secret: str | None, now: float) -> str:
    if not secret:
        return url
    ts = str(int(now * 1000))
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}timestamp={ts}&sign={quote(dingtalk_sign(secret, ts), safe='')}"


def dingtalk_body(notice: Notice, mention: list[str], mention_all: bool) -> dict[str, Any]:
    text = notice.markdown()
    if mention:
        text += "\n\n" + " ".join(f"@{m}" for m in mention)
    return {
        "msgtype": "markdown",
        "markdown": {"title": clip_utf8(notice.title, 200), "text": clip_utf8(text, 18_000)},
        "at": {"atUserIds": mention, "isAtAll": mention_all},
    }


class DingTalkRobot(SignedGroupBot):
    kind = "dingtalk"

    async def send(self, client: httpx.AsyncClient, notice: Notice, now: float) -> Result:
        body = orjson.dumps(dingtalk_body(notice, self.mention, self.mention_all))
        headers = {"Content-Type": "application/json;charset=utf-8"}
        resp = await post(client, signed_url(self.url, self.secret, now), body, headers)
        if isinstance(resp, Result):
            return resp
        return classify_errcode(resp, "errcode", "errmsg", RATE_LIMITED)
