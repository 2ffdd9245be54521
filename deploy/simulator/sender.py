"""Sends a request plan to ingest: one task per lane, a shared pace, retries where ingest asks for them.

A lane sends its requests one after another (so one customer's events stay in order); lanes run
concurrently. 429 and 503 are ingest saying "later" (rate limit, Kafka busy): the request is sent again,
byte for byte, after Retry-After, which is safe because every event id is stable. Connection errors are
retried with backoff. Any other refusal is a bug in the simulator's payloads and stops the run loudly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from deploy.simulator.http_plan import HttpRequest, RequestPlan

RETRY_STATUSES = frozenset({429, 503})
MAX_ATTEMPTS = 8
MAX_BACKOFF_SECONDS = 10.0
MAX_RETRY_AFTER_SECONDS = 30.0
BACKOFF_SECONDS = 0.5


class SendFailed(RuntimeError):
    """Ingest refused a request for good (or kept refusing it): the payloads need fixing, not a retry."""


class Pace:
    """At most `rate` calls a second over all lanes; 0 sends as fast as ingest answers."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    async def wait(self, calls: int) -> None:
        if not self._interval:
            return
        now = self._clock()
        # Reserve this request's slot before sleeping, so concurrent lanes queue behind one another.
        start = max(self._next, now)
        self._next = start + calls * self._interval
        if start > now:
            await self._sleep(start - now)


def backoff(attempt: int) -> float:
    return min(BACKOFF_SECONDS * 2.0**attempt, MAX_BACKOFF_SECONDS)


def retry_after(response: httpx.Response, attempt: int) -> float:
    header = response.headers.get("Retry-After")
    try:
        seconds = float(header) if header is not None else backoff(attempt)
    except ValueError:
        seconds = backoff(attempt)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


@dataclass
class SendStats:
    requests: int = 0
    calls: int = 0
    events: int = 0
    retries: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class Sender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        pace: Pace,
        on_sent: Callable[[HttpRequest], None] = lambda _: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._pace = pace
        self._on_sent = on_sent
        self._sleep = sleep
        self.stats = SendStats()

    async def send_plan(self, plan: RequestPlan) -> SendStats:
        """Every lane to the end; the first SendFailed cancels the other lanes and is raised as is."""
        try:
            async with asyncio.TaskGroup() as group:
                for lane in plan.lanes:
                    group.create_task(self._send_lane(lane))
        except BaseExceptionGroup as group:
            failures = [e for e in group.exceptions if isinstance(e, SendFailed)]
            if failures:
                raise failures[0] from None
            raise
        return self.stats

    async def _send_lane(self, requests: tuple[HttpRequest, ...]) -> None:
        for request in requests:
            await self._pace.wait(request.calls)
            await self.send(request)

    async def send(self, request: HttpRequest) -> None:
        for attempt in range(MAX_ATTEMPTS):
            try:
                response = await self._client.post(
                    request.path, content=request.body, headers=dict(request.headers)
                )
            except httpx.TransportError as exc:
                if attempt == MAX_ATTEMPTS - 1:
                    raise SendFailed(f"{request.label}: {exc!r} after {MAX_ATTEMPTS} attempts") from exc
                self.stats.retries += 1
                await self._sleep(backoff(attempt))
                continue
            self.stats.by_status[response.status_code] = self.stats.by_status.get(response.status_code, 0) + 1
            if response.is_success:
                self.stats.requests += 1
                self.stats.calls += request.calls
                self.stats.events += request.events
                self._on_sent(request)
                return
            if response.status_code not in RETRY_STATUSES:
                raise SendFailed(f"{request.label}: HTTP {response.status_code} {response.text[:500]}")
            self.stats.retries += 1
            await self._sleep(retry_after(response, attempt))
        raise SendFailed(f"{request.label}: still refused after {MAX_ATTEMPTS} attempts")
