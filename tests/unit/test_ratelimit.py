from __future__ import annotations

import pytest

from services.ingest.ratelimit import RateLimiter


def test_burst_then_refill_at_the_rate() -> None:
    limiter = RateLimiter(rate_per_second=10, burst=20)
    assert limiter.take("s", 20, now=0.0) == 0
    assert limiter.take("s", 1, now=0.0) == pytest.approx(0.1)
    assert limiter.take("s", 5, now=0.5) == 0  # 5 tokens came back in half a second
    assert limiter.take("s", 1, now=0.5) > 0


def test_stores_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(rate_per_second=1, burst=1)
    assert limiter.take("a", 1, now=0.0) == 0
    assert limiter.take("b", 1, now=0.0) == 0
    assert limiter.take("a", 1, now=0.0) == pytest.approx(1.0)


def test_a_request_larger_than_the_burst_waits_for_a_full_bucket_instead_of_never_passing() -> None:
    limiter = RateLimiter(rate_per_second=100, burst=50)
    assert limiter.take("s", 2500, now=0.0) == 0
    assert limiter.take("s", 2500, now=0.1) == pytest.approx(0.4)
    assert limiter.take("s", 2500, now=0.5) == 0
