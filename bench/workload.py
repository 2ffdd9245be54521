"""A realistic storefront mix, deterministic from a seed.

Shoppers browse (pages, product views), some sign up, fill carts, check out, buy (some again), a few
refund or answer the loyalty survey. Each step is a Segment call or a Shopify webhook built from the
example payloads in shared/examples, so bodies have the sizes and shapes real senders produce. The
canonical events the segmenter consumes come from the ingest's own mappers, not from a second model of
the mix.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import math
import random
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Protocol, TypeVar

from services.ingest.sources import segment, shopify
from shared.events import StorefrontEvent

EXAMPLES = Path(__file__).resolve().parent.parent / "shared" / "examples" / "sources"
STORE_ID = "demo"
SHOP_DOMAIN = "demo.myshopify.com"
SHOPIFY_SECRET = b"demo-shopify-secret"
WRITE_KEY = "demo-write-key"

PRODUCTS = [
    (f"prod_{n:04d}", f"Product {n}", ("Tea", "Coffee", "Accessories", "Gifts", "Snacks")[n % 5], 5 + n % 40)
    for n in range(200)
]
# The longest a shopper's journey can last, in unpaced seconds (see each journey below): a Segment shopper
# takes at most 20 steps of up to 120 s, and waits up to 12 hours after each of up to 3 orders; a Shopify
# buyer at most 11 webhooks up to 300 s apart, the order itself 1 s after its step.
SEGMENT_LONGEST = 20 * 120 + 3 * 12 * 3600
SHOPIFY_LONGEST = 11 * 300 + 1


@cache
def _example(source: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / source / f"{name}.json").read_text())
    return loaded


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class SegmentCall:
    kind: str  # identify | track | page
    body: dict[str, Any]
    at: datetime

    @property
    def event_count(self) -> int:
        return 1


@dataclass(frozen=True)
class ShopifyWebhook:
    topic: str
    body: dict[str, Any]
    delivery: str
    at: datetime

    @property
    def event_id(self) -> str:
        return f"shopify:{self.delivery}"

    def request(self) -> tuple[bytes, dict[str, str]]:
        """Body and headers exactly as Shopify signs and sends them."""
        raw = json.dumps(self.body, separators=(",", ":")).encode()
        digest = hmac.new(SHOPIFY_SECRET, raw, hashlib.sha256).digest()
        return raw, {
            "Content-Type": "application/json",
            "X-Shopify-Topic": self.topic,
            "X-Shopify-Shop-Domain": SHOP_DOMAIN,
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
            "X-Shopify-Event-Id": self.delivery,
            "X-Shopify-Webhook-Id": self.delivery,
        }


Step = SegmentCall | ShopifyWebhook


class _Timed(Protocol):
    @property
    def at(self) -> datetime: ...


_Step = TypeVar("_Step", bound=_Timed)


class Storefront:
    """Shoppers of one store. `run` keeps ids unique across runs that share a broker or a database."""

    def __init__(
        self,
        seed: int,
        run: str,
        start: datetime | None = None,
        pace: float = 1.0,
        *,
        spacing: float | None = None,
    ) -> None:
        """pace < 1 compresses every gap (between steps, shoppers, orders): an end-to-end run needs the
        events of the last minutes, as a live store sends them, not a history of days. spacing is the
        event time, in seconds, between two shoppers' first steps (half a second, paced, by default)."""
        self._seed = seed
        self._run = run
        self._pace = pace
        self._spacing = 0.5 * pace if spacing is None else spacing
        # Event times in the recent past: never "in the future" for ingest, young enough for every flow.
        self._start = start or datetime.now(UTC) - timedelta(days=4)
        self._counter = 0

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._run}-{self._counter}"

    # -- Segment: browsing, signing up, carts, orders, refunds, surveys --------------------------------

    def segment_journey(self, n: int, *, at: datetime | None = None) -> list[SegmentCall]:
        rng = random.Random(f"{self._seed}/segment/{n}")
        t = at or self._start + timedelta(seconds=n * self._spacing)
        anon = f"anon-{self._run}-{n}"
        user = f"user-{self._run}-{n}"
        email = f"shopper-{self._run}-{n}@example.com"
        calls: list[SegmentCall] = []
        known = False

        def call(kind: str, template: str, **changes: Any) -> dict[str, Any]:
            nonlocal t
            t += timedelta(seconds=rng.randint(5, 120) * self._pace)
            body = copy.deepcopy(_example("segment", template))
            body.pop("sentAt", None)
            body.pop("originalTimestamp", None)
            body.update(messageId=self._id("msg"), anonymousId=anon, timestamp=_stamp(t))
            body["userId"] = user if known else None
            context = body.get("context", {})
            context.pop("traits", None)
            body.update(changes)
            calls.append(SegmentCall(kind, body, t))
            return body

        def product() -> dict[str, Any]:
            pid, title, category, price = PRODUCTS[min(int(rng.paretovariate(1.2)) - 1, len(PRODUCTS) - 1)]
            return {"product_id": pid, "sku": pid.upper(), "name": title, "category": category,
                    "price": price, "quantity": rng.randint(1, 3)}  # fmt: skip

        for _ in range(rng.randint(1, 3)):
            call("page", "page__product")
        viewed = [product() for _ in range(rng.randint(1, 4))]
        for item in viewed:
            body = call("track", "track__product_viewed")
            body["properties"] = {**body["properties"], **item, "quantity": 1}
        if rng.random() < 0.6:
            known = True
            traits = {"email": email, "firstName": f"Ann{n}", "lastName": "Shopper", "accepts_marketing":
                      rng.random() < 0.5, "address": {"city": "Lisboa", "country": "Portugal"}}  # fmt: skip
            if rng.random() < 0.3:
                traits["birthday"] = f"19{rng.randint(50, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
            call("identify", "identify__signup", traits=traits)
        if rng.random() >= 0.5:
            return calls
        cart_id = self._id("cart")
        cart = viewed[: rng.randint(1, len(viewed))]
        for item in cart:
            body = call("track", "track__product_added")
            body["properties"] = {**body["properties"], **item, "cart_id": cart_id}
        if rng.random() >= 0.6:
            return calls
        total = round(sum(p["price"] * p["quantity"] for p in cart), 2)
        order_props = {"checkout_id": cart_id, "cart_id": cart_id, "total": total, "revenue": total,
                       "currency": "EUR", "products": cart, "email": email}  # fmt: skip
        call("track", "track__checkout_started_rudderstack", properties=dict(order_props))
        if rng.random() >= 0.7:
            return calls  # an abandoned checkout: the segmenter's timer will notice
        orders = 1 + (rng.random() < 0.35) + (rng.random() < 0.15)
        for _ in range(orders):
            order_id = self._id("ord")
            call("track", "track__order_completed", properties={**order_props, "order_id": order_id})
            t += timedelta(hours=rng.randint(1, 12) * self._pace)
            if rng.random() < 0.05:
                call("track", "track__order_refunded", properties={"order_id": order_id, "total": total,
                                                                    "currency": "EUR"})  # fmt: skip
        if rng.random() < 0.1:
            call("track", "track__survey_answered")
        return calls

    # -- Shopify: customers, checkouts, orders and their updates, refunds ----------------------------

    def shopify_journey(self, n: int, *, at: datetime | None = None) -> list[ShopifyWebhook]:
        rng = random.Random(f"{self._seed}/shopify/{n}")
        t = at or self._start + timedelta(seconds=n * self._spacing)
        # Shopify's numeric ids, distinct per run: a later run's shoppers must be new customers too.
        customer_id = 10**12 + zlib.crc32(self._run.encode()) * 10**6 + n
        email = f"buyer-{self._run}-{n}@example.com"
        hooks: list[ShopifyWebhook] = []

        def hook(topic: str, template: str, **changes: Any) -> dict[str, Any]:
            nonlocal t
            t += timedelta(seconds=rng.randint(5, 300) * self._pace)
            body = copy.deepcopy(_example("shopify", template))
            body.update(changes)
            hooks.append(ShopifyWebhook(topic, body, self._id("evt"), t))
            return body

        customer = {"id": customer_id, "email": email, "first_name": f"Bea{n}", "last_name": "Buyer"}
        stamp = t.isoformat()
        hook("customers/create", "customers.create__new_customer", **customer, created_at=stamp,
             updated_at=stamp, email_marketing_consent={"state": "subscribed"})  # fmt: skip
        if rng.random() < 0.6:
            checkout = hook("checkouts/create", "checkouts.create__abandoned_checkout", email=email)
            checkout.update(token=self._id("chk"), cart_token=self._id("cart"),
                            created_at=t.isoformat(), updated_at=t.isoformat())  # fmt: skip
        for _ in range(1 + (rng.random() < 0.4) + (rng.random() < 0.2)):
            # crc32, not hash(): str hashes change with every interpreter, and the mix must not.
            order_id = 5_000_000_000 + zlib.crc32(self._id("order").encode())
            order = hook("orders/create", "orders.create__order_with_customer", id=order_id, email=email,
                         contact_email=email, created_at=(t + timedelta(seconds=1)).isoformat())  # fmt: skip
            order["customer"] = {**order["customer"], **customer}
            if rng.random() < 0.3:
                update = hook("orders/updated", "orders.updated__fulfilled", id=order_id, email=email)
                update.update(created_at=order["created_at"], customer=order["customer"])
            if rng.random() < 0.05:
                refund = hook("refunds/create", "refunds.create__partial_refund", order_id=order_id)
                refund.update(created_at=t.isoformat(), processed_at=t.isoformat())
        return hooks

    # -- streams -----------------------------------------------------------------------------------------

    def segment_calls(
        self, count: int, first_customer: int = 0, *, steady: bool = False
    ) -> list[SegmentCall]:
        """At least `count` calls of many interleaved shoppers, in time order (steady: see _stream)."""
        return self._stream(count, first_customer, self.segment_journey, SEGMENT_LONGEST if steady else None)

    def shopify_webhooks(
        self, count: int, first_customer: int = 0, *, steady: bool = False
    ) -> list[ShopifyWebhook]:
        return self._stream(count, first_customer, self.shopify_journey, SHOPIFY_LONGEST if steady else None)

    def _stream(
        self, count: int, first: int, journey: Callable[..., list[_Step]], longest: float | None
    ) -> list[_Step]:
        """The first `count` steps, in time order, of shoppers who start `spacing` apart.

        Without `longest`, the first shopper starts at `start` and every journey is whole: the stream's
        early part holds first visits and first orders, and its last part the repeat orders of shoppers
        who came early (an end-to-end run ended with 1.7 times the orders a second of its middle had).
        With `longest` (a journey's longest, unpaced), the stream is a window of a store in steady state:
        shoppers began before `start` too, for as long as a journey lasts, and only their steps from
        `start` on are kept; so each part of the stream has the same mix, that of whole journeys."""
        lead = 0 if longest is None else math.ceil(longest * self._pace / self._spacing)
        kept: list[_Step] = []
        for k in itertools.count():
            began = self._start + timedelta(seconds=(k - lead) * self._spacing)
            # Whole journeys: enough steps. A window: no later shopper acts before their first step, so
            # what is kept from before it is final.
            if len(kept) >= count and (
                longest is None or (k % 64 == 0 and sum(step.at < began for step in kept) >= count)
            ):
                break
            kept.extend(step for step in journey(first + k, at=began) if step.at >= self._start)
        kept.sort(key=lambda step: step.at)
        return kept[:count]


def segment_batch_body(calls: list[SegmentCall]) -> bytes:
    """One /v1/batch body, as Segment's server libraries send it."""
    items = [{**c.body, "type": c.kind} for c in calls]
    return json.dumps({"batch": items, "writeKey": WRITE_KEY, "sentAt": _stamp(datetime.now(UTC))}).encode()


def canonical(steps: Iterable[Step], received_at: datetime | None = None) -> list[StorefrontEvent]:
    """The canonical events ingest makes of these steps (through its own mappers)."""
    now = received_at or datetime.now(UTC)
    events: list[StorefrontEvent] = []
    for step in steps:
        if isinstance(step, SegmentCall):
            body = {**step.body, "type": step.kind}
            events.extend(segment.to_canonical(step.kind, body, store_id=STORE_ID, received_at=now))  # type: ignore[arg-type]
        else:
            event = shopify.to_canonical(
                step.topic, step.body, store_id=STORE_ID, event_id=step.event_id, received_at=now
            )
            if event is not None:
                events.append(event)
    return events
