"""The classifier's shortcuts for speed (docs/routing-rules.md, "Speed") give the answers of
the long way: each is checked here against the long way itself."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.router.classify import Classifier, load_rules
from services.router.classify import text as text_module
from services.router.classify.engine import _TOUCH
from services.router.classify.rules import Hit
from services.router.classify.second_opinion import Scorer, ThreatModel, model_text
from services.router.classify.text import PerWord, Tokenizer, language_of
from services.router.domain import DEFAULT_RULES_FILE
from services.router.eval.report import load_rows
from services.router.eval.train_threat import STUDIED_FILES

_HAN = re.compile(r"[\u3400-\u9fff]")
_LETTER = re.compile(r"[a-z]")


def test_printable_text_has_no_whitespace_but_spaces() -> None:
    """``normalise`` returns a printable text without doubled or outer spaces as it is:
    no character but the space is both whitespace (what ``split`` cuts at) and printable."""
    odd = [
        hex(c)
        for c in range(sys.maxunicode + 1)
        if chr(c).isspace() and chr(c).isprintable() and c != 0x20
    ]
    assert odd == []


@given(st.text(alphabet="ab 你好\t\u3000\u00a0\u2028x，", max_size=10))
def test_normalise_collapses_whitespace_as_split_and_join(text: str) -> None:
    norm = Tokenizer.normalise(text)
    assert norm == " ".join(norm.split())


def _touches(text: str) -> bool:
    """A Latin letter right next to a Chinese character, the long way."""
    return any(
        (_LETTER.fullmatch(a) and _HAN.fullmatch(b)) or (_HAN.fullmatch(a) and _LETTER.fullmatch(b))
        for a, b in pairwise(text)
    )


@given(st.text(alphabet="ab 你好1，", max_size=10))
def test_the_touch_search_finds_a_letter_next_to_a_chinese_character(text: str) -> None:
    assert (_TOUCH.search(text) is not None) == _touches(text)


_TOKENIZER = Tokenizer()


@given(st.text(alphabet="ab 你好1，!", max_size=12))
def test_a_text_without_latin_letters_is_chinese(text: str) -> None:
    """``classify`` searched for a Latin letter already: without one the language is zh."""
    if _LETTER.search(text) is None:
        tokens = _TOKENIZER.tokens_of(text, False, latin=False)
        assert tokens.language == language_of(text) == "zh"


def test_a_per_word_table_fills_on_first_use_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []

    def make(word: str) -> int:
        made.append(word)
        return len(word)

    monkeypatch.setattr(text_module, "PER_WORD_MAX", 3)
    table = PerWord(make)
    assert list(map(table.__getitem__, ["退款", "a", "退款"])) == [2, 1, 2]
    assert made == ["退款", "a"]  # made once per word
    for w in ["bb", "ccc", "dddd"]:
        table[w]
    assert len(table) <= 3 and table["dddd"] == 4


def _scorers() -> list[Scorer]:
    return [Scorer(ThreatModel.load()), Scorer(ThreatModel.load(threshold=0.01))]


def test_the_upper_bound_is_never_below_the_score_and_tells_most_messages() -> None:
    """The second opinion skips scoring a message whose bound stays below the threshold:
    the bound is never below the exact score, so the answer is the exact one. The second,
    closer bound (``paired``: the pair actually at each boundary) is never below it either,
    and tells some of the messages the first does not."""
    clf = Classifier(load_rules(DEFAULT_RULES_FILE))
    below = paired_below = 0
    rows = load_rows(STUDIED_FILES)
    for scorer in _scorers():
        cut = math.log(scorer.model.threshold / (1 - scorer.model.threshold))
        for row in rows:
            words = clf.classify(row.text).tokens.words
            exact = scorer.logit(model_text(words))
            assert scorer.upper(words) >= exact
            assert scorer.upper(words) + 1e-9 >= scorer.paired(words) >= exact - 1e-9
            assert scorer.read(words) == scorer(model_text(words))
            below += scorer.upper(words) < cut
            paired_below += scorer.upper(words) >= cut > scorer.paired(words)
    assert below > len(rows) // 4  # the bound tells a good part of them
    assert paired_below > 0


@given(st.lists(st.text(alphabet="我要投诉了ab12，报警曝光", max_size=4), max_size=8))
def test_any_words_are_bounded_and_read_as_their_joined_text(words: list[str]) -> None:
    for scorer in _scorers():
        exact = scorer.logit(model_text(words))
        assert scorer.upper(words) >= exact
        assert scorer.upper(words) + 1e-9 >= scorer.paired(words) >= exact - 1e-9
        assert scorer.read(words) == scorer(model_text(words))


_CLF = Classifier(load_rules(DEFAULT_RULES_FILE))
_MATCHER = _CLF._matcher
# Words that begin or go on in the rules' phrases (the, my, place, an, order...), a few of
# their aliases' forms and a word that matches nothing.
_PHRASE_WORDS = sorted(
    {w for entries in _MATCHER._seq.values() for rest, _, _ in entries for w in rest}
    | {w for w, entries in _MATCHER._seq.items() if any(rest for rest, _, _ in entries)}
    | set(list(_CLF._aliases)[:40])
    | {"xyz"}
)


def _scan_long(words: Sequence[str]) -> list[tuple[int, int, Hit]]:
    """``Matcher.scan`` the long way: each match of each word (``_word``, in rule order)
    tried against the words after it, then a category word inside a category phrase
    dropped."""
    alias = _MATCHER._aliases.get
    found = []
    for i, w in enumerate(words):
        for rest, h in _MATCHER._word(w):
            n = 1 + len(rest)
            if i + n <= len(words) and tuple(alias(x, x) for x in words[i + 1 : i + n]) == rest:
                found.append((i, n, h))
    covered = {k for i, n, h in found if n > 1 and h.kind == "c" for k in range(i, i + n)}
    return [(i, n, h) for i, n, h in found if n > 1 or h.kind != "c" or i not in covered]


def test_the_rule_scan_finds_what_the_long_way_finds_in_the_studied_messages() -> None:
    """``Matcher.scan`` picks a word's phrases by the word after it; the long way tries
    them all."""
    phrases = 0
    for row in load_rows(STUDIED_FILES):
        words = _CLF.classify(row.text).tokens.words
        found = _MATCHER.scan(words)
        assert found == _scan_long(words)
        phrases += any(n > 1 for _, n, _ in found)
    assert phrases > 0  # phrases were found, not only single words


@given(st.lists(st.sampled_from(_PHRASE_WORDS), max_size=10))
def test_the_rule_scan_finds_what_the_long_way_finds_in_any_words(words: list[str]) -> None:
    assert _MATCHER.scan(words) == _scan_long(words)


_SYLLABLES = [*sorted({s for head in _CLF._spaced for s in head}), "我", "了", "ok", " "]


@given(st.lists(st.sampled_from(_SYLLABLES), min_size=1, max_size=8))
def test_pinyin_typed_syllable_by_syllable_is_joined_as_the_long_way_joins_it(
    parts: list[str],
) -> None:
    """``classify`` joins the syllables (bao jing) only when a word is a first syllable;
    the long way joins every message that is not English. (Spaces keep the syllables off
    the Chinese characters: no half-pinyin word to rewrite first.)"""
    text = "我 " + " ".join(parts)
    stripped, has_order = _CLF.tokenizer.prepare(text)
    tokens = _CLF.tokenizer.tokens_of(stripped, has_order)
    joined = _CLF._join_syllables(tokens.words) if tokens.language != "en" else tokens.words
    assert _CLF.classify(text).tokens.words == joined


# Family words whole, denials (firm and others), filler words, things and words that match
# nothing: what ``_family_words`` and the denial look reach.
_FAMILY_WORDS = sorted(
    set(list(_CLF._fam_words)[:30])
    | set(list(_CLF._firm)[:5])
    | set(list(_CLF._neg)[:8])
    | set(list(_CLF._neg_skip)[:5])
    | set(list(_CLF._things)[:5])
    | {"-", "xyz", "退款"}
)


def _family_words_long(words: Sequence[str]) -> dict[str, str]:
    """``_family_words`` the long way: every word of the message tried in turn."""
    present: dict[str, str] = {}
    for i, w in enumerate(words):
        if w not in _CLF._fam_words:
            continue
        before = _CLF._denier(tuple(words), i) if i else ""
        if _CLF._firm and i and before in _CLF._firm:
            continue
        if i < len(words) - 1 and (
            words[i + 1] in _CLF._things
            or (words[i + 1] == "-" and _CLF._thing_after(tuple(words), i + 1))
        ):
            continue
        for fname in _CLF._fam_word[w]:
            present.setdefault(fname, w)
    return present


@given(st.lists(st.sampled_from(_FAMILY_WORDS), max_size=10))
def test_whole_family_words_are_found_as_the_long_way_finds_them(words: list[str]) -> None:
    """``_family_words`` visits only the family words (picked in C), and ``_classify``
    calls it only when there is one (told in C); the long way tries every word."""
    present: dict[str, str] = {}
    _CLF._family_words(tuple(words), _CLF._fam_words.intersection(words), present)
    assert present == _family_words_long(words)


@given(st.lists(st.sampled_from(_FAMILY_WORDS), min_size=1, max_size=8), st.data())
def test_a_word_after_no_denial_or_filler_word_is_not_denied(
    words: list[str], data: st.DataObject
) -> None:
    """``_classify`` tells a match at the start of a word not denied without calling
    ``_denied_in`` when the word before is no denial and no filler word (or there is none)."""
    i = data.draw(st.integers(0, len(words) - 1))
    if not (i and words[i - 1] in _CLF._deniable):
        for intent_only in (False, True):
            assert not _CLF._denied_in(tuple(words), i, 0, intent_only)
            assert not _CLF._denied(tuple(words), i, intent_only)


def test_the_category_is_the_highest_score_a_tie_to_the_first_in_tie_order() -> None:
    """``_classify`` picks the category without a key function per category: the same as
    the highest score, a tie to the first in ``tie_order``."""
    rank = _CLF._rank
    ties = 0
    for row in load_rows(STUDIED_FILES):
        c = _CLF.classify(row.text)
        if c.scores:
            assert c.category == min(c.scores, key=lambda k: (-c.scores[k], rank[k]))
            ties += len(c.scores) > 1 and len(set(c.scores.values())) < len(c.scores)
    assert ties > 0  # ties were met, not only single categories


def _prepare_long(text: str) -> tuple[str, bool]:
    """``Tokenizer.prepare`` the long way: the number-span search, then the six-digit one."""
    norm = Tokenizer.normalise(text)
    if text_module._NUMBER_SPAN.search(norm):
        norm = text_module._NUMBER_SPAN.sub(text_module._numbers, norm)
    elif not text_module._SIX_DIGITS.search(norm):
        return norm.strip(), False
    stripped, n_orders = text_module._ORDER_NO.subn(" ", norm)
    return stripped.strip(), n_orders > 0


@given(st.text(alphabet="0123456789 一二幺零〇\u0663\u0664x你#", max_size=14))
@example("订单\u0663\u0664\u0663\u0664\u0663\u0664")  # six digits of another script
@example("幺二三幺五 12 3 15")
def test_one_search_tells_a_number_span_or_six_digits(text: str) -> None:
    """``prepare`` looks for a number span or six digits (also other scripts' digits) in one
    search, and for each only when it finds either."""
    either = text_module._NUMBER_SPAN.search(text) or text_module._SIX_DIGITS.search(text)
    assert (text_module._NUMBERS_OR_SIX.search(text) is not None) == (either is not None)
    assert _TOKENIZER.prepare(text) == _prepare_long(text)
