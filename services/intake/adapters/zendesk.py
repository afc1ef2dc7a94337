"""Zendesk: ``X-Zendesk-Webhook-Signature`` = base64(HMAC-SHA256(secret, timestamp + body)),
the timestamp (ISO 8601) in ``X-Zendesk-Webhook-Signature-Timestamp``; refused outside the
replay window.

Two body shapes are read:
- event-subscribed webhooks (``type: zen:event-type:ticket.*``): ``ticket.created`` and
  ``ticket.comment_added`` become messages (staff comments are agent replies),
  ``ticket.status_changed`` to solved/closed resolves, from solved/closed back reopens;
  other ticket events are acknowledged and ignored;
- trigger/automation webhooks, whose body the admin writes: the template documented in
  docs/adapters.md (``ticket_id`` required; ``comment``/``subject``, ``status``,
  ``requester_id``, ``author_role``, ``channel``).
The idempotency key is the body's ``id``/``event_id``, else
``X-Zendesk-Webhook-Invocation-Id``, else a hash of the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.intake.adapters.base import (
    CustomerIn,
    FieldError,
    Ignored,
    Inbound,
    InvalidPayload,
    SignatureError,
    SourceAdapter,
    match_any,
    validate_json,
)
from shared.events import AuthorRole, Channel, MessageKind

SIGNATURE = "X-Zendesk-Webhook-Signature"
TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"
INVOCATION = "X-Zendesk-Webhook-Invocation-Id"
ACCOUNT = "X-Zendesk-Account-Id"
CLOSED = frozenset({"solved", "closed"})
CHANNELS = {
    "email": Channel.email,
    "mail": Channel.email,
    "voice": Channel.phone,
    "phone": Channel.phone,
    "chat": Channel.chat,
    "web": Channel.chat,
    "native_messaging": Channel.chat,
    "mobile_sdk": Channel.app,
    "mobile": Channel.app,
    "facebook": Channel.social,
    "twitter": Channel.social,
    "instagram_dm": Channel.social,
    "whatsapp": Channel.social,
}


def zendesk_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _parse_ts(value: str) -> float:
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SignatureError("signature timestamp is not ISO 8601") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


class ZendeskBody(BaseModel):
    """Both shapes in one lenient model; ``parse`` decides which one it is."""

    model_config = ConfigDict(extra="ignore")
    # event-subscribed
    type: str | None = Field(None, max_length=200)
    id: str | int | None = None
    time: datetime | None = None
    account_id: str | int | None = None
    detail: dict[str, Any] | None = None
    event: dict[str, Any] | None = None
    # trigger template
    event_id: str | None = Field(None, max_length=200)
    ticket_id: str | int | None = None
    subject: str | None = Field(None, max_length=2000)
    comment: str | None = Field(None, max_length=20_000)
    status: str | None = Field(None, max_length=40)
    requester_id: str | int | None = None
    author_role: AuthorRole | None = None
    author_id: str | int | None = None
    channel: str | None = Field(None, max_length=40)
    occurred_at: datetime | None = None


def _s(v: object) -> str | None:
    return None if v is None or v == "" else str(v)[:200]


class ZendeskAdapter(SourceAdapter):
    name = "zendesk"
    signature_headers = (SIGNATURE, TIMESTAMP)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        given = self._require(headers, SIGNATURE)
        ts = self._require(headers, TIMESTAMP)
        self._check_fresh(_parse_ts(ts), now)
        if not match_any(self.secrets, lambda s: zendesk_signature(s, ts, body), given):
            raise SignatureError("signature does not match")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Inbound]:
        z = validate_json(ZendeskBody, body, "Zendesk webhook")
        event_id = (
            _s(z.id)
            or z.event_id
            or _s(headers.get(INVOCATION.lower()))
            or "sha256-" + hashlib.sha256(body).hexdigest()[:40]
        )
        shop = _s(z.account_id) or _s(headers.get(ACCOUNT.lower())) or "zendesk"
        if z.type is not None and z.type.startswith("zen:event-type:"):
            return [self._event(z, event_id, shop)]
        if z.ticket_id is None:
            raise InvalidPayload(
                "a Zendesk trigger body needs ticket_id", [FieldError("ticket_id", "required")]
            )
        ticket = str(z.ticket_id)[:200]
        kind = MessageKind.message_created
        if z.status and z.status.lower() in CLOSED:
            kind = MessageKind.ticket_resolved
        text = z.comment or z.subject
        if kind is MessageKind.message_created and not text:
            raise InvalidPayload(
                "a Zendesk message needs a comment or a subject",
                [FieldError("comment", "required unless status is solved/closed")],
            )
        requester = _s(z.requester_id)
        role = z.author_role or AuthorRole.customer
        return [
            Inbound(
                source_event_id=event_id,
                kind=kind,
                occurred_at=_aware(z.occurred_at),
                shop_id=shop,
                channel=CHANNELS.get((z.channel or "").lower(), Channel.email),
                conversation_id=f"ticket-{ticket}",
                author_role=role,
                author_id=_s(z.author_id) or (requester if role is AuthorRole.customer else None),
                text=text,
                customer=CustomerIn(requester) if requester else None,
            )
        ]

    def _event(self, z: ZendeskBody, event_id: str, shop: str) -> Inbound:
        assert z.type is not None
        what = z.type.removeprefix("zen:event-type:")
        detail = z.detail or {}
        ev = z.event or {}
        ticket = _s(detail.get("id"))
        if ticket is None:
            raise InvalidPayload("the event names no ticket", [FieldError("detail.id", "required")])
        requester = _s(detail.get("requester_id"))
        via = detail.get("via")
        channel = via.get("channel") if isinstance(via, dict) else None
        base: dict[str, Any] = {
            "source_event_id": event_id,
            "occurred_at": _aware(z.time),
            "shop_id": shop,
            "channel": CHANNELS.get(str(channel or "").lower(), Channel.email),
            "conversation_id": f"ticket-{ticket}",
            "customer": CustomerIn(requester) if requester else None,
        }
        if what == "ticket.created":
            text = " - ".join(
                str(t)[:10_000] for t in (detail.get("subject"), detail.get("description")) if t
            )
            return Inbound(
                kind=MessageKind.message_created,
                author_role=AuthorRole.customer,
                author_id=requester,
                text=text[:20_000] or "(new ticket)",
                **base,
            )
        if what == "ticket.comment_added":
            comment = ev.get("comment") if isinstance(ev.get("comment"), dict) else {}
            assert isinstance(comment, dict)
            author = comment.get("author") if isinstance(comment.get("author"), dict) else {}
            assert isinstance(author, dict)
            staff = bool(author.get("is_staff"))
            said = comment.get("body")
            if not isinstance(said, str) or not said:
                raise InvalidPayload(
                    "the comment has no body", [FieldError("event.comment.body", "required")]
                )
            return Inbound(
                kind=MessageKind.message_created,
                author_role=AuthorRole.agent if staff else AuthorRole.customer,
                author_id=_s(author.get("id")),
                text=said[:20_000],
                **base,
            )
        if what == "ticket.status_changed":
            current = str(ev.get("current", "")).lower()
            previous = str(ev.get("previous", "")).lower()
            if current in CLOSED:
                return Inbound(
                    kind=MessageKind.ticket_resolved, author_role=AuthorRole.agent, **base
                )
            if previous in CLOSED:
                return Inbound(
                    kind=MessageKind.ticket_reopened, author_role=AuthorRole.customer, **base
                )
        raise Ignored(f"zendesk event {what[:64]!r} carries no customer-service activity")


def _aware(ts: datetime | None) -> datetime:
    if ts is None:
        return datetime.now(UTC)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
