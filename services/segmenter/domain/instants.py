"""Datetimes that share their tzinfo object, so that comparing, sorting and hashing them is cheap.

Comparing two aware datetimes whose tzinfo objects differ asks each for its UTC offset: about 1.1 µs a
comparison, against 0.05 µs when both hold the same object (measured, Python 3.11). msgspec, which reads
nearly every event, gives a UTC instant the standard library's UTC, but pydantic-core (the contract's
decoder, for the events the segmenter's cheap way leaves to it) gives every datetime a `TzInfo` of its own.
A decision compares dates all the time (contact facts, orders and transitions sorted by date,
the history's points), so the datetimes of events are given the standard library's UTC (or one shared
object per other offset), and the facts a decision makes from them carry it. The instant, its ISO text and
its JSON are the same. Stored profiles need no conversion: msgspec decodes them (domain/profile.py) with the
standard library's UTC, and another offset with the object msgspec keeps for it, which is the shared one
whenever an event decoded by msgspec was the first to bring that offset (`standard`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from services.segmenter.domain.event_classes import ORDER_PLACED
from services.segmenter.domain.struct_functions import force_setattr
from shared.clock import EARLIEST_TIME, LATEST_TIME, out_of_range
from shared.storefront_event_structs import StorefrontEvent

# The standard library's UTC (datetime.UTC) as a compiled static: an event reads it up to four times, and
# an imported name is a look-up in the module's dict (event_classes.py).
_UTC: Final = UTC

_ZONES: Final[dict[timedelta, timezone]] = {}


def standard(at: datetime) -> datetime:
    """The same instant with a shared tzinfo object (UTC's when its offset is zero)."""
    zone = at.tzinfo
    if zone is _UTC:
        return at
    offset = at.utcoffset()
    if not offset:
        # `astimezone(UTC)` from a zero offset, not `replace(tzinfo=UTC)`: the same fields on UTC's object,
        # for 425-455 ns a call against 825-1,034 (replace parses its keywords; Python 3.11, the bench mix's
        # `occurred_at`, 3 alternated pairs), and an event has one to three of these. Not from another offset
        # (near year 1 or 9999 it could overflow where replace does not), nor for a naive value (offset None,
        # never an event's), labelled UTC.
        return at.astimezone(_UTC) if offset is not None else at.replace(tzinfo=_UTC)
    shared = _ZONES.get(offset)
    if shared is None:
        shared = _ZONES.setdefault(offset, _first_zone(zone, offset))
    return at if zone is shared else at.replace(tzinfo=shared)


def _first_zone(zone: object, offset: timedelta) -> timezone:
    """The object shared for `offset`, chosen when it is first met: `zone` itself if it is a plain fixed
    offset (as `timezone(offset)`, the same name), else `timezone(offset)`.

    msgspec keeps one such object per offset for every datetime it decodes (events and stored documents
    alike), so sharing that one leaves the events after the first as they are: `replace(tzinfo=...)` parses
    its keywords, about 650 ns a call, and the benchmark's mix gives every order's version an offset of
    -05:00 (bench/README.md, fifty-eighth round). Kept for the process, as msgspec's may not be: an event
    with another object for the offset is moved onto it, as before."""
    plain = timezone(offset)
    if type(zone) is timezone and zone.tzname(None) == plain.tzname(None):
        return zone
    return plain


def standardise_event(event: StorefrontEvent) -> StorefrontEvent:
    """The event with the datetimes a decision reads (when it happened, when its customer's details and
    consent were said, an order's version) on shared tzinfo objects. In place, although the Structs are
    frozen: the same instants, equal and serialised the same, so nothing that holds the event can tell, and
    doing it twice changes nothing. (`received_at` and a payload's `created_at` are never read here: left as
    they are.)"""
    at = event.occurred_at
    if at.tzinfo is not _UTC:
        force_setattr(event, "occurred_at", standard(at))
    customer = event.customer
    said = customer.updated_at
    if said is not None and said.tzinfo is not _UTC:
        force_setattr(customer, "updated_at", standard(said))
    said = customer.consent_at
    if said is not None and said.tzinfo is not _UTC:
        force_setattr(customer, "consent_at", standard(said))
    if type(event) is ORDER_PLACED:
        # An order's version is compared with the placing time and other versions (profile.one_order).
        version = event.payload.updated_at
        if version is not None and version.tzinfo is not _UTC:
            force_setattr(event.payload, "updated_at", standard(version))
    return event


def standardise_events(events: Iterable[StorefrontEvent]) -> None:
    """`standardise_event` of each: one call a batch from the processor, which is interpreted, instead of
    one an event."""
    for event in events:
        standardise_event(event)


def decidable(event: StorefrontEvent) -> StorefrontEvent:
    """The event, if every time a decision reads is within shared.clock's bounds; ValueError naming the field
    otherwise. Ingest refuses any other, so such an event reached Kafka another way (an older ingest, another
    producer), and deciding it would overflow a date the rules derive from it (a birthday reminder near year 1
    or 9999) and fail its whole batch again on every redelivery: the consumer dead-letters it instead."""
    customer = event.customer
    said, consent = customer.updated_at, customer.consent_at
    # Every event is checked, so the common case is one expression: 115-157 ns a call compiled, against
    # 257-330 through the loop below (without and with the customer's own dates).
    if (
        EARLIEST_TIME <= event.occurred_at <= LATEST_TIME
        and (said is None or EARLIEST_TIME <= said <= LATEST_TIME)
        and (consent is None or EARLIEST_TIME <= consent <= LATEST_TIME)
    ):
        return event
    for name, at in (
        ("occurred_at", event.occurred_at),
        ("customer.updated_at", said),
        ("customer.consent_at", consent),
    ):
        if at is not None and (problem := out_of_range(at)) is not None:
            raise ValueError(f"{name} {problem}")
    raise AssertionError("unreachable: one of the times is out of range")
