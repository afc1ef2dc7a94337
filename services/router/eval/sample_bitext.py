"""Deterministic English sample from the Bitext customer-support set (CDLA-Sharing-1.0).

Run once to (re)build ``en_bitext.jsonl`` and ``en_bitext_holdout.jsonl``:
``python -m services.router.eval.sample_bitext``.
The labels come from the intent alone, by the mapping in ``/work/shared/data/README.md``
and the labelling policy in ``docs/routing-rules.md`` (never from the router's rules).
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

SOURCE = Path("/work/shared/data/bitext_en/bitext_utterances_intent.csv")
OUT = Path(__file__).with_name("en_bitext.jsonl")
HOLDOUT = Path(__file__).with_name("en_bitext_holdout.jsonl")
PER_INTENT = 7
SEED = 4
HOLDOUT_PER_INTENT = 4
HOLDOUT_SEED = 5

CATEGORY = {
    "place_order": "presale",
    "check_payment_methods": "presale",
    "delivery_options": "presale",
    "track_order": "order_status",
    "change_order": "order_status",
    "cancel_order": "order_status",
    "payment_issue": "order_status",
    "check_cancellation_fee": "order_status",
    "delivery_period": "logistics",
    "change_shipping_address": "logistics",
    "set_up_shipping_address": "logistics",
    "get_refund": "return_refund",
    "track_refund": "return_refund",
    "check_refund_policy": "return_refund",
    "check_invoice": "invoice",
    "get_invoice": "invoice",
    "complaint": "complaint",
}
# other: review, contact_*, account and newsletter intents.
# Trivial self-service questions a bot answers (when the customer is calm: normal priority).
# Labelling rule (5) of services/router/eval/README.md: a question the product page, the
# policy or the tracking page answers is bot whatever its category; anything a person must
# act on (change_order, cancel_order, payment_issue, get_refund, track_refund, the address
# intents, complaint, review, contact_*) is L1 or L2.
BOT_INTENTS = {
    "place_order",
    "check_payment_methods",
    "delivery_options",
    "create_account",
    "edit_account",
    "switch_account",
    "delete_account",
    "recover_password",
    "registration_problems",
    "newsletter_subscription",
    # self-service look-ups (rule 5, issue #4): the refund policy and how long refunds take,
    # the cancellation fee, how long delivery takes, the tracking / status / ETA of an
    # order, seeing or downloading one's own invoice (Bitext's get_invoice rows all ask for
    # an invoice or bill of a past purchase, by number, date or seller: none asks for a
    # company invoice, a tax number or a correction, which a person would issue)
    "check_refund_policy",
    "check_cancellation_fee",
    "delivery_period",
    "track_order",
    "check_invoice",
    "get_invoice",
}


def label(intent: str, tags: str) -> dict[str, object]:
    category = CATEGORY.get(intent, "other")
    offensive = "W" in tags  # Bitext marks offensive wording with W: an angry customer
    priority = "important" if offensive or category == "complaint" else "normal"
    if category == "complaint":
        tier = "L2"
    elif intent in BOT_INTENTS and priority == "normal":
        tier = "bot"
    else:
        tier = "L1"
    return {"category": category, "priority": priority, "tier": tier}


def main() -> int:
    with SOURCE.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    by_intent: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_intent.setdefault(row["intent"], []).append(row)
    rng = random.Random(SEED)
    hold_rng = random.Random(HOLDOUT_SEED)
    with OUT.open("w", encoding="utf-8") as out, HOLDOUT.open("w", encoding="utf-8") as hold:
        for intent in sorted(by_intent):
            picked = rng.sample(by_intent[intent], PER_INTENT)
            rest = [r for r in by_intent[intent] if r not in picked]
            for f, chosen in ((out, picked), (hold, hold_rng.sample(rest, HOLDOUT_PER_INTENT))):
                for row in chosen:
                    item = {
                        "text": row["instruction"],
                        "lang": "en",
                        **label(intent, row["tags"]),
                        "urgent_threat": False,
                        "source": f"bitext:{intent}",
                    }
                    f.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} and {HOLDOUT} ({PER_INTENT} and {HOLDOUT_PER_INTENT} per intent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
