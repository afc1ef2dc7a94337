"""Pure pieces of the notifier: acknowledgement link signatures and the rate limiter."""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from urllib.parse import quote


def ack_signature(key: bytes, escalation_id: str) -> str:
    """Signature of an acknowledgement link: HMAC-SHA256(key, "ack:" + id), hex, 32 chars."""
    return hmac.new(key, b"ack:" + escalation_id.encode(), hashlib.sha256).hexdigest()[:32]


def ack_ok(key: bytes, escalation_id: str, sig: str | None) -> bool:
    return bool(sig) and hmac.compare_digest(ack_signature(key, escalation_id), sig or "")


def ack_url(base_url: str, key: bytes | None, escalation_id: str) -> str | None:
    if key is None:
        return None
    eid = quote(escalation_id, safe="")
    return f"{base_url.rstrip('/')}/v1/ack/{eid}?sig={ack_signature(key, escalation_id)}"


class SlidingWindow:
    """At most ``rate`` sends in any ``window`` seconds (a vendor robot's "20 a minute").

    A sliding log rather than a token bucket: a bucket of ``rate`` tokens refilled over
    the window lets up to twice ``rate`` through in one window, which a robot answers with
    a ten-minute ban. ``take`` reserves a slot; ``done`` moves the slot's stamp to when
    the request finished, so the receiver (which counts arrivals) never sees more than
    ``rate`` in a window. ``block`` honours a vendor's "too fast" answer or Retry-After.
    """

    def __init__(self, rate: int | None, window: float) -> None:
        self.rate = rate
        self.window = window
        self._stamps: deque[float] = deque()
        self._blocked_until = 0.0

    def _trim(self, now: float) -> None:
        while self._stamps and self._stamps[0] <= now - self.window:
            self._stamps.popleft()

    def free(self, now: float) -> int:
        """Sends allowed right now (a large number when unlimited)."""
        if now < self._blocked_until:
            return 0
        if self.rate is None:
            return 1_000_000
        self._trim(now)
        return max(0, self.rate - len(self._stamps))

    def next_free_at(self, now: float) -> float:
        if now < self._blocked_until:
            return self._blocked_until
        if self.rate is None or self.free(now) > 0:
            return now
        return self._stamps[0] + self.window

    def take(self, now: float) -> float:
        """Reserve one slot; returns its stamp for ``done``."""
        if self.rate is not None:
            self._stamps.append(now)
        return now

    def done(self, stamp: float, finished: float) -> None:
        if self.rate is None:
            return
        try:
            i = self._stamps.index(stamp)
        except ValueError:
            return
        del self._stamps[i]
        # keep the log ordered: insert the finished stamp in place
        j = len(self._stamps)
        while j > 0 and self._stamps[j - 1] > finished:
            j -= 1
        self._stamps.insert(j, finished)

    def block(self, until: float) -> None:
        self._blocked_until = max(self._blocked_until, until)
