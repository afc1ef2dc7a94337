"""Latin letters with diacritics read as their base letters (docs/routing-rules.md, "How words
are matched"): in every message and in every word of the rules file, so that an accent neither
cuts an English (or other Latin-script) word apart nor keeps it from a rule word written
without it, and Chinese, Japanese, Korean and full-width text is read as before."""

from __future__ import annotations

import unicodedata

import pytest

from services.router.classify import Classifier, RulesError, Tokenizer, parse_rules
from services.router.classify.text import _T2S, fold_latin

RULES = """
version: 1
families:
  write: [write, post]
  outlet: [şikayetvar, forum]
tie_order: [complaint, product_quality, return_refund, invoice, logistics, order_status,
            presale, other]
categories:
  complaint: {says: complains, terms: [consommateur lésé]}
  product_quality: {says: broken}
  return_refund: {says: returns}
  invoice: {says: invoice}
  logistics: {says: shipping}
  order_status: {says: orders}
  presale: {says: pre-sale, terms: [café]}
  other: {says: anything else}
signals:
  regulator: {says: threatens a mediator, terms: [MÉDIATEUR, défenseur des droits, 投诉],
              together: [[write, outlet]], priority: urgent, tier: L2, category: complaint,
              weight: 3, threat: true, negation: false}
  rude:
    says: insults
    patterns: ["espèce d'"]
    priority: important
"""


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


def signals(clf: Classifier, text: str) -> list[str]:
    return [s.name for s in clf.classify(text).signals]


def test_fold_latin_drops_only_latin_diacritics() -> None:
    assert fold_latin("Médiateur Şikayetvar whānau naïve Škoda Pérez") == (
        "Mediateur Sikayetvar whanau naive Skoda Perez"
    )
    assert fold_latin("Łódź Øresund đường ħal ı") == "Lodz Oresund duong hal i"
    assert fold_latin("e\u0301te\u0301 x\u0304") == "ete x"  # marks NFKC leaves alone
    text = "plain ASCII text"
    assert fold_latin(text) is text  # the ASCII fast path: no copy
    # Han, kana, hangul, full-width, Cyrillic, Greek, ligatures and a mark after Han: as they are
    for other in ("投訴退款", "ガギグ", "한국어", "ｃａｆé", "йё", "άέ", "æœß", "中\u0301"):
        assert fold_latin(other) == other.replace("é", "e"), other


def test_an_accented_word_is_one_token(tok: Tokenizer) -> None:
    for text, word in (
        ("Şikayetvar", "sikayetvar"),
        ("a whānau chat", "whanau"),
        ("the café", "cafe"),
        ("naïve of me", "naive"),
        ("my Škoda", "skoda"),
        ("Mr Pérez", "perez"),
        ("CONSOMMATEUR LÉSÉ", "lese"),
        ("i'll go to the médiateur 投诉", "mediateur"),  # a mixed text: cut by rjieba
        ("the médiateur’s office", "mediateur"),  # a curly apostrophe: not ASCII either
    ):
        words = tok.tokens(text).words
        assert word in words, (text, words)
        assert not any(w in words for w in ("m", "é", "diateur", "ş", "ā")), (text, words)
    assert tok.tokens("Défenseur des droits").words == ("defenseur", "des", "droits")
    assert tok.tokens("Şikayetvar").language == "en"


CJK_TEXTS = (
    "亲，我要投诉到12315！！",
    "投訴了三次都沒人理，我要去消委會",
    "東西壞了，退貨退款",
    "ｏｒｄｅｒ　１２３４５６７８ 还没到",
    "商品が壊れていました、返金してください",
    "배송이 너무 늦어요 환불해주세요",
    "收到的花瓶碎了",
)


def test_chinese_japanese_korean_and_full_width_text_is_read_as_before(tok: Tokenizer) -> None:
    for text in CJK_TEXTS:
        lowered = unicodedata.normalize("NFKC", text).lower()
        simplified = "".join(_T2S.get(ord(c), c) for c in lowered)
        assert tok.normalise(text) == " ".join(simplified.split()), text
    # an accented Latin word in a Chinese message: only its letters change, the cut does not
    plain = tok.tokens("我要投诉到12315，cafe老板说的").words
    assert tok.tokens("我要投诉到12315，café老板说的").words == plain


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier(parse_rules(RULES, "latin.yaml"))


def test_a_rule_word_with_an_accent_matches_both_spellings(clf: Classifier) -> None:
    # the rules write MÉDIATEUR, défenseur des droits, consommateur lésé, café, şikayetvar
    for text in ("I'll go to the médiateur", "i'll go to the mediateur", "LE MÉDIATEUR!"):
        assert signals(clf, text) == ["regulator"], text
    assert signals(clf, "écrire au Défenseur des droits") == ["regulator"]
    assert signals(clf, "ecrire au defenseur des droits") == ["regulator"]
    for text in ("I'll write on Şikayetvar", "i'll write on sikayetvar"):  # a family word
        assert signals(clf, text) == ["regulator"], text
    assert clf.classify("consommateur lese ici").category.value == "complaint"
    assert clf.classify("un Café?").category.value == "presale"
    assert signals(clf, "我要投诉") == ["regulator"]
    for text in ("Espèce d'idiot", "espece d'idiot"):  # a pattern searches the folded text
        assert signals(clf, text) == ["rude"], text
    assert signals(clf, "the media") == []  # whole words: médiateur is not media


def test_a_rule_word_without_an_accent_matches_both_spellings() -> None:
    rules = RULES.replace("MÉDIATEUR", "mediateur").replace("[şikayetvar", "[sikayetvar")
    clf = Classifier(parse_rules(rules, "latin.yaml"))
    for text in ("I'll go to the médiateur", "I'll go to the MÉDIATEUR", "the mediateur"):
        assert signals(clf, text) == ["regulator"], text
    assert signals(clf, "I'll write on Şikayetvar") == ["regulator"]


def test_two_spellings_of_one_word_are_one_word_to_the_conflict_check() -> None:
    rules = RULES.replace("terms: [café]", "terms: [cafe]").replace(
        "terms: [consommateur lésé]", "terms: [consommateur lésé, Café]"
    )
    with pytest.raises(RulesError, match="already a word of category"):
        parse_rules(rules, "latin.yaml")
