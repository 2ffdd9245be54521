"""count_each: one item counted per tuple of label values, whatever their order."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shared.metrics import count_each


def test_each_tuple_of_label_values_counts_its_items() -> None:
    registry = CollectorRegistry()
    counter = Counter("things", "things by kind", ["source", "kind"], registry=registry)
    count_each(counter, [("shop", "order"), ("web", "page"), ("shop", "order"), ("shop", "cart")])
    count_each(counter, [])
    assert registry.get_sample_value("things_total", {"source": "shop", "kind": "order"}) == 2
    assert registry.get_sample_value("things_total", {"source": "shop", "kind": "cart"}) == 1
    assert registry.get_sample_value("things_total", {"source": "web", "kind": "page"}) == 1
    assert registry.get_sample_value("things_total", {"source": "web", "kind": "order"}) is None
