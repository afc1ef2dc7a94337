"""``make eval-router``: the router's decisions against the labelled evaluation set.

Prints per-category precision / recall / F1 and macro-F1, confusion matrices for category,
priority and tier, tier accuracy, and the count of urgent threat messages routed below L2
(which must be 0). Exit status 1 when a floor target is missed.

The set, in two parts written at different times (docs/routing-rules.md tells how each was
used): ``zh_written.jsonl`` + ``en_bitext.jsonl`` (first set) and ``zh_holdout.jsonl`` +
``en_bitext_holdout.jsonl`` (second set). Chinese rows are written by hand for every
category and risk signal; English rows are sampled by ``sample_bitext.py`` from the Bitext
customer-support set (CDLA-Sharing-1.0, see LICENSE-bitext-CDLA-Sharing-1.0.txt).
A third set, ``zh_fresh.jsonl`` (80 Chinese messages written after the rules were last
changed and never used to change them), is reported on its own line with its own verdict;
it is not in the figures above it nor in the exit status. A fourth, ``zh_fresh2.jsonl``
(72 Chinese messages written in session 3 before the safety-wording change, studied in
session 4), is reported the same way. A fifth, ``zh_fresh3.jsonl`` (81 Chinese messages
written in session 4 before the generalisation change), is held out: only its summary
line is printed, never its misses, so that nobody tunes the rules on it. A sixth,
``zh_fresh4.jsonl`` (100 Chinese messages written in session 5 by an author who never read
the rules), is reported like the fourth, its misses shown. A seventh, ``zh_fresh5.jsonl``
(100 Chinese messages written in session 5 by another author who never read the rules), is
held out like the fifth: its summary line only. An eighth, ``zh_fresh6.jsonl`` (100 Chinese
messages written in session 6 by a third author who never read the rules), is held out the
same way: its summary line only. A ninth, ``zh_fresh7.jsonl`` (100 Chinese messages by a
fourth such author), is held out the same way. Two English sets by an author who never read
the rules: ``en_threats.jsonl`` (86 messages, threats and safety reports; studied, its misses
shown) and ``en_fresh.jsonl`` (65 messages in other personas and wordings; held out, its
summary line only); a third by another author, ``en_fresh2.jsonl`` (70 messages), held out
the same way. A tenth Chinese set, ``zh_fresh8.jsonl`` (100 messages by a fifth author who
never read the rules), is studied: reported like the sixth, its misses shown. A third English
held-out set by another author, ``en_fresh3.jsonl`` (82 messages), its summary line only. A
second studied English set by another author who never read the rules, ``en_threats2.jsonl``
(101 messages), is reported like ``en_threats.jsonl``, its misses shown. A fourth held-out
English set by a fifth English author, ``en_fresh4.jsonl`` (90 messages), and a twelfth Chinese
set, ``zh_fresh10.jsonl`` (100 messages by another such author), held out: summary lines only.
An eleventh, a thirteenth and a fourteenth Chinese set, ``zh_fresh9.jsonl``, ``zh_fresh11.jsonl``
and ``zh_fresh12.jsonl`` (120 messages each, threat-dense), and a third English
ones, ``en_threats3.jsonl``, ``en_threats4.jsonl`` and ``en_threats5.jsonl`` (120 messages each,
threat-dense), are studied.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from services.router.classify import Classifier
from services.router.domain import (
    DEFAULT_RULES_FILE,
    Decision,
    DecisionInput,
    decide,
    default_classifier,
    use_rules,
)
from services.router.settings import RouterSettings
from shared.events import Category, Priority, Tier

HERE = Path(__file__).parent
DEV_FILES = ("zh_written.jsonl", "en_bitext.jsonl")
HOLDOUT_FILES = ("zh_holdout.jsonl", "en_bitext_holdout.jsonl")
FILES = DEV_FILES + HOLDOUT_FILES
# Written after the rules were last changed and never used to change them: reported on its
# own (not in the figures above, not in the exit status), the least biased figure we have.
FRESH_FILES = ("zh_fresh.jsonl",)
# A fourth set, written in session 3 before the safety-wording rules change (its figures
# before that change are in docs/routing-rules.md) and studied in session 4; reported on
# its own line the same way.
FRESH2_FILES = ("zh_fresh2.jsonl",)
# A fifth, written in session 4 before the generalisation change: held out, its summary line
# only (its misses are never printed, so the rules are not tuned on it).
FRESH3_FILES = ("zh_fresh3.jsonl",)
# A sixth, written in session 5 by an author who never read the rules, labelled from the
# domain brief and the contract alone before the router saw it; reported on its own with
# its misses shown (it is to be studied).
FRESH4_FILES = ("zh_fresh4.jsonl",)
# A seventh, written in session 5 by another author who never read the rules, labelled from
# the domain brief and the contract alone before the router saw it: held out like the fifth,
# its summary line only (its misses are never printed, so the rules are not tuned on it).
FRESH5_FILES = ("zh_fresh5.jsonl",)
# An eighth, written in session 6 by a third author who never read the rules, labelled from
# the domain brief and the contract alone before the router saw it: held out like the fifth.
FRESH6_FILES = ("zh_fresh6.jsonl",)
# A ninth, written in the session of 2026-12-01 by a fourth author who never read the rules:
# held out like the fifth.
FRESH7_FILES = ("zh_fresh7.jsonl",)
# A tenth, written in the session of 2026-12-01 by a fifth author who never read the rules:
# studied (its misses shown), like the sixth.
FRESH8_FILES = ("zh_fresh8.jsonl",)
# An eleventh, written in session 9 by a sixth author who never read the rules: studied (its
# misses shown), like the sixth.
FRESH9_FILES = ("zh_fresh9.jsonl",)
# A thirteenth (session 9), threat-dense, older and rural buyers and dialects, by another author
# who never read the rules: studied (its misses shown).
FRESH11_FILES = ("zh_fresh11.jsonl",)
# A fourteenth (session 9), threat-dense, young urban buyers' slang, by another author who never
# read the rules: studied (its misses shown).
FRESH12_FILES = ("zh_fresh12.jsonl",)
# A fifteenth (2026-12-01, 10:35-13:35 UTC session), threat-dense, cross-border sellers, dorm
# group orders, instant retail, carers and relatives of disabled buyers, by another author who
# never read the rules: studied (its misses shown).
FRESH13_FILES = ("zh_fresh13.jsonl",)
# A twelfth, written in session 9 by another author who never read the rules: held out like
# the fifth.
FRESH10_FILES = ("zh_fresh10.jsonl",)
# English threats and safety reports (the Bitext rows hold none), by an author who never read
# the rules: a studied set (its misses shown) and a held-out one in other personas and
# wordings (its summary line only).
EN_THREATS_FILES = ("en_threats.jsonl",)
# A second studied English set by another author who never read the rules (its misses shown).
EN_THREATS2_FILES = ("en_threats2.jsonl",)
# A third studied English set (session 9), threat-dense, by another author who never read the
# rules (its misses shown).
EN_THREATS3_FILES = ("en_threats3.jsonl",)
# A fourth studied English set (session 9), threat-dense, North American and Oceanian voices,
# by another author who never read the rules (its misses shown).
EN_THREATS4_FILES = ("en_threats4.jsonl",)
# A fifth studied English set (session 9), threat-dense, second-language English from Europe,
# the Middle East, Africa and Asia, by another author who never read the rules (its misses shown).
EN_THREATS5_FILES = ("en_threats5.jsonl",)
# A sixth studied English set (2026-12-01, 10:35-13:35 UTC session), threat-dense, trades,
# carers, literal translations of idioms and regional Englishes, by another author who never
# read the rules (its misses shown).
EN_THREATS6_FILES = ("en_threats6.jsonl",)
EN_FRESH_FILES = ("en_fresh.jsonl",)
# A second held-out English set by another such author, written after the English threat rules
# of be25fdf (en_fresh had been looked at once by then): its summary line only.
EN_FRESH2_FILES = ("en_fresh2.jsonl",)
# A third held-out English set by another author who never ran the router: its summary line only.
EN_FRESH3_FILES = ("en_fresh3.jsonl",)
# A fourth held-out English set by a fifth English author (session 9): its summary line only.
EN_FRESH4_FILES = ("en_fresh4.jsonl",)
TARGET_MACRO_F1 = 0.85
TARGET_TIER_ACCURACY = 0.9


@dataclass(frozen=True)
class Row:
    text: str
    lang: str
    category: str
    priority: str
    tier: str
    urgent_threat: bool
    context: dict[str, object] = field(default_factory=dict)

    def decision_input(self) -> DecisionInput:
        c = self.context
        amount = c.get("order_amount")
        return DecisionInput(
            text=self.text,
            vip_level=int(str(c.get("vip_level", 0))),
            order_amount=Decimal(str(amount)) if amount is not None else None,
            order_status=str(c["order_status"]) if "order_status" in c else None,
            reopen_count=int(str(c.get("reopen_count", 0))),
            escalated=bool(c.get("escalated", False)),
        )


def load_rows(files: Sequence[str] = FILES) -> list[Row]:
    rows: list[Row] = []
    for name in files:
        with (HERE / name).open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    rows.append(
                        Row(
                            text=d["text"],
                            lang=d["lang"],
                            category=d["category"],
                            priority=d["priority"],
                            tier=d["tier"],
                            urgent_threat=bool(d.get("urgent_threat", False)),
                            context=d.get("context", {}),
                        )
                    )
    return rows


@dataclass
class Report:
    rows: list[Row]
    decisions: list[Decision]
    per_category: dict[str, tuple[float, float, float, int]]  # precision, recall, f1, support
    macro_f1: float
    category_accuracy: float
    priority_accuracy: float
    tier_accuracy: float
    threats: int
    threats_below_l2: list[Row]
    errors: list[tuple[Row, Decision]]

    @property
    def passed(self) -> bool:
        return (
            self.macro_f1 >= TARGET_MACRO_F1
            and self.tier_accuracy >= TARGET_TIER_ACCURACY
            and not self.threats_below_l2
        )


def evaluate(rows: list[Row] | None = None, classifier: Classifier | None = None) -> Report:
    rows = rows if rows is not None else load_rows()
    clf = classifier or default_classifier()
    decisions = [decide(r.decision_input(), clf) for r in rows]
    per: dict[str, tuple[float, float, float, int]] = {}
    for cat in Category:
        tp = sum(
            1
            for r, d in zip(rows, decisions, strict=True)
            if r.category == cat and d.category is cat
        )
        pred = sum(1 for d in decisions if d.category is cat)
        gold = sum(1 for r in rows if r.category == cat)
        p = tp / pred if pred else 0.0
        rec = tp / gold if gold else 0.0
        f1 = 2 * p * rec / (p + rec) if p + rec else 0.0
        per[cat.value] = (p, rec, f1, gold)
    present = [v for v in per.values() if v[3]]
    n = len(rows)

    def acc(attr: str) -> float:
        return (
            sum(
                1
                for r, d in zip(rows, decisions, strict=True)
                if getattr(r, attr) == getattr(d, attr).value
            )
            / n
        )

    threats = [r for r in rows if r.urgent_threat]
    below = [
        r for r, d in zip(rows, decisions, strict=True) if r.urgent_threat and d.tier != Tier.L2
    ]
    errors = [
        (r, d)
        for r, d in zip(rows, decisions, strict=True)
        if (r.category, r.priority, r.tier) != (d.category.value, d.priority.value, d.tier.value)
    ]
    return Report(
        rows=rows,
        decisions=decisions,
        per_category=per,
        macro_f1=sum(v[2] for v in present) / len(present),
        category_accuracy=acc("category"),
        priority_accuracy=acc("priority"),
        tier_accuracy=acc("tier"),
        threats=len(threats),
        threats_below_l2=below,
        errors=errors,
    )


def _matrix(title: str, labels: list[str], gold: list[str], pred: list[str]) -> str:
    counts = Counter(zip(gold, pred, strict=True))
    short = [lab[:8] for lab in labels]
    width = max(len(lab) for lab in labels) + 2
    out = [
        f"{title} (rows: labelled, columns: decided)",
        " " * width + " ".join(f"{s:>8}" for s in short),
    ]
    for g in labels:
        out.append(f"{g:<{width}}" + " ".join(f"{counts[(g, p)]:>8}" for p in labels))
    return "\n".join(out)


def render(rep: Report, show_errors: bool = True) -> str:
    rows, dec = rep.rows, rep.decisions
    by_lang = Counter(r.lang for r in rows)
    lines = [
        f"router evaluation: {len(rows)} messages ({by_lang['zh']} Chinese, "
        f"{by_lang['en']} English from Bitext)",
        "",
        f"{'category':<16}{'precision':>10}{'recall':>8}{'F1':>7}{'support':>9}",
    ]
    for cat, (p, rec, f1, s) in rep.per_category.items():
        lines.append(f"{cat:<16}{p:>10.3f}{rec:>8.3f}{f1:>7.3f}{s:>9}")
    lines += [
        "",
        f"category macro-F1: {rep.macro_f1:.3f}   (target >= {TARGET_MACRO_F1})",
        f"category accuracy: {rep.category_accuracy:.3f}",
        f"priority accuracy: {rep.priority_accuracy:.3f}",
        f"tier accuracy:     {rep.tier_accuracy:.3f}   (target >= {TARGET_TIER_ACCURACY})",
        "",
    ]
    for lang in ("zh", "en"):
        idx = [i for i, r in enumerate(rows) if r.lang == lang]
        if idx:
            c = sum(1 for i in idx if rows[i].category == dec[i].category.value) / len(idx)
            t = sum(1 for i in idx if rows[i].tier == dec[i].tier.value) / len(idx)
            lines.append(
                f"  {lang}: category accuracy {c:.3f}, tier accuracy {t:.3f} ({len(idx)} messages)"
            )
    lines.append("")
    lines.append(
        _matrix(
            "category",
            [c.value for c in Category],
            [r.category for r in rows],
            [d.category.value for d in dec],
        )
    )
    lines.append("")
    lines.append(
        _matrix(
            "priority",
            [p.value for p in Priority],
            [r.priority for r in rows],
            [d.priority.value for d in dec],
        )
    )
    lines.append("")
    lines.append(
        _matrix(
            "tier", [t.value for t in Tier], [r.tier for r in rows], [d.tier.value for d in dec]
        )
    )
    lines += [
        "",
        f"urgent threat messages: {rep.threats}; routed below L2: "
        f"{len(rep.threats_below_l2)} (must be 0)",
    ]
    for r in rep.threats_below_l2:
        lines.append(f"  BELOW L2: {r.text}")
    if show_errors:
        lines += ["", f"messages with any difference ({len(rep.errors)}):"]
        for r, d in rep.errors:
            lines.append(
                f"  [{r.lang}] {r.text[:60]!r}: labelled {r.category}/{r.priority}/{r.tier},"
                f" decided {d.category.value}/{d.priority.value}/{d.tier.value}"
            )
    lines += ["", "PASS" if rep.passed else "FAIL: a floor target is missed"]
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> int:
    # The router's rules file (ROUTER_RULES_FILE), so a team lead can evaluate a changed copy.
    clf = use_rules(RouterSettings().rules_file or DEFAULT_RULES_FILE)
    rep = evaluate(classifier=clf)
    print(render(rep, show_errors="--quiet" not in argv))
    print("\nby set (see docs/routing-rules.md for how each was used):")
    ok = rep.passed
    for name, files in (("first set", DEV_FILES), ("second set", HOLDOUT_FILES)):
        part = evaluate(load_rows(files), clf)
        ok = ok and part.passed
        print(
            f"  {name:<11}{len(part.rows):>4} messages: macro-F1 {part.macro_f1:.3f}, "
            f"tier accuracy {part.tier_accuracy:.3f}, priority accuracy "
            f"{part.priority_accuracy:.3f}, urgent threats below L2 "
            f"{len(part.threats_below_l2)}/{part.threats}"
        )
    for name, tag, fresh_files in (
        ("third set", "third", FRESH_FILES),
        ("fourth set", "fourth", FRESH2_FILES),
        ("fifth set", "", FRESH3_FILES),
        ("sixth set", "sixth", FRESH4_FILES),
        ("seventh set", "", FRESH5_FILES),
        ("eighth set", "", FRESH6_FILES),
        ("ninth set", "", FRESH7_FILES),
        ("tenth set", "tenth", FRESH8_FILES),
        ("eleventh set", "eleventh", FRESH9_FILES),
        ("twelfth set", "", FRESH10_FILES),
        ("13th set", "13th", FRESH11_FILES),
        ("14th set", "14th", FRESH12_FILES),
        ("15th set", "15th", FRESH13_FILES),
        ("en threats", "en-threats", EN_THREATS_FILES),
        ("en threats2", "en-threats2", EN_THREATS2_FILES),
        ("en threats3", "en-threats3", EN_THREATS3_FILES),
        ("en threats4", "en-threats4", EN_THREATS4_FILES),
        ("en threats5", "en-threats5", EN_THREATS5_FILES),
        ("en threats6", "en-threats6", EN_THREATS6_FILES),
        ("en fresh", "", EN_FRESH_FILES),
        ("en fresh2", "", EN_FRESH2_FILES),
        ("en fresh3", "", EN_FRESH3_FILES),
        ("en fresh4", "", EN_FRESH4_FILES),
    ):
        fresh = evaluate(load_rows(fresh_files), clf)
        print(
            f"  {name:<11}{len(fresh.rows):>4} messages: macro-F1 {fresh.macro_f1:.3f}, "
            f"tier accuracy {fresh.tier_accuracy:.3f}, priority accuracy "
            f"{fresh.priority_accuracy:.3f}, urgent threats below L2 "
            f"{len(fresh.threats_below_l2)}/{fresh.threats}"
            f"  <- fresh: {'meets' if fresh.passed else 'MISSES'} the targets"
        )
        if tag and "--quiet" not in argv:
            for r, d in fresh.errors:
                print(
                    f"    [{tag}] {r.text[:60]!r}: labelled {r.category}/{r.priority}/"
                    f"{r.tier}, decided {d.category.value}/{d.priority.value}/{d.tier.value}"
                )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
