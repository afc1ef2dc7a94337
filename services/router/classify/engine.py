"""The classifier: text + rules -> category scores, signals, anger, language.

Pure apart from its caches: the same text and rules always give the same answer.

Words are found in four ways, from the strictest to the loosest (docs/routing-rules.md):
1. whole words of the rjieba cut (and English words), read through the aliases;
2. a Chinese rule word of two or more characters inside the text even where the cutter
   cut it otherwise (烧起来了 has 烧起来 whatever the cut), and, for words of three or more
   characters without a number in them, with one character mistyped after the second
   (拉肚纸 is 拉肚子): the character n-gram fallback;
3. families: named groups of words whose meeting in one message means something no single
   word does (something eaten + a symptom is a safety report);
4. patterns: a few regular expressions (第4回, 三遍).
A word right after a denial (没有漏电, 不用转人工) does not count for signals that say
``negation: true``; threats keep counting (我也不想去12315 is still a threat). A ``firm``
denial (I'm not going to sue) denies threats and safety reports (``threat: true``) and the
whole-word family words, and nothing else.
"""

from __future__ import annotations

import itertools
import re
from itertools import compress
from typing import Any, NamedTuple

from services.router.classify.rules import (
    NOT_FAMILY,
    Hit,
    Matcher,
    RulesError,
    RulesFile,
    SignalRule,
    Target,
)
from services.router.classify.second_opinion import (
    MODEL_FILE,
    MODEL_FILE_EN,
    Scorer,
    SecondOpinion,
    ThreatModel,
    WordScorer,
)
from services.router.classify.text import PerWord, Tokenizer, Tokens
from shared.events import Category

_NUMERAL = frozenset("0123456789一二两三四五六七八九十几第百千")
# A Latin letter right next to a Chinese character: where half-pinyin words (发huo) can be.
# Written with the Chinese character first (a leading character class: the search skips to
# Chinese characters instead of trying both alternatives at every character). Only texts
# with both reach it, most of them English with a Chinese greeting around: a few Chinese
# characters to try instead of every letter (0.5 us against 1.7 us on the framed benchmark
# texts that reach it).
_TOUCH = re.compile(r"[\u3400-\u9fff](?:(?<=[a-z][\u3400-\u9fff])|(?=[a-z]))")
_LATIN = re.compile(r"[a-z]")
_LATIN_WORD = re.compile(r"[a-z]+")
# A denial by a ``negation.firm`` word: it denies threats and safety reports (not going to
# sue), not the other signals.
FIRM = 2


def _all_han(word: str) -> bool:
    return bool(word) and all("\u3400" <= ch <= "\u9fff" for ch in word)


class RiskHit(NamedTuple):
    name: str
    rule: SignalRule
    term: str


class Classification(NamedTuple):
    """What the rules (and the second opinion) read in one message. A named tuple, not a
    frozen dataclass: as immutable (cached and shared across calls) and about four times
    cheaper to build (a frozen dataclass sets each field through ``object.__setattr__``)."""

    category: Category
    category_terms: tuple[str, ...]
    scores: dict[Category, float]
    signals: tuple[RiskHit, ...]
    anger: float
    exclamations: int
    tokens: Tokens
    second_opinion: SecondOpinion | None = None
    """The trained model reads a threat or safety report the rules did not find (only
    when the rules' ``second_opinion`` is enabled and no threat signal fired)."""


