"""WeCom (企业微信) group robot: the ``key`` in the URL is the credential, no signature.

Markdown content is limited to 4096 bytes of UTF-8; the robot takes 20 messages a minute
and answers ``errcode`` 45009 when sent more.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from services.notifier.channels.base import Channel, Result, classify_errcode, clip_utf8, post
from services.notifier.messages import Notice

RATE_LIMITED = frozenset({45009})
MAX_BYTES = 4096


def wecom_body(notice: Notice, mention: list[str], mention_all: bool) -> dict[str, Any]:
    text = notice.markdown()
    tags = [f"<@{m}>" for m in mention] + (["<@all>"] if mention_all else [])
    if tags:
        text += "\n" + " ".join(tags)
    return {"msgtype": "markdown", "markdown": {"content": clip_utf8(text, MAX_BYTES)}}


class WeComRobot(Channel):
    kind = "wecom"

    def __init__(
        self,
        name: str,
        url: str,
        mention: list[str] | None = None,
        mention_all: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(name, **kw)
        self.url = url
        self.mention, self.mention_all = mention or [], mention_all

    async def send(self, client: httpx.AsyncClient, notice: Notice, now: float) -> Result:
        body = orjson.dumps(wecom_body(notice, self.mention, self.mention_all))
        resp = await post(client, self.url, body, {"Content-Type": "application/json"})
        if isinstance(resp, Result):
            return resp
        return classify_errcode(resp, "errcode", "errmsg", RATE_LIMITED)
