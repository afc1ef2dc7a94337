"""deploy/compose.yaml and deploy/Dockerfile, checked for structure (Docker cannot run on
the development machine): every service has its image, command, environment and a
/readyz healthcheck on the contract's port; jobs run the real commands; files the stack
mounts or copies exist; nothing sets TICKETFLOW_LOCAL_STACK; the service env names are
ones the settings classes read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.exported import DEPLOY, ROOT

COMPOSE = DEPLOY / "compose.yaml"
SERVICES = {"intake": 8080, "router": 8081, "sla_watch": 8082, "notifier": 8083}
PREFIX = {"intake": "INTAKE", "router": "ROUTER", "sla_watch": "SLA_WATCH", "notifier": "NOTIFIER"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the << merges
    return doc


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    assert isinstance(env, dict)
    return {k: str(v) for k, v in env.items()}


@pytest.mark.parametrize(("name", "port"), SERVICES.items())
def test_each_service_runs_from_the_one_image(
    compose: dict[str, Any], name: str, port: int
) -> None:
    svc = compose["services"][name]
    assert svc["image"].startswith("ticketflow:")
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert svc["command"] == ["python", "-m", f"services.{name}"]
    assert (ROOT / "services" / name / "__main__.py").is_file()
    env = _env(svc)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert (
        env["DATABASE_URL"].startswith("postgresql://ticketflow:")
        and "@postgres:5432/" in env["DATABASE_URL"]
    )
    assert env[f"{PREFIX[name]}_HTTP_PORT"] == str(port)
    assert svc["ports"] == [f"{port}:{port}"]
    check = " ".join(svc["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/readyz" in check
    assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    for f in svc.get("env_file", []):
        assert (DEPLOY / f"{f}.example").is_file(), f"{f}: no committed example"


def test_no_service_runs_as_the_local_stack(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        assert "TICKETFLOW_LOCAL_STACK" not in _env(svc), name
    for f in (DEPLOY / "env").glob("*.example"):
        assert not re.search(r"^\s*TICKETFLOW_LOCAL_STACK", f.read_text(), re.M), f.name
    assert "TICKETFLOW_LOCAL_STACK" not in (DEPLOY / "Dockerfile").read_text()


def test_services_bind_all_interfaces_in_the_image() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for prefix in PREFIX.values():
        assert f"{prefix}_HTTP_HOST=0.0.0.0" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M), "the image runs as a non-root user"
    assert "requirements.lock" in text and "FROM python:3.11-slim" in text


def test_dockerfile_copies_what_exists() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_jobs_run_the_real_commands(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert s["migrate"]["command"] == ["python", "-m", "shared.db", "migrate"]
    assert s["migrate"]["restart"] == "no"
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert s["topics"]["command"][:2] == ["python", "deploy/create_topics.py"]
    assert s["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert (DEPLOY / "create_topics.py").is_file()


def test_kafka_is_kraft_single_node(compose: dict[str, Any]) -> None:
    k = compose["services"]["kafka"]
    assert k["image"].startswith("apache/kafka:")
    env = _env(k)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in k and "healthcheck" in compose["services"]["postgres"]


def test_prometheus_and_grafana_mount_files_that_exist(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        for v in compose["services"][name]["volumes"]:
            src = v.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), f"{name}: {src}"
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        c["job_name"]: t
        for c in prom["scrape_configs"]
        for s in c["static_configs"]
        for t in s["targets"]
    }
    assert targets == {n: f"{n}:{p}" for n, p in SERVICES.items()}
    local = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.local.yml").read_text())
    targets = {
        c["job_name"]: t
        for c in local["scrape_configs"]
        for s in c["static_configs"]
        for t in s["targets"]
    }
    assert targets == {n: f"127.0.0.1:{p}" for n, p in SERVICES.items()}


def test_env_examples_name_settings_the_services_read() -> None:
    """A typo in an env example would be ignored silently (extra="ignore"): every
    <PREFIX>_NAME there is a field of that service's settings (or a source secret)."""
    from services.intake.adapters import ADAPTERS
    from services.intake.settings import IntakeSettings
    from services.notifier.settings import NotifierSettings
    from services.router.settings import RouterSettings
    from services.sla_watch.settings import SlaWatchSettings

    classes = {
        "intake": IntakeSettings,
        "router": RouterSettings,
        "sla_watch": SlaWatchSettings,
        "notifier": NotifierSettings,
    }
    for name, cls in classes.items():
        known = {f"{PREFIX[name]}_{f.upper()}" for f in cls.model_fields}
        if name == "intake":
            known |= {f"INTAKE_{s.upper()}_SECRET{p}" for s in ADAPTERS for p in ("", "_PREVIOUS")}
        text = (DEPLOY / "env" / f"{name}.env.example").read_text()
        used = set(re.findall(rf"^#?\s*({PREFIX[name]}_[A-Z0-9_]+)=", text, re.M))
        assert used - known == set(), name


def test_secrets_stay_out_of_git() -> None:
    assert Path(DEPLOY / ".gitignore").read_text().split() == [".env"]
    assert "*.env" in (DEPLOY / "env" / ".gitignore").read_text()
