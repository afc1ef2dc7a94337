"""Meta WhatsApp Business: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>``
and the subscription handshake ``GET ?hub.mode=subscribe&hub.verify_token=..&hub.challenge=..``.

Meta's scheme has no timestamp (no replay window); a replayed delivery carries the same
message id (``wamid``) and is a duplicate. A WhatsApp id (``wa_id``/``from``) IS the
customer's phone number: it never leaves this module. The customer id and the
conversation id are HMAC pseudonyms of it under ``INTAKE_PSEUDONYM_KEY``; the profile
name is dropped. Status updates (sent/delivered/read) are acknowledged and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.intake.adapters.base import (
    CustomerIn,
    Ignored,
    Inbound,
    SignatureError,
    SourceAdapter,
    match_any,
    pseudonym,
    validate_json,
)
from shared.events import AuthorRole, Channel, MessageKind

SIGNATURE = "X-Hub-Signature-256"


def whatsapp_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class _Text(BaseModel):
    model_config = ConfigDict(extra="ignore")
    body: str = Field(max_length=20_000)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=200)
    from_: str = Field(alias="from", min_length=1, max_length=64)
    timestamp: str = Field(pattern=r"^\d{1,12}$")
    type: str = Field(max_length=40)
    text: _Text | None = None
    image: dict[str, Any] | None = None
    video: dict[str, Any] | None = None
    document: dict[str, Any] | None = None
    button: dict[str, Any] | None = None
    interactive: dict[str, Any] | None = None


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore")
    phone_number_id: str = Field(min_length=1, max_length=64)


class _Value(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messaging_product: str | None = None
    metadata: _Metadata
    messages: list[_Message] = Field(default_factory=list, max_length=1000)


class _Change(BaseModel):
    model_config = ConfigDict(extra="ignore")
    field: str
    value: _Value


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    changes: list[_Change] = Field(default_factory=list, max_length=100)


class WhatsAppWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore")
    object: str
    entry: list[_Entry] = Field(max_length=100)


def _text_of(m: _Message) -> str:
    if m.type == "text" and m.text is not None:
        return m.text.body
    media = {"image": m.image, "video": m.video, "document": m.document}.get(m.type)
    if isinstance(media, dict) and isinstance(media.get("caption"), str):
        return f"[{m.type}] {media['caption']}"
    if m.type == "button" and m.button and isinstance(m.button.get("text"), str):
        return str(m.button["text"])
    if m.type == "interactive" and m.interactive:
        for kind in ("button_reply", "list_reply"):
            reply = m.interactive.get(kind)
            if isinstance(reply, dict) and isinstance(reply.get("title"), str):
                return str(reply["title"])
    # location and contacts carry addresses and phone numbers: keep only the kind.
    return f"[{m.type}]"


class WhatsAppAdapter(SourceAdapter):
    name = "whatsapp"
    signature_headers = (SIGNATURE,)
    needs_pseudonym_key = True

    def __init__(self, *args: Any, verify_token: bytes = b"", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verify_token = verify_token

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        given = self._require(headers, SIGNATURE)
        if not match_any(self.secrets, lambda s: whatsapp_signature(s, body), given):
            raise SignatureError("signature does not match")

    def handshake(self, query: Mapping[str, str]) -> str:
        """Meta's subscription check: echo ``hub.challenge`` when the token matches."""
        mode = query.get("hub.mode")
        token = query.get("hub.verify_token", "")
        challenge = query.get("hub.challenge", "")
        if mode != "subscribe" or not challenge or not self.verify_token:
            raise SignatureError("not a subscription request")
        if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self.verify_token):
            raise SignatureError("verify token does not match")
        return challenge[:200]

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Inbound]:
        w = validate_json(WhatsAppWebhook, body, "WhatsApp Business webhook")
        out: list[Inbound] = []
        for entry in w.entry:
            for change in entry.changes:
                if change.field != "messages":
                    continue
                business = change.value.metadata.phone_number_id
                for m in change.value.messages:
                    if m.type in ("reaction", "unsupported", "system"):
                        continue
                    customer = pseudonym(self.pseudonym_key, "wa", m.from_)
                    out.append(
                        Inbound(
                            source_event_id=m.id,
                            kind=MessageKind.message_created,
                            occurred_at=datetime.fromtimestamp(int(m.timestamp), UTC),
                            shop_id=business,
                            channel=Channel.social,
                            conversation_id=pseudonym(
                                self.pseudonym_key, "wac", f"{business}:{m.from_}"
                            ),
                            author_role=AuthorRole.customer,
                            author_id=customer,
                            text=_text_of(m)[:20_000],
                            customer=CustomerIn(customer),
                        )
                    )
        if not out:
            raise Ignored("no customer message in this delivery (statuses or reactions only)")
        return out
