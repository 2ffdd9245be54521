"""Prometheus helpers the services share."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Generic, TypeVar

from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


def count_each(counter: Counter, label_values: Iterable[tuple[str, ...]]) -> None:
    """Count one item per tuple of label values, with one increment per distinct tuple: `labels()` takes a
    lock and checks its values on every call, which per event was a visible share of a batch's time."""
    for values, n in collections.Counter(label_values).items():
        counter.labels(*values).inc(n)


class LabelledChildren(Generic[M]):
    """A metric's child per tuple of label values, looked up in a dict after the first time: `labels()`
    takes a lock and checks its values on every call, a visible share of a webhook's time. The children
    are the metric's own, so a scrape sees the same series."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def child(self, *values: str) -> M:
        found = self._children.get(values)
        if found is None:
            found = self._children[values] = self._metric.labels(*values)
        return found
