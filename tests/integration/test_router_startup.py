"""The router as users start it: a bad rules file stops it at start-up, naming the line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_bad_rules_file_refuses_the_start_with_line_and_reason(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("categories:\n  complaint: [投诉\n", encoding="utf-8")
    env = dict(os.environ, ROUTER_RULES_FILE=str(bad), TICKETFLOW_LOCAL_STACK="true")
    r = subprocess.run(
        [sys.executable, "-m", "services.router"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert "refusing to start" in r.stderr
    assert f"{bad}:" in r.stderr  # file and line
