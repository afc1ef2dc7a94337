from __future__ import annotations

import pytest

from services.intake.backpressure import Limits, overload_reason
from services.intake.settings import DEV_SECRET, IntakeSettings

ALL = ("GENERIC", "SHOPIFY", "ZENDESK", "WHATSAPP", "TAOBAO", "PINDUODUO")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TICKETFLOW_LOCAL_STACK", raising=False)
    for s in ALL:
        monkeypatch.delenv(f"INTAKE_{s}_SECRET", raising=False)
        monkeypatch.delenv(f"INTAKE_{s}_SECRET_PREVIOUS", raising=False)
    for v in ("INTAKE_SOURCES", "INTAKE_PSEUDONYM_KEY", "INTAKE_WHATSAPP_VERIFY_TOKEN"):
        monkeypatch.delenv(v, raising=False)


def test_refuses_to_start_outside_local_stack_without_secrets_of_enabled_sources(monkeypatch):
    monkeypatch.setenv("INTAKE_SOURCES", "generic,shopify")
    monkeypatch.setenv("INTAKE_GENERIC_SECRET", "g")
    with pytest.raises(ValueError, match="INTAKE_SHOPIFY_SECRET") as err:
        IntakeSettings()
    assert "INTAKE_GENERIC_SECRET" not in str(err.value).split("not set")[0]
    monkeypatch.setenv("INTAKE_SHOPIFY_SECRET", "s")
    s = IntakeSettings()
    assert s.enabled_sources() == ["generic", "shopify"]
    assert s.secrets_for("shopify") == [b"s"]
    assert s.dev_fallbacks() == []


def test_default_enables_every_source_so_each_needs_its_secret():
    with pytest.raises(ValueError, match="refusing to start") as err:
        IntakeSettings()
    for s in ALL:
        assert f"INTAKE_{s}_SECRET" in str(err.value)
    assert "INTAKE_WHATSAPP_VERIFY_TOKEN" in str(err.value)
    assert "INTAKE_PSEUDONYM_KEY" in str(err.value)


def test_rotation_current_then_previous(monkeypatch):
    monkeypatch.setenv("INTAKE_SOURCES", "zendesk")
    monkeypatch.setenv("INTAKE_ZENDESK_SECRET", "new")
    monkeypatch.setenv("INTAKE_ZENDESK_SECRET_PREVIOUS", "old")
    s = IntakeSettings()
    assert s.secrets_for("zendesk") == [b"new", b"old"]
    assert "new" not in repr(s.masked()) and "old" not in repr(s.masked())


def test_local_stack_falls_back_to_development_values_and_says_so(monkeypatch):
    monkeypatch.setenv("TICKETFLOW_LOCAL_STACK", "true")
    s = IntakeSettings()
    assert s.secrets_for("taobao") == [DEV_SECRET.encode()]
    assert "INTAKE_TAOBAO_SECRET" in s.dev_fallbacks()
    assert s.uses_dev_secret()


def test_unknown_source_is_refused(monkeypatch):
    monkeypatch.setenv("TICKETFLOW_LOCAL_STACK", "true")
    monkeypatch.setenv("INTAKE_SOURCES", "generic,nope")
    with pytest.raises(ValueError, match="nope"):
        IntakeSettings()


def test_overload_reason():
    lim = Limits(max_backlog=100, max_latency=0.2)
    assert overload_reason(0, 0.001, lim) is None
    assert overload_reason(None, None, lim) is None
    assert "backlog" in (overload_reason(100, 0.0, lim) or "")
    assert "latency" in (overload_reason(5, 0.25, lim) or "")
    lag = Limits(max_backlog=100, max_latency=0.2, max_loop_lag=0.1)
    assert overload_reason(0, 0.0, lag, loop_lag=0.05) is None
    assert "loop lag" in (overload_reason(0, 0.0, lag, loop_lag=0.1) or "")
