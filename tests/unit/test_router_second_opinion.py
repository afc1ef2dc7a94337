"""The threat second opinion (services/router/classify/second_opinion.py): a trained model
that may only raise a decision to urgent / L2, never lower anything; the committed model is
what ``make train-router`` gives from the studied sets."""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.router.classify import Classifier, RulesError, load_rules, parse_rules
from services.router.classify.rules import SecondOpinionRules
from services.router.classify.second_opinion import (
    MODEL_FILE,
    MODEL_FILE_EN,
    Scorer,
    ThreatModel,
    WordScorer,
    model_text,
    ngrams,
    word_grams,
)
from services.router.domain import DEFAULT_RULES_FILE, Decision, DecisionInput, decide
from services.router.eval.report import load_rows
from services.router.eval.train_threat import EN, EN_STUDIED_FILES, STUDIED_FILES, train
from shared.events import Category, Priority, Tier

_PRI = {Priority.normal: 0, Priority.important: 1, Priority.urgent: 2}
_TIER = {Tier.bot: 0, Tier.L1: 1, Tier.L2: 2}
THREAT_SIGNALS = {
    "threat_regulator",
    "threat_media",
    "threat_legal",
    "threat_platform",
    "chargeback",
    "safety",
}

# Written for this test (no evaluation set holds them): what the rules do not take as a
# threat or a safety report and the model does.
MISSED_BY_RULES = [
    "小孩把玩具上的小珠子塞嘴里了，吓得我赶紧抠出来",  # a child with a small part in the mouth
    "充电的时候插头那里滋滋响还有一股塑料味",  # a plug fizzing and smelling of plastic
    "我要找相关部门反映一下你们这种行为",  # going to "the relevant department"
]
# Hard negatives with risk-like words: nobody is threatened and nothing happened.
HARD_NEGATIVES = [
    "请问这个充电宝能带上飞机吗",
    "这款电暖器会不会起火啊，想买一个",
    "律师事务所要开发票，抬头怎么写",
    "烟雾报警器怎么安装",
    "我的电话 138 1234 5678",  # digits are not read: 12315's pairs made this a threat
    "电话 186 3123 4567",
]


def _rules(**second: object) -> Classifier:
    rules = load_rules(DEFAULT_RULES_FILE)
    return Classifier(
        rules.model_copy(update={"second_opinion": SecondOpinionRules.model_validate(second)})
    )


@pytest.fixture(scope="module")
def off() -> Classifier:
    return _rules(enabled=False)


@pytest.fixture(scope="module")
def on() -> Classifier:
    return _rules(enabled=True)


def test_the_shipped_rules_enable_it() -> None:
    assert load_rules(DEFAULT_RULES_FILE).second_opinion.enabled


def test_committed_model_is_what_training_gives() -> None:
    """Retrain from the studied sets: the committed file must be byte for byte the result
    (change a studied set or the training and forget `make train-router`: this fails)."""
    text, report = train()
    assert text == MODEL_FILE.read_text(encoding="utf-8")
    for name in STUDIED_FILES:
        assert name in report


def _assert_only_raised(before: Decision, after: Decision) -> None:
    assert after.category is _category_after(before, after)
    assert _PRI[after.priority] >= _PRI[before.priority]
    assert _TIER[after.tier] >= _TIER[before.tier]
    assert set(before.risk_signals) <= set(after.risk_signals)
    assert after.reasons[: len(before.reasons)] == before.reasons
    if THREAT_SIGNALS & set(before.risk_signals):
        assert after == before  # the rules found a threat: the model has nothing to say
    if after != before:
        assert "threat" in after.risk_signals
        assert (after.priority, after.tier) == (Priority.urgent, Tier.L2)
        assert any(r.startswith("urgent: a second opinion") for r in after.reasons)


def _category_after(before: Decision, after: Decision) -> Category:
    """The category the model leaves: the rules' own, except that an English threat it reads
    is a complaint unless the rules read a quality problem (a harm)."""
    if (
        after != before
        and after.language == "en"
        and before.category not in (Category.complaint, Category.product_quality)
    ):
        return Category.complaint
    return before.category


@pytest.mark.parametrize("threshold", [None, 0.05])
def test_it_only_raises(off: Classifier, threshold: float | None) -> None:
    """Every studied and main-set message under several contexts: never a lower priority or
    tier, never a threat signal removed, the category kept; with the model's own threshold
    and with one so low that it raises most messages."""
    clf = _rules(enabled=True, threshold=threshold)
    rows = load_rows((*STUDIED_FILES, "en_bitext.jsonl", "en_bitext_holdout.jsonl"))
    texts = MISSED_BY_RULES + HARD_NEGATIVES
    raised = _raised_only(off, clf, [r.decision_input() for r in rows] + _inputs(texts))
    assert raised >= (100 if threshold else len(MISSED_BY_RULES) * 4)


