"""Canonical storefront events for tests, built through the contract's own decoder."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from shared.events import StorefrontEvent, decode_event


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
