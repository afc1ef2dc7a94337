"""Text normalisation and tokenisation for routing (Chinese with rjieba, English by words).

Chinese is cut by rjieba (the Rust port of jieba, same dictionary and algorithm, several
times faster). One ``rjieba.Jieba`` per classifier, initialised once with jieba's own
dictionary, the domain user dictionary beside this file (``userdict.txt``) and every term
of the loaded rules, so that a domain word such as 退款 or 12315 comes out as one token.
Order numbers (long digit runs, with or without a short letter prefix) and phone-like
numbers are removed before tokenising and reported as a flag: they carry no meaning for
routing and would only blow up the classifier's cache.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from itertools import filterfalse
from pathlib import Path
from typing import NamedTuple, TypeVar

import opencc
import rjieba

USER_DICT = Path(__file__).with_name("userdict.txt")

_ORDER_NO = re.compile(r"(?<![a-z0-9])(?:[a-z]{1,3}[-#]?)?#?\d{6,}(?![0-9])")
# What every order number has (its own pattern, with a look-behind first, is dearer to run
# over a text without one: about 3 us against 1 us for this). Written with one digit first
# so that the search skips to a digit (a leading character class) instead of trying the
# repeat at every character: 0.2 us against 0.5 us on a message without one.
_SIX_DIGITS = re.compile(r"\d\d{5}")
_HAN = re.compile(r"[\u3400-\u9fff]")
_LATIN = re.compile(r"[a-z]")
_FOUR_LATIN = re.compile(r"[a-z](?:[^a-z]*[a-z]){3}")
# Tokens of pure-ASCII text: words (with digits) or single non-space symbols.
_ASCII_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
# Numbers written other ways (docs/routing-rules.md, "numbers"): a run of three or more
# Chinese digits as a phone number is read aloud (幺二三幺五, 一二三一五, 幺幺零) and short
# digit groups spaced out (12 3 15, 1 1 0) are read as the number they spell, so that the
# rules' 12315 or 110 is found however it was typed.
_CN_DIGIT = str.maketrans("零〇幺一二三四五六七八九", "001123456789")
_NUMBER_FORMS = re.compile(r"[零〇幺一二三四五六七八九]{3,}|(?<!\d)\d{1,3}(?: \d{1,3})+(?!\d)")
# Where one may be (three or more digits, Chinese digits or spaces in a row): a cheap first
# look (a leading character class), the exact forms only inside what it finds.
_NUMBER_SPAN = re.compile(r"[0-9零〇幺一二三四五六七八九][0-9零〇幺一二三四五六七八九 ]{2,}")
# Whether a text has either (a number span or six digits), in one search: the first
# character from the union of their first characters (a leading character class), then
# the one whose first character it is. Most messages have neither: one search instead of two.
_NUMBERS_OR_SIX = re.compile(
    r"[0-9零〇幺一二三四五六七八九\d]"
    r"(?:(?<=[0-9零〇幺一二三四五六七八九])[0-9零〇幺一二三四五六七八九 ]{2,}|(?<=\d)\d{5})"
)


def _number(m: re.Match[str]) -> str:
    s = m.group(0)
    if s[0].isdigit():
        joined = s.replace(" ", "")
        return joined if len(joined) <= 5 else s  # not a phone number cut in groups
    return s.translate(_CN_DIGIT)


def _numbers(m: re.Match[str]) -> str:
    return _NUMBER_FORMS.sub(_number, m.group(0))


def _traditional_to_simplified() -> dict[int, str]:
    """OpenCC's traditional-to-simplified conversion (t2s), one character at a time:
    customers in Hong Kong and Taiwan, or with a traditional input method, write 投訴 /
    消委會 / 爆炸了嗎, and the rules and the cutter's dictionary are simplified. Built once
    (about 20 ms); a message without a traditional character costs one regex search (about
    1 us), where OpenCC's phrase-level convert() costs 3.5 us. No character of the studied
    sets or the rules changes; one at a time, the few characters that are simplified in
    some words only take their common form (乾隆 -> 干隆), which no rule depends on."""
    chars = [chr(c) for c in range(0x3400, 0xA000)]  # CJK extension A and the unified block
    converted = opencc.OpenCC("t2s").convert("\n".join(chars)).split("\n")
    if len(converted) != len(chars):
        raise RuntimeError("OpenCC t2s did not convert one character per line")
    return {ord(a): b for a, b in zip(chars, converted, strict=True) if a != b}


_T2S = _traditional_to_simplified()


# Latin letters with diacritics read as their base letters (médiateur, mediateur; Şikayetvar,
# sikayetvar; whānau, whanau), so that an accent neither cuts a word apart nor keeps it from
# a rule word: what NFD decomposes into an ASCII letter and combining marks, in the Latin
# blocks only (Cyrillic й, Greek ά and every Han, kana or hangul character are left alone),
# and the letters with a stroke NFD keeps whole (ø, ł, đ, ħ, ŧ) and the dotless ı. A
# combining mark NFKC could not compose is dropped after an ASCII letter (i̇, from İ lowered)
# and kept anywhere else. Ligatures and other letters (æ, œ, ß, ð, þ) are not folded.
_LATIN_BLOCKS = ((0x00C0, 0x0250), (0x1E00, 0x1F00), (0x2C60, 0x2C80), (0xA720, 0xA800))
_STROKED = {"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ħ": "h", "Ħ": "H"}
_STROKED |= {"ŧ": "t", "Ŧ": "T", "ı": "i"}
_MARKS = "\u0300-\u036f"  # combining diacritical marks


def _latin_bases() -> dict[str, str]:
    bases = dict(_STROKED)
    for lo, hi in _LATIN_BLOCKS:
        for c in range(lo, hi):
            ch = chr(c)
            d = unicodedata.normalize("NFD", ch)
            base, marks = d[0], d[1:]
            latin = base.isascii() and base.isalpha()
            if marks and latin and all(map(unicodedata.combining, marks)):
                bases[ch] = base
    return bases


_LATIN_BASE = _latin_bases()
_LATIN_MARKED_CHARS = re.escape("".join(_LATIN_BASE))
_LATIN_MARKED = re.compile(f"[{_LATIN_MARKED_CHARS}{_MARKS}][{_MARKS}]*")
# What normalise() changes after lower-casing, in one search (a leading character class, as
# cheap as the traditional characters' alone): a traditional character, a Latin letter with a
# diacritic or a combining mark, each followed by any combining marks.
_SIMPLIFIED_OR_FOLDED = re.compile(
    "[" + re.escape("".join(chr(c) for c in _T2S)) + f"{_LATIN_MARKED_CHARS}{_MARKS}][{_MARKS}]*"
)


def _unmarked(m: re.Match[str]) -> str:
    """A Latin letter's base (its marks dropped); marks alone dropped after an ASCII letter."""
    s = m.group(0)
    base = _LATIN_BASE.get(s[0])
    if base is not None:
        return base
    simple = _T2S.get(ord(s[0]))
    if simple is not None:
        return simple + s[1:]
    i = m.start()
    before = m.string[i - 1] if i else ""
    return "" if before.isascii() and before.isalpha() else s


