"""The Chinese cut does not depend on the order the rules' words reach the tokenizer.

jieba suggests an added word's frequency from the dictionary as it stands, so adding the
same words in another order used to cut some texts otherwise; the classifier collects the
rules' words in sets, whose order follows PYTHONHASHSEED, so two router processes could
cut (and one day decide) the same message differently."""

from __future__ import annotations

import json
from pathlib import Path

from services.router.classify import Classifier, load_rules
from services.router.classify.text import Tokenizer
from services.router.domain import DEFAULT_RULES_FILE

EVAL = Path(__file__).parents[2] / "services" / "router" / "eval"


def _rule_words() -> list[str]:
    rules = load_rules(DEFAULT_RULES_FILE)
    words: set[str] = set(rules.aliases)
    for c in rules.categories.values():
        words.update(c.terms, c.strong, c.decisive)
    for s in rules.signals.values():
        words.update(s.terms)
    return sorted(w.rstrip("*") for w in words if " " not in w)


def test_the_cut_is_the_same_whatever_order_the_words_come_in() -> None:
    words = _rule_words()
    forward, backward = Tokenizer(words), Tokenizer(reversed(words))
    texts = ["收到的花瓶碎了"] + [
        json.loads(line)["text"]
        for name in ("zh_written.jsonl", "zh_fresh8.jsonl", "zh_fresh9.jsonl")
        for line in (EVAL / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    differ = [
        t
        for t in texts
        if forward.words(Tokenizer.normalise(t)) != backward.words(Tokenizer.normalise(t))
    ]
    assert differ == []


def test_the_classifier_cuts_a_known_case_as_a_sorted_dictionary_does() -> None:
    clf = Classifier(load_rules(DEFAULT_RULES_FILE))
    cut = clf.tokenizer.words(Tokenizer.normalise("收到的花瓶碎了"))
    assert cut == ("收到", "的", "花瓶", "碎了")
