"""What the services really export, read from shared.metrics.REGISTRY at test time, so a
metric added there counts at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from shared import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "rules_test.yml"
DASHBOARD = DEPLOY / "grafana" / "ticketflow.json"

# Labels Prometheus adds to every scraped series (job per service: deploy/prometheus/*.yml).
TARGET_LABELS = frozenset({"job", "instance"})
# Series Prometheus itself makes for every target.
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}


def exported() -> dict[str, frozenset[str]]:
    """Every sample name the registry can expose (counters' ``_total``/``_created``,
    histograms' ``_bucket``/``_sum``/``_count``/``_created``) with its label names
    (``le`` on ``_bucket``)."""
    out: dict[str, frozenset[str]] = {}
    # prometheus_client keeps the sample names per collector in _names_to_collectors
    # (what it uses to refuse duplicates), and each metric's label names in _labelnames.
    for name, collector in metrics.REGISTRY._names_to_collectors.items():
        labels = frozenset(getattr(collector, "_labelnames", ()))
        if name.endswith("_bucket"):
            labels = labels | {"le"}
        out[name] = labels
    out.update(PROMETHEUS_SERIES)
    return out


def recorded_names() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r.get("record") or r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"{p['title']} / {t['refId']}", t))
            walk(p.get("panels", []))

    walk(dashboard()["panels"])
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(where, t["expr"]) for where, t in dashboard_targets()]
