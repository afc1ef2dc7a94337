"""Self-service look-ups (issue #4, rule 5 of services/router/eval/README.md): a calm,
normal-priority question the product page, the policy or the tracking page answers goes to
the bot whatever its category; not when the customer reports a problem, is angry, asks a
person to act or wants a person. By family of the shipped rules (`lookup_policy`,
`lookup_tracking`, `lookup_invoice`), Chinese and English, then the rules file's checks.
The messages are written for the tests, not taken from an evaluation set."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.classify import Classifier, RulesError, parse_rules
from services.router.domain import DEFAULT_RULES_FILE, DecisionInput, decide, default_classifier
from shared.events import Priority, Tier

GOOD = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
LOOKUP = "look-up the product page, the policy or the tracking page answers"


def _signals(text: str) -> set[str]:
    return {h.name for h in default_classifier().classify(text).signals}


@pytest.mark.parametrize(
    ("family", "text"),
    [
        # the returns and refund policy, its costs, the cancellation fee
        ("lookup_policy", "拆了包装还能退吗"),
        ("lookup_policy", "退回来的邮费谁出呀"),
        ("lookup_policy", "退款一般几天到账"),
        ("lookup_policy", "取消订单有手续费吗"),
        ("lookup_policy", "运费险是怎么赔的"),
        ("lookup_policy", "What is your returns policy for sale items?"),
        ("lookup_policy", "Do you charge a fee for cancellation?"),
        ("lookup_policy", "how many days do refunds take to clear on a debit card"),
        # has it shipped, where is it, its tracking number, when it comes
        ("lookup_tracking", "我买的台灯发货了吗"),
        ("lookup_tracking", "麻烦把快递单号给我一下"),
        ("lookup_tracking", "大概几号能到货呀"),
        ("lookup_tracking", "Has my blender shipped yet?"),
        ("lookup_tracking", "where is my parcel right now"),
        ("lookup_tracking", "Could you tell me the tracking number for the lamp"),
        # where to get or download the invoice, what invoice can be issued
        ("lookup_invoice", "电子发票在什么地方下载"),
        ("lookup_invoice", "你们能开普通发票吗"),
        ("lookup_invoice", "Where can I download my invoice?"),
        ("lookup_invoice", "how do I get a copy of my receipt"),
    ],
)
def test_a_calm_look_up_goes_to_the_bot_whatever_its_category(family: str, text: str) -> None:
    assert family in _signals(text)
    dec = decide(DecisionInput(text))
    assert (dec.priority, dec.tier) == (Priority.normal, Tier.bot), dec.reasons
    assert any(LOOKUP in r for r in dec.reasons), dec.reasons
    assert dec.risk_signals == []  # a look-up is no risk


@pytest.mark.parametrize(
    "text",
    [
        # a problem reported: late, stuck, a refund under way, wrong
        "快递单号给我一下，三天了还没动",
        "退款一般几天到账？我的已经等了一周了",
        "发票开错了，电子发票在哪重新下载",
        "Where is my parcel? It's a week late",
        "Has my order shipped yet? I ordered it three weeks ago",
        "where is my refund for the returned kettle",
        "I sent the mug back and there's no refund yet, can you check?",
        "Tracking says my parcel is held at customs, where is it now?",
        # a person asked to act: change, cancel, an invoice for a company
        "发货了吗？没发的话帮我改成黑色",
        "电子发票能开公司抬头吗",
        "Has my order shipped yet? If not please change the address",
        "Can you upgrade my order to express so it arrives by Friday?",
        "Where can I download an invoice with our company VAT number on it?",
    ],
)
def test_a_problem_or_a_person_to_act_keeps_it_from_the_bot(text: str) -> None:
    assert not _signals(text) & {"lookup_policy", "lookup_tracking", "lookup_invoice"}
    assert decide(DecisionInput(text)).tier is not Tier.bot


@pytest.mark.parametrize(
    "text",
    [
        "发货了吗？气死我了",  # angry
        "where is my order, this is ridiculous",  # angry
        "发货了吗 转人工",  # wants a person
        "Has my order shipped yet? I want to talk to a real person",
    ],
)
def test_an_angry_look_up_or_one_for_a_person_goes_to_first_line(text: str) -> None:
    dec = decide(DecisionInput(text))
    assert dec.tier is Tier.L1, dec.reasons


def test_a_valuable_customer_s_look_up_is_important_and_not_for_the_bot() -> None:
    dec = decide(DecisionInput("我买的台灯发货了吗", vip_level=5))
    assert (dec.priority, dec.tier) == (Priority.important, Tier.L1), dec.reasons
    assert "first line: a look-up, but important (the bot takes normal only)" in dec.reasons
    dec = decide(DecisionInput("Has my blender shipped yet?", order_amount=Decimal(5000)))
    assert dec.tier is Tier.L1


def test_a_threat_with_a_look_up_still_goes_to_second_line() -> None:
    dec = decide(DecisionInput("发货了吗？再不发我就打12315"))
    assert (dec.priority, dec.tier) == (Priority.urgent, Tier.L2), dec.reasons


def test_the_switch_in_tiers_turns_it_off() -> None:
    off = parse_rules(GOOD.replace("  lookups_to_bot: true", "  lookups_to_bot: false", 1))
    clf = Classifier(off)
    dec = decide(DecisionInput("我买的台灯发货了吗"), clf)
    assert dec.tier is Tier.L1, dec.reasons
    assert "first line: a look-up, but with more in it than the bot answers" not in dec.reasons


# ---- the rules file's checks: a bad look-up is refused with its line and the reason


def _line_of(text: str, needle: str, after: str = "") -> int:
    start = text.index(after) if after else 0
    return text[:start].count("\n") + next(
        i for i, line in enumerate(text[start:].splitlines(), 1) if needle in line
    )


def _refused(text: str) -> str:
    with pytest.raises(RulesError) as err:
        parse_rules(text, "rules.yaml")
    return str(err.value)


@pytest.mark.parametrize(
    ("signal", "old", "new", "at", "where", "reason"),
    [
        # a look-up that sets a priority
        (
            "lookup_tracking",
            "    lookup: true\n",
            "    lookup: true\n    priority: important\n",
            "priority: important",
            "signals.lookup_tracking.priority",
            "a look-up only lets a calm question go to the bot",
        ),
        # a look-up that does not say it is no risk
        (
            "lookup_invoice",
            "    risk: false\n",
            "",
            "lookup: true",
            "signals.lookup_invoice.lookup",
            "say risk: false",
        ),
        # a guard naming a family that does not exist
        (
            "lookup_policy",
            "unless: [problem_zh,",
            "unless: [problemz,",
            "unless: [problemz,",
            "signals.lookup_policy.unless.0",
            "no family named “problemz”",
        ),
    ],
)
def test_a_bad_look_up_is_refused_at_its_line(
    signal: str, old: str, new: str, at: str, where: str, reason: str
) -> None:
    start = GOOD.index(f"  {signal}:")
    bad = GOOD[:start] + GOOD[start:].replace(old, new, 1)
    msg = _refused(bad)
    assert msg.startswith(f"rules.yaml:{_line_of(bad, at, after=f'  {signal}:')}: {where}"), msg
    assert reason in msg


def test_a_signal_with_nothing_to_be_found_by_is_refused() -> None:
    start = GOOD.index("  lookup_invoice:")
    end = GOOD.index("    unless:", start)
    head = GOOD[start:end]
    body = "  lookup_invoice:\n" + head[head.index("    says:") : head.index("    terms:")]
    msg = _refused(GOOD[:start] + body + GOOD[end:])
    assert "signals.lookup_invoice: a signal needs terms, together or patterns" in msg


def test_a_family_named_twice_is_refused_at_the_second() -> None:
    bad = GOOD.replace("  change_en: [", "  problem_en: [", 1)
    msg = _refused(bad)
    second = _line_of(bad, "  problem_en: [", after="  change_zh:")
    first = _line_of(GOOD, "  problem_en: [")
    assert msg.startswith(f"rules.yaml:{second}: families: “problem_en” is given twice"), msg
    assert f"first at line {first}" in msg
