"""The per-client-address limit in front of every service: before routing, auth and parsing."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from shared.ratelimit import (
    ClientRateLimitMiddleware,
    RateLimiter,
    client_address,
    limit_key,
    parse_networks,
)


def _app(trusted: str = "", now: list[float] | None = None) -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    reached: list[int] = []
    clock = now if now is not None else [0.0]

    @app.post("/v1/things")
    async def things(request: Request) -> dict[str, int]:
        reached.append(len(await request.body()))
        return {"ok": 1}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(
        ClientRateLimitMiddleware,
        service="test",
        rate_per_second=1,
        burst=3,
        trusted_proxies=parse_networks(trusted),
        clock=lambda: clock[0],
    )
    return app, reached


def test_a_flood_from_one_address_gets_429_with_retry_after_before_the_route_runs() -> None:
    app, reached = _app()
    with TestClient(app, client=("203.0.113.7", 5000)) as client:
        answers = [client.post("/v1/things", content=b"not json at all") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert answers[3].headers["Retry-After"] == "1"
    assert answers[3].json()["error"] == "rate_limited"
    assert len(reached) == 3  # the refused requests never reached the route (body unread)


def test_another_address_has_its_own_bucket_and_health_checks_are_never_limited() -> None:
    app, _ = _app()
    with TestClient(app, client=("203.0.113.7", 5000)) as flooder:
        for _ in range(4):
            flooder.post("/v1/things")
        assert flooder.post("/v1/things").status_code == 429
        assert all(flooder.get("/healthz").status_code == 200 for _ in range(10))
    with TestClient(app, client=("198.51.100.9", 5000)) as other:
        assert other.post("/v1/things").status_code == 200


def test_an_ipv6_client_is_limited_by_its_64_not_by_each_address_in_it() -> None:
    app, _ = _app()
    codes = []
    for host in range(5):  # a new address of the same /64 for each request, as any IPv6 host can
        with TestClient(app, client=(f"2001:db8:1:2::{host + 1:x}", 5000)) as client:
            codes.append(client.post("/v1/things").status_code)
    assert codes == [200, 200, 200, 429, 429]
    with TestClient(app, client=("2001:db8:1:3::1", 5000)) as neighbour:  # another /64
        assert neighbour.post("/v1/things").status_code == 200


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client on a dual-stack socket
        ("unknown", "unknown"),
    ],
)
def test_what_a_client_limit_counts_by(address: str, key: str) -> None:
    assert limit_key(address) == key


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() -> None:
    app, _ = _app()
    with TestClient(app, client=("203.0.113.7", 5000)) as client:
        codes = [
            client.post("/v1/things", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
            for i in range(5)
        ]
    assert codes.count(429) == 2  # spoofed hops did not buy fresh buckets


def test_behind_a_trusted_proxy_each_forwarded_client_is_limited_on_its_own() -> None:
    app, _ = _app(trusted="10.1.0.0/16")
    with TestClient(app, client=("10.1.2.3", 5000)) as proxy:
        codes = [
            proxy.post("/v1/things", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
            for i in range(6)
        ]
        assert codes == [200] * 6
        same = [
            proxy.post("/v1/things", headers={"X-Forwarded-For": "192.0.2.1"}).status_code for _ in range(4)
        ]
        assert same == [200, 200, 200, 429]


def test_client_address_walks_forwarded_hops_from_the_right() -> None:
    trusted = parse_networks("10.0.0.0/8")
    # The left-most hop is whatever the client wrote; the first untrusted hop from the right is the client.
    assert client_address("10.0.0.1", ["6.6.6.6, 198.51.100.4, 10.0.0.2"], trusted) == "198.51.100.4"
    assert client_address("203.0.113.1", ["198.51.100.4"], trusted) == "203.0.113.1"
    assert client_address("10.0.0.1", [], trusted) == "10.0.0.1"


def test_a_bad_trusted_proxies_entry_is_named() -> None:
    with pytest.raises(ValueError, match="not-an-ip"):
        parse_networks("10.0.0.0/8, not-an-ip")


def test_memory_stays_bounded_under_a_flood_from_many_addresses() -> None:
    limiter = RateLimiter(rate_per_second=1, burst=2)
    limiter.MAX_KEYS = 100
    for i in range(1000):
        limiter.take(f"a{i}", 1, now=float(i))
    assert len(limiter) <= 100
