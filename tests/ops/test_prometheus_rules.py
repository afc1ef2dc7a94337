"""The Prometheus artefacts under deploy/prometheus/ pass Prometheus' own checks:
`promtool check config` (compose and local), `promtool check rules`, the rule unit tests
(`promtool test rules`), and the dashboard's queries parse as PromQL.

promtool comes from Debian's `prometheus` package; `make test` installs it first when it
is missing and we are root (deploy/ensure-promtool.sh). Without it these tests skip and
say why; the metric-name tests (test_metric_names.py) run regardless."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ops import exported as ex
from tests.ops.promql import substitute_grafana

PROM = ex.DEPLOY / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install Debian's `prometheus` package (`make test` does so "
    "when run as root, see docs/operations.md)",
)


def promtool(*args: str | Path, cwd: Path | None = None) -> str:
    assert PROMTOOL is not None
    r = subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    return out


@needs_promtool
def test_rules_file_is_valid() -> None:
    out = promtool("check", "rules", PROM / "rules.yml")
    assert "SUCCESS" in out


@needs_promtool
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_scrape_config_is_valid(config: str) -> None:
    out = promtool("check", "config", PROM / config)
    assert "rules found" in out  # the rule file was found and loaded with it


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    out = promtool("test", "rules", "tests/rules_test.yml", cwd=PROM)
    assert "SUCCESS" in out


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as a recording rule), the real PromQL parser."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute_grafana(expr)}
        for i, (_, expr) in enumerate(ex.dashboard_exprs())
    ]
    f = tmp_path / "dashboard_rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool("check", "rules", f)
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_every_alert_has_severity_summary_and_runbook() -> None:
    doc = yaml.safe_load((PROM / "rules.yml").read_text())
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 8
    for a in alerts:
        assert a["labels"]["severity"] in {"critical", "warning"}, a["alert"]
        assert a["annotations"]["summary"], a["alert"]
        runbook = a["annotations"]["runbook"]
        assert "\n" not in runbook.strip() and len(runbook) > 30, a["alert"]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    doc = yaml.safe_load((PROM / "rules.yml").read_text())
    alerts = {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(ex.RULE_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert alerts - fired == set(), "alerts never shown to fire"
    assert alerts - silent == set(), "alerts never shown to stay silent"


def test_every_alert_is_in_the_runbooks() -> None:
    doc = yaml.safe_load((PROM / "rules.yml").read_text())
    text = (ex.ROOT / "docs" / "operations.md").read_text()
    missing = [
        r["alert"]
        for g in doc["groups"]
        for r in g["rules"]
        if "alert" in r and r["alert"] not in text
    ]
    assert missing == []
