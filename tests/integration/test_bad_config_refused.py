"""Services as users start them: a bad configuration file stops the start (exit status 2),
naming the file and the reason on stderr and in the log."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.localstack import ROOT, free_port

pytestmark = pytest.mark.integration

CASES = [
    # service, variable naming the file, a bad file, what stderr must say, the log's words
    (
        "router",
        "ROUTER_RULES_FILE",
        "categories:\n  complaint: [投诉\n",
        "not valid YAML",
        "bad rules file",
    ),
    (
        "sla_watch",
        "SLA_WATCH_POLICY_FILE",
        "policies:\n  - name: a\n    clocks: {first_response: {limit: -5}}\n",
        "limit must be positive",
        "bad SLA policy file",
    ),
    (
        "notifier",
        "NOTIFIER_ROUTES_FILE",
        "channels: [\n",
        "",
        "bad routes file",
    ),
]


@pytest.mark.parametrize(("service", "variable", "content", "reason", "logged"), CASES)
def test_a_bad_file_refuses_the_start_with_file_and_reason(
    tmp_path, service, variable, content, reason, logged
):
    bad = tmp_path / "config.yaml"
    bad.write_text(content, encoding="utf-8")
    port = f"{service.upper()}_HTTP_PORT"
    env = {
        **os.environ,
        variable: str(bad),
        port: str(free_port()),
        "TICKETFLOW_LOCAL_STACK": "true",
    }
    r = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"{service}: refusing to start" in r.stderr
    assert str(bad) in r.stderr  # the file, and where it names one, the line
    assert reason in r.stderr
    assert f"refusing to start: {logged}" in r.stdout + r.stderr
