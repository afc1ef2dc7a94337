"""Every metric a dashboard query, a rule or a rule test names is one the services really
export, and every label it matches or groups by is one that metric carries."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.ops import exported as ex
from tests.ops.promql import read

EXPORTED = ex.exported()
RECORDED = ex.recorded_names()


def _problems(expr: str) -> list[str]:
    use = read(expr)
    problems: list[str] = []
    known_labels: set[str] = set(ex.TARGET_LABELS)
    for name, labels in use.metrics.items():
        if name in RECORDED:
            continue  # a recording rule of rules.yml; its inputs are checked there
        if ":" in name:
            problems.append(f"{name}: no recording rule of that name in rules.yml")
            continue
        if name not in EXPORTED:
            problems.append(f"{name}: not exported by the services (shared/metrics.py)")
            continue
        have = EXPORTED[name] | ex.TARGET_LABELS
        known_labels |= have
        problems += [f"{name}{{{lb}}}: the metric has no label {lb}" for lb in labels - have]
    if not any(n in RECORDED for n in use.metrics):
        problems += [
            f"by/on ({lb}): no metric of the query has label {lb}"
            for lb in use.grouping_labels - known_labels
        ]
    return problems


@pytest.mark.parametrize(("where", "expr"), ex.dashboard_exprs(), ids=lambda v: str(v)[:60])
def test_dashboard_query_names_exported_metrics(where: str, expr: str) -> None:
    assert _problems(expr) == [], where


@pytest.mark.parametrize(("rule", "expr"), ex.rule_exprs(), ids=lambda v: str(v)[:60])
def test_rule_names_exported_metrics(rule: str, expr: str) -> None:
    assert _problems(expr) == [], rule


@pytest.mark.parametrize(("where", "target"), ex.dashboard_targets(), ids=lambda v: str(v)[:60])
def test_dashboard_legends_name_labels_the_query_keeps(where: str, target: dict[str, str]) -> None:
    """A legend {{label}} that the query aggregates away renders as an empty string."""
    use = read(target["expr"])
    legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
    if re.search(r"\b(sum|max|min|avg|count|topk|bottomk|quantile)\b(?!_)", target["expr"]):
        kept = use.grouping_labels  # an aggregation keeps only its `by` labels
    else:
        kept = set(ex.TARGET_LABELS).union(*(EXPORTED.get(n, set()) for n in use.metrics))
    assert legend <= kept, where


def test_rule_unit_tests_feed_real_series() -> None:
    doc = yaml.safe_load(ex.RULE_TESTS.read_text())
    series = [s["series"] for t in doc["tests"] for s in t["input_series"]]
    assert series
    problems = [p for s in series for p in _problems(s)]
    assert problems == []


def test_the_check_catches_a_wrong_name_and_a_wrong_label() -> None:
    assert _problems("sum(rate(sla_breach_total[5m]))")  # misspelt
    assert _problems('sum(rate(sla_breaches_total{channel="x"}[5m]))')  # no such label
    assert _problems("sum by (channel) (rate(sla_breaches_total[5m]))")
    assert _problems("sum by (category) (rate(sla_breaches_total[5m]))") == []
    assert _problems("ticketflow:nope:rate5m")
    assert _problems("sum by (le) (rate(sla_first_response_seconds_bucket[5m]))") == []
    assert _problems('up{job="router"} == 0') == []


def test_histograms_and_counters_are_read_with_their_suffixes() -> None:
    assert "sla_first_response_seconds_bucket" in EXPORTED
    assert "le" in EXPORTED["sla_first_response_seconds_bucket"]
    assert "sla_breaches_total" in EXPORTED


def test_dashboard_covers_the_domain_kpis() -> None:
    """The brief's KPIs each have a panel that queries the metric behind them."""
    exprs = " ".join(e for _, e in ex.dashboard_exprs())
    needed = {
        "response speed": "sla_first_response_seconds_bucket",
        "30-second share": "sla_first_response_seconds_count",
        "complaint 24-hour share": 'sla_met_total{sla="resolution"}',
        "breaches by tier": "sum by (tier) (rate(sla_breaches_total",
        "routing by category": "sum by (category) (rate(router_decisions_total",
        "breaches by category": "sum by (category) (rate(sla_breaches_total",
        "queue depth": "router_queue_depth",
        "queue age": "router_queue_oldest_age_seconds",
        "intake latency": "intake_request_seconds_bucket",
        "router latency": "router_decision_seconds_bucket",
        "processing latency": "ticketflow_processing_seconds_bucket",
        "consumer lag": "ticketflow_consumer_lag_messages",
        "outbox backlog": "ticketflow_outbox_backlog",
        "unacknowledged escalations": "notifier_unacknowledged_escalations",
    }
    missing = [k for k, v in needed.items() if v not in exprs]
    assert missing == []


def test_dashboard_is_grafana_shaped() -> None:
    d = ex.dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    panels = [p for p in d["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
