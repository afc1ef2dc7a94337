"""Notifier pure parts: vendor signatures against the vectors, bodies against the vendors'
documented formats, routes validation, messages, backoff, rate limiting, ack links."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from services.notifier.channels.base import Outcome, Result
from services.notifier.channels.dingtalk import dingtalk_body, dingtalk_sign, signed_url
from services.notifier.channels.feishu import feishu_body, feishu_sign
from services.notifier.channels.slack import slack_body
from services.notifier.channels.wecom import MAX_BYTES, wecom_body
from services.notifier.delivery import backoff, decide
from services.notifier.domain import SlidingWindow, ack_ok, ack_signature, ack_url
from services.notifier.messages import (
    duration,
    mask_ref,
    render_digest,
    render_escalation,
    summarise,
)
from services.notifier.routes import RoutesError, load_routes, parse_routes
from shared.events import Category, EscalationEvent, EscalationReason, Priority, Tier
from tests.helpers import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((FIXTURES / "SIGNATURE_TEST_VECTORS.json").read_text())
FORMATS = json.loads((FIXTURES / "robots" / "outbound_robot_formats.json").read_text())


def esc(**kw: object) -> EscalationEvent:
    base: dict[str, object] = {
        "correlation_id": "msg-1",
        "producer": "sla_watch",
        "escalation_id": "esc-1",
        "ticket_id": "tkt-1",
        "conversation_id": "conv-1",
        "reason": EscalationReason.first_response_breached,
        "priority": Priority.urgent,
        "tier": Tier.L2,
        "category": Category.complaint,
        "shop_id": "shop-1",
        "agent_id": "agent-7",
        "waiting_seconds": 192.0,
        "lateness_seconds": 162.0,
        "customer_ref": "cust-***8000",
        "occurred_at": datetime(2026, 11, 11, tzinfo=UTC),
    }
    base.update(kw)
    return EscalationEvent.model_validate(base)


def notice(locale: str = "zh"):  # type: ignore[no-untyped-def]
    return render_escalation(
        esc(), locale, ticket_url="https://desk/t/tkt-1", ack_url="https://n/v1/ack/esc-1?sig=x"
    )


# -- signatures -----------------------------------------------------------------------


@pytest.mark.parametrize("v", VECTORS["dingtalk"])
def test_dingtalk_sign_matches_vectors(v: dict[str, str]) -> None:
    assert dingtalk_sign(v["secret"], v["timestamp_ms"]) == v["sign_base64"]
    url = signed_url(
        "https://oapi.dingtalk.com/robot/send?access_token=XXXXXX",
        v["secret"],
        int(v["timestamp_ms"]) / 1000,
    )
    assert url == v["url"]


@pytest.mark.parametrize("v", VECTORS["feishu"])
def test_feishu_sign_matches_vectors_and_is_not_dingtalks(v: dict[str, str]) -> None:
    assert feishu_sign(v["secret"], v["timestamp_s"]) == v["sign"]
    assert (
        feishu_sign(v["secret"], v["timestamp_s"])
        != v["wrong_dingtalk_style_sign_should_be_rejected"]
    )
    assert (
        dingtalk_sign(v["secret"], v["timestamp_s"])
        == v["wrong_dingtalk_style_sign_should_be_rejected"]
    )
    body = feishu_body(notice(), v["secret"], float(v["timestamp_s"]), [], False)
    assert body["timestamp"] == v["timestamp_s"] and body["sign"] == v["sign"]


def test_dingtalk_without_secret_leaves_url_alone() -> None:
    assert signed_url("https://x/robot/send?access_token=a", None, 1.0).endswith("token=a")


# -- bodies against the documented formats --------------------------------------------


def test_dingtalk_body_has_documented_shape() -> None:
    body = dingtalk_body(notice(), ["user1"], False)
    documented = FORMATS["dingtalk_custom_robot"]["examples"][1]
    assert set(body) == set(documented)
    assert body["msgtype"] in FORMATS["dingtalk_custom_robot"]["msgtypes"]
    assert set(body["markdown"]) == {"title", "text"}
    assert "@user1" in body["markdown"]["text"] and body["at"]["atUserIds"] == ["user1"]


def test_wecom_body_has_documented_shape_and_size_limit() -> None:
    body = wecom_body(notice(), ["zhangsan"], True)
    documented = FORMATS["wecom_group_robot"]["examples"][1]
    assert set(body) == set(documented) and set(body["markdown"]) == {"content"}
    assert "<@zhangsan>" in body["markdown"]["content"]
    huge = render_digest(
        "dig-1",
        summarise([esc(escalation_id=f"e{i}", ticket_id="t" * 150) for i in range(50)], top=50),
        "zh",
        ticket_base_url="https://desk/t/",
    )
    assert len(wecom_body(huge, [], False)["markdown"]["content"].encode()) <= MAX_BYTES


def test_feishu_body_has_documented_shape() -> None:
    body = feishu_body(notice(), "s", 1599360473.0, [], False)
    documented = FORMATS["feishu_lark_custom_bot"]["examples"][0]
    assert set(body) == set(documented)
    assert set(body["content"]) == {"text"}
    assert "timestamp" not in feishu_body(notice(), None, 1.0, [], False)


def test_slack_body_has_documented_shape() -> None:
    body = slack_body(notice("en"), [])
    documented = FORMATS["slack_incoming_webhook"]["examples"][1]
    assert set(body) == set(documented)
    assert body["blocks"][0]["text"]["type"] == "mrkdwn"
    assert "<https://desk/t/tkt-1|Open ticket>" in body["blocks"][0]["text"]["text"]


# -- messages ---------------------------------------------------------------------------


def test_message_zh_names_what_happened_and_links() -> None:
    text = notice("zh").text()
    for part in [
        "首次响应超时",
        "超时 2分42秒",
        "紧急",
        "投诉",
        "3分12秒",
        "agent-7",
        "https://desk/t/tkt-1",
        "https://n/v1/ack/esc-1?sig=x",
        "cust-***8000",
        "第1级",
    ]:
        assert part in text, part


def test_message_en_and_routed_to_l2() -> None:
    n = render_escalation(
        esc(reason=EscalationReason.routed_to_l2, lateness_seconds=None, agent_id=None),
        "en",
        ticket_url="https://desk/t/tkt-1",
        ack_url=None,
        level=2,
    )
    text = n.text()
    assert "routed straight to second line" in text and "unassigned" in text
    assert "level 2" in n.title and "Acknowledge" not in text


def test_customer_reference_is_masked_again() -> None:
    leaky = render_escalation(
        esc(customer_ref="13800138000"), "zh", ticket_url="u", ack_url=None
    ).text()
    assert "13800138000" not in leaky and "13*******00" in leaky
    assert mask_ref("a.b@example.com") == "a***@***"
    assert mask_ref(None) == "-"


def test_duration() -> None:
    assert duration(3725, "en") == "1h2m5s" and duration(0, "zh") == "0秒"
    assert duration(None, "en") == "-"


def test_digest_counts_worst_and_top() -> None:
    escs = [
        esc(
            escalation_id="a",
            priority=Priority.normal,
            category=Category.logistics,
            waiting_seconds=10,
        ),
        esc(
            escalation_id="b",
            priority=Priority.urgent,
            category=Category.complaint,
            waiting_seconds=50,
        ),
        esc(
            escalation_id="c",
            priority=Priority.urgent,
            category=Category.complaint,
            waiting_seconds=90,
        ),
    ]
    s = summarise(escs, top=2)
    assert s["count"] == 3
    assert s["by_priority"] == {"normal": 1, "urgent": 2}
    assert s["by_category"] == {"logistics": 1, "complaint": 2}
    assert [i["escalation_id"] for i in s["top"]] == ["c", "b"]
    assert s["max_waiting_seconds"] == 90
    text = render_digest("dig-1", s, "en", ticket_base_url="https://desk/t/").text()
    assert "Total: 3" in text and "urgent 2" in text and "1m30s" in text
    assert "合计 3 条" in render_digest("dig-1", s, "zh", ticket_base_url="x").title


# -- delivery policy ----------------------------------------------------------------------


def test_backoff_is_bounded_jittered_and_honours_retry_after() -> None:
    for attempt in range(1, 10):
        assert 0 <= backoff(attempt, 0.5, 30) <= min(30, 0.5 * 2 ** (attempt - 1))
    assert backoff(1, 0.5, 30, retry_after=7) >= 7
    assert len({backoff(5, 0.5, 30) for _ in range(20)}) > 1


def test_decide() -> None:
    assert decide(Result(Outcome.delivered), 1, 5, 0.1, 1).status == "delivered"
    assert decide(Result(Outcome.failed, "HTTP 404"), 1, 5, 0.1, 1).status == "failed"
    d = decide(Result(Outcome.retry, "HTTP 503"), 2, 5, 0.1, 1)
    assert d.status == "pending" and d.retry_in is not None and d.retry_in <= 0.2
    last = decide(Result(Outcome.retry, "HTTP 503"), 5, 5, 0.1, 1)
    assert last.status == "failed" and "gave up after 5 attempts" in last.detail


def test_sliding_window_never_exceeds_rate_in_any_window() -> None:
    w = SlidingWindow(3, 10.0)
    assert w.free(0) == 3
    for _ in range(3):
        w.done(w.take(0), 1.0)  # finished at t=1
    assert w.free(5) == 0
    assert w.next_free_at(5) == 11.0  # counted from when the request finished
    assert w.free(11.0) == 3
    w.block(20)
    assert w.free(15) == 0 and w.next_free_at(15) == 20
    assert SlidingWindow(None, 10).free(0) > 1000


def test_ack_links() -> None:
    sig = ack_signature(b"k", "esc-1")
    assert ack_ok(b"k", "esc-1", sig)
    assert not ack_ok(b"k", "esc-2", sig) and not ack_ok(b"other", "esc-1", sig)
    assert not ack_ok(b"k", "esc-1", None)
    assert ack_url("http://h/", b"k", "esc-1") == f"http://h/v1/ack/esc-1?sig={sig}"
    assert ack_url("http://h", None, "esc-1") is None


# -- routes -------------------------------------------------------------------------------

GOOD = """
channels:
  ding: {type: dingtalk, url: "http://x/robot/send?access_token=${TOKEN}", secret: s}
  mail: {type: email, smtp_host: h, from_addr: a@b.c, to: [d@e.f]}
