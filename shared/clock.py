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