def _inputs(texts: Sequence[str]) -> list[DecisionInput]:
    return [DecisionInput(t) for t in texts]


def _raised_only(off: Classifier, clf: Classifier, inputs: Sequence[DecisionInput]) -> int:
    """Decide every input under several contexts without and with the model: it only
    raises (``_assert_only_raised``); returns how many decisions it changed."""
    raised = 0
    for ctx in ({}, {"vip_level": 5}, {"order_amount": Decimal(5000)}, {"reopen_count": 3}):
        for inp in inputs:
            inp = replace(inp, **ctx)  # type: ignore[arg-type]
            before, after = decide(inp, off), decide(inp, clf)
            _assert_only_raised(before, after)
            raised += after != before
    return raised


@pytest.mark.parametrize("text", MISSED_BY_RULES)
def test_a_threat_the_rules_miss_is_raised(off: Classifier, on: Classifier, text: str) -> None:
    before = decide(DecisionInput(text), off)
    assert before.tier is not Tier.L2 or before.priority is not Priority.urgent
    after = decide(DecisionInput(text), on)
    assert (after.priority, after.tier) == (Priority.urgent, Tier.L2)
    assert after.category is before.category
    assert "threat" in after.risk_signals
    reason = next(r for r in after.reasons if "second opinion" in r)
    quoted = reason.split("(“", 1)[1].rstrip("”)").split("”, “")
    # the pairs are quoted as the model reads them: full-width punctuation half-width (了，: 了,)
    assert quoted and all(g in unicodedata.normalize("NFKC", text) for g in quoted), reason


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_a_hard_negative_stays_put(off: Classifier, on: Classifier, text: str) -> None:
    assert decide(DecisionInput(text), on) == decide(DecisionInput(text), off)
    assert decide(DecisionInput(text), on).priority is Priority.normal


def test_switched_off_or_threshold_raised_nothing_changes(off: Classifier) -> None:
    strict = _rules(enabled=True, threshold=0.999)
    for text in MISSED_BY_RULES:
        inp = DecisionInput(text)
        assert decide(inp, strict) == decide(inp, off)


def test_the_chinese_model_does_not_read_english() -> None:
    """English is read by its own model only (``english``), never by the Chinese one."""
    clf = _rules(enabled=True, threshold=0.001)
    assert clf.classify("my kid swallowed a tiny part of the toy").second_opinion is None
    assert clf.classify("孩子吞了一个小零件").second_opinion is not None
    assert clf.classify("the zip of my coat broke after a week").second_opinion is None
    en = _rules(enabled=True, english=True, english_threshold=0.001)
    assert en.classify("the zip of my coat broke after a week").second_opinion is not None


@pytest.mark.parametrize(
    ("shipped", "bad_line", "setting"),
    [
        ("second_opinion:\n  enabled: true", "  threshold: 1.5", "threshold"),
        ("  english: true", "  english_threshold: 0", "english_threshold"),
    ],
)
def test_a_bad_setting_is_refused_with_its_line(shipped: str, bad_line: str, setting: str) -> None:
    """A bad value in the shipped file's second_opinion block (the Chinese threshold in
    place of ``enabled``, an English threshold added): refused, naming its line."""
    text = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
    assert shipped in text
    first = shipped.split("\n")[0]
    bad = text.replace(shipped, f"{first}\n{bad_line}")
    line = bad.splitlines().index(bad_line) + 1
    with pytest.raises(RulesError, match=rf":{line}: second_opinion.{setting}: "):
        parse_rules(bad, "rules.yaml")


def test_an_unreadable_model_refuses_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> ThreatModel:
        raise ValueError("threshold 0 must be between 0 and 1")

    monkeypatch.setattr(ThreatModel, "load", broken)
    with pytest.raises(RulesError, match="second_opinion is enabled but its model"):
        _rules(enabled=True)


@given(st.text(alphabet="我要投诉ab 1，", max_size=12))
def test_ngrams_are_every_slice(text: str) -> None:
    want = [text[i : i + k] for k in (1, 2, 3) for i in range(len(text) - k + 1)]
    assert sorted(ngrams(text)) == sorted(g for g in want if len(g) <= 2)  # the fast way
    assert sorted(ngrams(text, 1, 3)) == sorted(want)
    assert sorted(ngrams(text, 2, 3)) == sorted(g for g in want if len(g) >= 2)


def _same_reading(scorer: Scorer, words: tuple[str, ...]) -> None:
    text = model_text(words)
    vocab = scorer.model.weights.keys()
    assert scorer.grams(words) & vocab == set(ngrams(text)) & vocab
    assert scorer.read(words) == scorer(text)


