"""Datetimes that share their tzinfo object, so that comparing, sorting and hashing them is cheap.

pydantic-core gives every datetime it parses a tzinfo object of its own (`TzInfo`). Comparing two aware
datetimes whose tzinfo objects differ asks each for its UTC offset: about 1.1 µs a comparison, against 0.05
µs when both hold the same object (measured, Python 3.11, pydantic-core 2.14). A decision compares dates
all the time (contact facts, orders and transitions sorted by date, the history's points), so the
datetimes of events and stored profiles are given the standard library's UTC (or one shared object per
other offset). The instant, its ISO text and its JSON are the same (pydantic writes `Z` for either).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel

from shared.events import CustomerUpsertedEvent, StorefrontEvent

_ZONES: dict[timedelta, timezone] = {}


def standard(at: datetime) -> datetime:
    """The same instant with a shared tzinfo object (UTC's when its offset is zero)."""
    zone = at.tzinfo
    if zone is UTC:
        return at
    offset = at.utcoffset()
    if not offset:
        return at.replace(tzinfo=UTC)
    shared = _ZONES.get(offset)
    if shared is None:
        shared = _ZONES.setdefault(offset, timezone(offset))
    return at if zone is shared else at.replace(tzinfo=shared)


# An aware datetime, parsed or given, held with its shared tzinfo object.
Instant = Annotated[AwareDatetime, AfterValidator(standard)]


def _restamp(model: BaseModel, names: tuple[str, ...]) -> None:
    values = model.__dict__
    for name in names:
        at = values.get(name)
        if at is not None and at.tzinfo is not UTC:
            # In place, although the model is frozen: the same instant, equal and serialised the same, so
            # nothing that holds the event can tell (and doing it twice changes nothing).
            values[name] = standard(at)


def standardise_event(event: StorefrontEvent) -> StorefrontEvent:
    """The event with its datetimes (its own, its customer's, its payload's) on shared tzinfo objects."""
    _restamp(event, _EVENT_DATES)
    _restamp(event.customer, _CUSTOMER_DATES)
    if type(event) is CustomerUpsertedEvent:
        _restamp(event.payload, _UPSERT_DATES)
    return event


_EVENT_DATES = ("occurred_at", "received_at")
_CUSTOMER_DATES = ("updated_at", "consent_at")
_UPSERT_DATES = ("created_at",)
