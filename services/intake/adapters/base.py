"""The source-adapter interface: verify a platform's signature, translate its body.

An adapter is a ``SourceAdapter`` subclass with a ``name``. It gets the source's secrets
(current first, then the one being rotated out) and the replay window. ``verify`` raises
``SignatureError`` unless the request is authentic; ``parse`` returns canonical
``Inbound`` events, raises ``InvalidPayload`` (422) for a body it cannot read, or
``Ignored`` (200, outcome ``ignored``) for a genuine event that carries no
customer-service activity (e.g. Shopify ``orders/paid``).
"""

from __future__ import annotations

import hashlib
import hmac
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from shared.events import AuthorRole, Channel, MessageKind, OrderInfo
from shared.signing import SignatureError


# ``CustomerIn`` and ``Inbound`` are built once per webhook and never changed afterwards;
# they are not ``frozen`` because a frozen dataclass sets each field through
# ``object.__setattr__`` (five times the cost of building one, per webhook).
@dataclass(slots=True)
class CustomerIn:
    id: str
    vip_level: int = 0


@dataclass(slots=True)
class Inbound:
    """One platform event in canonical form, before ids and envelope are added.
    Personal data (name, phone, address) is dropped by the adapter and never gets here."""

    source_event_id: str
    kind: MessageKind
    occurred_at: datetime
    shop_id: str
    channel: Channel
    conversation_id: str
    author_role: AuthorRole
    author_id: str | None = None
    text: str | None = None
    customer: CustomerIn | None = None
    order: OrderInfo | None = None


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


@dataclass
class InvalidPayload(Exception):
    """The body is not a valid event of this source; ``errors`` say which field and why."""

    detail: str
    errors: Sequence[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        return self.detail


@dataclass
class Ignored(Exception):
    """A genuine event that is acknowledged (200) and not turned into a message."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def match_any(secrets: Sequence[bytes], expected: Callable[[bytes], str], given: str) -> bool:
    """True when ``given`` equals ``expected(secret)`` for one of ``secrets``. Every secret is
    computed and compared in constant time, so the time taken says nothing about which
    secret (current or previous) was close."""
    ok = False
    given_b = given.encode("utf-8", "surrogateescape")
    for secret in secrets:
        ok |= hmac.compare_digest(expected(secret).encode(), given_b)
    return ok


class SourceAdapter(ABC):
    name: ClassVar[str]
    # Header names the OpenAPI document lists for this source (documentation only).
    signature_headers: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, secrets: Sequence[bytes], replay_window: float = 300, pseudonym_key: bytes = b""
    ) -> None:
        self.secrets = list(secrets)
        self.replay_window = replay_window
        self.pseudonym_key = pseudonym_key

    def _require(self, headers: Mapping[str, str], name: str) -> str:
        value = headers.get(name.lower())
        if not value:
            raise SignatureError(f"missing {name} header")
        return value

    def _check_fresh(self, ts: float, now: float) -> None:
        if abs(now - ts) > self.replay_window:
            raise SignatureError("timestamp outside the replay window")

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        """Raise ``shared.signing.SignatureError`` unless the request is authentic.
        ``headers`` have lower-case names."""

    @abstractmethod
    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Inbound]:
        """Translate a verified body; raise ``InvalidPayload`` when it is not valid and
        ``Ignored`` when it is valid but carries nothing for customer service."""


M = TypeVar("M", bound=BaseModel)


def validate_json(model: type[M], body: bytes | str, what: str) -> M:
    """Parse and validate a JSON body (or an embedded JSON string); ``InvalidPayload`` with
    one error per field otherwise. Deeply nested or malformed JSON is refused the same way."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidPayload(
            f"the body is not a valid {what}",
            [
                FieldError(".".join(str(p) for p in e["loc"]) or "body", e["msg"])
                for e in exc.errors(include_url=False)[:20]
            ],
        ) from None


def pseudonym(key: bytes, prefix: str, value: str) -> str:
    """A stable, non-reversible id for a value that is personal data (a phone number):
    HMAC-SHA256 under the service's pseudonym key, so that it cannot be brute-forced from
    the small space of phone numbers without the key."""
    return f"{prefix}-" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:24]


__all__ = [
    "CustomerIn",
    "FieldError",
    "Ignored",
    "Inbound",
    "InvalidPayload",
    "SignatureError",
    "SourceAdapter",
    "match_any",
    "pseudonym",
    "validate_json",
]
