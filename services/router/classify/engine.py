"""The classifier: text + rules -> category scores, signals, anger, language.

Pure apart from its caches: the same text and rules always give the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.router.classify.rules import Hit, Matcher, RulesFile, SignalRule, Target
from services.router.classify.text import Tokenizer, Tokens
from shared.events import Category


@dataclass(frozen=True, slots=True)
class RiskHit:
    name: str
    rule: SignalRule
    term: str


@dataclass(frozen=True, slots=True)
class Classification:
    category: Category
    category_terms: tuple[str, ...]
    scores: dict[Category, float]
    signals: tuple[RiskHit, ...]
    anger: float
    exclamations: int
    tokens: Tokens


class Classifier:
    def __init__(self, rules: RulesFile, tokenizer: Tokenizer | None = None) -> None:
        self.rules = rules
        words: set[str] = set(rules.aliases)
        for c in rules.categories.values():
            words.update(c.terms)
            words.update(c.strong)
            words.update(c.decisive)
        for s in rules.signals.values():
            words.update(s.terms)
        self.tokenizer = tokenizer or Tokenizer(w.rstrip("*") for w in words if " " not in w)
        self._aliases = {k.lower(): v.lower() for k, v in rules.aliases.items()}
        entries: list[tuple[tuple[str, ...], str, Target]] = []
        for cat, crule in rules.categories.items():
            for weight, terms in ((1.0, crule.terms), (2.0, crule.strong), (3.0, crule.decisive)):
                for term in terms:
                    entries.append((self._term_words(term), term, ("c", cat.value, weight)))
        for name, srule in rules.signals.items():
            for term in srule.terms:
                entries.append((self._term_words(term), term, ("s", name, 0.0)))
        self._matcher = Matcher(entries, self._aliases)
        self._rank = {c: i for i, c in enumerate(rules.tie_order)}
        self._categories = {c.value: c for c in Category}
        # Only these order statuses change a classification (signals gated on a status).
        self._statuses = {st for s in rules.signals.values() for st in s.order_status}
        self._cache: dict[tuple[str, bool, str], Classification] = {}
        self._cache_max = 50_000
        # ``decide``'s decisions per classification outcome and context (not per text).
        self.decisions: dict[tuple[object, ...], Any] = {}

    def set_cache_size(self, size: int) -> None:
        """Bound this classifier's caches (0 turns them off, to measure cold decisions)."""
        self._cache_max = size
        self._cache.clear()
        self.tokenizer.set_cache_size(size)

    def _term_words(self, term: str) -> tuple[str, ...]:
        norm = self.tokenizer.normalise(term.rstrip("*"))
        words = tuple(self._aliases.get(w, w) for w in self.tokenizer.words(norm))
        return words

    def classify(self, text: str, order_status: str | None = None) -> Classification:
        """Classify one message; cached by its normalised text (order numbers removed)."""
        stripped, has_order = self.tokenizer.prepare(text)
        status = (order_status or "").lower()
        key = (stripped, has_order, status if status in self._statuses else "")
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        result = self._classify(self.tokenizer.tokens_of(stripped, has_order), status)
        if self._cache_max:
            if len(self._cache) >= self._cache_max:
                self._cache.clear()
            self._cache[key] = result
        return result

    def _classify(self, toks: Tokens, status: str) -> Classification:
        rules = self.rules
        hits: list[Hit] = self._matcher.scan(toks.words)
        scores: dict[Category, float] = {}
        cat_terms: dict[Category, list[str]] = {}
        signals: list[RiskHit] = []
        seen_signals: set[str] = set()
        anger = toks.exclamations // rules.context.exclamations_per_anger
        anger_f = float(anger)
        categories = self._categories
        for h in hits:
            if h.kind == "c":
                cat = categories[h.name]
                scores[cat] = scores.get(cat, 0.0) + h.weight
                cat_terms.setdefault(cat, []).append(h.term.rstrip("*"))
                continue
            if h.name in seen_signals:
                continue
            srule = rules.signals[h.name]
            if srule.order_status and status not in srule.order_status:
                continue
            seen_signals.add(h.name)
            signals.append(RiskHit(h.name, srule, h.term.rstrip("*")))
            anger_f += srule.anger
            if srule.category is not None and srule.weight:
                scores[srule.category] = scores.get(srule.category, 0.0) + srule.weight
                cat_terms.setdefault(srule.category, []).append(h.term.rstrip("*"))
        if toks.has_order_number:
            for cat in rules.context.order_number_excludes:
                scores.pop(cat, None)
            default = rules.context.order_number_default
            if default is not None and not any(
                v for c, v in scores.items() if c is not Category.other
            ):
                scores[default] = scores.get(default, 0.0) + 1.0
                cat_terms.setdefault(default, []).append("an order number")
        if scores:
            rank = self._rank
            category = min(scores, key=lambda c: (-scores[c], rank[c]))
        else:
            category = Category.other
        return Classification(
            category=category,
            category_terms=tuple(dict.fromkeys(cat_terms.get(category, ()))),
            scores=scores,
            signals=tuple(signals),
            anger=anger_f,
            exclamations=toks.exclamations,
            tokens=toks,
        )
