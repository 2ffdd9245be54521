"""Every source example in shared/examples/sources goes through its mapper, and what comes out is a valid
canonical event that the segmenter's decision accepts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.ingest.sources import segment, shopify, woocommerce
from services.segmenter.domain.funnel import decide
from shared.events import StorefrontEvent, decode_event, encode_event
from shared.funnel_rules import FunnelRules
from tests.builders import as_segmenter_event
from tests.examples import source_examples

RECEIVED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _map(source: str, topic: str, payload: Any) -> list[StorefrontEvent]:
    common: dict[str, Any] = {"store_id": "demo", "received_at": RECEIVED}
    if source == "shopify":
        event = shopify.to_canonical(topic, payload, event_id="shopify:example", **common)
        return [event] if event else []
    if source == "woocommerce":
        event = woocommerce.to_canonical(topic, payload, event_id="woocommerce:example", **common)
        return [event] if event else []
    if topic == "batch":
        return segment.batch_to_canonical(payload, **common)
    return segment.to_canonical(topic, payload, **common)  # type: ignore[arg-type]


EXAMPLES = [
    (source, topic, path)
    for source in ("shopify", "woocommerce", "segment")
    for topic, path in source_examples(source)
]


def test_every_source_has_examples() -> None:
    assert {source for source, _, _ in EXAMPLES} == {"shopify", "woocommerce", "segment"}


@pytest.mark.parametrize(
    ("source", "topic", "path"), EXAMPLES, ids=lambda v: v.name if isinstance(v, Path) else str(v)
)
def test_example_maps_to_canonical_events_the_segmenter_accepts(source: str, topic: str, path: Path) -> None:
    events = _map(source, topic, json.loads(path.read_text()))
    for event in events:
        assert decode_event(encode_event(event)) == event
        decision = decide(None, as_segmenter_event(event), FunnelRules(), event.customer.key)
        assert decision.profile.store_id == "demo"
