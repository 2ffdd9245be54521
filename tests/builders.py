"""Canonical storefront events for tests, built through the contract's own decoder."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import msgspec

from services.segmenter.adapters import event_decoding
from shared import storefront_event_structs as segmenter
from shared.events import CONTACT_FIELDS, StorefrontEvent, decode_event, encode_event
from shared.funnel_events import FunnelEvent, decode_funnel_event


def canonical_event(
    store_id: str,
    kind: str,
    at: datetime,
    customer: dict[str, Any],
    payload: dict[str, Any] | None = None,
    *,
    event_id: str | None = None,
) -> StorefrontEvent:
    """An event of `kind` at `at`; the id defaults to a fresh one prefixed with the store."""
    body: dict[str, Any] = {
        "event_id": event_id or f"{store_id}:{uuid.uuid4().hex}",
        "type": kind,
        "store_id": store_id,
        "customer": customer,
        "occurred_at": at.isoformat(),
        "received_at": at.isoformat(),
        "source": "api",
    }
    if payload is not None:
        body["payload"] = payload
    return decode_event(json.dumps(body))


def segmenter_event(
    store_id: str,
    kind: str,
    at: datetime,
    customer: dict[str, Any],
    payload: dict[str, Any] | None = None,
    *,
    event_id: str | None = None,
) -> segmenter.StorefrontEvent:
    """`canonical_event`'s event as the segmenter reads it from its topic: encoded as ingest encodes it, then
    decoded by the segmenter's own decoder."""
    return as_segmenter_event(canonical_event(store_id, kind, at, customer, payload, event_id=event_id))


def as_segmenter_event(event: StorefrontEvent) -> segmenter.StorefrontEvent:
    """A contract model as the segmenter reads it from its topic."""
    return event_decoding.decode_storefront_event(encode_event(event))


def contract_bytes(event: segmenter.StorefrontEvent) -> bytes:
    """A segmenter's event as ingest publishes it: its contract model's bytes."""
    return encode_event(decode_event(msgspec.json.encode(event)))


# A profile in every funnel event; tests override what they look at.
_PROFILE: dict[str, Any] = {
    "email": None,
    "first_name": "Ines",
    "last_name": "Moreau",
    "locale": "en-GB",
    "city": "Lyon",
    "country": "France",
    "timezone": "Europe/Paris",
    "accepts_marketing": True,
    "stage": "first_time",
    "health": "active",
    "orders_count": 1,
    "total_spent": "48.00",
    "currency": "EUR",
    "last_products": [{"product_id": "p-mug", "title": "Everyday Mug", "category": "mugs"}],
}


def funnel_event(
    kind: str,
    store_id: str,
    customer_id: str,
    at: datetime,
    payload: dict[str, Any] | None = None,
    *,
    event_id: str | None = None,
    **profile: Any,
) -> FunnelEvent:
    """A funnel event of `kind` for `customer_id` (email <customer_id>@example.com unless given, but for an
    erasure, which carries only the details said after it, as the segmenter sends it)."""
    snapshot = {**_PROFILE, "customer_id": customer_id, "email": f"{customer_id}@example.com"}
    if kind == "customer_erased":  # as the segmenter sends it: no details but those said after the erasure
        snapshot = {k: v for k, v in snapshot.items() if k not in CONTACT_FIELDS}
    body: dict[str, Any] = {
        "event_id": event_id or f"{store_id}:{kind}:{uuid.uuid4().hex}",
        "type": kind,
        "store_id": store_id,
        "customer_id": customer_id,
        "occurred_at": at.isoformat(),
        "caused_by": f"{store_id}:cause:{uuid.uuid4().hex}",
        "profile": {**snapshot, **profile},
    }
    if payload is not None:
        body["payload"] = payload
    return decode_funnel_event(json.dumps(body, default=str))
