"""``decide`` reuses a decision per classification outcome and context: prove that the
reused decision is exactly the one computed from scratch, on every evaluation message
under several contexts (VIP, valuable order, reopened, escalated), and that callers
cannot corrupt the kept decision by changing the lists they get."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from services.router.classify import Classifier
from services.router.domain import _decide, decide, default_classifier
from services.router.eval.report import load_rows

CONTEXTS = [
    {},
    {"vip_level": 4},
    {"vip_level": 5},
    {"order_amount": Decimal("4999")},
    {"order_amount": Decimal("5000")},
    {"order_amount": Decimal("5000.00"), "vip_level": 5},
    {"reopen_count": 2},
    {"reopen_count": 3},
    {"reopen_count": 4},
    {"escalated": True},
]


def test_kept_decisions_equal_fresh_ones() -> None:
    clf: Classifier = default_classifier()
    clf.decisions.clear()
    rows = load_rows()
    for ctx in CONTEXTS:
        for row in rows:
            inp = replace(row.decision_input(), **ctx)
            fresh = _decide(inp, clf, clf.classify(inp.text, inp.order_status))
            assert decide(inp, clf) == fresh, (inp.text, ctx)
            assert decide(inp, clf) == fresh  # the second one comes from the kept decisions
    assert 0 < len(clf.decisions) < len(rows) * len(CONTEXTS)


def test_changing_a_returned_decision_does_not_change_the_next() -> None:
    clf = default_classifier()
    inp = load_rows()[0].decision_input()
    first = decide(inp, clf)
    first.reasons.append("changed by a caller")
    first.risk_signals.append("changed")
    again = decide(inp, clf)
    assert "changed by a caller" not in again.reasons
    assert "changed" not in again.risk_signals
