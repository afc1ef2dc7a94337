"""Slack incoming webhook: the URL is the secret; a ``text`` fallback and one mrkdwn
section. Slack answers 429 with Retry-After when sent more than about one a second."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from services.notifier.channels.base import Channel, Result, classify_response, post
from services.notifier.messages import Notice

MAX_SECTION = 3000


def slack_body(notice: Notice, mention: list[str]) -> dict[str, Any]:
    text = notice.slack()
    if mention:
        text += "\n" + " ".join(f"<@{m}>" for m in mention)
    if len(text) > MAX_SECTION:
        text = text[: MAX_SECTION - 3] + "..."
    return {
        "text": notice.title,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


class SlackWebhook(Channel):
    kind = "slack"

    def __init__(self, name: str, url: str, mention: list[str] | None = None, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.url = url
        self.mention = mention or []

    async def send(self, client: httpx.AsyncClient, notice: Notice, now: float) -> Result:
        body = orjson.dumps(slack_body(notice, self.mention))
        resp = await post(client, self.url, body, {"Content-Type": "application/json"})
        return resp if isinstance(resp, Result) else classify_response(resp)
