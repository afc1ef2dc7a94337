"""``after_reopen``: a ticket that comes back moves by the rules' ``context`` thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.router.classify import Classifier
from services.router.domain import (
    DEFAULT_RULES_FILE,
    after_reopen,
    default_classifier,
    load_classifier,
)
from shared.events import Priority, Tier


def rules_with(tmp_path: Path, important: int, second_line: int) -> Path:
    text = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
    text = text.replace("reopen_important: 3 ", f"reopen_important: {important} ", 1)
    text = text.replace("reopen_second_line: 3 ", f"reopen_second_line: {second_line} ", 1)
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clf(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return load_classifier(rules_with(tmp_path_factory.mktemp("r"), 2, 4))


def test_below_both_thresholds_nothing_moves(clf: Classifier) -> None:
    assert after_reopen(1, Tier.bot, Priority.normal, clf) == (Tier.bot, Priority.normal, [])


def test_important_threshold_raises_priority_only(clf: Classifier) -> None:
    tier, priority, reasons = after_reopen(2, Tier.L1, Priority.normal, clf)
    assert (tier, priority) == (Tier.L1, Priority.important)
    assert reasons == ["important: this conversation came back 2 times already"]


def test_second_line_threshold_moves_to_l2(clf: Classifier) -> None:
    tier, priority, reasons = after_reopen(4, Tier.bot, Priority.normal, clf)
    assert (tier, priority) == (Tier.L2, Priority.important)
    assert "came back 4 times (L2 takes a conversation that came back 4 or more" in reasons[1]


def test_never_lowers(clf: Classifier) -> None:
    assert after_reopen(5, Tier.L2, Priority.urgent, clf) == (Tier.L2, Priority.urgent, [])
    tier, priority, _ = after_reopen(5, Tier.L1, Priority.urgent, clf)
    assert (tier, priority) == (Tier.L2, Priority.urgent)


def test_the_shipped_rules_thresholds_are_used() -> None:
    n = default_classifier().rules.context.reopen_second_line
    assert after_reopen(n - 1, Tier.L1, Priority.normal)[0] is Tier.L1
    assert after_reopen(n, Tier.L1, Priority.normal)[:2] == (Tier.L2, Priority.important)
