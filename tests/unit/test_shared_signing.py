from __future__ import annotations

import hashlib
import hmac

import pytest

from shared.signing import HmacSha256, SignatureError, Verifier, sign, signed_headers, verify

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


@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64, 65, 200])
def test_hmac_sha256_equals_hmac_new(key_len: int) -> None:
    key = bytes(range(key_len))
    h = HmacSha256(key)
    for parts in [(), (b"",), (BODY,), (b"1700000000.", BODY), (b"a", b"b", b"c" * 1000)]:
        expected = hmac.new(key, b"".join(parts), hashlib.sha256)
        assert h.digest(*parts) == expected.digest()
        assert h.hexdigest(*parts) == expected.hexdigest()
    assert h.digest(b"once") == h.digest(b"once")  # the key states are not consumed


def test_verifier_refuses_a_non_ascii_signature_as_a_signature_error() -> None:
    v = Verifier([SECRET], 300)
    with pytest.raises(SignatureError, match="match"):
        v("1700000000", "sha256=ünïcode", BODY, 1_700_000_000)
    with pytest.raises(SignatureError, match="match"):
        v("1700000000", "sha256=\udcff", BODY, 1_700_000_000)
    v("1700000000", sign(SECRET, "1700000000", BODY), BODY, 1_700_000_000)


def test_verifier_with_no_secret_accepts_nothing() -> None:
    with pytest.raises(SignatureError, match="match"):
        Verifier([], 300)("1700000000", sign(SECRET, "1700000000", BODY), BODY, 1_700_000_000)
