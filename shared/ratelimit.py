"""Rate limits: token buckets (pure, clock passed in) and the per-client-address ASGI middleware that every
service puts in front of its routes.

The per-client limit runs before routing, authentication and body parsing, so a flood of unauthenticated or
malformed requests costs a dictionary lookup, not a signature check, a JSON parse or a database query. It
answers 429 with Retry-After and the error shape of shared/web.py. Buckets live in each process's memory:
with N instances behind a load balancer a client gets up to N times the rate (the point is to protect the
pipeline from one runaway client, not billing).
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

RATE_LIMITED_CLIENTS = Counter(
    "http_rate_limited_total", "Requests refused by the per-client-address rate limit", ["service"]
)

# Orchestrators and Prometheus poll these from a few addresses; limiting them would only blind operators.
_UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    """A token bucket per key, refilled continuously at `rate_per_second` up to `burst`."""

    # Full buckets are forgotten once there are this many keys: a client that sent nothing for
    # burst/rate seconds has a full bucket anyway, so forgetting it changes no answer and bounds memory
    # when requests come from very many addresses.
    MAX_KEYS = 100_000

    def __init__(self, rate_per_second: float, burst: float) -> None:
        self._rate = rate_per_second
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, cost: float, now: float) -> float:
        """Take `cost` tokens; return 0 when allowed, else the seconds to wait before retrying."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._forget_full(now)
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

    def _forget_full(self, now: float) -> None:
        refill_time = self._burst / self._rate
        idle = [key for key, b in self._buckets.items() if now - b.updated_at >= refill_time]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self.MAX_KEYS:
            # Every bucket is in use (a flood from very many addresses): start afresh rather than grow.
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str) -> tuple[Network, ...]:
    """`"10.0.0.0/8, 127.0.0.1"` -> networks; raises ValueError naming the bad entry."""
    networks: list[Network] = []
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP address or network: {entry!r}") from exc
    return tuple(networks)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted_proxies: tuple[Network, ...]
) -> str:
    """The address a request comes from. X-Forwarded-For is believed only when the peer is a trusted proxy,
    and then only up to the first hop that is not one (walking from the right: the left part is whatever
    the client chose to write)."""
    current = peer or "unknown"
    if not trusted_proxies or not _within(current, trusted_proxies):
        return current
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        current = hop
        if not _within(hop, trusted_proxies):
            return hop
    return current


# An IPv6 host is handed a whole /64 (RFC 6177; what SLAAC and every hosting provider give one machine), so
# one client can send from as many addresses as it likes within it: its limit is its /64's.
IPV6_CLIENT_PREFIX = 64


def limit_key(address: str) -> str:
    """What a per-client limit counts by: an IPv4 address (an IPv4-mapped IPv6 one included) as it is, an
    IPv6 address by its /64, anything else (no peer, a proxy's odd hop) as written."""
    if ":" not in address:
        return address  # IPv4 as the server wrote it, or no address: no parse on every request
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class ClientRateLimitMiddleware:
    """Plain ASGI (no BaseHTTPMiddleware): it answers before the app sees the request, body unread."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        rate_per_second: float,
        burst: float,
        trusted_proxies: tuple[Network, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = app
        self._service = service
        self._limiter = RateLimiter(rate_per_second, burst)
        self._trusted = trusted_proxies
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in _UNLIMITED_PATHS:
            await self._app(scope, receive, send)
            return
        peer = scope.get("client")
        forwarded = (
            [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
            if self._trusted
            else []
        )
        address = client_address(peer[0] if peer else None, forwarded, self._trusted)
        wait = self._limiter.take(limit_key(address), 1, self._clock())
        if wait <= 0:
            await self._app(scope, receive, send)
            return
        RATE_LIMITED_CLIENTS.labels(self._service).inc()
        body = json.dumps(
            {
                "error": "rate_limited",
                "detail": "too many requests from this address; retry after Retry-After seconds",
                "errors": [],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(max(1, math.ceil(wait))).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
