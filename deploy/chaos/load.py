"""The load of a chaos run: the simulator's store sent to ingest at a steady rate, through every fault.

Unlike the simulator's own sender, this one never gives up on a request while the run lasts: a crash makes
ingest unreachable or answer 503 for a while, and the storefront (like Shopify) keeps retrying the same
bytes. What counts is which requests ingest acknowledged (2xx); only those must not be lost. After `stop`
no lane starts a new request, and a request still retrying is abandoned at `give_up`.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from deploy.simulator.http_plan import HttpRequest, RequestPlan
from deploy.simulator.sender import Pace
from services.ingest.sources import segment, shopify

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 2.0


@dataclass
class LoadStats:
    acknowledged: list[HttpRequest] = field(default_factory=list)
    by_status: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    refused: list[str] = field(default_factory=list)
    abandoned: int = 0


class SteadyLoad:
    def __init__(self, client: httpx.AsyncClient, plan: RequestPlan, rate: float) -> None:
        self._client = client
        self._plan = plan
        self._pace = Pace(rate)
        self.stats = LoadStats()
        self.stop = asyncio.Event()
        self._give_up = asyncio.Event()

    @property
    def sent(self) -> int:
        return len(self.stats.acknowledged)

    async def run(self, give_up_after: float) -> LoadStats:
        """Send until `stop` is set (or the plan runs out); then give in-flight requests give_up_after s."""

        async def abandon_later() -> None:
            await self.stop.wait()
            await asyncio.sleep(give_up_after)
            self._give_up.set()

        watcher = asyncio.create_task(abandon_later())
        try:
            async with asyncio.TaskGroup() as group:
                for lane in self._plan.lanes:
                    group.create_task(self._lane(lane))
        finally:
            watcher.cancel()
        return self.stats

    async def _lane(self, requests: tuple[HttpRequest, ...]) -> None:
        for request in requests:
            if self.stop.is_set():
                return
            await self._pace.wait(1)
            if self.stop.is_set():
                return
            await self._send(request)

    async def _send(self, request: HttpRequest) -> None:
        attempt = 0
        while not self._give_up.is_set():
            try:
                response = await self._client.post(
                    request.path, content=request.body, headers=dict(request.headers)
                )
            except httpx.TransportError:
                self.stats.transport_errors += 1
            else:
                self.stats.by_status[response.status_code] += 1
                if response.is_success:
                    self.stats.acknowledged.append(request)
                    return
                if response.status_code not in RETRY_STATUSES:
                    self.stats.refused.append(f"{request.label}: HTTP {response.status_code}")
                    return
            attempt += 1
            await asyncio.sleep(min(MAX_BACKOFF, 0.1 * 2**attempt))
        self.stats.abandoned += 1


def event_ids(request: HttpRequest, store_id: str) -> list[str]:
    """The ids of the canonical events ingest makes of request, by ingest's own parsers."""
    body = json.loads(request.body)
    received_at = datetime.now(UTC)
    if request.path == "/v1/batch":
        events = segment.batch_to_canonical(body, store_id=store_id, received_at=received_at)
        return [e.event_id for e in events]
    headers = dict(request.headers)
    event = shopify.to_canonical(
        headers["X-Shopify-Topic"],
        body,
        store_id=store_id,
        event_id=f"shopify:{headers['X-Shopify-Event-Id']}",
        received_at=received_at,
    )
    return [] if event is None else [event.event_id]


def acknowledged_event_ids(stats: LoadStats, store_id: str) -> list[str]:
    ids: list[str] = []
    for request in stats.acknowledged:
        ids.extend(event_ids(request, store_id))
    return ids