def test_words_read_as_their_joined_text(on: Classifier) -> None:
    """The router reads a message from the n-grams kept per word of its cut; the same as the
    n-grams of the joined text (what training saw), on every studied message."""
    scorer = Scorer(ThreatModel.load(threshold=0.01))  # reads most: the evidence compared too
    read = 0
    for row in load_rows(STUDIED_FILES):
        words = on.classify(row.text).tokens.words
        _same_reading(scorer, words)
        _same_reading(scorer, words)  # the second time from the kept words
        read += scorer.read(words) is not None
    assert read > 300


@given(st.lists(st.text(alphabet="我要投诉了ab12，", max_size=4), max_size=6))
def test_any_words_read_as_their_joined_text(words: list[str]) -> None:
    _same_reading(Scorer(ThreatModel.load(threshold=0.01)), tuple(words))


def test_model_file_reads_back() -> None:
    model = ThreatModel.load()
    assert 0 < model.threshold < 1
    assert (model.lo, model.hi) == (1, 2)
    assert len(model.weights) > 1000
    with pytest.raises(ValueError, match="between 0 and 1"):
        ThreatModel.load(threshold=1.0)


# ---------------------------------------------------------------------------- English model

# Written for these tests (no evaluation set holds them): what the rules do not take as a
# threat or a safety report and the English model does.
EN_MISSED_BY_RULES = [
    "The bath toy we got from you leaked some blue liquid and my daughter's hands came up red"
    " and sore, we had to take her to the GP this morning.",
    "you sold me a fake watch and ignored four emails. My brother-in-law works at the local"
    " radio station and he is very interested in stories like this.",
]
# Ordinary English: nobody is threatened and nothing happened.
EN_HARD_NEGATIVES = [
    "Can you tell me if the winter jacket comes in XL? Thanks!",
    "Hi, I ordered the blue mug last week, when will it ship?",
    "The lamp arrived with a cracked shade, can I get a replacement please?",
    "I'd like a refund for the shoes, they don't fit.",
    "My order has been stuck in transit for ten days, can you check what's going on?",
    "This hot sauce is lethal lol, do you have a milder one?",
    "The package came damaged and half the plates are broken. I want a refund or a"
    " replacement as soon as possible.",
]


@pytest.fixture(scope="module")
def en_off() -> Classifier:
    return _rules(enabled=True)


@pytest.fixture(scope="module")
def en_on() -> Classifier:
    return _rules(enabled=True, english=True)


def test_the_shipped_rules_enable_english() -> None:
    assert load_rules(DEFAULT_RULES_FILE).second_opinion.english


def test_committed_english_model_is_what_training_gives() -> None:
    """Retrain from the studied English sets: the committed file must be byte for byte the
    result (change a studied set, the rules or the training and forget `make train-router`:
    this fails)."""
    text, report = train(EN)
    assert text == MODEL_FILE_EN.read_text(encoding="utf-8")
    for name in EN_STUDIED_FILES:
        assert name in report


@pytest.mark.parametrize("threshold", [None, 0.05])
def test_english_only_raises(en_off: Classifier, threshold: float | None) -> None:
    """Every studied English message (Bitext included) under several contexts: the English
    model never lowers anything, never removes a signal, keeps the category."""
    clf = _rules(enabled=True, english=True, english_threshold=threshold)
    rows = load_rows(EN_STUDIED_FILES)
    texts = EN_MISSED_BY_RULES + EN_HARD_NEGATIVES
    raised = _raised_only(en_off, clf, [r.decision_input() for r in rows] + _inputs(texts))
    assert raised >= (80 if threshold else len(EN_MISSED_BY_RULES) * 4)


def test_english_model_changes_no_chinese_decision(en_off: Classifier, en_on: Classifier) -> None:
    rows = load_rows(STUDIED_FILES)
    for r in rows:
        inp = r.decision_input()
        assert decide(inp, en_on) == decide(inp, en_off)
        assert en_on.classify(r.text) == en_off.classify(r.text)


def test_an_english_threat_the_model_reads_is_a_complaint(
    en_off: Classifier, en_on: Classifier
) -> None:
    """A threat the English model reads takes complaint, whatever the rules' words were of;
    a harm the rules read as a quality problem stays one (sixth English round)."""
    threat, harm = EN_MISSED_BY_RULES[1], EN_MISSED_BY_RULES[0]
    assert decide(DecisionInput(threat), en_off).category is Category.other
    after = decide(DecisionInput(threat), en_on)
    assert after.category is Category.complaint and "complaints" in after.skills
    assert any(r.startswith("complaint: a threat the trained model reads") for r in after.reasons)
    assert decide(DecisionInput(harm), en_off).category is Category.product_quality
    assert decide(DecisionInput(harm), en_on).category is Category.product_quality


