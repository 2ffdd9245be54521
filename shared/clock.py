"""The one clock of the services, injected everywhere (workers, consumers, API routes) so tests control
time instead of sleeping, plus the one tolerance for clocks that run ahead.

Funnel logic runs on event time (the event's occurred_at); delays, timers and "now" in a report on this
wall clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The wall clock: an aware UTC datetime."""
    return datetime.now(UTC)


# An event dated further ahead of our clock than this is a broken device clock or a forgery, not network
# delay; accepted, it would bend every time rule (ingest refuses it, naming the field).
MAX_CLOCK_AHEAD = timedelta(days=1)

# No store's history is older than this: an earlier time is a zeroed or broken clock, or a forgery (Segment's
# `timestamp` is the caller's to set). Nor is any dated after LATEST_TIME. Both bounds also keep every
# date the rules derive from an event's times (a birthday reminder up to two years on, a window of days
# back) within what a datetime holds: near year 1 or 9999 that arithmetic overflows.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)
# The longest span a store's rules may give (a delay, a window, a coupon's validity) and the longest health
# waits: a century, so that a time within the bounds above, plus or minus it, is still a datetime.
LONGEST_SPAN = timedelta(days=36_500)


def out_of_range(at: datetime) -> str | None:
    """Why a time an event carries cannot be taken (before EARLIEST_TIME or after LATEST_TIME), or None."""
    if at < EARLIEST_TIME:
        return f"is before {EARLIEST_TIME.isoformat()}"
    if at > LATEST_TIME:
        return f"is after {LATEST_TIME.isoformat()}"
    return None


def earlier(at: datetime, span: timedelta) -> datetime:
    """`at - span`, or the earliest instant a datetime holds when that would be before year 1 (a report's
    period asked from year 1 on, reaching back by the store's window)."""
    try:
        return at - span
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)
