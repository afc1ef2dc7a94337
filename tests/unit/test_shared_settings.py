from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict

from shared.logging import redact
from shared.settings import DEFAULT_KAFKA, ServiceSettings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore", frozen=True)
    http_port: int = 9999
    widget: str = "x"


def test_shared_names_are_unprefixed_and_own_names_prefixed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db/x")
    monkeypatch.setenv("DEMO_WIDGET", "y")
    monkeypatch.setenv("DEMO_HTTP_PORT", "1234")
    monkeypatch.setenv("WIDGET", "wrong")
    s = DemoSettings()
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert s.widget == "y"
    assert s.http_port == 1234
    masked = s.masked()
    assert "pw" not in str(masked)


def test_defaults(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert DemoSettings().kafka_bootstrap_servers == DEFAULT_KAFKA


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DEMO_HTTP_PORT", "eighty")
    with pytest.raises(ValueError, match="http_port"):
        DemoSettings()


def test_redact_masks_phones_and_emails():
    assert redact("call 138-0013-8000 or a.b@example.com now") == "call <phone> or <email> now"
    assert "13800138000" not in redact("电话13800138000")