def fold_latin(text: str) -> str:
    """``text`` with its Latin letters' diacritics dropped (médiateur -> mediateur, Pérez ->
    Perez), case kept, nothing else changed: what the classifier does to every message (in
    ``Tokenizer.normalise``) and to every word of the rules file (``rules.py``), so that a
    rule word written either way matches a message written either way."""
    if text.isascii():
        return text
    return _LATIN_MARKED.sub(_unmarked, text)


# NFKC without unicodedata.normalize for the usual message (ASCII, Chinese, CJK and general
# punctuation, full-width forms): normalize() costs about 5 us on a Chinese message with a
# full-width comma (what a Chinese input method types), this about 1.5 us (a text already
# normalised is told by unicodedata's quick check, about 0.1 us). Exact for these
# characters: each is normalised alone, and what they become has no combining mark
# (canonical class 0) and no character that composes with the one before it
# (tests/unit/test_router_classify_general.py checks that against every canonical
# composition), so normalising the text is normalising each character. A text with any
# other character goes through normalize().
_NFKC_RANGES = (
    (0x00, 0x80),
    (0x2010, 0x2028),
    (0x2030, 0x205F),
    (0x3000, 0x3040),
    (0x3400, 0x4DC0),
    (0x4E00, 0xA000),
    (0xFF01, 0xFF5F),
)


def _nfkc_by_character() -> tuple[dict[str, str], re.Pattern[str], re.Pattern[str]]:
    """What each character becomes, the texts of those characters only, those that change."""
    table: dict[str, str] = {}
    runs: list[list[int]] = []  # [first, last] code points kept, in order
    for lo, hi in _NFKC_RANGES:
        for c in range(lo, hi):
            ch = chr(c)
            out = unicodedata.normalize("NFKC", ch)
            if unicodedata.combining(ch) or any(unicodedata.combining(x) for x in out):
                continue  # a combining mark, or one in what it becomes: normalize() decides
            if runs and runs[-1][1] == c - 1:
                runs[-1][1] = c
            else:
                runs.append([c, c])
            if out != ch:
                table[ch] = out
    kept = "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in runs)
    changed = re.compile("[" + re.escape("".join(table)) + "]")
    return table, re.compile(f"[{kept}]*"), changed


_NFKC_TABLE, _NFKC_BY_CHARACTER, _NFKC_CHANGED = _nfkc_by_character()


def _nfkc_character(m: re.Match[str]) -> str:
    return _NFKC_TABLE[m.group(0)]


_V = TypeVar("_V")
PER_WORD_MAX = 200_000


class PerWord(dict[str, _V]):
    """What the classifier keeps per distinct word of the cut (words repeat across messages
    even when texts do not): filled on first use by ``make``, cleared when it reaches
    ``PER_WORD_MAX`` words. Looked up with ``table[word]``, so that a message's words can be
    looked up in C (``map(table.__getitem__, words)``) instead of a loop over them."""

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[str], _V]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, word: str) -> _V:
        value = self._make(word)
        if len(self) >= PER_WORD_MAX:
            self.clear()
        self[word] = value
        return value


