"""The benchmark's storefront (bench/workload.py): a steady stream is a window of a store in steady state,
with the same mix in each of its parts; the default stream, which the segmenter's benchmark and the
replay check read, keeps whole journeys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bench.workload import Storefront

START = datetime(2026, 1, 9, tzinfo=UTC)
# A tenth of the end-to-end run's pace, and shoppers 5 ms apart: a journey lasts up to 26 s, five times
# the span over which a thousand shoppers begin.
PACE = 0.0002
SPACING = 0.005


def _orders_per_sixth(*, steady: bool) -> list[int]:
    store = Storefront(seed=31, run="mix", start=START, pace=PACE, spacing=SPACING)
    calls = store.segment_calls(7_000, steady=steady)
    hooks = store.shopify_webhooks(3_000, first_customer=10_000, steady=steady)
    counts = [0] * 6
    for i, call in enumerate(calls):
        counts[i * 6 // len(calls)] += call.kind == "track" and call.body.get("event") == "Order Completed"
    for i, hook in enumerate(hooks):
        counts[i * 6 // len(hooks)] += hook.topic == "orders/create"
    return counts


def test_each_part_of_a_steady_stream_has_the_same_share_of_orders() -> None:
    counts = _orders_per_sixth(steady=True)
    mean = sum(counts) / 6
    assert all(abs(count - mean) <= 0.15 * mean for count in counts), counts


def test_a_stream_of_whole_journeys_ends_with_the_repeat_orders_of_its_first_shoppers() -> None:
    """What the end-to-end run sent before its stream was steady (its last 10 s had 1.7 times the orders
    of one in its middle): the reason for the steady one. Without steady, the test above fails too."""
    counts = _orders_per_sixth(steady=False)
    assert counts[-1] > 1.3 * (sum(counts[1:5]) / 4), counts


def test_a_steady_stream_is_in_time_order_from_its_start_with_the_count_asked() -> None:
    store = Storefront(seed=31, run="order", start=START, pace=PACE, spacing=SPACING)
    calls = store.segment_calls(2_000, steady=True)
    hooks = store.shopify_webhooks(1_000, steady=True)
    for steps in (calls, hooks):
        times = [step.at for step in steps]
        assert len(steps) in (2_000, 1_000)
        assert times == sorted(times)
        assert times[0] >= START
        # Shoppers who began before the start are in it: some of its steps are late in a journey.
        assert times[0] < START + timedelta(seconds=SPACING)
    assert len({call.body["messageId"] for call in calls}) == 2_000
    # Later shoppers' first steps come after the window's end: nothing earlier was left out.
    assert calls[-1].at < START + timedelta(seconds=SPACING * 2_000)


def test_the_default_stream_starts_with_its_first_shopper_at_the_start() -> None:
    calls = Storefront(seed=31, run="whole", start=START).segment_calls(500)
    assert calls[0].at > START
    assert calls[0].body["anonymousId"] == "anon-whole-0"
