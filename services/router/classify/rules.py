"""The routing rules file: schema, validation with line numbers, and the compiled matcher.

A team lead edits ``services/router/rules.yaml``. At start-up the file is parsed with
``yaml.compose`` (which keeps each node's line), validated with pydantic, and checked for
conflicts (a term in two categories, an alias pointing at itself...). Any problem stops the
service with ``RulesError("<file>:<line>: <where>: <reason>")``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import compress
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.router.classify.text import PerWord, fold_latin
from shared.config_file import error_loc, located, read_yaml
from shared.events import Category, Priority, Tier


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, line and reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _clean_terms(v: list[str]) -> list[str]:
    """The words checked, their Latin letters' diacritics dropped (``fold_latin``: messages
    are read so, and médiateur or mediateur in the file then matches either in a message)."""
    for i, term in enumerate(v):
        if not term.strip():
            raise ValueError(f"term {i + 1} is empty")
        if term.strip("*") == "":
            raise ValueError(f"term {i + 1} has nothing but '*'")
    return [fold_latin(term) for term in v]


# A ``together`` entry "not x": the group does not fire when a word of family x is there.
NOT_FAMILY = "not "


def _clean_groups(v: list[list[str]]) -> list[list[str]]:
    for i, group in enumerate(v):
        if len([f for f in group if not f.startswith(NOT_FAMILY)]) < 2:
            raise ValueError(f"group {i + 1} must name at least two families (besides “not” ones)")
    return v


def _clean_patterns(v: list[str]) -> list[str]:
    for i, pattern in enumerate(v):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {i + 1} is not a regular expression: {exc}") from None
    return [fold_latin(pattern) for pattern in v]  # they search the folded message


class CategoryRule(_Strict):
    says: str = Field(min_length=3, description="why, in the words a team lead uses")
    terms: list[str] = Field(default_factory=list, description="words that count 1")
    strong: list[str] = Field(default_factory=list, description="words that count 2")
    decisive: list[str] = Field(default_factory=list, description="words that count 3")
    together: list[list[str]] = Field(
        default_factory=list, description="families whose words together count 2"
    )
    skills: list[str] = Field(default_factory=list, description="agent skills it needs")

    _terms = field_validator("terms", "strong", "decisive")(_clean_terms)
    _groups = field_validator("together")(_clean_groups)


class SignalRule(_Strict):
    says: str = Field(min_length=3)
    terms: list[str] = Field(default_factory=list)
    together: list[list[str]] = Field(
        default_factory=list, description="families with a word each anywhere in the message"
    )
    unless: list[str] = Field(
        default_factory=list,
        description="families: the signal does not count when a word of one of them (not "
        "denied) is in the message (a look-up is none when the customer reports a problem)",
    )
    patterns: list[str] = Field(default_factory=list, description="regular expressions")
    negation: bool = Field(default=True, description="a denied word (没有漏电) does not count")
    priority: Priority | None = None
    tier: Tier | None = None
    category: Category | None = None
    weight: float = Field(default=0.0, ge=0, le=10)
    anger: float = Field(default=0.0, ge=0, le=5)
    risk: bool = True
    threat: bool = False
    needs_person: bool = False
    lookup: bool = Field(
        default=False,
        description="a self-service look-up (the product page, the policy or the tracking page "
        "answers it): a calm, normal-priority message with one goes to the bot whatever its "
        "category, when tiers.lookups_to_bot says so",
    )
    order_status: list[str] = Field(default_factory=list)

    _terms = field_validator("terms")(_clean_terms)
    _groups = field_validator("together")(_clean_groups)
    _patterns = field_validator("patterns")(_clean_patterns)


class ContextRules(_Strict):
    order_number_excludes: list[Category] = Field(
        default_factory=list, description="categories a message with an order number is not"
    )
    order_number_default: Category | None = Field(
        default=None, description="the category of a message whose only clue is an order number"
    )
    vip_level_raises: int = Field(
        default=5, ge=1, description="a VIP level from which priority is raised one step"
    )
    order_amount_raises: Decimal = Field(
        default=Decimal(5000),
        gt=0,
        description="an order value from which priority is raised one step (once with a VIP)",
    )
    reopen_important: int = Field(
        default=3,
        ge=1,
        description="how many times a conversation came back before it is at least important",
    )
    reopen_second_line: int = Field(
        default=3,
        ge=1,
        description="how many times a conversation came back before L2 takes it (and it is at "
        "least important: not below reopen_important)",
    )
    anger_important: float = Field(default=1.0, gt=0)
    exclamations_per_anger: int = Field(default=3, ge=1)
    question_category: Category | None = Field(
        default=None,
        description="the category of a question (a word of the family `question`) with no "
        "category word and no signal",
    )


class NegationRules(_Strict):
    words: list[str] = Field(default_factory=list, description="words that deny what follows")
    skip: list[str] = Field(
        default_factory=list, description="words that may stand between (没有要差评)"
    )
    intent: list[str] = Field(
        default_factory=list,
        description="words that deny wanting something; they also cancel category words",
    )
    firm: list[str] = Field(
        default_factory=list,
        description="denials of threats and safety reports (threat: true, also with negation: "
        "false) and of whole-word family words, and of nothing else: the customer says they will "
        "not do it (not going to sue, no need for lawyers)",
    )
    reach: int = Field(
        default=1,
        ge=1,
        le=5,
        description="how many `skip` words may stand between a denial and the word it denies",
    )
    things: list[str] = Field(
        default_factory=list,
        description="words that, right after a signal word, make it the name of a thing or a "
        "place (报警器, 律师事务所, 直播间): the signal word does not count",
    )

    _terms = field_validator("words", "skip", "intent", "firm", "things")(_clean_terms)


class TierRules(_Strict):
    bot_categories: list[Category] = Field(default_factory=list)
    second_line_categories: list[Category] = Field(default_factory=list)
    lookups_to_bot: bool = Field(
        default=False,
        description="a calm, normal-priority message with a look-up (a signal with lookup: "
        "true) goes to the bot whatever its category (a second-line category still goes to L2)",
    )


class SecondOpinionRules(_Strict):
    enabled: bool = Field(
        default=False,
        description="a trained model (classify/threat_model.json) may raise a message the "
        "rules did not take as a threat to urgent / L2; it never lowers anything",
    )
    threshold: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="the model's probability from which it raises; the one chosen by "
        "cross-validation in training when unset (lower raises more)",
    )
    english: bool = Field(
        default=False,
        description="English messages are read too, by their own model "
        "(classify/threat_model_en.json, character n-grams of each word)",
    )
    english_threshold: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="the English model's probability from which it raises; the one chosen by "
        "cross-validation in training when unset",
    )


class RulesFile(_Strict):
    version: Literal[1]
    aliases: dict[str, str] = Field(default_factory=dict)
    pinyin: dict[str, str] = Field(default_factory=dict)
    homophones: list[str] = Field(default_factory=list)
    families: dict[str, list[str]] = Field(default_factory=dict)
    negation: NegationRules = Field(default_factory=NegationRules)
    tie_order: list[Category]
    categories: dict[Category, CategoryRule]
    signals: dict[str, SignalRule] = Field(default_factory=dict)
    priority_floor: dict[Category, Priority] = Field(default_factory=dict)
    context: ContextRules = Field(default_factory=ContextRules)
    tiers: TierRules = Field(default_factory=TierRules)
    second_opinion: SecondOpinionRules = Field(default_factory=SecondOpinionRules)

    @field_validator("families")
    @classmethod
    def _families_have_words(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, words in v.items():
            if not words:
                raise ValueError(f"family {name} has no words")
        return {name: _clean_terms(words) for name, words in v.items()}

    @field_validator("aliases")
    @classmethod
    def _folded_aliases(cls, v: dict[str, str]) -> dict[str, str]:
        return {fold_latin(typed): fold_latin(word) for typed, word in v.items()}

    @field_validator("tie_order")
    @classmethod
    def _all_categories(cls, v: list[Category]) -> list[Category]:
        missing = [c.value for c in Category if c not in v]
        if missing or len(set(v)) != len(v):
            raise ValueError(
                "must list every category exactly once"
                + (f" (missing: {', '.join(missing)})" if missing else " (a category repeats)")
            )
        return v


# What a look-up signal must leave unset (it changes the tier only, through
# tiers.lookups_to_bot), with each field's unset value.
_LOOKUP_UNSET: dict[str, object] = {
    "priority": None,
    "tier": None,
    "category": None,
    "weight": 0.0,
    "anger": 0.0,
    "threat": False,
    "needs_person": False,
    "order_status": [],
}


def _fail(path: str, root: yaml.Node | None, loc: Sequence[int | str], reason: str) -> RulesError:
    return RulesError(located(path, root, loc, reason))


def parse_rules(text: str, path: str = "<rules>") -> RulesFile:
    """Parse and validate a rules document; raise RulesError naming the line and reason."""
    try:
        data, root = read_yaml(text, path)
    except ValueError as exc:
        raise RulesError(str(exc)) from None
    if root is None or not isinstance(data, dict):
        raise RulesError(f"{path}:1: the rules file must be a mapping (version, categories...)")
    for where, key, line, earlier in _repeated_keys(root, ()):
        raise RulesError(
            f"{path}:{line}: {'.'.join(where) or '(top)'}: “{key}” is given twice (first at line"
            f" {earlier}); YAML would keep only the later one: rename one or merge them"
        )
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise _fail(path, root, error_loc(first), f"{first['msg']}{more}") from None
    for loc, reason in _conflicts(rules):
        raise _fail(path, root, loc, reason)
    return rules


def _repeated_keys(
    node: yaml.Node, where: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], str, int, int]]:
    """Keys given twice in one mapping (a family named twice: YAML keeps the later one and
    says nothing), as (where, key, its line, the first one's line)."""
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                line = k.start_mark.line + 1
                if k.value in lines:
                    yield where, k.value, line, lines[k.value]
                lines.setdefault(k.value, line)
                yield from _repeated_keys(v, (*where, k.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            yield from _repeated_keys(v, (*where, str(i)))


def _conflicts(rules: RulesFile) -> Iterator[tuple[list[int | str], str]]:
    seen: dict[str, str] = {}
    for cat, rule in rules.categories.items():
        for field in ("terms", "strong", "decisive"):
            for i, term in enumerate(getattr(rule, field)):
                key = term.lower()
                if key in seen and seen[key] != cat.value:
                    yield (
                        ["categories", cat.value, field, i],
                        f"“{term}” is already a word of category {seen[key]}; "
                        "a word may point to one category only",
                    )
                seen[key] = cat.value
    for variant, canonical in rules.aliases.items():
        if variant.lower() == canonical.lower():
            yield ["aliases", variant], f"alias “{variant}” points at itself"
    for name, sig in rules.signals.items():
        if sig.threat and (sig.priority is not Priority.urgent or sig.tier is not Tier.L2):
            yield (
                ["signals", name, "threat"],
                "a threat must say priority: urgent and tier: L2 (threats never go below L2)",
            )
        if not (sig.terms or sig.together or sig.patterns):
            yield ["signals", name], "a signal needs terms, together or patterns to be found by"
        if sig.lookup:
            for field, unset in _LOOKUP_UNSET.items():
                if getattr(sig, field) != unset:
                    yield (
                        ["signals", name, field],
                        "a look-up only lets a calm question go to the bot: it sets no priority,"
                        " tier, category, weight, anger, threat, needs_person or order_status,"
                        " and says risk: false",
                    )
            if sig.risk:
                yield (
                    ["signals", name, "lookup"],
                    "a look-up is no risk: say risk: false next to lookup: true",
                )
    for word, spelled in rules.pinyin.items():
        syllables = spelled.split()
        if len(syllables) != len(word) or not all(x.isascii() and x.isalpha() for x in syllables):
            yield (
                ["pinyin", word],
                f"the pinyin of “{word}” must be one syllable of letters per character",
            )
    group_of: dict[str, int] = {}
    for i, group in enumerate(rules.homophones):
        if len(group) < 2:
            yield ["homophones", i], f"group {i + 1} needs at least two characters"
        for ch in group:
            if ch in group_of:
                yield (
                    ["homophones", i],
                    f"“{ch}” of group {i + 1} is already in group {group_of[ch] + 1}; "
                    "a character may be in one group only",
                )
            group_of[ch] = i
    groups: list[tuple[list[int | str], list[str]]] = []
    for cat, rule in rules.categories.items():
        groups += [
            (["categories", cat.value, "together", i], g) for i, g in enumerate(rule.together)
        ]
    for name, sig in rules.signals.items():
        groups += [(["signals", name, "together", i], g) for i, g in enumerate(sig.together)]
    for name, sig in rules.signals.items():
        groups += [(["signals", name, "unless"], sig.unless)] if sig.unless else []
    for loc, named in groups:
        for j, family in enumerate(named):
            family = family.removeprefix(NOT_FAMILY)
            if family not in rules.families:
                yield [*loc, j], f"no family named “{family}” (see families:)"
    ctx = rules.context
    if ctx.reopen_important > ctx.reopen_second_line:
        yield (
            ["context", "reopen_important"],
            f"a conversation that L2 takes (came back {ctx.reopen_second_line} times,"
            " reopen_second_line) is at least important too: reopen_important must not be"
            f" above {ctx.reopen_second_line}",
        )
    cq = ctx.question_category
    if cq is not None and "question" not in rules.families:
        yield ["context", "question_category"], "needs a family named “question”"
    overlap = set(rules.tiers.bot_categories) & set(rules.tiers.second_line_categories)
    if overlap:
        yield (
            ["tiers", "bot_categories"],
            f"{', '.join(sorted(c.value for c in overlap))} cannot be both bot and second line",
        )


def load_rules(path: str | Path) -> RulesFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{p}:0: cannot read the rules file: {exc.strerror}") from None
    return parse_rules(text, str(p))


# --------------------------------------------------------------------------- compiled form


def _is_han(ch: str) -> bool:
    return "\u3400" <= ch[0] <= "\u9fff"


# A match target: (kind, name, weight); kind "c" = category, "s" = signal.
Target = tuple[str, str, float]
# What a word matches (``Matcher._by_next``): its one-word matches, and by the word after
# it, those and the phrases that go on with that word, in rule order; a match is the words
# that must follow (none for a one-word match) and its Hit.
_Entry = tuple[tuple[str, ...], "Hit"]
_WordMatches = tuple[tuple[_Entry, ...], dict[str, tuple[_Entry, ...]]]


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str
    name: str
    weight: float
    term: str


class Matcher:
    """Finds rule terms in a token sequence: exact tokens, token sequences, English prefixes.

    Each term is cut by the same tokenizer as the messages, so a term is matched as whole
    words (退款 is not found inside 退款单号's neighbours by accident, and "return" is not
    found inside "returning" unless the rule says "return*").
    """

    def __init__(
        self,
        entries: Sequence[tuple[tuple[str, ...], str, Target]],
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        # Message words are read through the aliases (the terms already are).
        self._aliases: Mapping[str, str] = aliases or {}
        self._seq: dict[str, list[tuple[tuple[str, ...], str, Target]]] = {}
        self._prefix: list[tuple[str, str, Target]] = []
        # One-character Chinese category words (裂, 漏, 退...) also count as the head or tail
        # of a two- or three-character word jieba leaves whole (裂开, 漏水, 退回去的).
        self._morpheme: dict[str, list[tuple[str, Target]]] = {}
        for words, term, target in entries:
            if target[0] == "c" and len(term) == 1 and _is_han(term):
                self._morpheme.setdefault(term, []).append((term, target))
            if term.endswith("*") and len(words) == 1:
                self._prefix.append((words[0], term, target))
            elif words:
                self._seq.setdefault(words[0], []).append((words[1:], term, target))
        # Per distinct word (words repeat across messages even when texts do not): what it
        # matches, in rule order, as shared Hit objects, by the word after it (``_by_next``);
        # None for a word that begins nothing (most words: skipped in C by ``scan``).
        self._words: PerWord[_WordMatches | None] = PerWord(self._by_next)

    def _by_next(self, word: str) -> _WordMatches | None:
        """What ``word`` matches, as ``_word`` lists it, split by the word after it: its
        one-word matches, and for each word a phrase of it may go on with, those and the
        phrases that go on with that word, in the same order ("the" or "my" begins many
        phrases: a message's next word picks the few to check)."""
        entries = self._word(word)
        if not entries:
            return None
        single = tuple(e for e in entries if not e[0])
        nexts = dict.fromkeys(rest[0] for rest, _ in entries if rest)
        by_next = {s: tuple(e for e in entries if not e[0] or e[0][0] == s) for s in nexts}
        return (single, by_next)

    def _word(self, word: str) -> tuple[tuple[tuple[str, ...], Hit], ...]:
        out: list[tuple[tuple[str, ...], Hit]] = []
        w = self._aliases.get(word, word)
        cands = self._seq.get(w)
        if cands is not None:
            for rest, term, (kind, name, weight) in cands:
                out.append((rest, Hit(kind, name, weight, term)))
        elif 2 <= len(w) <= 3 and _is_han(w[0]):
            for ch in dict.fromkeys((w[0], w[-1])):
                for term, (kind, name, weight) in self._morpheme.get(ch, ()):
                    out.append(((), Hit(kind, name, weight, term)))
        if self._prefix and w.isascii() and w.isalpha():
            for p, term, (kind, name, weight) in self._prefix:
                if w.startswith(p):
                    out.append(((), Hit(kind, name, weight, term)))
        return tuple(out)

    def scan(self, words: Sequence[str]) -> list[tuple[int, int, Hit]]:
        """All hits as (index of the first word, number of words, hit); a category word
        inside a longer matched phrase does not count alone ("place an order" is pre-sale,
        its "order" alone is not an order question)."""
        found: list[tuple[int, int, Hit]] = []
        phrases = False  # whether a category phrase of two or more words was found
        alias = self._aliases.get
        last = len(words) - 1
        # Each word's matches looked up in C; the loop runs only over words that have any.
        infos = list(map(self._words.__getitem__, words))
        for i in compress(range(len(infos)), infos):
            info = infos[i]
            if info is None:  # not taken by compress: for the type checker
                continue
            single, by_next = info
            if by_next and i < last:  # the next word, read through the aliases, picks
                second = words[i + 1]
                entries = by_next.get(alias(second, second), single)
            else:
                entries = single
            for rest, h in entries:
                if not rest:
                    found.append((i, 1, h))
                    continue
                if i + len(rest) > last:
                    continue
                nxt = words[i + 2 : i + 1 + len(rest)]
                if tuple(map(alias, nxt, nxt)) == rest[1:]:
                    found.append((i, 1 + len(rest), h))
                    phrases = phrases or h.kind == "c"
        if not phrases:  # no category phrase: no word inside one
            return found
        covered: set[int] = set()
        for i, n, h in found:
            if n > 1 and h.kind == "c":
                covered.update(range(i, i + n))
        return [(i, n, h) for i, n, h in found if n > 1 or h.kind != "c" or i not in covered]
