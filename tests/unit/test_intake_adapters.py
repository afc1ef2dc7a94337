"""Every source adapter against the real payloads and published signature vectors in
../shared/fixtures/webhooks: the genuine request is accepted, its tampered twin refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

import pytest

from services.intake.adapters import ADAPTERS, Ignored, InvalidPayload
from services.intake.adapters.base import match_any
from services.intake.adapters.pinduoduo import PinduoduoAdapter
from services.intake.adapters.shopify import ShopifyAdapter
from services.intake.adapters.taobao import TaobaoAdapter
from services.intake.adapters.whatsapp import WhatsAppAdapter
from services.intake.adapters.zendesk import ZendeskAdapter
from shared.events import AuthorRole, MessageKind
from shared.signing import SignatureError, signed_headers
from tests.helpers import FIXTURES

VECTORS: dict[str, Any] = json.loads((FIXTURES / "SIGNATURE_TEST_VECTORS.json").read_text())
PERSONAL = ("Test Name", "972987654321", "Bob", "Biller", "Shipping Street", "555-555", "t**1")


def lower(h: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items()}


def tamper(body: bytes) -> bytes:
    """The tampered twin: one byte changed in the middle of the body."""
    i = len(body) // 2
    return body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]


def no_personal_data(inbounds: list[Any]) -> None:
    text = repr(inbounds)
    for p in PERSONAL:
        assert p not in text


# --- shopify ---------------------------------------------------------------------------
def test_shopify_accepts_vector_and_refuses_tampered_twin():
    v = VECTORS["shopify"][0]
    body = (FIXTURES / v["body_file"]).read_bytes()
    captured = json.loads(
        (FIXTURES / "shopify/orders_paid_test_notification.headers.json").read_text()
    )
    headers = lower(captured["headers"]) | {"x-shopify-hmac-sha256": v["X-Shopify-Hmac-Sha256"]}
    a = ShopifyAdapter([v["secret"].encode()])
    a.verify(headers, body, time.time())
    with pytest.raises(SignatureError):
        a.verify(headers, tamper(body), time.time())
    with pytest.raises(SignatureError):
        a.verify({k: x for k, x in headers.items() if k != "x-shopify-hmac-sha256"}, body, 0)
    # orders/paid is not a customer message: acknowledged and ignored, with the reason.
    with pytest.raises(Ignored, match="orders/paid"):
        a.parse(body, headers)


def test_shopify_captured_header_does_not_verify_under_a_wrong_secret():
    body = (FIXTURES / "shopify/orders_paid_test_notification.body.json").read_bytes()
    captured = json.loads(
        (FIXTURES / "shopify/orders_paid_test_notification.headers.json").read_text()
    )
    with pytest.raises(SignatureError):
        ShopifyAdapter([b"hush"]).verify(lower(captured["headers"]), body, time.time())


def test_shopify_rotation_accepts_previous_secret():
    v = VECTORS["shopify"][0]
    body = (FIXTURES / v["body_file"]).read_bytes()
    a = ShopifyAdapter([b"new-secret", v["secret"].encode()])
    a.verify({"x-shopify-hmac-sha256": v["X-Shopify-Hmac-Sha256"]}, body, 0)


def test_shopify_return_request_becomes_a_customer_message():
    body = json.dumps(
        {
            "id": 945000,
            "name": "#1001-R1",
            "order": {"id": 450789469},
            "return_line_items": [
                {"quantity": 1, "return_reason": "defective", "customer_note": "杯子是碎的"}
            ],
        }
    ).encode()
    [m] = ShopifyAdapter([b"s"]).parse(
        body,
        {
            "x-shopify-topic": "returns/request",
            "x-shopify-shop-domain": "s.myshopify.com",
            "x-shopify-webhook-id": "wh-1",
        },
    )
    assert m.kind is MessageKind.message_created and m.author_role is AuthorRole.customer
    assert m.source_event_id == "wh-1" and m.conversation_id == "return-945000"
    assert m.text and "杯子是碎的" in m.text and "defective" in m.text
    assert m.order is not None and m.order.id == "450789469"


# --- zendesk ---------------------------------------------------------------------------
def zendesk_headers(v: dict[str, str]) -> dict[str, str]:
    return {
        "x-zendesk-webhook-signature": v["x-zendesk-webhook-signature"],
        "x-zendesk-webhook-signature-timestamp": v["x-zendesk-webhook-signature-timestamp"],
    }


def test_zendesk_accepts_vector_and_refuses_tampered_twin_and_replay():
    v = VECTORS["zendesk"][0]
    body = v["body"].encode()
    signed_at = 1616648967.0  # 2021-03-25T05:09:27Z
    a = ZendeskAdapter([v["secret"].encode()], replay_window=300)
    a.verify(zendesk_headers(v), body, signed_at + 10)
    with pytest.raises(SignatureError, match="does not match"):
        a.verify(zendesk_headers(v), tamper(body), signed_at)
    with pytest.raises(SignatureError, match="replay"):
        a.verify(zendesk_headers(v), body, signed_at + 301)
    with pytest.raises(SignatureError, match="replay"):
        a.verify(zendesk_headers(v), body, time.time())
    [m] = a.parse(body, {"x-zendesk-webhook-invocation-id": "8350205582"})
    assert m.conversation_id == "ticket-12345" and m.text == "Where is my order?"
    assert m.source_event_id == "8350205582" and m.kind is MessageKind.message_created


def test_zendesk_timestamp_is_part_of_the_signature():
    v = VECTORS["zendesk"][0]
    h = zendesk_headers(v) | {"x-zendesk-webhook-signature-timestamp": "2021-03-25T05:09:28Z"}
    with pytest.raises(SignatureError):
        ZendeskAdapter([v["secret"].encode()]).verify(h, v["body"].encode(), 1616648968.0)


def test_zendesk_event_subscription_shapes():
    a = ZendeskAdapter([b"s"])

    def ev(t: str, event: dict[str, Any]) -> bytes:
        return json.dumps(
            {
                "type": f"zen:event-type:{t}",
                "id": f"e-{t}",
                "time": "2026-11-11T00:00:00Z",
                "account_id": 77,
                "detail": {"id": "501", "requester_id": "900", "via": {"channel": "web"}},
                "event": event,
            }
        ).encode()

    [c] = a.parse(
        ev("ticket.comment_added", {"comment": {"body": "on it", "author": {"is_staff": True}}}),
        {},
    )
    assert c.author_role is AuthorRole.agent and c.text == "on it" and c.shop_id == "77"
    [r] = a.parse(ev("ticket.status_changed", {"previous": "open", "current": "solved"}), {})
    assert r.kind is MessageKind.ticket_resolved
    [o] = a.parse(ev("ticket.status_changed", {"previous": "solved", "current": "open"}), {})
    assert o.kind is MessageKind.ticket_reopened
    with pytest.raises(Ignored):
        a.parse(ev("ticket.tags_changed", {}), {})
    with pytest.raises(InvalidPayload):
        a.parse(b'{"subject": "no ticket"}', {})


# --- whatsapp --------------------------------------------------------------------------
def test_whatsapp_published_vector():
    v = VECTORS["whatsapp"][0]
    a = WhatsAppAdapter([v["app_secret"].encode()])
    a.verify({"x-hub-signature-256": v["X-Hub-Signature-256"]}, v["body"].encode(), 0)
    with pytest.raises(SignatureError):
        a.verify({"x-hub-signature-256": v["X-Hub-Signature-256"]}, b"tesT", 0)


def test_whatsapp_accepts_real_message_and_refuses_tampered_twin():
    v = VECTORS["whatsapp"][1]
    body = (FIXTURES / v["body_file"]).read_bytes()
    h = {"x-hub-signature-256": v["X-Hub-Signature-256"]}
    a = WhatsAppAdapter([v["app_secret"].encode()], pseudonym_key=b"k")
    a.verify(h, body, time.time())
    with pytest.raises(SignatureError):
        a.verify(h, tamper(body), time.time())
    [m] = a.parse(body, h)
    assert m.source_event_id == "wamid.xyzxyz" and m.text == "Body Text"
    assert m.shop_id == "1122334455667" and m.author_role is AuthorRole.customer
    # The wa_id is the customer's phone number: only an HMAC pseudonym leaves the adapter.
    no_personal_data([m])
    assert m.customer is not None and m.customer.id.startswith("wa-")
    again = WhatsAppAdapter([b"x"], pseudonym_key=b"k").parse(body, h)[0]
    assert again.conversation_id == m.conversation_id  # stable
    other = WhatsAppAdapter([b"x"], pseudonym_key=b"other").parse(body, h)[0]
    assert other.conversation_id != m.conversation_id  # keyed


def test_whatsapp_statuses_only_are_ignored():
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "metadata": {"phone_number_id": "1"},
                                "statuses": [{"id": "wamid.1", "status": "read"}],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()
    with pytest.raises(Ignored):
        WhatsAppAdapter([b"s"]).parse(body, {})


def test_whatsapp_handshake():
    a = WhatsAppAdapter([b"s"], verify_token=b"tok")
    q = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "1158201444"}
    assert a.handshake(q) == "1158201444"
    with pytest.raises(SignatureError):
        a.handshake(q | {"hub.verify_token": "tok2"})
    with pytest.raises(SignatureError):
        a.handshake(q | {"hub.mode": "unsubscribe"})
    with pytest.raises(SignatureError):
        WhatsAppAdapter([b"s"]).handshake(q)  # no token configured: never echo


# --- taobao / pinduoduo (bridge-signed with the generic scheme) ------------------------
def test_taobao_refund_created_from_documented_envelope():
    fx = json.loads((FIXTURES / "taobao_tmc/tmc_message_format.json").read_text())
    body = json.dumps(fx["example_message_CONSTRUCTED_not_captured"], ensure_ascii=False).encode()
    secret = b"tmc-bridge"
    now = time.time()
    h = lower(signed_headers(secret, body, now))
    a = TaobaoAdapter([secret])
    a.verify(h, body, now)
    with pytest.raises(SignatureError):
        a.verify(h, tamper(body), now)
    with pytest.raises(SignatureError, match="replay"):
        a.verify(h, body, now + 301)
    [m] = a.parse(body, h)
    assert m.source_event_id == "3100000000001" and m.shop_id == "2200000000001"
    assert m.conversation_id == "refund-150000000000001"
    assert m.kind is MessageKind.message_created and m.author_role is AuthorRole.customer
    assert m.text is not None and "退款" in m.text and "59.90" in m.text
    assert m.order is not None and m.order.amount == Decimal("59.90") and m.order.currency == "CNY"
    assert m.occurred_at.utcoffset() is not None and m.occurred_at.hour == 10
    no_personal_data([m])
    assert "示例旗舰店" not in repr(m)


def test_taobao_trade_topic_is_ignored_and_refund_success_resolves():
    base = {"id": 1, "pub_time": "2024-05-01 10:00:00", "user_id": 2, "pub_app_key": "1"}
    content = json.dumps({"refund_id": 9, "tid": 8})
    with pytest.raises(Ignored):
        TaobaoAdapter([b"s"]).parse(
            json.dumps(base | {"topic": "taobao_trade_TradeBuyerPay", "content": "{}"}).encode(), {}
        )
    [m] = TaobaoAdapter([b"s"]).parse(
        json.dumps(base | {"topic": "taobao_refund_RefundSuccess", "content": content}).encode(), {}
    )
    assert m.kind is MessageKind.ticket_resolved and m.conversation_id == "refund-9"
    with pytest.raises(InvalidPayload):
        TaobaoAdapter([b"s"]).parse(
            json.dumps(
                base | {"topic": "taobao_refund_RefundCreated", "content": "{nope"}
            ).encode(),
            {},
        )


def test_pinduoduo_captured_refund_message():
    fx = json.loads((FIXTURES / "pinduoduo/pdd_message_format.json").read_text())
    body = json.dumps(fx["captured_message"]).encode()
    secret = b"pdd-bridge"
    now = time.time()
    h = lower(signed_headers(secret, body, now))
    a = PinduoduoAdapter([secret])
    a.verify(h, body, now)
    with pytest.raises(SignatureError):
        a.verify(h, tamper(body), now)
    [m] = a.parse(body, h)
    assert m.source_event_id == "pdd_refund_RefundCreated:7381745730:1625637425016"
    assert m.shop_id == "171504183" and m.conversation_id == "refund-7381745730"
    assert m.order is not None and m.order.amount == Decimal("19.90")
    assert m.order.id == "210707-339507978993455"
    assert m.text is not None and "19.90" in m.text and "仅退款" in m.text


# --- common ----------------------------------------------------------------------------
def test_match_any_checks_every_secret():
    def sig(s: bytes) -> str:
        return base64.b64encode(hmac.new(s, b"x", hashlib.sha256).digest()).decode()

    assert match_any([b"a", b"b"], sig, sig(b"b"))
    assert not match_any([b"a", b"b"], sig, sig(b"c"))
    assert not match_any([], sig, sig(b"a"))
    assert not match_any([b"a"], sig, "ünïcode")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
@pytest.mark.parametrize(
    "body",
    [b"", b"null", b"[]", b"{", b'"x"', b"1e999", b"[" * 5000 + b"]" * 5000, b"\xff\xfe"],
)
def test_every_adapter_refuses_garbage_with_invalid_payload(name: str, body: bytes):
    adapter = ADAPTERS[name]([b"s"])
    with pytest.raises((InvalidPayload, Ignored)):
        adapter.parse(body, {"x-shopify-topic": "returns/request"})