routes:
  - name: urgent-complaints
    match: {category: [complaint], priority: [urgent], tier: [L2]}
    levels:
      - {after_minutes: 0, channels: [ding]}
      - {after_minutes: 10, channels: [mail]}
  - name: shop-2
    match: {shop: [shop-2]}
    levels: [{channels: [mail]}]
"""


def test_routes_parse_and_match_in_order() -> None:
    cfg = parse_routes(GOOD, {"TOKEN": "tok"})
    assert cfg.channels["ding"].url == "http://x/robot/send?access_token=tok"
    assert cfg.channels["ding"].rate() == 20 and cfg.channels["mail"].rate() is None
    r = cfg.route_for(esc())
    assert r is not None and r.name == "urgent-complaints" and r.levels[1].after_minutes == 10
    r2 = cfg.route_for(esc(category=Category.logistics, shop_id="shop-2"))
    assert r2 is not None and r2.name == "shop-2"
    assert cfg.route_for(esc(category=Category.logistics)) is None


def test_example_routes_file_is_valid() -> None:
    env = {
        k: "x"
        for k in [
            "DINGTALK_L2_TOKEN",
            "DINGTALK_L2_SECRET",
            "WECOM_L2_KEY",
            "FEISHU_HOOK_ID",
            "FEISHU_SECRET",
            "SMTP_PASSWORD",
        ]
    }
    env["SLACK_WEBHOOK_URL"] = "https://hooks.slack.com/services/T/B/X"
    cfg = load_routes(ROOT / "deploy" / "notifier.routes.example.yaml", env)
    assert {c.type for c in cfg.channels.values()} == {
        "dingtalk",
        "wecom",
        "feishu",
        "slack",
        "email",
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("channels: [", "not valid YAML"),
        ("- a", "must be a mapping"),
        (GOOD.replace("channels: [mail]}", "channels: [nope]}"), "unknown channel 'nope'"),
        (
            GOOD.replace(", secret: s", "").replace(
                'url: "http://x/robot/send?access_token=${TOKEN}"', ""
            ),
            "needs `url`",
        ),
        (GOOD.replace("${TOKEN}", "${MISSING_VAR}"), "MISSING_VAR is not set"),
        (GOOD.replace("after_minutes: 10", "after_minutes: 0"), "must increase"),
        (
            GOOD.replace(
                "{after_minutes: 0, channels: [ding]}", "{after_minutes: 1, channels: [ding]}"
            ),
            "must be 0",
        ),
        (GOOD.replace("ding:", "generic:").replace("[ding]", "[generic]"), "reserved"),
        (GOOD.replace("type: email,", "type: email, colour: red,"), "Extra inputs"),
        (GOOD.replace("type: dingtalk", "type: telegram"), "type"),
        (GOOD.replace("category: [complaint]", "category: [complaints]"), "category"),
        (GOOD.replace("to: [d@e.f]", "to: [nobody]"), "not an e-mail address"),
        (GOOD.replace("name: shop-2", "name: urgent-complaints"), "unique"),
    ],
)
def test_bad_routes_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(RoutesError) as info:
        parse_routes(text, {"TOKEN": "t"})
    assert reason in str(info.value)


def test_missing_routes_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutesError, match="cannot read"):
        load_routes(tmp_path / "nope.yaml", {})
    f = tmp_path / "r.yaml"
    f.write_text(GOOD.replace("[mail]}", "[x]}"))
    with pytest.raises(RoutesError, match=str(f)):
        load_routes(f, {"TOKEN": "t"})


def test_dingtalk_signed_url_parts() -> None:
    url = signed_url("http://x/robot/send?access_token=a", "sec", 1700000000.123)
    q = parse_qs(urlsplit(url).query)
    assert q["timestamp"] == ["1700000000123"] and q["access_token"] == ["a"]
    assert q["sign"] == [dingtalk_sign("sec", "1700000000123")]


# -- start-up -------------------------------------------------------------------------------


def test_the_service_refuses_a_bad_routes_file_at_start_up(tmp_path: Path) -> None:
    from services.notifier.app import build
    from services.notifier.settings import NotifierSettings

    f = tmp_path / "routes.yaml"
    f.write_text(GOOD.replace("[mail]}", "[nope]}").replace("${TOKEN}", "tok"))
    with pytest.raises(RoutesError, match="unknown channel 'nope'"):
        build(NotifierSettings(routes_file=f, local_stack=True))


def test_secrets_are_required_outside_the_local_stack(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from services.notifier.settings import NotifierSettings

    with pytest.raises(ValidationError, match="NOTIFIER_ACK_SECRET"):
        NotifierSettings(routes_file=tmp_path / "r.yaml", local_stack=False)
    with pytest.raises(ValidationError, match="NOTIFIER_GENERIC_WEBHOOK_SECRET"):
        NotifierSettings(generic_webhook_url="http://x/hook", local_stack=False)
    s = NotifierSettings(local_stack=False)
    assert s.ack_key() is None  # no links without a secret
    assert NotifierSettings(local_stack=True).ack_key() is not None


def test_generic_webhook_body_names_the_contract_fields_and_who_holds_the_ticket():
    from services.notifier.channels.generic import body_for

    body = json.loads(body_for(notice()))
    for name in ("escalation_id", "ticket_id", "conversation_id", "reason", "priority", "tier"):
        assert body[name] is not None, name
    assert body["category"] == "complaint" and body["occurred_at"].startswith("2026-11-11")
    assert body["agent_id"] == "agent-7"
    assert body["channel"] is None
    email = render_escalation(
        esc(channel="email"), "en", ticket_url="https://desk/t/tkt-1", ack_url=None
    )
    assert json.loads(body_for(email))["channel"] == "email"
