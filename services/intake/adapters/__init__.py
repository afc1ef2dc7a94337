"""Source adapters: one module per platform, each translating the platform's own body and
signature scheme into the canonical ``Inbound`` form. To add one: write a module with a
``SourceAdapter`` subclass and add it to ``ADAPTERS`` below (see docs/adapters.md); its
secrets are then read from ``INTAKE_<NAME>_SECRET`` / ``INTAKE_<NAME>_SECRET_PREVIOUS``."""

from __future__ import annotations

from services.intake.adapters.base import Ignored, Inbound, InvalidPayload, SourceAdapter
from services.intake.adapters.generic import GenericAdapter
from services.intake.adapters.pinduoduo import PinduoduoAdapter
from services.intake.adapters.shopify import ShopifyAdapter
from services.intake.adapters.taobao import TaobaoAdapter
from services.intake.adapters.whatsapp import WhatsAppAdapter
from services.intake.adapters.zendesk import ZendeskAdapter

ADAPTERS: dict[str, type[SourceAdapter]] = {
    GenericAdapter.name: GenericAdapter,
    ShopifyAdapter.name: ShopifyAdapter,
    ZendeskAdapter.name: ZendeskAdapter,
    WhatsAppAdapter.name: WhatsAppAdapter,
    TaobaoAdapter.name: TaobaoAdapter,
    PinduoduoAdapter.name: PinduoduoAdapter,
}

__all__ = ["ADAPTERS", "Ignored", "Inbound", "InvalidPayload", "SourceAdapter"]