# A fallback entry: (term, the term in homophone-group characters, target).
_Fallback = tuple[str, str, Target]
# A match in a window of words: (offset in its first word, number of words, family name or
# term, the word found, the term's target or None for a family word).
_Part = tuple[int, int, str, str, Target | None]
# A ``together`` group: the families needed as a set, then (the same, first as given, target,
# whether a denied family word counts, families that must be absent: ``not x``).
_Group = tuple[frozenset[str], tuple[tuple[str, ...], Target, bool, frozenset[str]]]
# What a word holds: its matches, and whether a match may go on from it into the next word.
_WordInfo = tuple[tuple[_Part, ...], bool]
# What scoring reads of a signal: the rule, threat, negation, order statuses, unless
# families, anger, the category it weighs for (None without a weight), weight.
_SignalFacts = tuple[
    SignalRule, bool, bool, frozenset[str], frozenset[str], float, Category | None, float
]
# Read on every message: an enum member as a class attribute goes through the enum
# class's lookup (about 0.2 us).
_OTHER = Category.other


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
        words.update(rules.pinyin)
        self.tokenizer = tokenizer or Tokenizer(w.rstrip("*") for w in words if " " not in w)
        self._aliases = {k.lower(): v.lower() for k, v in rules.aliases.items()}
        # Pinyin: the whole word in pinyin is an alias (tuihuo -> 退货); a word typed half in
        # characters and half in pinyin (发huo, fa票) is rewritten before the cut.
        mixed: dict[str, str] = {}
        self._spaced: dict[tuple[str, ...], str] = {}
        self._spaced_heads: set[tuple[str, ...]] = set()
        for han, spelled in rules.pinyin.items():
            syllables = spelled.lower().split()
            self._aliases.setdefault("".join(syllables), han)
            for pick in itertools.product((0, 1), repeat=len(han)):
                if 0 < sum(pick) < len(han):
                    mixed["".join(syllables[i] if p else han[i] for i, p in enumerate(pick))] = han
            if len(syllables) > 1:  # typed syllable by syllable: bao jing
                self._spaced[tuple(syllables)] = han
                self._spaced_heads.add(tuple(syllables[:2]))
        self._mixed = mixed
        # The first syllables of those: a message without one of them as a word has no pair to
        # join (told in C, without a tuple built per pair of words).
        self._spaced_firsts = frozenset(head[0] for head in self._spaced_heads)
        # Whether every syllable is Latin letters only (then a text without one has none).
        self._spaced_latin = all(_LATIN_WORD.fullmatch(s) for h in self._spaced for s in h)
        self._mixed_re = (
            re.compile(
                "(?<![a-z])(?:"
                + "|".join(re.escape(v) for v in sorted(mixed, key=len, reverse=True))
                + ")(?![a-z])"
            )
            if mixed
            else None
        )
        entries: list[tuple[tuple[str, ...], str, Target]] = []
        for cat, crule in rules.categories.items():
            for weight, terms in ((1.0, crule.terms), (2.0, crule.strong), (3.0, crule.decisive)):
                for term in terms:
                    entries.append((self._term_words(term), term, ("c", cat.value, weight)))
        for name, srule in rules.signals.items():
            for term in srule.terms:
                entries.append((self._term_words(term), term, ("s", name, 0.0)))
        self._matcher = Matcher(entries, self._aliases)
        # The character n-gram fallback: Chinese terms of 2+ characters by their first and
        # second character, each read as its homophone group's first (差凭 reads 差评).
        self._canon = {
            ord(ch): group[0] for group in rules.homophones for ch in group if ch != group[0]
        }
        self._ngram: dict[str, dict[str, list[_Fallback]]] = {}
        for _, term, target in entries:
            if len(term) >= 2 and _all_han(term):
                canon = term.translate(self._canon)
                second = self._ngram.setdefault(canon[0], {})
                second.setdefault(canon[1], []).append((term, canon, target))
        # Families: Chinese words by their first character (homophone-read), other words whole.
        self._fam_han: dict[str, list[tuple[str, str, str]]] = {}
        self._fam_word: dict[str, list[str]] = {}
        for fname, fwords in rules.families.items():
            for w in fwords:
                w = self.tokenizer.normalise(w)
                if _all_han(w):
                    cw = w.translate(self._canon)
                    self._fam_han.setdefault(cw[0], []).append((w, cw, fname))
                else:
                    self._fam_word.setdefault(self._aliases.get(w, w), []).append(fname)
        # What customers type for a family word counts as it (dy is 抖音, xhs 小红书).
        for variant, word in self._aliases.items():
            for fname, fwords in rules.families.items():
                if word in fwords and fname not in self._fam_word.get(variant, ()):
                    self._fam_word.setdefault(variant, []).append(fname)
        self._fam_words = frozenset(self._fam_word)
        self._span_cache: dict[tuple[str, ...], tuple[_Part, ...]] = {}
        self._word_info: PerWord[_WordInfo | None] = PerWord(self._info)
        # Every proper beginning of a family or rule word (homophone-read): what a word must
        # end with for a match to go on into the next word.
        self._heads = frozenset(
            c[:k]
            for c in [
                t for firsts in self._ngram.values() for ts in firsts.values() for _, t, _ in ts
            ]
            + [cw for ws in self._fam_han.values() for _, cw, _ in ws]
            for k in range(1, len(c))
        )
        # (families, as a set, target, whether a denied family word counts: the signal says
        # ``negation: false``, as threats do: 我也不想发到网上 is still going public, families
        # that must be absent: the group's ``not x`` entries)
        # Kept by the group's first family: a message with two or three families present
        # checks only the groups that begin with one of them.
        self._together: dict[str, list[_Group]] = {}
        for cat, crule in rules.categories.items():
            for group in crule.together:
                self._add_group(group, ("c", cat.value, 2.0), False)
        for name, srule in rules.signals.items():
            for group in srule.together:
                self._add_group(group, ("s", name, 0.0), not srule.negation)
        # One regular expression per signal (its patterns as alternatives).
        self._patterns = [
            (re.compile("|".join(f"(?:{p})" for p in s.patterns)), name)
            for name, s in rules.signals.items()
            if s.patterns
        ]
        # Threats and safety reports (``threat: true``) are found recall-first: a homophone
        # slip in their words counts wherever the typed form is not a word of its own.
        self._threats = frozenset(n for n, s in rules.signals.items() if s.threat)
        neg = rules.negation
        self._things = frozenset(neg.things)
        self._firm = frozenset(neg.firm)
        self._neg = frozenset(neg.words) | frozenset(neg.intent)
        self._reach = neg.reach
        self._neg_intent = frozenset(neg.intent)
        self._neg_skip = frozenset(neg.skip)
        self._neg_tails = tuple(sorted(self._neg, key=len, reverse=True))
        # Every word that can stand before a denied word (a denial or a filler word): a rule
        # word after any other word is not denied, told without calling ``_denied``.
        self._deniable = self._neg | self._firm | self._neg_skip
        ctx = rules.context
        self._question = ctx.question_category
        # Read on every message as plain values: an attribute of a pydantic model goes
        # through its ``__getattr__`` hook, several times dearer. ``bounds`` are decide()'s:
        # exclamations per step of anger, reopen count, VIP level and order value that count.
        self._per_anger = ctx.exclamations_per_anger
        self.bounds = (
            ctx.exclamations_per_anger,
            ctx.reopen_important,
            ctx.vip_level_raises,
            ctx.order_amount_raises,
        )
        self._rank = {c: i for i, c in enumerate(rules.tie_order)}
        # What scoring reads of each signal found, as plain values (a pydantic model's
        # attribute costs about 0.1 us, through its ``__getattr__`` hook: eight of them per
        # signal found, on every message with one).
        self._signal_facts: dict[str, _SignalFacts] = {
            name: (
                s,
                s.threat,
                s.negation,
                frozenset(s.order_status),
                frozenset(s.unless),
                s.anger,
                s.category if s.weight else None,
                s.weight,
            )
            for name, s in rules.signals.items()
        }
        self._order_excludes = tuple(ctx.order_number_excludes)
        self._order_default = ctx.order_number_default
        self._categories = {c.value: c for c in Category}
        # Only these order statuses change a classification (signals gated on a status).
        self._statuses = {st for s in rules.signals.values() for st in s.order_status}
        self._cache: dict[tuple[str, bool, str], Classification] = {}
        self._cache_max = 50_000
        so = rules.second_opinion
        self._scorer: Scorer | None = None
        self._scorer_en: WordScorer | None = None
        if so.enabled:
            try:
                self._scorer = Scorer(ThreatModel.load(MODEL_FILE, so.threshold))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise RulesError(
                    f"{MODEL_FILE}:0: second_opinion is enabled but its model cannot be read: {exc}"
                ) from None
            if so.english:
                try:
                    model_en = ThreatModel.load(MODEL_FILE_EN, so.english_threshold)
                    self._scorer_en = WordScorer(model_en)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    raise RulesError(
                        f"{MODEL_FILE_EN}:0: second_opinion.english is enabled but its model "
                        f"cannot be read: {exc}"
                    ) from None
        # ``decide``'s decisions per classification outcome and context (not per text).
        self.decisions: dict[tuple[object, ...], Any] = {}

    def set_cache_size(self, size: int) -> None:
        """Bound the cache of analyses per text (0 turns it off, to measure cold decisions)."""
        self._cache_max = size
        self._cache.clear()

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
        # Half-pinyin words and pinyin typed syllable by syllable need a Latin letter: a
        # text without one (most Chinese messages) skips both looks.
        latin = _LATIN.search(stripped) is not None
        if (
            latin
            and self._mixed_re is not None
            and not stripped.isascii()
            and _TOUCH.search(stripped)
        ):
            mixed = self._mixed
            stripped = self._mixed_re.sub(lambda m: mixed[m.group(0)], stripped)
        toks = self.tokenizer.tokens_of(stripped, has_order, latin)
        words = toks.words
        if (
            (latin or not self._spaced_latin)
            and self._spaced_heads
            and len(words) > 1
            and toks.language != "en"
            and not self._spaced_firsts.isdisjoint(words)
            and not self._spaced_heads.isdisjoint(itertools.pairwise(words))
        ):
            toks = toks._replace(words=self._join_syllables(words))
        result = self._classify(toks, status, stripped)
        if self._cache_max:
            if len(self._cache) >= self._cache_max:
                self._cache.clear()
            self._cache[key] = result
        return result

    def _join_syllables(self, words: tuple[str, ...]) -> tuple[str, ...]:
        """Pinyin typed syllable by syllable (bao jing: two words of the cut) as the word."""
        out: list[str] = []
        i, n = 0, len(words)
        while i < n:
            for k in (3, 2):
                han = self._spaced.get(words[i : i + k]) if i + k <= n else None
                if han is not None:
                    out.append(han)
                    i += k
                    break
            else:
                out.append(words[i])
                i += 1
        return tuple(out)

    # ------------------------------------------------------------------ negation

    def _denier(self, words: tuple[str, ...], i: int) -> str:
        """The word before the word at ``i``, past up to ``negation.reach`` filler words
        (``skip``): where a denial of it would stand (没有|要|差评, not|going|to|sue)."""
        j = i - 1
        skip = self._neg_skip
        for _ in range(self._reach):
            if j < 0 or words[j] not in skip:
                break
            j -= 1
        return words[j] if j >= 0 else ""

    def _add_group(self, group: list[str], target: Target, keep_denied: bool) -> None:
        """A ``together`` group: its families, and those named ``not x`` that must be absent
        (a PayPal dispute with another shop is no chargeback threat)."""
        absent = frozenset(f.removeprefix(NOT_FAMILY) for f in group if f.startswith(NOT_FAMILY))
        needed = tuple(f for f in group if not f.startswith(NOT_FAMILY))
        self._together.setdefault(needed[0], []).append(
            (frozenset(needed), (needed, target, keep_denied, absent))
        )

    def _denied(self, words: tuple[str, ...], i: int, intent_only: bool) -> int:
        """Whether the word at ``i`` follows a denial: 0 no, 1 yes, FIRM by a ``firm`` one
        (which denies threats and safety reports only, and only in English words)."""
        if i == 0:
            return 0
        w = words[i - 1]
        if w in self._neg_skip:  # filler words between: walk back over them
            w = self._denier(words, i)
        if intent_only:
            return w in self._neg_intent
        if w in self._firm:  # English: it denies English words only (none 有电 is not denied)
            return FIRM if words[i].isascii() else 0
        return 1 if w in self._neg else 0

    def _family_words(
        self, words: tuple[str, ...], hits: frozenset[str], present: dict[str, str]
    ) -> None:
        """Family words that are whole words of the message (``hits``: English, pinyin
        abbreviations): each counts unless a ``firm`` denial stands before it (no need for
        lawyers) or a ``things`` word after it (smoke alarm, police officer)."""
        firm, skip, things = self._firm, self._neg_skip, self._things
        # A denial can only be a firm word of the message, and a thing word after a family
        # word one of its words: told in C for the whole message (most have neither).
        denials = not firm.isdisjoint(words)
        last = len(words) - 1 if not things.isdisjoint(words) else 0
        # Only the words that are family words, told in C (most words of a message are not).
        for i in compress(range(len(words)), map(hits.__contains__, words)):
            w = words[i]
            if denials and i:  # a firm denial before it, maybe past filler words
                before = words[i - 1]
                if before in skip:
                    before = self._denier(words, i)
                if before in firm:
                    continue
            if i < last:  # a thing word after it: smoke alarm, fire-safe
                after = words[i + 1]
                if after in things or (after == "-" and self._thing_after(words, i + 1)):
                    continue
            for fname in self._fam_word[w]:
                present.setdefault(fname, w)

    def _thing_after(self, words: tuple[str, ...], i: int) -> bool:
        """Whether the word at ``i`` (past a hyphen: fire-safe) is one of ``negation.things``."""
        if i < len(words) and words[i] == "-":
            i += 1
        return i < len(words) and words[i] in self._things

    def _denied_in(
        self, words: tuple[str, ...], i: int, off: int, intent_only: bool, width: int = 1
    ) -> int:
        """The same for a match ``off`` characters into word ``i`` (没有|电: the word's head
        ends with a denial; 会不会|爆炸: a match inside a denied word is denied with it)."""
        if off == 0:
            return self._denied(words, i, intent_only)
        if intent_only:
            return False
        return words[i][:off].endswith(self._neg_tails) or (
            width == 1 and self._denied(words, i, False)
        )

    def _names_a_thing(self, words: tuple[str, ...], i: int, end: int) -> bool:
        """Whether what follows a signal word ending ``end`` characters into word ``i`` (the
        rest of that word, or the next word when it ends there) is one of ``negation.things``:
        报警器, 律师|事务所, 直播间 name a thing or a place, not the act."""
        if not self._things:
            return False
        n = len(words)
        while i < n and end >= len(words[i]):
            end -= len(words[i])
            i += 1
        if i >= n:
            return False
        return words[i][end:] in self._things

    def _slip_ok(self, seg: str, term: str, off: int, single: set[int], loose: bool) -> bool:
        """Whether ``seg`` (the text at ``off``) is a homophone typo of ``term``: no number in
        it, and each slipped character a word of its own in the cut (差|凭), or, ``loose``,
        the typed form is not a dictionary word (小红薯 is no word: 小红书; 律诗 is one)."""
        if len(seg) < 2 or _NUMERAL & set(seg):
            return False
        if all(a == b or off + k in single for k, (a, b) in enumerate(zip(seg, term, strict=True))):
            return True
        return loose and not self.tokenizer.is_word(seg)

    def _info(self, word: str) -> _WordInfo | None:
        """Per distinct word: the matches inside it, and whether a match may begin in it and
        go on into the next word (one of its endings begins a family or rule word); None for
        a word with neither (most words: skipped in C, see ``_classify``)."""
        if word.isascii():
            return None
        canon = word.translate(self._canon) if self._canon else word
        opens = any(canon[k:] in self._heads for k in range(len(canon)))
        parts = self._spans((word,))
        return (parts, opens) if parts or opens else None

    def _spans(self, window: tuple[str, ...]) -> tuple[_Part, ...]:
        """Family words and fallback matches that begin in the first word of ``window`` and
        end in its last (one word: inside it). Kept per window: words and pairs of words
        repeat across messages even when texts do not."""
        text = "".join(window)
        canon = text.translate(self._canon) if self._canon else text
        first = len(window[0])
        lo = len(text) - len(window[-1]) + 1 if len(window) > 1 else 1  # shortest end
        single = set()  # character positions that are a word of their own (typos only there)
        ends = set()  # where words end
        at = 0
        for w in window:
            if len(w) == 1:
                single.add(at)
            at += len(w)
            ends.add(at)
        parts: list[_Part] = []
        for off in range(first):
            for fw, cfw, fname in self._fam_han.get(canon[off], ()):
                end = off + len(fw)
                if (
                    lo <= end <= len(text)
                    and canon.startswith(cfw, off)
                    and (len(fw) == 1 or end in ends)  # 想吐 is not in 想|吐槽
                    and (
                        text.startswith(fw, off)
                        or self._slip_ok(text[off:end], fw, off, single, len(fw) >= 3)
                    )
                ):
                    parts.append((off, len(window), fname, fw, None))
            if off + 1 >= len(text):
                continue
            for term, cterm, target in self._ngram.get(canon[off], {}).get(canon[off + 1], ()):
                end = off + len(term)
                if not lo <= end <= len(text) or not canon.startswith(cterm, off):
                    continue
                seg = text[off:end]
                if seg != term and not self._slip_ok(
                    seg, term, off, single, target[0] == "s" and target[1] in self._threats
                ):
                    continue  # a typo only where the cut left a character alone (差|凭)
                parts.append((off, len(window), term, term, target))
        out = tuple(parts)
        if len(self._span_cache) >= 200_000:
            self._span_cache.clear()
        self._span_cache[window] = out
        return out

    # ------------------------------------------------------------------ classification

    def _classify(self, toks: Tokens, status: str, stripped: str) -> Classification:
        # the fields of the named tuple at once (each attribute of one is a descriptor call)
        words, exclamations, has_order_number, language = toks
        found: list[tuple[Hit, int]] = []  # (hit, denied: 0, 1 or FIRM)
        seen_terms: set[str] = set()
        covered: set[int] = set()  # words that matched a rule word whole
        deniable = self._deniable
        for i, n, h in self._matcher.scan(words):
            seen_terms.add(h.term)
            if n == 1:
                covered.add(i)
            else:
                covered.update(range(i, i + n))
            if (
                h.kind == "s"
                and i + n < len(words)
                and (
                    words[i + n] in self._things
                    or (words[i + n] == "-" and self._thing_after(words, i + n))
                )
            ):
                continue  # 律师|事务所 names a firm, not a lawyer threatened with
            if i and words[i - 1] in deniable:
                found.append((h, self._denied(words, i, h.kind == "c")))
            else:
                found.append((h, 0))
        present: dict[str, str] = {}  # family -> the word found (not denied)
        denied_too: dict[str, str] = {}  # family -> a word found denied
        # Family words and the fallback, per word and per pair (or triple, around a word of
        # one character) of words, each kept: no loop over characters per message.
        spans = self._span_cache
        todo: list[tuple[int, tuple[_Part, ...]]] = []
        n = len(words) if language != "en" else 0  # English has no Chinese words
        # Each word's kept matches and ends looked up in C; the loop runs only over the words
        # that have either (None for the others).
        infos = list(map(self._word_info.__getitem__, words)) if n else []
        # each such word with its index and the word after it ("" after the last: ASCII)
        nexts = itertools.chain(itertools.islice(words, 1, None), ("",))
        for i, w, nxt, wi in compress(zip(itertools.count(), words, nexts, infos), infos):
            if wi is None:  # not taken by compress: for the type checker
                continue
            parts, opens = wi
            if parts:
                todo.append((i, parts))
            if opens and not nxt.isascii():
                pair = spans.get((w, nxt))
                if pair is None:
                    pair = self._spans((w, nxt))
                if pair:
                    todo.append((i, pair))
                if len(nxt) == 1 and i + 2 < n and not words[i + 2].isascii():
                    triple = (w, nxt, words[i + 2])
                    three = spans.get(triple)
                    if three is None:
                        three = self._spans(triple)
                    if three:
                        todo.append((i, three))
        for i, parts in todo:
            for off, width, name, word, target in parts:
                if target is None:  # a family word
                    if name not in present:
                        # not denied when it begins a word after no denial or filler word
                        # (told without a call, as in the rule scan above)
                        if (off == 0 and not (i and words[i - 1] in deniable)) or not (
                            self._denied_in(words, i, off, False, width)
                        ):
                            present[name] = word
                        else:
                            denied_too.setdefault(name, word)
                    continue
                if name in seen_terms or (
                    i in covered if width == 1 else all(k in covered for k in range(i, i + width))
                ):
                    continue  # found whole already, or inside words that matched whole
                kind, sname, weight = target
                if kind == "s" and self._names_a_thing(words, i, off + len(name)):
                    continue  # 报警器, 直播间: a thing, not the act
                seen_terms.add(name)
                denied = self._denied_in(words, i, off, kind == "c")
                found.append((Hit(kind, sname, weight, name), denied))
        # Whole-word family words (English, abbreviations): told in C without building a set
        # for the many messages that have none.
        if not self._fam_words.isdisjoint(words):
            self._family_words(words, self._fam_words.intersection(words), present)
        if len(present) + len(denied_too) > 1:
            either = {**denied_too, **present} if denied_too else present
            together = self._together
            # Only the families that begin a group, told in C (most families present begin
            # none: a guard, a question word, a second member), in the same order.
            for first in filter(together.__contains__, either):
                # Most groups checked lack a family: told by the families found at all (denied
                # or not), before the rest is unpacked. (``first`` is one of ``gset``.)
                for gset, rest in together[first]:
                    if either.keys() >= gset:
                        group, (kind, name, weight), keep_denied, absent = rest
                        seen = either if keep_denied else present
                        if seen.keys() >= gset and present.keys().isdisjoint(absent):
                            term = "+".join(seen[f] for f in group)
                            found.append((Hit(kind, name, weight, term), False))
        for pattern, name in self._patterns:
            m = pattern.search(stripped)
            if m is not None:
                found.append((Hit("s", name, 0.0, m.group(0)), False))

        scores: dict[Category, float] = {}
        cat_terms: dict[Category, list[str]] = {}
        signals: list[RiskHit] = []
        seen_signals: set[str] = set()
        threat = False  # whether a signal found is a threat or safety report
        anger = exclamations // self._per_anger
        anger_f = float(anger)
        categories = self._categories
        facts = self._signal_facts
        for h, denied in found:
            if h.kind == "c":
                if denied:
                    continue
                cat = categories[h.name]
                scores[cat] = scores.get(cat, 0.0) + h.weight
                cat_terms.setdefault(cat, []).append(h.term.rstrip("*"))
                continue
            if h.name in seen_signals:
                continue
            srule, s_threat, negation, statuses, unless, s_anger, s_cat, weight = facts[h.name]
            if denied and (s_threat if denied == FIRM else negation):
                continue
            if statuses and status not in statuses:
                continue
            if unless and not present.keys().isdisjoint(unless):
                continue  # a look-up with a problem reported or a person asked to act: none
            seen_signals.add(h.name)
            signals.append(RiskHit(h.name, srule, h.term.rstrip("*")))
            threat = threat or s_threat
            anger_f += s_anger
            if s_cat is not None:  # (a category with a weight)
                scores[s_cat] = scores.get(s_cat, 0.0) + weight
                cat_terms.setdefault(s_cat, []).append(h.term.rstrip("*"))
        if has_order_number:
            for cat in self._order_excludes:
                scores.pop(cat, None)
            default = self._order_default
            if default is not None and not any(v for c, v in scores.items() if c is not _OTHER):
                scores[default] = scores.get(default, 0.0) + 1.0
                cat_terms.setdefault(default, []).append("an order number")
        if (
            not scores
            and self._question is not None
            and "question" in present
            and all(h.rule.lookup for h in signals)  # none, or look-ups only
        ):
            scores[self._question] = 1.0
            cat_terms[self._question] = [f"a question (“{present['question']}”)"]
        if len(scores) == 1:
            [category] = scores
        elif scores:  # the highest score, a tie to the first in ``tie_order``
            best = max(scores.values())
            top = [c for c, v in scores.items() if v == best]
            category = top[0] if len(top) == 1 else min(top, key=self._rank.__getitem__)
        else:
            category = _OTHER
        terms = cat_terms.get(category, ())
        opinion = None
        if not threat:
            if language != "en":
                if self._scorer is not None:
                    opinion = self._scorer.read(words)
            elif self._scorer_en is not None:  # English: its own model
                opinion = self._scorer_en.read(words)
        return Classification(
            category,
            # each term once, in order (a dictionary only where there are two or more)
            tuple(dict.fromkeys(terms) if len(terms) > 1 else terms),
            scores,
            tuple(signals),
            anger_f,
            exclamations,
            toks,
            opinion,
        )
