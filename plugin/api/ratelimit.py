"""Rate limits: token buckets refilled continuously, per agent/admin key, per widget client address and per widget
conversation (every customer shares one public widget key, so a per-key limit would let one of them starve all)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

MAX_BUCKETS = 50_000  # beyond this, full buckets (idle callers) are forgotten: memory stays bounded


class TokenBuckets:
    """One bucket per key: `burst` requests at once, then `rate` per second on average."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        self._lock = threading.Lock()  # auth runs in the threadpool, so buckets are shared across threads

    def take(self, key: str) -> float:
        """Spend one token; returns 0 when allowed, else the seconds until a token is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._forget_idle(now)
            return (1 - tokens) / self.rate if self.rate > 0 else math.inf

    def wait(self, key: str) -> float:
        """The seconds until `key` has a token (0: it has one now), spending none."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            return 0.0
        return (1 - tokens) / self.rate if self.rate > 0 else math.inf

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting one changes nothing for its caller."""
        full = [key for key, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]


@dataclass
class RateLimits:
    """The service's kinds of bucket."""

    keys: TokenBuckets  # agent and admin keys
    clients: TokenBuckets  # widget callers, by client address
    conversations: TokenBuckets  # widget calls on one conversation
    unknown_keys: TokenBuckets | None = None  # calls with a key that is not (or no longer) ours, by client address
