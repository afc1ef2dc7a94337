"""Just enough PromQL reading for the ops tests: which metric names and which label names
an expression uses. The expressions are ours (rules, dashboard) and promtool checks their
syntax first (test_dashboard.py turns every dashboard query into a rule for
`promtool check rules`), so a tokenizer suffices; tests/ops/test_promql.py pins it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Grafana's built-in interval variables, replaced by a duration before reading.
GRAFANA_VARS = re.compile(
    r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}"
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)", re.IGNORECASE
)
_RANGE = re.compile(r"\[[^\[\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![a-zA-Z_:0-9])(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "inf",
        "nan",
        "atan2",
    }
)


@dataclass
class Usage:
    """Metric names an expression selects, with the label names each selector matches on,
    and the label names its grouping clauses (by, without, on, ...) use."""

    metrics: dict[str, set[str]] = field(default_factory=dict)
    grouping_labels: set[str] = field(default_factory=set)


def substitute_grafana(expr: str) -> str:
    return GRAFANA_VARS.sub("5m", expr)


def read(expr: str) -> Usage:
    use = Usage()
    text = substitute_grafana(expr)
    text = _STRING.sub('""', text)
    text = _RANGE.sub(" ", text)
    text = _OFFSET.sub(" ", text)

    def selector(m: re.Match[str]) -> str:
        name = m.group(1)
        labels = set(_MATCHER_LABEL.findall(m.group(2)))
        if name and name.lower() in KEYWORDS:  # not PromQL, but keep the keyword
            return name + " "
        use.metrics.setdefault(name or "", set()).update(labels)  # "": a nameless selector
        return " "

    text = _SELECTOR.sub(selector, text)
    for m in _GROUPING.finditer(text):
        use.grouping_labels.update(x.strip() for x in m.group(2).split(",") if x.strip())
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    for m in _IDENT.finditer(text):
        name = m.group(0)
        if name.lower() in KEYWORDS:
            continue
        rest = text[m.end() :].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        use.metrics.setdefault(name, set())
    return use
