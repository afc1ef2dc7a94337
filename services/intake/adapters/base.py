from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from shared.events import AuthorRole, Channel, MessageKind, OrderInfo


@dataclass(frozen=True, slots=True)
class CustomerIn:
    id: str
    vip_level: int = 0


@dataclass(frozen=True, slots=True)
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


class SourceAdapter(ABC):
    name: ClassVar[str]

    def __init__(self, secrets: Sequence[bytes], replay_window: float = 300) -> None:
        self.secrets = list(secrets)
        self.replay_window = replay_window

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        """Raise ``shared.signing.SignatureError`` unless the request is authentic."""

    @abstractmethod
    def parse(self, body: bytes) -> list[Inbound]:
        """Translate a verified body; raise ``InvalidPayload`` when it is not valid."""
