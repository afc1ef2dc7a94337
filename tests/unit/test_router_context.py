"""The context of a message: VIP level, order value, reopenings and an escalation (issue #4,
rule (6) of services/router/eval/README.md, the lead's decision): VIP level >= 5 or an order
worth >= 5,000 raises priority one step (both together still one step); a conversation that
came back >= 3 times, or one escalated by sla_watch, goes to L2 and is at least important;
fewer reopenings raise nothing; the bot takes normal priority only, so a raised bot question
goes to L1, and a raised problem keeps its tier. The numbers are the shipped rules file's
``context`` (team-editable, checked at start-up). Messages written for the tests."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from services.router.classify import Classifier, RulesError, load_rules, parse_rules
from services.router.domain import DEFAULT_RULES_FILE, Decision, DecisionInput, decide
from shared.events import Priority, Tier

GOOD = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
N, IMP, U = Priority.normal, Priority.important, Priority.urgent
QUESTION = "这款有几个颜色"  # a calm pre-sale question: normal / bot
LOOKUP = "Has my order shipped yet?"  # a self-service look-up: normal / bot
CANCEL = "帮我取消订单"  # a person acts: normal / L1
BROKEN = "收到的杯子是碎的"  # a damaged product: important / L1
COMPLAINT = "你们客服态度太差了"  # a complaint: important / L2


def d(text: str, **kw: object) -> Decision:
    return decide(DecisionInput(text, **kw))  # type: ignore[arg-type]


def pt(dec: Decision) -> tuple[Priority, Tier]:
    return dec.priority, dec.tier


def test_the_shipped_thresholds_are_rule_6() -> None:
    ctx = load_rules(DEFAULT_RULES_FILE).context
    assert (ctx.vip_level_raises, ctx.order_amount_raises) == (5, Decimal(5000))
    assert (ctx.reopen_important, ctx.reopen_second_line) == (3, 3)


@pytest.mark.parametrize("text", [QUESTION, LOOKUP, CANCEL, BROKEN, COMPLAINT])
def test_without_context_the_messages_are_what_the_tests_say(text: str) -> None:
    expected = {QUESTION: (N, Tier.bot), LOOKUP: (N, Tier.bot), CANCEL: (N, Tier.L1)}
    expected |= {BROKEN: (IMP, Tier.L1), COMPLAINT: (IMP, Tier.L2)}
    assert pt(d(text)) == expected[text], d(text).reasons


@pytest.mark.parametrize("text", [QUESTION, LOOKUP, CANCEL, BROKEN, COMPLAINT])
@pytest.mark.parametrize(
    "context",
    [
        {"vip_level": 4},
        {"order_amount": Decimal("4999")},
        {"order_amount": Decimal("4999.99")},
        {"vip_level": 4, "order_amount": Decimal("4990")},
        {"reopen_count": 1},
        {"reopen_count": 2},
        {"reopen_count": 2, "vip_level": 4, "order_amount": Decimal("4999")},
    ],
)
def test_below_the_thresholds_nothing_is_raised(text: str, context: dict[str, object]) -> None:
    plain, dec = d(text), d(text, **context)
    assert pt(dec) == pt(plain), dec.reasons
    assert dec.reasons == plain.reasons
    assert "repeated_failure" not in dec.risk_signals


@pytest.mark.parametrize(
    ("context", "why"),
    [
        ({"vip_level": 5}, "VIP level 5"),
        ({"vip_level": 9}, "VIP level 9"),
        ({"order_amount": Decimal("5000")}, "order worth 5000"),
        ({"order_amount": Decimal("5000.00")}, "order worth 5000.00"),
        ({"order_amount": Decimal("12500")}, "order worth 12500"),
    ],
)
def test_vip_5_or_an_order_of_5000_raises_one_step(context: dict[str, object], why: str) -> None:
    # a raised bot question goes to first line: the bot takes normal priority only
    for text in (QUESTION, LOOKUP):
        dec = d(text, **context)
        assert pt(dec) == (IMP, Tier.L1), dec.reasons
        assert f"important: raised one step for a valuable customer ({why})" in dec.reasons
    # a raised problem keeps its tier
    assert pt(d(CANCEL, **context)) == (IMP, Tier.L1)
    assert pt(d(BROKEN, **context)) == (U, Tier.L1)
    assert pt(d(COMPLAINT, **context)) == (U, Tier.L2)


def test_vip_and_a_valuable_order_together_raise_one_step_only() -> None:
    dec = d(CANCEL, vip_level=5, order_amount=Decimal(9000))
    assert pt(dec) == (IMP, Tier.L1)
    assert "important: raised one step for a valuable customer (VIP level 5, order worth 9000)" in (
        dec.reasons
    )
    assert pt(d(BROKEN, vip_level=7, order_amount=Decimal(9000))) == (U, Tier.L1)


def test_an_urgent_threat_stays_urgent_and_second_line_whatever_the_context() -> None:
    for context in ({}, {"vip_level": 5}, {"reopen_count": 3}, {"escalated": True}):
        dec = d("再不处理我就打12315", **context)
        assert pt(dec) == (U, Tier.L2), (context, dec.reasons)


@pytest.mark.parametrize("reopen", [3, 4, 10])
def test_reopened_3_times_goes_to_second_line_and_is_at_least_important(reopen: int) -> None:
    for text in (QUESTION, LOOKUP, CANCEL, BROKEN):
        dec = d(text, reopen_count=reopen)
        assert dec.tier is Tier.L2, (text, dec.reasons)
        assert dec.priority is IMP, (text, dec.reasons)  # at least important, not raised further
        assert "repeated_failure" in dec.risk_signals
        assert f"important: this conversation came back {reopen} times already" in dec.reasons
        assert (
            "second line: first line has not solved it (L2 takes a conversation that came back"
            " 3 or more times)" in dec.reasons
        )
        assert not any(r.startswith(("first line:", "bot:")) for r in dec.reasons), dec.reasons
    # an urgent matter stays urgent
    assert pt(d(BROKEN, reopen_count=3, vip_level=5)) == (U, Tier.L2)


def test_reopened_twice_is_not_raised_three_times_is() -> None:
    assert pt(d(LOOKUP, reopen_count=2)) == (N, Tier.bot)
    assert pt(d(LOOKUP, reopen_count=3)) == (IMP, Tier.L2)
    assert pt(d(CANCEL, reopen_count=2)) == (N, Tier.L1)
    assert pt(d(CANCEL, reopen_count=3)) == (IMP, Tier.L2)


def test_an_escalation_goes_to_second_line_and_is_at_least_important() -> None:
    for text in (QUESTION, LOOKUP, CANCEL):
        dec = d(text, escalated=True)
        assert pt(dec) == (IMP, Tier.L2), dec.reasons
        assert "second line: escalated by the SLA watch (not answered in time)" in dec.reasons
        assert not any(r.startswith(("first line:", "bot:")) for r in dec.reasons), dec.reasons
    assert pt(d(BROKEN, escalated=True)) == (IMP, Tier.L2)
    assert pt(d(BROKEN, escalated=True, order_amount=Decimal(5000))) == (U, Tier.L2)


def _with_context(**values: object) -> Classifier:
    text = GOOD
    for key, value in values.items():
        start = text.index(f"  {key}: ")
        end = text.index("\n", start)
        text = f"{text[:start]}  {key}: {value}{text[end:]}"
    return Classifier(parse_rules(text, "rules.yaml"))


def test_the_thresholds_are_the_rules_file_s() -> None:
    team = _with_context(
        vip_level_raises=3, order_amount_raises=1000, reopen_important=1, reopen_second_line=2
    )
    assert pt(decide(DecisionInput(QUESTION, vip_level=3), team)) == (IMP, Tier.L1)
    assert pt(decide(DecisionInput(CANCEL, order_amount=Decimal(1000)), team)) == (IMP, Tier.L1)
    assert pt(decide(DecisionInput(CANCEL, order_amount=Decimal(999)), team)) == (N, Tier.L1)
    once = decide(DecisionInput(LOOKUP, reopen_count=1), team)
    assert pt(once) == (IMP, Tier.L1) and "repeated_failure" not in once.risk_signals
    assert "important: this conversation came back 1 time already" in once.reasons
    twice = decide(DecisionInput(LOOKUP, reopen_count=2), team)
    assert pt(twice) == (IMP, Tier.L2)
    assert (
        "second line: first line has not solved it (L2 takes a conversation that came back"
        " 2 or more times)" in twice.reasons
    )


def test_reopen_important_above_reopen_second_line_is_refused_at_its_line() -> None:
    bad = GOOD.replace("  reopen_important: 3 ", "  reopen_important: 4 ", 1)
    assert bad != GOOD
    with pytest.raises(RulesError) as err:
        parse_rules(bad, "rules.yaml")
    line = next(i for i, s in enumerate(bad.splitlines(), 1) if "reopen_important: 4" in s)
    msg = str(err.value)
    assert msg.startswith(f"rules.yaml:{line}: context.reopen_important:"), msg
    assert "at least important too: reopen_important must not be above 3" in msg


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("vip_level_raises", "0", "greater than or equal to 1"),
        ("order_amount_raises", "-5000", "greater than 0"),
        ("reopen_second_line", "three", "valid integer"),
    ],
)
def test_a_bad_threshold_is_refused_at_its_line(key: str, value: str, reason: str) -> None:
    start = GOOD.index(f"  {key}: ")
    end = GOOD.index("  #", start)
    bad = f"{GOOD[:start]}  {key}: {value}{GOOD[end:]}"
    with pytest.raises(RulesError) as err:
        parse_rules(bad, "rules.yaml")
    line = GOOD[:start].count("\n") + 1
    msg = str(err.value)
    assert msg.startswith(f"rules.yaml:{line}: context.{key}:"), msg
    assert reason in msg, msg


def test_a_rules_file_without_thresholds_takes_rule_6(tmp_path: Path) -> None:
    start = GOOD.index("  vip_level_raises: ")
    end = GOOD.index("  anger_important: ")
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD[:start] + GOOD[end:], encoding="utf-8")
    ctx = load_rules(path).context
    assert (ctx.vip_level_raises, ctx.order_amount_raises) == (5, Decimal(5000))
    assert (ctx.reopen_important, ctx.reopen_second_line) == (3, 3)
