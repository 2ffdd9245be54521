"""The store history as the HTTP requests a storefront sends: signed Shopify webhooks and Segment batches,
spread over lanes. Pure: no clock, no network.

Why lanes: ingest keys every event by customer, and the segmenter processes one customer's events in the
order Kafka got them. A customer always belongs to one lane and a lane sends one request at a time, so
their events arrive in order while lanes run concurrently.

Which channel: actions older than `shopify_since` go as Segment batches (fast: hundreds of calls a
request); from then on the store's orders, abandoned checkouts, refunds and sign-ups come as Shopify
webhooks, one signed request each, while browsing, surveys and referrals stay on Segment, as on a real
Shopify store instrumented with analytics.js.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deploy.simulator.actions import (
    Action,
    CheckoutStarted,
    OrderPlaced,
    OrderRefunded,
    ProductAdded,
    Session,
    SignedUp,
)
from deploy.simulator.generator import StoreHistory
from deploy.simulator.segment_calls import canonical_events, iso, segment_call
from deploy.simulator.shopify_webhooks import shopify_webhook

SHOPIFY_PATH = "/webhooks/shopify"
SEGMENT_BATCH_PATH = "/v1/batch"
SHOPIFY_API_VERSION = "2026-10"
# Ingest takes 500 KB and 2,500 calls a batch; stay clear of the byte limit whatever the calls hold.
MAX_BATCH_BYTES = 400_000
_WEBHOOK_IDS = uuid.UUID("6f0c1f4e-5b7d-4f7e-9a51-3c2d1b0a9e8f")


@dataclass(frozen=True)
class StoreTarget:
    """What a storefront needs to send as one store: its shop domain, secrets and currency."""

    store_id: str
    shop_domain: str
    webhook_secret: str
    write_key: str
    currency: str = "USD"


@dataclass(frozen=True)
class HttpRequest:
    lane: int
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    label: str  # "segment batch", "shopify orders/create"...
    calls: int  # storefront calls in it (a webhook is one call)
    events: int  # canonical events ingest makes of it

    def as_json(self) -> dict[str, Any]:
        """For --out: the request with its body parsed, one JSON object a line."""
        return {
            "lane": self.lane,
            "method": "POST",
            "path": self.path,
            "headers": dict(self.headers),
            "body": json.loads(self.body),
        }


@dataclass(frozen=True)
class RequestPlan:
    lanes: tuple[tuple[HttpRequest, ...], ...]

    def requests(self) -> Iterable[HttpRequest]:
        for lane in self.lanes:
            yield from lane

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self.requests())

    @property
    def events(self) -> int:
        return sum(r.events for r in self.requests())


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, body: bytes) -> str:
    """X-Shopify-Hmac-Sha256: base64 of the body's HMAC-SHA256 under the app's webhook secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _webhook(lane: int, target: StoreTarget, action: Action) -> HttpRequest:
    topic, payload = shopify_webhook(action, target.currency, target.shop_domain)
    body = _dumps(payload)
    headers = (
        ("Content-Type", "application/json"),
        ("X-Shopify-Topic", topic),
        ("X-Shopify-Shop-Domain", target.shop_domain),
        ("X-Shopify-Hmac-Sha256", sign(target.webhook_secret, body)),
        # The action's id: the same on every retry and every re-run of the seed, as Shopify's event id is.
        ("X-Shopify-Event-Id", action.action_id),
        ("X-Shopify-Webhook-Id", str(uuid.uuid5(_WEBHOOK_IDS, f"{topic}:{action.action_id}"))),
        ("X-Shopify-API-Version", SHOPIFY_API_VERSION),
        ("X-Shopify-Triggered-At", iso(action.at)),
    )
    return HttpRequest(lane, SHOPIFY_PATH, headers, body, f"shopify {topic}", calls=1, events=1)


@dataclass
class _Lane:
    """One lane's requests, with the Segment calls waiting to fill the next batch."""

    number: int
    target: StoreTarget
    batch_size: int
    requests: list[HttpRequest] = field(default_factory=list)
    pending: list[bytes] = field(default_factory=list)
    pending_events: int = 0
    pending_bytes: int = 0

    def flush(self) -> None:
        if not self.pending:
            return
        body = b'{"batch":[' + b",".join(self.pending) + b"]}"
        auth = base64.b64encode(f"{self.target.write_key}:".encode()).decode()
        headers = (("Content-Type", "application/json"), ("Authorization", f"Basic {auth}"))
        self.requests.append(
            HttpRequest(
                self.number,
                SEGMENT_BATCH_PATH,
                headers,
                body,
                "segment batch",
                calls=len(self.pending),
                events=self.pending_events,
            )
        )
        self.pending, self.pending_events, self.pending_bytes = [], 0, 0

    def add_segment(self, calls: list[dict[str, Any]]) -> None:
        """One session's calls, kept in one batch: a checkout and its order reach the segmenter together."""
        encoded = [_dumps(c) for c in calls]
        size = sum(len(e) + 1 for e in encoded)
        if self.pending and (
            len(self.pending) + len(encoded) > self.batch_size or self.pending_bytes + size > MAX_BATCH_BYTES
        ):
            self.flush()
        self.pending.extend(encoded)
        self.pending_events += sum(canonical_events(c) for c in calls)
        self.pending_bytes += size

    def add_webhook(self, action: Action) -> None:
        # Whatever Segment calls came before it in this lane must be sent first: they may be this customer's.
        self.flush()
        self.requests.append(_webhook(self.number, self.target, action))


def _session_messages(session: Session, since: datetime) -> list[tuple[str, Action]]:
    """("shopify" | "segment", action) in the order the storefront sends them."""
    shopify_order = any(isinstance(a, OrderPlaced) and a.at >= since for a in session.actions)
    messages: list[tuple[str, Action]] = []
    for action in session.actions:
        recent = action.at >= since
        if isinstance(action, SignedUp):
            # Both know of a sign-up: Shopify creates the customer, analytics.js identifies the visitor.
            if recent:
                messages.append(("shopify", action))
            messages.append(("segment", action))
        elif isinstance(action, OrderPlaced | OrderRefunded):
            messages.append(("shopify" if recent else "segment", action))
        elif isinstance(action, CheckoutStarted) and recent and not action.converts_now:
            messages.append(("shopify", action))
        elif isinstance(action, CheckoutStarted | ProductAdded) and shopify_order:
            # A visit that ends in a Shopify order sends the order alone. Its cart, opened by one request
            # and closed by the next, could be declared abandoned in between: the development registry
            # abandons carts after 20 s, and in a backdated history that time has long passed.
            continue
        else:
            messages.append(("segment", action))
    return messages


def plan_requests(
    history: StoreHistory, target: StoreTarget, *, lanes: int, batch_size: int, shopify_since: datetime
) -> RequestPlan:
    if lanes < 1 or batch_size < 1:
        raise ValueError("lanes and batch_size must be at least 1")
    state = [_Lane(i, target, batch_size) for i in range(lanes)]
    for session in history.sessions:
        lane = state[session.shopper.number % lanes]
        calls: list[dict[str, Any]] = []
        for channel, action in _session_messages(session, shopify_since):
            if channel == "segment":
                calls.append(segment_call(action, target.currency))
                continue
            if calls:
                lane.add_segment(calls)
                calls = []
            lane.add_webhook(action)
        if calls:
            lane.add_segment(calls)
    for lane in state:
        lane.flush()
    return RequestPlan(lanes=tuple(tuple(lane.requests) for lane in state))
