"""The Shopify client's view of the shop's cost bucket when concurrent calls' answers come back out of order.

The shop here is a leaky bucket on a fake clock that answers as Shopify's GraphQL Admin API documents
(https://shopify.dev/docs/api/usage/rate-limits: `extensions.cost.throttleStatus` with maximumAvailable,
currentlyAvailable and restoreRate on every answer; over the limit, `errors[].extensions.code` THROTTLED).
The clock moves only when the client sleeps, so what the client sends, and when, is exact.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from services.notifier.adapters.shopify_admin import ShopifyAdmin


class Shop:
    def __init__(self, maximum: float, restore_rate: float) -> None:
        self.maximum = maximum
        self.available = maximum
        self.restore_rate = restore_rate
        self.now = 0.0
        self.refilled_at = 0.0
        self.throttled = 0
        # Answers held back until released, in the order the test chooses.
        self.held: dict[str, asyncio.Event] = {}

    def take(self, cost: float) -> bool:
        self.available = min(self.maximum, self.available + (self.now - self.refilled_at) * self.restore_rate)
        self.refilled_at = self.now
        if self.available < cost:
            return False
        self.available -= cost
        return True

    async def handle(self, request: httpx.Request) -> httpx.Response:
        label = json.loads(request.content)["variables"]["code"]
        cost = 10
        body: dict[str, Any] = {"data": {"codeDiscountNodeByCode": None}}
        if not self.take(cost):
            self.throttled += 1
            body = {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}
        body["extensions"] = {
            "cost": {
                "requestedQueryCost": cost,
                "actualQueryCost": cost,
                "throttleStatus": {
                    "maximumAvailable": self.maximum,
                    "currentlyAvailable": self.available,
                    "restoreRate": self.restore_rate,
                },
            }
        }
        release = self.held.get(label)
        if release is not None:
            await release.wait()
        return httpx.Response(200, json=body)


async def test_an_earlier_calls_late_answer_does_not_free_the_points_of_a_later_call() -> None:
    shop = Shop(maximum=25, restore_rate=10)

    async def sleep(seconds: float) -> None:
        shop.now += seconds

    async with httpx.AsyncClient(transport=httpx.MockTransport(shop.handle)) as http:
        client = ShopifyAdmin(
            http, url="http://shop.test/graphql.json", token="t", sleep=sleep, monotonic=lambda: shop.now
        )
        await client.execute("query warmup", {"code": "W"}, cost=10)  # the client learns the bucket: 15 left
        shop.now += 1.0  # full again (25)
        shop.held = {"A": asyncio.Event(), "B": asyncio.Event()}
        first = asyncio.create_task(client.execute("query a", {"code": "A"}, cost=10))
        await asyncio.sleep(0.01)  # A reaches the shop first: 15 left
        second = asyncio.create_task(client.execute("query b", {"code": "B"}, cost=10))
        await asyncio.sleep(0.01)  # then B: 5 left
        shop.held["B"].set()
        await second  # B's answer (5 left) comes first
        shop.held["A"].set()
        await first  # then A's, which still says 15
        # 5 points left in the shop: a third call of 10 must wait half a second for the refill, not go out
        # at once on the strength of A's stale 15 and be throttled.
        await client.execute("query c", {"code": "C"}, cost=10)
    assert shop.throttled == 0
    assert shop.now >= 1.5
