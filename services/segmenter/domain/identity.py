"""Which profile an event belongs to, when a customer is known by several identifiers. Pure.

An event names its customer by some of: the store's customer id, an email, an anonymous id, an order id.
Each identifier maps to at most one profile. When an event's identifiers point at several profiles, they are
one customer: all merge into a survivor chosen by a fixed rank (a store customer id first, then an email,
then an anonymous id, then an order), so the outcome does not depend on which event arrived first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from services.segmenter.domain.records import Record

_RANK: Final = {"email:": 1, "anon:": 2, "order:": 3}
# The identifiers an erasure forgets (and remembers as forgotten, by their digest, for the late events that
# name them): a customer's emails and anonymous ids. The store's own customer id and order ids stay.
FORGETTABLE: Final = ("email:", "anon:")


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
