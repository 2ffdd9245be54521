"""Which profile an event belongs to, when a customer is known by several identifiers. Pure.

An event names its customer by some of: the store's customer id, an email, an anonymous id, an order id.
Each identifier maps to at most one profile. When an event's identifiers point at several profiles, they are
one customer: all merge into a survivor chosen by a fixed rank (a store customer id first, then an email,
then an anonymous id, then an order), so the outcome does not depend on which event arrived first.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from services.segmenter.domain.records import Record

_RANK: Final = {"email:": 1, "anon:": 2, "order:": 3}
# The identifiers an erasure forgets (and remembers as forgotten, by their digest, for the late events that
# name them): a customer's emails and anonymous ids. The store's own customer id and order ids stay.
FORGETTABLE: Final = ("email:", "anon:")
# The emails and anonymous ids one profile holds at most. Both come from the store's pages as well as its
# servers (the public browser key may identify and alias), so without a bound anyone could give one customer
# a new look-up with every call, and each event of that customer's then re-read, re-sorted and re-wrote them
# all: on a running stack, a profile of 8,000 anonymous ids cost the segmenter 2.5 ms of CPU an event (0.25 at
# 2,000), and its event loop stopped answering for more than 5 s at a time. Segment bounds its identity graph
# the same way: 1,000 mappings a profile, beyond which no new mapping is added while the profile's events
# still resolve (Unify's "Profile API limits", "Identity Mappings"). A customer's own ids ("id:") and orders'
# ("order:") come from the store's servers alone and are not counted: a refund finds its order by the latter.
MAX_LOOK_UPS: Final = 1_000


def holds(held: Sequence[str], identifier: str) -> bool:
    """Whether a profile's identifiers (kept sorted) include this one: a look through a few (nearly every
    profile's), a bisection of more, since a customer of many orders holds one for each and a look through
    all of them for each identifier an event names grew with them."""
    if len(held) <= _LOOKED_THROUGH:
        return identifier in held
    at = bisect_left(held, identifier)
    return at < len(held) and held[at] == identifier


# Up to this many identifiers, `in` on the tuple costs less than a bisection.
_LOOKED_THROUGH: Final = 16


def look_ups_in(held: Sequence[str]) -> int:
    """How many emails and anonymous ids a profile's identifiers (kept sorted) hold: each kind is one run of
    the sorted identifiers, from its prefix up to the prefix with its colon's successor, found by bisection
    (a profile at the bound is asked for each event that names it by a new one)."""
    return sum(bisect_left(held, f"{p[:-1]};") - bisect_left(held, p) for p in FORGETTABLE)


def within_limit(held: Sequence[str], fresh: Sequence[str]) -> list[str]:
    """Of the `fresh` identifiers (none of them `held`), those a profile holding `held` may take: every one
    but the emails and anonymous ids past `MAX_LOOK_UPS`, left out in the order given. Those left out find
    no one: the event naming them is still its customer's, by the others it names."""
    room = MAX_LOOK_UPS - look_ups_in(held)
    taken: list[str] = []
    for identifier in dict.fromkeys(fresh):
        if identifier.startswith(FORGETTABLE):
            if room <= 0:
                continue
            room -= 1
        taken.append(identifier)
    return taken


def joined_identifiers(held: tuple[str, ...], fresh: Sequence[str]) -> tuple[str, ...] | None:
    """`held` (sorted) with the `fresh` identifiers, none of them held, that it may take (`within_limit`),
    sorted so the document is the same in any order; None when it takes none."""
    if len(held) + len(fresh) > MAX_LOOK_UPS:  # only near the bound is it worth counting
        fresh = within_limit(held, fresh)
    return tuple(sorted({*held, *fresh})) if fresh else None


def merged_identifiers(survivor: tuple[str, ...], absorbed: tuple[str, ...]) -> tuple[str, ...]:
    """The identifiers of two profiles that are one customer: all the survivor's, and those of the absorbed
    profile's that the bound leaves room for (`within_limit`): a merge must not be a way past it."""
    joined = joined_identifiers(survivor, [i for i in absorbed if not holds(survivor, i)])
    return survivor if joined is None else joined


def customer_id_for(identifier: str) -> str:
    """The customer id a profile would get if this identifier were its first: "id:42" -> "42"."""
    return identifier.removeprefix("id:")


def _rank(customer_id: str) -> tuple[int, str]:
    for prefix, rank in _RANK.items():
        if customer_id.startswith(prefix):
            return rank, customer_id
    return 0, customer_id


# A Struct, not a frozen dataclass: two are made an event, and the dataclass's __init__ (object.__setattr__
# per field) cost several times a Struct's, built in C.
class Resolution(Record, frozen=True):
    customer_id: str
    absorbed: tuple[str, ...]  # other profiles that turned out to be the same customer


def resolve(identifiers: Iterable[str], known: Mapping[str, str]) -> Resolution:
    """`known`: identifier -> customer id for identifiers already seen (in this store)."""
    ids = list(identifiers)
    # One loop and no sort in the usual case (one candidate): twice per event, it was 5 % of a batch.
    candidates: set[str] = set()
    for i in ids:
        held = known.get(i)
        if held is not None:
            candidates.add(held)
        if i.startswith("id:"):
            candidates.add(customer_id_for(i))
    if not candidates:
        return Resolution(customer_id_for(ids[0]), ())
    if len(candidates) == 1:
        return Resolution(candidates.pop(), ())
    survivor = min(candidates, key=_rank)
    return Resolution(survivor, tuple(sorted(candidates - {survivor})))


def named_alone(identifiers: Sequence[str]) -> str:
    """The customer these identifiers name with nothing known yet: `resolve(identifiers, {}).customer_id`,
    without the resolution's set and Struct (a batch's look-ups ask it of every event: deciding.Keys). Only
    store customer ids ("id:") can make candidates then; when they name two customers, `resolve` ranks."""
    found: str | None = None
    for i in identifiers:
        if i.startswith("id:"):
            candidate = customer_id_for(i)
            if found is None:
                found = candidate
            elif candidate != found:
                return resolve(identifiers, {}).customer_id
    return found if found is not None else customer_id_for(identifiers[0])