@pytest.mark.parametrize("text", EN_MISSED_BY_RULES)
def test_an_english_threat_the_rules_miss_is_raised(
    en_off: Classifier, en_on: Classifier, text: str
) -> None:
    before = decide(DecisionInput(text), en_off)
    assert before.tier is not Tier.L2 or before.priority is not Priority.urgent
    after = decide(DecisionInput(text), en_on)
    assert (after.priority, after.tier) == (Priority.urgent, Tier.L2)
    assert after.category is _category_after(before, after)
    reason = next(r for r in after.reasons if "second opinion" in r)
    quoted = reason.split("(“", 1)[1].rstrip("”)").split("”, “")
    words = en_on.classify(text).tokens.words
    assert quoted and all(w in words for w in quoted), reason


@pytest.mark.parametrize("text", EN_HARD_NEGATIVES)
def test_an_english_hard_negative_stays_put(
    en_off: Classifier, en_on: Classifier, text: str
) -> None:
    assert decide(DecisionInput(text), en_on) == decide(DecisionInput(text), en_off)


def test_english_read_is_the_exact_score(en_on: Classifier) -> None:
    """The bound (each word's room summed) is never below the exact log-odds, and a message
    is read as a threat exactly when its exact log-odds reach the threshold, at the shipped
    threshold and at one that reads most messages."""
    rows = load_rows(EN_STUDIED_FILES)
    for thr in (None, 0.05):
        scorer = WordScorer(ThreatModel.load(MODEL_FILE_EN, thr))
        p = scorer.model.threshold
        cut = math.log(p / (1 - p))
        read = 0
        for r in rows:
            words = en_on.classify(r.text).tokens.words
            z = scorer.logit(words)
            assert scorer.upper(words) >= z - 1e-9
            opinion = scorer.read(words)
            assert (opinion is not None) is (z >= cut)
            read += opinion is not None
        assert read >= (80 if thr else 40)


@given(
    st.lists(
        st.sampled_from(["sue", "you", "and", "my", "kid", "burn", "12", "!", "ok"]), max_size=8
    )
)
def test_english_bound_on_any_words(words: list[str]) -> None:
    scorer = WordScorer(ThreatModel.load(MODEL_FILE_EN, 0.01))
    m = scorer.model
    assert scorer.upper(words) >= scorer.logit(words) - 1e-9
    read = [w for w in words if w not in m.stop_words]  # the model file's stop words: not read
    grams = set().union(*(set(word_grams(w, m.lo, m.hi)) for w in read)) if read else set()
    assert scorer.grams(words) == grams & m.weights.keys()


def test_the_english_model_does_not_read_stop_words() -> None:
    """The shipped English model names its stop words (it read style: "and", "this" weighed
    most when it read them); a message of stop words only scores the bias."""
    scorer = WordScorer(ThreatModel.load(MODEL_FILE_EN))
    assert {"and", "this", "the", "you"} <= scorer.model.stop_words
    assert scorer.grams(["and", "this", "the", "you"]) == set()
    assert scorer.logit(["and", "this"]) == scorer.model.bias


def test_word_grams() -> None:
    assert sorted(word_grams("sue")) == sorted(
        ["<s", "su", "ue", "e>", "<su", "sue", "ue>", "<sue", "sue>"]
    )
    assert list(word_grams("12")) == [] and list(word_grams("!")) == []


def test_a_stop_word_of_the_model_file_is_not_read() -> None:
    """Words the model file names as its stop words add nothing, whatever their n-grams."""
    text = json.dumps(
        {"ngram_range": [2, 3], "threshold": 0.5, "bias": -1.0, "weights": {"an": 2.0, "<an": 1.0}}
    )
    plain = WordScorer(ThreatModel.from_json(text))
    skips = WordScorer(ThreatModel.from_json(text[:-1] + ', "stop_words": ["and"]}'))
    assert plain.logit(["and"]) == 2.0 and plain.read(["and"]) is not None
    assert skips.logit(["and"]) == -1.0 and skips.read(["and"]) is None
    assert skips.logit(["an"]) == plain.logit(["an"]) == 2.0


def test_an_unreadable_english_model_refuses_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    load = ThreatModel.load

    def broken(path: object = MODEL_FILE, threshold: float | None = None) -> ThreatModel:
        if path == MODEL_FILE_EN:
            raise ValueError("threshold 0 must be between 0 and 1")
        return load(path, threshold)  # type: ignore[arg-type]

    monkeypatch.setattr(ThreatModel, "load", broken)
    _rules(enabled=True)  # the Chinese model alone still loads
    with pytest.raises(RulesError, match=r"threat_model_en\.json:0: second_opinion\.english"):
        _rules(enabled=True, english=True)
