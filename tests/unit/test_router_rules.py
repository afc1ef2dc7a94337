"""The routing rules file: a bad file is refused with its line and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.router.classify import RulesError, load_rules, parse_rules
from services.router.domain import DEFAULT_RULES_FILE

GOOD = DEFAULT_RULES_FILE.read_text(encoding="utf-8")


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _refused(text: str) -> str:
    with pytest.raises(RulesError) as err:
        parse_rules(text, "rules.yaml")
    return str(err.value)


def test_the_shipped_rules_file_is_valid() -> None:
    rules = load_rules(DEFAULT_RULES_FILE)
    assert {c.value for c in rules.categories} >= {"complaint", "presale", "invoice"}
    assert all(
        s.tier is not None and s.tier.value == "L2" for s in rules.signals.values() if s.threat
    )


def test_broken_yaml_names_the_line() -> None:
    bad = GOOD.replace("  快第: 快递\n", "  快第: [快递\n", 1)
    msg = _refused(bad)
    assert msg.startswith("rules.yaml:")
    assert "not valid YAML" in msg
    line = int(msg.split(":")[1])
    assert abs(line - _line_of(GOOD, "快第: 快递")) <= 2


def test_unknown_priority_names_line_and_reason() -> None:
    bad = GOOD.replace("    priority: urgent\n", "    priority: very-urgent\n", 1)
    msg = _refused(bad)
    expected = _line_of(bad, "very-urgent")
    assert msg.startswith(f"rules.yaml:{expected}: signals.threat_regulator.priority:"), msg
    assert "urgent" in msg and "important" in msg  # the allowed values are named


def test_unknown_key_is_refused_at_its_line() -> None:
    bad = GOOD.replace("    anger: 1\n    threat: true\n", "    anger: 1\n    thraet: true\n", 1)
    msg = _refused(bad)
    assert msg.startswith(f"rules.yaml:{_line_of(bad, 'thraet')}:"), msg
    assert "thraet" in msg and "not permitted" in msg


def test_a_word_in_two_categories_is_refused() -> None:
    bad = GOOD.replace("    strong: [发票, 开票,", "    strong: [发票, 退款, 开票,", 1)
    msg = _refused(bad)
    assert msg.startswith(f"rules.yaml:{_line_of(bad, '[发票, 退款, 开票')}:"), msg
    assert "“退款” is already a word of category return_refund" in msg


def test_a_threat_below_second_line_is_refused() -> None:
    start = GOOD.index("  threat_legal:")
    end = GOOD.index("  chargeback:")
    block = GOOD[start:end].replace("    tier: L2\n", "    tier: L1\n")
    bad = GOOD[:start] + block + GOOD[end:]
    msg = _refused(bad)
    assert "signals.threat_legal.threat" in msg
    assert "never go below L2" in msg
    threat_line = bad[:start].count("\n") + _line_of(bad[start:], "threat: true")
    assert msg.startswith(f"rules.yaml:{threat_line}:"), msg


def test_tie_order_must_name_every_category() -> None:
    bad = GOOD.replace(", presale, other]", ", other]", 1)
    msg = _refused(bad)
    assert msg.startswith(f"rules.yaml:{_line_of(bad, 'tie_order:')}: tie_order:"), msg
    assert "missing: presale" in msg


def test_empty_term_and_bad_number() -> None:
    msg = _refused(GOOD.replace("  vip_level_raises: 5", "  vip_level_raises: zero", 1))
    assert f":{_line_of(GOOD, 'vip_level_raises')}: context.vip_level_raises:" in msg
    msg = _refused(GOOD.replace("[拒付, 止付,", "['', 止付,", 1))
    assert "signals.chargeback.terms" in msg and "term 1 is empty" in msg


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    assert "must be a mapping" in _refused("- just\n- a list\n")
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "nope.yaml")


def test_an_unknown_family_is_refused_at_its_line() -> None:
    bad = GOOD.replace("together: [[post, public]", "together: [[post, publik]", 1)
    msg = _refused(bad)
    assert msg.startswith(f"rules.yaml:{_line_of(bad, '[[post, publik]')}:"), msg
    assert "signals.threat_media.together.0.1" in msg and "no family named “publik”" in msg


def test_a_not_family_must_exist_and_a_group_needs_two_others() -> None:
    bad = GOOD.replace("together: [[post, public]", "together: [[post, public, not publik]", 1)
    msg = _refused(bad)
    assert "signals.threat_media.together.0.2" in msg and "no family named “publik”" in msg
    bad = GOOD.replace("together: [[post, public]", "together: [[post, not public]", 1)
    msg = _refused(bad)
    assert msg.startswith(f"rules.yaml:{_line_of(bad, '[[post, not public]')}:"), msg
    assert "at least two families" in msg


def test_a_bad_pattern_is_refused_at_its_line() -> None:
    bad = GOOD.replace("patterns: ['[第", "patterns: ['([第", 1)
    msg = _refused(bad)
    line = _line_of(bad, "patterns: ['([第")
    assert msg.startswith(f"rules.yaml:{line}:"), msg
    assert "signals.repeated_failure.patterns" in msg and "not a regular expression" in msg


def test_homophone_groups_and_pinyin_are_checked() -> None:
    bad = GOOD.replace("homophones: [款宽欵,", "homophones: [款宽欵, 宽阔,", 1)
    msg = _refused(bad)
    assert msg.startswith(f"rules.yaml:{_line_of(bad, 'homophones:')}: homophones.1:"), msg
    assert "“宽” of group 2 is already in group 1" in msg
    bad = GOOD.replace("  退款: tui kuan\n", "  退款: tuikuan\n", 1)
    msg = _refused(bad)
    assert msg.startswith(f"rules.yaml:{_line_of(bad, '退款: tuikuan')}: pinyin.退款:"), msg
    assert "one syllable of letters per character" in msg
