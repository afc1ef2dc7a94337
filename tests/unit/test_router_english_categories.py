"""Ordinary English messages with the shipped rules (issue #4, docs/routing-rules.md,
"English threats and safety reports", second round): product faults, questions before
buying, a bulk quote, a parcel shown delivered but not there, and a threat that is a
complaint whatever else it asks. The messages are written for the tests, not taken from an
evaluation set."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain import DecisionInput, decide
from shared.events import Category, Priority, Tier

Q, P, B, L = Category.product_quality, Category.presale, Tier.bot, Tier.L1
IMPORTANT, NORMAL = Priority.important, Priority.normal


@pytest.mark.parametrize(
    ("text", "category", "priority", "tier"),
    [
        # a product fault told in everyday words
        ("The lamp arrived smashed, the shade is in pieces", Q, IMPORTANT, L),
        ("my headphones won't hold a charge for more than an hour", Q, IMPORTANT, L),
        ("The water bottle leaks all over my bag", Q, IMPORTANT, L),
        ("Monitor has two dead pixels in the corner", Q, IMPORTANT, L),
        ("The suitcase handle snapped on the first trip", Q, IMPORTANT, L),
        # a question before buying, for the bot
        ("Do you sell replacement lids for the blender?", P, NORMAL, B),
        ("Does the rain jacket come in navy?", P, NORMAL, B),
        ("Is there free shipping over 50 pounds?", P, NORMAL, B),
        ("can pay cash on delivery or not", P, NORMAL, B),
        ("any chance the linen shirt is back in stock soon", P, NORMAL, B),
        ("Just checking before I order: do you ship to Norway?", P, NORMAL, B),
        # a bulk quote needs a person to price it
        ("Could you quote me for 40 of the office chairs?", P, NORMAL, L),
        # shown delivered but not there
        (
            "Tracking shows delivered at noon but nothing came, I was in all day",
            Category.logistics,
            IMPORTANT,
            L,
        ),
        # a threat is a complaint whatever else it asks
        (
            "Gonna put this on Facebook unless you refund me today",
            Category.complaint,
            Priority.urgent,
            Tier.L2,
        ),
        (
            "Refund my money or I'll write to the newspaper",
            Category.complaint,
            Priority.urgent,
            Tier.L2,
        ),
    ],
)
def test_english_messages_get_their_category_priority_and_tier(
    text: str, category: Category, priority: Priority, tier: Tier
) -> None:
    dec = decide(DecisionInput(text))
    assert (dec.category, dec.priority, dec.tier) == (category, priority, tier), dec.reasons


def test_a_valuable_order_shown_delivered_but_not_there_is_urgent() -> None:
    dec = decide(DecisionInput("It says delivered yet it isn't here", order_amount=Decimal(5000)))
    assert dec.priority is Priority.urgent and dec.tier is Tier.L1, dec.reasons
