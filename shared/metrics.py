"""Prometheus helpers the services share."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from prometheus_client import Counter


def count_each(counter: Counter, label_values: Iterable[tuple[str, ...]]) -> None:
    """Count one item per tuple of label values, with one increment per distinct tuple: `labels()` takes a
    lock and checks its values on every call, which per event was a visible share of a batch's time."""
    for values, n in collections.Counter(label_values).items():
        counter.labels(*values).inc(n)
