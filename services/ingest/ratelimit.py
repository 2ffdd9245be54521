"""Per-store rate limiting: a token bucket per store, refilled continuously. Pure; the clock is passed in.

Buckets live in each ingest instance's memory: with N instances behind a load balancer a store gets up to
N times the rate. That is the point of the limit (protect the pipeline from one runaway store), not billing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    def __init__(self, rate_per_second: float, burst: float) -> None:
        self._rate = rate_per_second
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, cost: float, now: float) -> float:
        """Take `cost` tokens; return 0 when allowed, else the seconds to wait before retrying."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=self._burst, updated_at=now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated_at) * self._rate)
        bucket.updated_at = now
        if cost > self._burst:
            # A request bigger than the whole bucket could never pass; let it through once the bucket is full.
            cost = self._burst
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self._rate
