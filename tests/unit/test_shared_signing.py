from __future__ import annotations

import hashlib
import hmac

import pytest

from shared.signing import SignatureError, sign, signed_headers, verify

SECRET = b"s3cret"
BODY = '{"text":"收到的杯子是碎的"}'.encode()


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1700000000", BODY) == "sha256=" + expected


def test_verify_accepts_current_and_previous_secret() -> None:
    h = signed_headers(b"old", BODY, 1_700_000_000)
    verify([b"new", b"old"], h["X-Timestamp"], h["X-Signature"], BODY, 1_700_000_010)


@pytest.mark.parametrize(
    ("ts", "sig", "body", "now", "why"),
    [
        (None, "sha256=00", BODY, 0, "missing"),
        ("1700000000", None, BODY, 1_700_000_000, "missing"),
        ("yesterday", "sha256=00", BODY, 1_700_000_000, "unix seconds"),
        ("1700000000", sign(SECRET, "1700000000", BODY), BODY, 1_700_000_301, "replay"),
        ("1700000000", sign(SECRET, "1700000000", BODY), BODY, 1_699_999_699, "replay"),
        ("1700000000", sign(SECRET, "1700000000", BODY), BODY + b" ", 1_700_000_000, "match"),
        ("1700000001", sign(SECRET, "1700000000", BODY), BODY, 1_700_000_000, "match"),
    ],
)
def test_verify_refuses(ts, sig, body, now, why) -> None:
    with pytest.raises(SignatureError, match=why):
        verify([SECRET], ts, sig, body, now)


def test_window_edges_are_inclusive() -> None:
    s = sign(SECRET, "1700000000", BODY)
    verify([SECRET], "1700000000", s, BODY, 1_700_000_300)
    verify([SECRET], "1700000000", s, BODY, 1_699_999_700)