class Tokens(NamedTuple):
    """The words of one message, after normalisation, and simple surface features.

    A named tuple, not a frozen dataclass: as immutable (the classifier's cache shares it),
    and built about four times cheaper (a frozen dataclass sets each field through
    ``object.__setattr__``), once per new text."""

    words: tuple[str, ...]
    exclamations: int
    has_order_number: bool
    language: str
    """zh (any Han character and fewer than 4 Latin letters, or neither), en (Latin
    letters, no Han), mixed (Han and at least 4 Latin letters)."""


def language_of(stripped: str) -> str:
    """The language label of a normalised text (searches, no counting)."""
    if stripped.isascii():
        return "en" if _LATIN.search(stripped) else "zh"
    if _HAN.search(stripped):
        return "mixed" if _FOUR_LATIN.search(stripped) else "zh"
    return "en" if _LATIN.search(stripped) else "zh"


class Tokenizer:
    """rjieba for Chinese (and mixed) text, a regex for pure ASCII text.

    No cache of its own: the classifier keeps its analysis per prepared text (order numbers
    already removed), cut included, so the many repeated openers and templated questions of
    a chat channel are cut once; a second cache keyed by nearly the same text only cost a
    look-up, a lock and an insertion on every new text.
    """

    def __init__(self, extra_words: Iterable[str] = ()) -> None:
        self._jieba = rjieba.Jieba()
        if USER_DICT.exists():
            for line in USER_DICT.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if not parts or parts[0].startswith("#"):
                    continue
                freq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
                tag = parts[2] if len(parts) > 2 else None
                self._jieba.add_word(parts[0], freq, tag)
        # In sorted order: jieba suggests each added word's frequency from the dictionary as it
        # stands, so the order of adding changes later cuts; the rules' words come from sets,
        # whose order changes with PYTHONHASHSEED (收到的花瓶碎了 was cut 碎|了 in one process and
        # 碎了 in the next). Sorted, every process (and both routers) cuts alike.
        for word in sorted(set(extra_words)):
            if _HAN.search(word) or not word.isascii():
                self._jieba.add_word(word, None, None)  # jieba's add_word: suggested freq

    def is_word(self, word: str) -> bool:
        """Whether the cutter's dictionary knows the word (jieba's, the domain's, the rules')."""
        return bool(self._jieba.has_word(word))

    @staticmethod
    def normalise(text: str) -> str:
        """Full-width to half-width (NFKC), lower case, traditional characters to
        simplified (投訴 -> 投诉), collapsed whitespace."""
        if unicodedata.is_normalized("NFKC", text):  # a quick check, no copy
            text = text.lower()
        elif _NFKC_BY_CHARACTER.fullmatch(text):
            text = _NFKC_CHANGED.sub(_nfkc_character, text).lower()
        else:
            text = unicodedata.normalize("NFKC", text).lower()
        # Traditional characters to simplified and Latin letters' diacritics dropped (see
        # fold_latin), in one search: about 0.5 us on a simplified Chinese message; an ASCII
        # text (where the search costs about 1 us) has neither
        if not text.isascii() and _SIMPLIFIED_OR_FOLDED.search(text):
            text = _SIMPLIFIED_OR_FOLDED.sub(_unmarked, text)
        # Whitespace collapsed (0.6 us), unless there is none to collapse: no whitespace but
        # single spaces (a printable text has no other: tests/unit/test_router_classify_
        # general.py checks every character), none doubled, none at either end (0.2 us).
        if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
            return text
        return " ".join(text.split())

    def words(self, normalised: str) -> tuple[str, ...]:
        """Tokens of an already normalised text, whitespace dropped."""
        if normalised.isascii():
            return tuple(_ASCII_TOKEN.findall(normalised))
        cut = self._jieba.cut(normalised, False)
        # whitespace is a token of the cut: dropped (filtered only when the text has any, and
        # in C: ``filterfalse`` calls ``str.isspace`` on each word)
        return tuple(filterfalse(str.isspace, cut) if " " in normalised else cut)

    def prepare(self, text: str) -> tuple[str, bool]:
        """Normalised text (numbers read as digits) without order numbers, and whether it
        quoted one."""
        norm = self.normalise(text)
        if _NUMBERS_OR_SIX.search(norm) is None:  # neither a number span nor an order number
            return norm.strip(), False
        if _NUMBER_SPAN.search(norm):
            norm = _NUMBER_SPAN.sub(_numbers, norm)
        elif not _SIX_DIGITS.search(norm):  # no order number: a cheaper search than its own
            return norm.strip(), False
        stripped, n_orders = _ORDER_NO.subn(" ", norm)
        return stripped.strip(), n_orders > 0

    def tokens(self, text: str) -> Tokens:
        return self.tokens_of(*self.prepare(text))

    def tokens_of(self, stripped: str, has_order_number: bool, latin: bool = True) -> Tokens:
        """The tokens of a prepared text; ``latin=False`` says it has no Latin letter (the
        caller searched): then its language is zh without searching again."""
        language = language_of(stripped) if latin else "zh"
        return Tokens(self.words(stripped), stripped.count("!"), has_order_number, language)
