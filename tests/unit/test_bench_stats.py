"""The benchmark's figures: nearest-rank percentiles and the median with its spread."""

from __future__ import annotations

import math

from bench.stats import Figure, percentile


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert math.isnan(percentile([], 50))


def test_a_figure_is_the_median_of_its_runs_with_min_and_max() -> None:
    figure = Figure.of([3.0, 1.0, 2.0, math.nan])
    assert (figure.median, figure.low, figure.high) == (2.0, 1.0, 3.0)
