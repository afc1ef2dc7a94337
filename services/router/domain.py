"""Pure routing decision: category, priority, tier and skills of one customer message.

The judgement a seasoned team lead makes, written down in ``services/router/rules.yaml``
(see docs/routing-rules.md): words and signals come from the rules file, the order of the
steps below is fixed here.

1. Category: the best-scoring category of the rules' words (rjieba-tokenised Chinese,
   English words), signals such as a 12315 threat adding to complaint.
2. Priority: the category's floor (complaints and quality problems are at least important),
   the signals' priorities (threats, chargebacks and safety are urgent), anger, a
   conversation that keeps coming back (3 times in the shipped rules), then one step up for a
   VIP or a valuable order (level 5, 5,000), and an escalation from sla_watch (at least
   important); the numbers are the rules file's ``context``.
3. Tier: complaints and disputes to L2, calm simple questions (pre-sale, greetings,
   account) and calm self-service look-ups of any category (the returns window, has it
   shipped, where to download the e-invoice: signals with ``lookup: true``) to the bot, the
   rest to L1; a signal's tier, a conversation that keeps coming back and an escalation move
   it up; a threat or safety report is urgent and never below L2, whatever the category
   (checked last, after every other step).
4. Second opinion (when the rules file enables it): a small trained model that reads a
   threat or safety report the rules did not find makes the message urgent and L2; it only
   ever raises, and keeps the category.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from services.router.classify import Classifier, load_rules
from services.router.classify.engine import Classification
from shared.events import Category, Channel, Priority, Tier

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.yaml")

_UP: dict[Priority, Priority] = {
    Priority.normal: Priority.important,
    Priority.important: Priority.urgent,
    Priority.urgent: Priority.urgent,
}
_PRI_RANK = {Priority.normal: 0, Priority.important: 1, Priority.urgent: 2}
_TIER_RANK = {Tier.bot: 0, Tier.L1: 1, Tier.L2: 2}
_CAT_WORDS = {
    Category.presale: "pre-sale question",
    Category.order_status: "order question",
    Category.logistics: "shipping question",
    Category.return_refund: "return or refund",
    Category.product_quality: "quality problem",
    Category.invoice: "invoice request",
    Category.complaint: "complaint",
    Category.other: "general message",
}


@dataclass(frozen=True, slots=True)
class DecisionInput:
    text: str
    channel: Channel = Channel.chat
    vip_level: int = 0
    order_amount: Decimal | None = None
    order_status: str | None = None
    reopen_count: int = 0
    escalated: bool = False


@dataclass(slots=True)
class Decision:
    """Not frozen: ``decide`` returns a new one on every call (its lists copied from the
    decision kept per outcome), and a frozen dataclass sets each field through
    ``object.__setattr__``, about four times dearer, on every decision."""

    category: Category
    priority: Priority
    tier: Tier
    reasons: list[str] = field(default_factory=list)
    risk_signals: list[str] = field(default_factory=list)
    sentiment: float = 0.0
    skills: tuple[str, ...] = ()
    language: str = "zh"

    @property
    def queue(self) -> str:
        return f"{self.tier.value}.{self.priority.value}"


_default: Classifier | None = None
_lock = threading.Lock()


def load_classifier(path: str | Path) -> Classifier:
    """Load and validate a rules file (raises RulesError naming the line and the reason)."""
    return Classifier(load_rules(path))


def use_rules(path: str | Path) -> Classifier:
    """Make the rules in ``path`` the default of ``decide`` (called once at start-up)."""
    global _default
    clf = load_classifier(path)
    with _lock:
        _default = clf
    return clf


def default_classifier() -> Classifier:
    """The default classifier: the rules given to ``use_rules`` (the router's settings do
    that at start-up), else the bundled rules.yaml, loaded on first use."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = load_classifier(DEFAULT_RULES_FILE)
    return _default


