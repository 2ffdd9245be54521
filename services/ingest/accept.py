"""The one path every source takes once its events are parsed: checks, rate limit, publish, count."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime

from prometheus_client import Counter

from services.ingest.producer import Publisher, PublishUnavailable
from services.ingest.ratelimit import RateLimiter
from shared.clock import MAX_CLOCK_AHEAD, out_of_range
from shared.events import EncodedEvent, OrderPlacedEvent, PublishableEvent
from shared.logging import get_logger
from shared.metrics import count_each
from shared.web import ApiError, FieldError

log = get_logger(__name__)

ACCEPTED = Counter("ingest_events_accepted_total", "Events acknowledged to the sender", ["source", "type"])
RATE_LIMITED = Counter(
    "ingest_rate_limited_total", "Requests refused by the per-store rate limit", ["source"]
)

RETRY_AFTER_SECONDS = "5"


def reject_implausible_times(
    events: Sequence[PublishableEvent], received_at: datetime, field_prefix: str = ""
) -> None:
    """A timestamp more than a day ahead is a broken clock or a forgery; it would bend every time rule. One
    before 1970 (or a customer's details dated outside 1970 to 9000) is one too, and the dates the rules
    derive from it would not fit a datetime: the segmenter would be handed an event it cannot decide."""

    def field(i: int, name: str) -> str:
        return f"{field_prefix}{'[' + str(i) + '].' if len(events) > 1 else ''}{name}"

    ahead = [
        FieldError(field=field(i, "timestamp"), message="more than one day in the future")
        for i, event in enumerate(events)
        if event.occurred_at - received_at > MAX_CLOCK_AHEAD
    ]
    if ahead:
        raise ApiError(
            422, "timestamp_in_future", "event time is more than one day in the future", errors=ahead
        )
    bad = [
        FieldError(field=field(i, name), message=problem)
        for i, event in enumerate(events)
        for name, at in _times(event)
        if (problem := out_of_range(at)) is not None
    ]
    if bad:
        raise ApiError(422, "time_out_of_range", "a time in the event is out of range", errors=bad)


def _times(event: PublishableEvent) -> Iterator[tuple[str, datetime]]:
    """The event's time, and the times its customer's details and its order carry (only a webhook's source
    sets those)."""
    yield "timestamp", event.occurred_at
    if not isinstance(event, EncodedEvent):
        for name in ("updated_at", "consent_at"):
            at = getattr(event.customer, name)
            if at is not None:
                yield f"customer.{name}", at
        if isinstance(event, OrderPlacedEvent) and event.payload.updated_at is not None:
            yield "order.updated_at", event.payload.updated_at


def check_rate(
    limiter: RateLimiter, store_id: str, source: str, cost: int, *, key: str | None = None, what: str = ""
) -> None:
    """429 with Retry-After when `key` (default: the store) is over its rate; `what` names whose rate."""
    wait = limiter.take(key or store_id, cost, time.monotonic())
    if wait > 0:
        RATE_LIMITED.labels(source).inc()
        raise ApiError(
            429,
            "rate_limited",
            f"{what or f'store {store_id!r}'} is over its event rate; retry later",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )


async def publish(publisher: Publisher, events: Sequence[PublishableEvent], source: str) -> None:
    """Answer only once Kafka acknowledged every event; otherwise 503 and the sender retries all of them."""
    if not events:
        return
    try:
        await publisher.publish_many(events)
    except PublishUnavailable as exc:
        log.warning("publish_unavailable", source=source, events=len(events), error=str(exc))
        raise ApiError(
            503,
            "kafka_unavailable",
            "the events were not stored; retry later",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from exc
    count_each(ACCEPTED, ((source, event.type) for event in events))
