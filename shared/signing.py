"""The generic signature scheme, shared by inbound webhooks and outbound notifications:
``X-Timestamp: <unix seconds>`` and
``X-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"
DEFAULT_WINDOW_SECONDS = 300


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: bytes, body: bytes, now: float) -> dict[str, str]:
    ts = str(int(now))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, body)}


class SignatureError(Exception):
    """Why a signature was refused (never says which secret was close)."""


class HmacSha256:
    """HMAC-SHA256 under one key, with the key's inner and outer hash states computed
    once (RFC 2104): each message then costs two SHA-256 state copies and no key set-up,
    under half the time of ``hmac.new`` (which fetches and initialises a fresh OpenSSL
    context every time). Equal to ``hmac.new`` by test."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # the block size of SHA-256
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, *parts: bytes) -> bytes:
        inner = self._inner.copy()
        for part in parts:
            inner.update(part)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, *parts: bytes) -> str:
        return self.digest(*parts).hex()


class Verifier:
    """``verify`` for a fixed set of secrets and window, each secret's HMAC state
    computed once (a receiver checks many requests under the same secrets)."""

    __slots__ = ("_keys", "window")

    def __init__(self, secrets: Sequence[bytes], window: float = DEFAULT_WINDOW_SECONDS) -> None:
        self._keys = [HmacSha256(s) for s in secrets]
        self.window = window

    def __call__(
        self, timestamp: str | None, signature: str | None, body: bytes, now: float
    ) -> None:
        if not timestamp or not signature:
            raise SignatureError("missing X-Timestamp or X-Signature header")
        try:
            ts = int(timestamp)
        except ValueError:
            raise SignatureError("X-Timestamp is not unix seconds") from None
        if abs(now - ts) > self.window:
            raise SignatureError("X-Timestamp outside the replay window")
        given = signature.encode("utf-8", "surrogateescape")  # any header text compares
        stamp = timestamp.encode() + b"."
        ok = False
        for key in self._keys:  # compare against every secret: constant work per request
            ok |= hmac.compare_digest(b"sha256=" + key.hexdigest(stamp, body).encode(), given)
        if not ok:
            raise SignatureError("signature does not match")


def verify(
    secrets: Sequence[bytes],
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    window: float = DEFAULT_WINDOW_SECONDS,
) -> None:
    """Raise ``SignatureError`` unless ``signature`` matches one of ``secrets`` (rotation)
    and ``timestamp`` lies within ``window`` seconds of ``now`` (replay protection)."""
    Verifier(secrets, window)(timestamp, signature, body, now)