def decide(inp: DecisionInput, classifier: Classifier | None = None) -> Decision:
    """The decision for one message.

    The text is classified (cached by text); the rest of the decision depends only on the
    classification's outcome and the context, which repeat even when texts do not, so it
    is kept per outcome (``Classifier.decisions``) and only its lists are copied."""
    clf = classifier or default_classifier()
    per_anger, reopen_min, vip_min, amount_min = clf.bounds
    c = clf.classify(inp.text, inp.order_status)
    # the named tuple's fields at once (each attribute of one is a descriptor call)
    category, terms, _, signals, anger, exclamations, tokens, opinion = c
    amount = inp.order_amount
    key = (
        category,
        terms[:3],
        tuple([(h.name, h.term) for h in signals]) if signals else (),
        anger,
        exclamations >= per_anger,
        tokens.language,
        inp.reopen_count if inp.reopen_count >= reopen_min else 0,
        inp.vip_level if inp.vip_level >= vip_min else 0,
        str(amount) if amount is not None and amount >= amount_min else "",
        inp.escalated,
        opinion.evidence if opinion is not None else None,
    )
    cache = clf.decisions
    d = cache.get(key)
    if d is None:
        d = _decide(inp, clf, c)
        if len(cache) >= 50_000:
            cache.clear()
        cache[key] = d
    # positional (the fields' order): keywords cost a dictionary more, on every decision
    return Decision(
        d.category,
        d.priority,
        d.tier,
        list(d.reasons),
        list(d.risk_signals),
        d.sentiment,
        d.skills,
        d.language,
    )


def after_reopen(
    reopen_count: int, tier: Tier, priority: Priority, classifier: Classifier | None = None
) -> tuple[Tier, Priority, list[str]]:
    """The tier and priority of a ticket that has just come back for the ``reopen_count``-th
    time (a ``ticket_reopened`` event, no message text): the rules' ``context`` thresholds as
    ``decide`` applies them (at least important from ``reopen_important``, L2 from
    ``reopen_second_line``), never lower than ``tier`` and ``priority``; the reasons say
    what moved (none: nothing did)."""
    ctx = (classifier or default_classifier()).rules.context
    reasons: list[str] = []
    times = "time" if reopen_count == 1 else "times"
    if reopen_count >= ctx.reopen_important and priority is Priority.normal:
        priority = Priority.important
        reasons.append(f"important: this conversation came back {reopen_count} {times} already")
    if reopen_count >= ctx.reopen_second_line and tier is not Tier.L2:
        tier = Tier.L2
        reasons.append(
            f"second line: this conversation came back {reopen_count} {times} (L2 takes a"
            f" conversation that came back {ctx.reopen_second_line} or more times)"
        )
    return tier, priority, reasons


