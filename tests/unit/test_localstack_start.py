"""A local process that does not come up says why: the end of its own log is in the error
(a CI run once saw only "PostgreSQL exited with code 2", its log gone with the run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.localstack import _wait_until


def _dying(log_file: Path) -> subprocess.Popen[bytes]:
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", "print('FATAL:  could not bind IPv4 address'); exit(2)"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def test_a_process_that_exits_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    log_file.write_text("earlier line\n")
    proc = _dying(log_file)
    proc.wait()
    with pytest.raises(RuntimeError) as err:
        _wait_until(lambda: False, 5, "PostgreSQL", proc, log_file)
    assert "PostgreSQL exited with code 2" in str(err.value)
    assert "could not bind IPv4 address" in str(err.value)


def test_a_timeout_names_the_log_too(tmp_path: Path) -> None:
    log_file = tmp_path / "broker.log"
    log_file.write_text("listening nowhere\n")
    with pytest.raises(TimeoutError, match="listening nowhere"):
        _wait_until(lambda: False, 0.1, "broker", None, log_file)


def test_without_a_log_the_code_alone(tmp_path: Path) -> None:
    proc = _dying(tmp_path / "elsewhere.log")
    proc.wait()
    with pytest.raises(RuntimeError, match=r"^broker exited with code 2$"):
        _wait_until(lambda: False, 5, "broker", proc)
