"""Source adapters: one module per platform, each translating the platform's own body and
signature scheme into the canonical ``Inbound`` form. To add one: write a module with a
``SourceAdapter`` subclass and add it to ``ADAPTERS`` below (see docs/adapters.md)."""

from __future__ import annotations

from services.intake.adapters.base import Inbound, InvalidPayload, SourceAdapter
from services.intake.adapters.generic import GenericAdapter

ADAPTERS: dict[str, type[SourceAdapter]] = {
    GenericAdapter.name: GenericAdapter,
}

__all__ = ["ADAPTERS", "Inbound", "InvalidPayload", "SourceAdapter"]