def _decide(inp: DecisionInput, clf: Classifier, c: Classification) -> Decision:
    rules = clf.rules
    ctx = rules.context
    reasons: list[str] = []
    category = c.category
    what = _CAT_WORDS[category]
    if c.category_terms:
        words = "”, “".join(c.category_terms[:3])
        reasons.append(f"{what}: {rules.categories[category].says} (“{words}”)")
    else:
        reasons.append(f"{what}: no words of a category found")

    # ---- priority
    priority = rules.priority_floor.get(category, Priority.normal)
    if priority is not Priority.normal:
        reasons.append(f"{priority.value}: every {what} is at least {priority.value}")
    tier_floor = Tier.bot
    needs_person = False
    threat = False
    lookup = False  # a self-service look-up (the help pages answer it)
    others = False  # any signal that is not a look-up
    risk_signals: list[str] = []
    for hit in c.signals:
        s = hit.rule
        if s.lookup:
            lookup = True
            reasons.append(f"the customer {s.says} (“{hit.term}”)")
            continue
        others = True
        if s.risk:
            risk_signals.append(hit.name)
        needs_person = needs_person or s.needs_person
        threat = threat or s.threat
        if s.priority is not None and _PRI_RANK[s.priority] > _PRI_RANK[priority]:
            priority = s.priority
        if s.tier is not None and _TIER_RANK[s.tier] > _TIER_RANK[tier_floor]:
            tier_floor = s.tier
        effect = f"{s.priority.value}: " if s.priority is not None else ""
        reasons.append(f"{effect}the customer {s.says} (“{hit.term}”)")
    if c.anger >= ctx.anger_important and priority is Priority.normal:
        priority = Priority.important
        reasons.append("important: the customer sounds angry")
    elif c.exclamations >= ctx.exclamations_per_anger and c.anger >= ctx.anger_important:
        reasons.append("the customer sounds angry (many exclamation marks)")
    if inp.reopen_count >= ctx.reopen_important:
        if priority is Priority.normal:
            priority = Priority.important
        times = "time" if inp.reopen_count == 1 else "times"
        reasons.append(
            f"{priority.value}: this conversation came back {inp.reopen_count} {times} already"
        )
        if inp.reopen_count >= ctx.reopen_second_line:
            # rules.py refuses reopen_important above reopen_second_line: L2 is also important
            risk_signals.append("repeated_failure")
            tier_floor = Tier.L2
            reasons.append(
                "second line: first line has not solved it (L2 takes a conversation that came"
                f" back {ctx.reopen_second_line} or more times)"
            )
    raise_for: list[str] = []
    if inp.vip_level >= ctx.vip_level_raises:
        raise_for.append(f"VIP level {inp.vip_level}")
    if inp.order_amount is not None and inp.order_amount >= ctx.order_amount_raises:
        raise_for.append(f"order worth {inp.order_amount}")
    if raise_for and priority is not Priority.urgent:
        priority = _UP[priority]
        reasons.append(
            f"{priority.value}: raised one step for a valuable customer ({', '.join(raise_for)})"
        )
    if inp.escalated:
        if priority is Priority.normal:
            priority = Priority.important
        tier_floor = Tier.L2
        reasons.append("second line: escalated by the SLA watch (not answered in time)")

    # ---- tier
    context_l2 = inp.escalated or inp.reopen_count >= ctx.reopen_second_line
    tiers = rules.tiers
    lookup = lookup and tiers.lookups_to_bot
    if category in tiers.second_line_categories:
        tier = Tier.L2
        reasons.append(f"second line: a {what} goes to L2")
    elif priority is Priority.normal and not needs_person and not others and lookup:
        tier = Tier.bot
        reasons.append("bot: a look-up the product page, the policy or the tracking page answers")
    elif (
        category in tiers.bot_categories
        and priority is Priority.normal
        and not needs_person
        and not others
    ):
        tier = Tier.bot
        reasons.append(f"bot: a simple {what} the bot can answer")
    else:
        tier = Tier.L1
        if context_l2:
            pass  # the reopenings or the escalation above take it to L2, and say so
        elif needs_person:
            reasons.append("first line: the customer wants a person")
        elif lookup and priority is not Priority.normal:
            reasons.append(
                f"first line: a look-up, but {priority.value} (the bot takes normal only)"
            )
        elif lookup:
            reasons.append("first line: a look-up, but with more in it than the bot answers")
        else:
            reasons.append("first line: a routine question for an agent")
    if _TIER_RANK[tier_floor] > _TIER_RANK[tier]:
        tier = tier_floor
        if not context_l2:
            reasons.append("second line: the signals above need an experienced agent")
    if threat:
        # The safety net: a threat or safety report is urgent and second line whatever its
        # category, the context or the signal's own settings say (a rules file that says
        # otherwise is refused at start-up; this holds for rules built any other way too).
        if priority is not Priority.urgent:
            priority = Priority.urgent
            reasons.append("urgent: a threat or safety report is always urgent")
        if tier is not Tier.L2:
            tier = Tier.L2
            reasons.append("second line: a threat or safety report always goes to L2")
    opinion = c.second_opinion
    if opinion is not None and not threat:
        # The second opinion (classify/second_opinion.py): a trained model reads a threat or
        # safety report the rules did not find. It only raises: urgent, L2, the category kept,
        # but for English a threat is a complaint whatever else it asks (as the rules' threat
        # signals weigh for complaint), and a harm stays a quality problem.
        threat = True
        if (
            c.tokens.language == "en"
            and category is not Category.complaint
            and category is not Category.product_quality
        ):
            reasons.append(
                "complaint: a threat the trained model reads is a complaint, whatever else it"
                f" asks (not the {what} its words alone say)"
            )
            category = Category.complaint
        risk_signals.append("threat")
        words = "”, “".join(opinion.evidence)
        reasons.append(
            "urgent: a second opinion (a model trained on labelled messages) reads this as a"
            f" threat or a safety report (“{words}”)"
        )
        priority = Priority.urgent
        if tier is not Tier.L2:
            tier = Tier.L2
            reasons.append("second line: a threat or safety report always goes to L2")
    sentiment = max(-1.0, -0.4 * c.anger) if c.anger else 0.0
    if threat or category is Category.complaint:
        sentiment = min(sentiment, -0.6)
    lang = c.tokens.language
    skills = (*rules.categories[category].skills, "en" if lang == "en" else "zh")
    return Decision(
        category=category,
        priority=priority,
        tier=tier,
        reasons=reasons,
        risk_signals=risk_signals,
        sentiment=round(sentiment, 2),
        skills=skills,
        language=lang,
    )
