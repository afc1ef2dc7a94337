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
    if not timestamp or not signature:
        raise SignatureError("missing X-Timestamp or X-Signature header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError("X-Timestamp is not unix seconds") from None
    if abs(now - ts) > window:
        raise SignatureError("X-Timestamp outside the replay window")
    ok = False
    for secret in secrets:  # compare against every secret: constant work per request
        ok |= hmac.compare_digest(sign(secret, timestamp, body), signature)
    if not ok:
        raise SignatureError("signature does not match")
