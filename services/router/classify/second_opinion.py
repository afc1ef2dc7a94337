"""A second opinion on threats and safety reports: a small trained model that can only raise.

The rules find threats and safety reports by their words, families and patterns; customers
who never read the rules name outside parties and harm in words no list holds. This is a
logistic regression over the characters and character pairs of the classifier's
normalised text (full-width to half-width, lower case, traditional to simplified, order
numbers removed, pinyin read as the word; the cut's words joined, Latin letters and digits
dropped), trained on the studied evaluation sets by ``services/router/eval/train_threat.py``
(``make train-router``) and exported to ``threat_model.json`` beside this file: n-gram ->
weight, a bias and a threshold. Scoring it is plain Python: the n-grams (kept per word of
the cut), one dictionary look-up each, a sum; most messages are told below the threshold
before that, by the most each of their words could add (kept per word too, one look-up
each). scikit-learn is needed only to train.

English messages have a model of their own (``threat_model_en.json``, ``WordScorer``): the
character n-grams of each English word of the cut (the range and the stop words it does not
read are the model file's), marked at both ends (``word_grams``), kept per distinct word with
the most the word can add, scored the same way; its reason names the words that weigh most.

When the score passes the threshold and the rules found no threat, ``decide`` makes the
message urgent and second line with the reason in plain words (docs/routing-rules.md,
"Second opinion"); it never lowers anything.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path

from services.router.classify.text import PerWord

MODEL_FILE = Path(__file__).with_name("threat_model.json")
# The English second opinion: character n-grams of each English word (see ``word_grams``).
MODEL_FILE_EN = Path(__file__).with_name("threat_model_en.json")
EVIDENCE_MAX = 3
# Latin letters and digits are not read (see model_text).
_NOT_READ = re.compile(r"[a-z0-9]+")
_HAS_NOT_READ = re.compile(r"[a-z0-9]")
_join = operator.add
# An English word the English model reads: letters only (digits, punctuation, emoji and
# Chinese are not read).
_EN_WORD = re.compile(r"[a-z]+")


def model_text(words: Sequence[str]) -> str:
    """The text the model reads: the classifier's words joined without spaces (so that the
    n-grams do not depend on where the cutter cut), Latin letters and digits dropped. Only
    Chinese and mixed messages are read, and of those not the English: the Chinese studied
    sets hold too little English to go by (pinyin and abbreviations such as tousu, dy or
    chargeback are the rules' words; English messages have their own model,
    ``WordScorer``). Digits are the
    rules' too (12315, 110, 12345, also written 幺二三幺五): read by the model, the pairs of
    12315 made a phone number in groups (我的电话 138 1234 5678) a threat."""
    text = "".join(words)
    return _NOT_READ.sub("", text) if _HAS_NOT_READ.search(text) else text


def ngrams(text: str, lo: int = 1, hi: int = 2) -> Iterator[str]:
    """Every character n-gram of ``text``, ``lo`` to ``hi`` characters (the model counts
    each distinct one once: ``set`` of this; the same function for training and scoring).
    Characters and pairs (the shipped model's range) are built with C-level loops (``map``),
    faster than a comprehension over slices."""
    if lo == 1 and hi == 2:
        return chain(text, map(_join, text, text[1:]))
    return (text[i : i + k] for k in range(lo, hi + 1) for i in range(len(text) - k + 1))


def word_grams(word: str, lo: int = 2, hi: int = 4) -> Iterator[str]:
    """The English model's features of one word of the classifier's cut: its character
    n-grams of ``lo`` to ``hi`` characters, the word marked at both ends (sue: <s su ue e>
    <su sue ue> <sue sue>), so that sue, sued and suing share what they share and a whole
    short word is its own feature; nothing for a word that is not all letters (digits,
    punctuation, emoji). The same function for training and scoring; a message's features
    are the set of its words' n-grams (each distinct one counted once)."""
    if not _EN_WORD.fullmatch(word):
        return iter(())
    m = f"<{word}>"
    return (m[i : i + k] for k in range(lo, hi + 1) for i in range(len(m) - k + 1))


@dataclass(frozen=True, slots=True)
class SecondOpinion:
    """The model's reading of a message that passed its threshold."""

    probability: float
    evidence: tuple[str, ...]
    """The strongest n-grams that fired, longest first where they overlap."""


@dataclass(frozen=True, slots=True)
class ThreatModel:
    weights: Mapping[str, float]
    bias: float
    threshold: float
    """A probability: the message is read as a threat when the model's is at least this."""
    lo: int = 1
    hi: int = 2
    stop_words: frozenset[str] = frozenset()
    """Words the model does not read (the English model's stop words: and, this, the ...)."""

    @classmethod
    def from_json(cls, text: str, threshold: float | None = None) -> ThreatModel:
        """The exported model (``threshold`` overrides the one chosen in training)."""
        d = json.loads(text)
        lo, hi = (int(x) for x in d["ngram_range"])
        weights = {str(k): float(v) for k, v in d["weights"].items()}
        thr = float(d["threshold"]) if threshold is None else threshold
        if not 0.0 < thr < 1.0:
            raise ValueError(f"threshold {thr} must be between 0 and 1")
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range {lo}..{hi} is not a range of lengths")
        stop = frozenset(str(w) for w in d.get("stop_words", ()))
        return cls(
            weights=weights, bias=float(d["bias"]), threshold=thr, lo=lo, hi=hi, stop_words=stop
        )

    @classmethod
    def load(cls, path: Path = MODEL_FILE, threshold: float | None = None) -> ThreatModel:
        return cls.from_json(path.read_text(encoding="utf-8"), threshold)


# Per distinct word of the cut: the model's n-grams inside it (those of its vocabulary; the
# others weigh nothing), its first and last character, Latin letters and digits dropped, the
# most it can add to a message's log-odds (its room, see ``Scorer.read``) and the sum of its
# positive n-grams alone (its lift: the room without the pair across its end).
_WordGrams = tuple[frozenset[str], str, str, float, float]
# How far below the threshold a message's room must leave it to be told without scoring:
# far more than the rounding of a plain sum of a few dozen rooms (about 1e-14), so the
# answer is the exact score's, only sooner.
_MARGIN = 1e-6


class Scorer:
    """A model ready to score: its weights' ``get``, the threshold as a log-odds, and the
    n-grams of each distinct word seen (words repeat across messages even when texts do
    not, so a new message costs a look-up per word and one character pair per word
    boundary, not a slice per character)."""

    __slots__ = (
        "_below",
        "_bias",
        "_bounded",
        "_cut",
        "_get",
        "_pair_room",
        "_pairs",
        "_rooms",
        "_words",
        "model",
    )

    def __init__(self, model: ThreatModel) -> None:
        self.model = model
        self._get = model.weights.get
        p = model.threshold
        self._cut = math.log(p / (1.0 - p))
        # Read on every message as plain values: a bound below this leaves the message below
        # the threshold.
        self._bias = model.bias
        self._below = self._cut - _MARGIN
        self._words: PerWord[_WordGrams] = PerWord(self._word)
        # Each word's room alone, so that a message's rooms are summed in C:
        # ``sum(map(rooms.__getitem__, words))``.
        self._rooms: PerWord[float] = PerWord(lambda w: self._words[w][3])
        # A message's rooms only bound its score for the shipped lengths (characters and
        # pairs, kept per word); a model of other lengths is always scored.
        self._bounded = (model.lo, model.hi) == (1, 2)
        # Per character: the largest positive weight of a pair beginning with it (what the
        # pair across a word's end can add at most).
        self._pair_room: dict[str, float] = {}
        for g, w in model.weights.items():
            if len(g) == 2 and w > self._pair_room.get(g[0], 0.0):
                self._pair_room[g[0]] = w
        # The pairs that weigh for a threat, with their weights (for ``paired``).
        self._pairs = {g: w for g, w in model.weights.items() if len(g) == 2 and w > 0}

    def logit(self, text: str) -> float:
        """The model's log-odds for ``text``: the bias plus the weight of each distinct
        n-gram it has (one dictionary look-up per n-gram, in C)."""
        m = self.model
        return self._sum(set(ngrams(text, m.lo, m.hi)))

    def _sum(self, grams: set[str]) -> float:
        # Summed exactly (fsum): a set's order changes with the process's string hashing,
        # and a plain sum with it in the last bit, so a message on the threshold would be
        # read one way in one process and the other way in the next.
        return self.model.bias + math.fsum(map(self._get, grams, repeat(0.0)))

    def grams(self, words: Sequence[str]) -> set[str]:
        """The n-grams of ``model_text(words)`` that can weigh (those of the model's
        vocabulary), from the kept n-grams of each word and the pairs across its ends."""
        m = self.model
        if (m.lo, m.hi) != (1, 2):  # a model of other lengths: from the text
            return set(ngrams(model_text(words), m.lo, m.hi))
        out: set[str] = set()
        known = self._words
        weights = self.model.weights
        last = ""
        for w in words:
            inner, first, end, _, _ = known[w]
            if first:
                out.update(inner)
                if last and (pair := last + first) in weights:
                    out.add(pair)
                last = end
        return out

    def _word(self, word: str) -> _WordGrams:
        clean = _NOT_READ.sub("", word) if _HAS_NOT_READ.search(word) else word
        weights = self.model.weights
        inner = frozenset(g for g in ngrams(clean) if g in weights)
        # The most the word adds: its positive n-grams, and the strongest pair that can
        # begin at its last character (the pair across its end, if another word follows).
        lift = math.fsum(w for g in inner if (w := weights[g]) > 0)
        room = lift + self._pair_room.get(clean[-1], 0.0) if clean else lift
        return (inner, clean[:1], clean[-1:], room, lift)

    def read(self, words: Sequence[str]) -> SecondOpinion | None:
        """The second opinion on a message (its classifier's words) when the model reads a
        threat or safety report in it, else None. Pure apart from the kept n-grams per word:
        the same words and model always give the same answer, the same as
        ``self(model_text(words))``.

        Most messages cannot reach the threshold: even if every positive n-gram of every
        word and the strongest pair at every word boundary counted (a word that comes twice
        counted twice), the bias plus those stays below it. That sum is one look-up per word
        in C; of the messages it does not tell, most are told by the same with the pair
        actually at each boundary (``paired``, a loop in Python, with no set built); a
        message that passes both has its n-grams gathered and summed plainly, and only one
        that may reach the threshold is summed exactly."""
        below = self._below
        # ``upper`` written out here (a call less on every message)
        if self._bounded and self._bias + sum(map(self._rooms.__getitem__, words)) < below:
            return None
        if self._bounded and self.paired(words) < below:
            return None
        grams = self.grams(words)
        # A plain sum first (in C, far cheaper than fsum): its rounding is far below the
        # margin, so a message it leaves below is below by the exact sum too.
        if self._bounded and sum(map(self.model.weights.__getitem__, grams)) < (
            self._cut - self.model.bias - _MARGIN
        ):
            return None
        return self._opinion(grams)

    def upper(self, words: Sequence[str]) -> float:
        """At least the model's log-odds for ``words``: the bias plus each word's room (its
        positive n-grams and the strongest pair that can begin at its last character), one
        look-up per word in C; infinite for a model of other n-gram lengths."""
        if not self._bounded:
            return math.inf
        return self.model.bias + sum(map(self._rooms.__getitem__, words))

    def paired(self, words: Sequence[str]) -> float:
        """At least the model's log-odds for ``words`` (a model of the shipped lengths),
        closer than ``upper``: the bias, each word's lift (its positive n-grams) and, at
        each boundary between words that are read, the pair there when it weighs for a
        threat (``upper`` adds the strongest pair that could begin there)."""
        total = self.model.bias
        known = self._words
        pairs = self._pairs
        last = ""
        for w in words:
            _, first, end, _, lift = known[w]
            if first:
                total += lift
                if last:
                    total += pairs.get(last + first, 0.0)
                last = end
        return total

    def __call__(self, text: str) -> SecondOpinion | None:
        """The second opinion on a text already joined (``model_text``)."""
        m = self.model
        return self._opinion(set(ngrams(text, m.lo, m.hi)))

    def _opinion(self, grams: set[str]) -> SecondOpinion | None:
        z = self._sum(grams)
        if z < self._cut:
            return None
        m = self.model
        hits = m.weights.keys() & grams
        return SecondOpinion(round(1.0 / (1.0 + math.exp(-z)), 3), evidence(m, hits))


def evidence(model: ThreatModel, hits: Iterable[str]) -> tuple[str, ...]:
    """The strongest positive n-grams among ``hits``, for the reason: by weight, an n-gram
    inside (or around) one already chosen skipped, longest first on equal footing."""
    w = model.weights
    ranked = sorted((g for g in hits if w[g] > 0), key=lambda g: (-w[g], -len(g), g))
    multi = [g for g in ranked if len(g) > 1] or ranked
    chosen: list[str] = []
    for g in multi:
        if any(g in c or c in g for c in chosen):
            continue
        chosen.append(g)
        if len(chosen) == EVIDENCE_MAX:
            break
    return tuple(chosen)


class WordScorer:
    """The English second opinion ready to score: a message's features are the n-grams of
    its words (``word_grams``), kept per distinct word with the most the word can add (its
    room: the sum of its positive weights) and the least (the sum of its negative weights),
    so that a new message costs a look-up or two per word. Most messages are told below the
    threshold by those alone (in C, see ``upper``); the others are summed plainly, and only
    those near the threshold exactly (``fsum`` over the distinct n-grams)."""

    __slots__ = ("_cut", "_get", "_negs", "_rooms", "_words", "model")

    def __init__(self, model: ThreatModel) -> None:
        self.model = model
        self._get = model.weights.get
        p = model.threshold
        self._cut = math.log(p / (1.0 - p))
        # Per word: its n-grams of the model's vocabulary, its weight alone (for the
        # evidence), its room and its negative weights; rooms and negatives also alone, so
        # that a message's are looked up in C.
        self._words: PerWord[tuple[frozenset[str], float, float, float]] = PerWord(self._word)
        self._rooms: PerWord[float] = PerWord(lambda w: self._words[w][2])
        self._negs: PerWord[float] = PerWord(lambda w: self._words[w][3])

    def _word(self, word: str) -> tuple[frozenset[str], float, float, float]:
        weights = self.model.weights
        m = self.model
        if word in m.stop_words:
            return (frozenset(), 0.0, 0.0, 0.0)  # not read (kept per word: no cost per message)
        grams = frozenset(g for g in word_grams(word, m.lo, m.hi) if g in weights)
        own = math.fsum(weights[g] for g in grams)
        room = math.fsum(w for g in grams if (w := weights[g]) > 0)
        neg = math.fsum(w for g in grams if (w := weights[g]) < 0)
        return (grams, own, room, neg)

    def grams(self, words: Sequence[str]) -> set[str]:
        """The distinct n-grams of the model's vocabulary in ``words``."""
        out: set[str] = set()
        known = self._words
        for w in words:
            out.update(known[w][0])
        return out

    def logit(self, words: Sequence[str]) -> float:
        """The model's log-odds for a message (its classifier's words)."""
        return self.model.bias + math.fsum(map(self._get, self.grams(words), repeat(0.0)))

    def upper(self, words: Sequence[str]) -> float:
        """At least the model's log-odds, in C: the bias, plus each distinct word's room
        (every positive n-gram of the message is in one of them), plus the negative weights
        of the word that has the most (all of its n-grams are the message's too)."""
        distinct = set(words)
        return (
            self.model.bias
            + sum(map(self._rooms.__getitem__, distinct))
            + min(map(self._negs.__getitem__, distinct), default=0.0)
        )

    def read(self, words: Sequence[str]) -> SecondOpinion | None:
        """The second opinion when the model reads a threat or a safety report, else None;
        the evidence is the words that weigh most towards it."""
        cut = self._cut
        if self.upper(words) < cut - _MARGIN:
            return None
        grams = self.grams(words)
        m = self.model
        # A plain sum first (in C): its rounding is far below the margin, so a message it
        # leaves below is below by the exact sum too.
        if sum(map(m.weights.__getitem__, grams)) < cut - m.bias - _MARGIN:
            return None
        z = m.bias + math.fsum(map(m.weights.__getitem__, grams))
        if z < cut:
            return None
        known = self._words
        ranked = sorted((w for w in set(words) if known[w][1] > 0), key=lambda w: (-known[w][1], w))
        return SecondOpinion(round(1.0 / (1.0 + math.exp(-z)), 3), tuple(ranked[:EVIDENCE_MAX]))
