"""Percentiles and the median-with-spread every published figure is reported as."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Figure:
    """One figure over several runs: the median, and the spread as min..max."""

    median: float
    low: float
    high: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, runs: Sequence[float]) -> Figure:
        clean = [r for r in runs if r == r]  # NaN: a run that produced no sample
        if not clean:
            return cls(float("nan"), float("nan"), float("nan"), tuple(runs))
        return cls(statistics.median(clean), min(clean), max(clean), tuple(runs))

    def as_dict(self) -> dict[str, object]:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": list(self.runs)}
