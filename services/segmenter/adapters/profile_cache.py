"""The profiles this process wrote last, each with the transaction that wrote it, so a batch need not parse
again a document it wrote itself a batch ago (about four in five of the profiles a backlog's batch loads;
parsing one cost about 40 µs).

A row's `xmin` is the transaction that wrote its current version, and a profile row is written at most once
per transaction (one upsert per batch or timer round, whoever writes), so while the row's xmin is the
transaction that wrote our copy, the row holds exactly our copy. Any later write, by whoever (another
instance, the timer worker, a test), changes the xmin and the row is read and parsed as before. The lock is
taken as before (`FOR UPDATE`): nothing changes about who may write a row meanwhile.

`xmin` is the low 32 bits of the 64-bit transaction id (`pg_current_xact_id()`), so an entry is trusted only
while the counter has moved less than 2^31 past its writer: a later writer's id cannot then share those low
bits. A counter that goes back (another database behind the same address) forgets every entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from services.segmenter.domain.profile import Profile

Key = tuple[str, str]
_XID_SPAN = 2**32
_TRUSTED_AGE = 2**31


@dataclass(frozen=True)
class Cached:
    xid: int  # the 64-bit id of the transaction that wrote the row
    profile: Profile


def xmin_of(xid: int) -> str:
    """The `xmin` a row written by the transaction with this 64-bit id has."""
    return str(xid % _XID_SPAN)


class ProfileCache:
    """At most `capacity` profiles, the least recently used forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[Key, Cached] = OrderedDict()
        self._latest_xid = 0

    def __len__(self) -> int:
        return len(self._entries)

    def versions(self, keys: Iterable[Key]) -> list[str | None]:
        """The xmin each key's row has if it still holds our copy (None when we have none), to send with
        the load."""
        entries = self._entries
        return [xmin_of(entry.xid) if (entry := entries.get(key)) is not None else None for key in keys]

    def hit(self, key: Key, xmin: str, now_xid: int) -> Profile | None:
        """Our copy, when the row still holds it (its xmin is our copy's writer); None when it must be read.
        `now_xid`: the loading transaction's 64-bit id."""
        self._observe(now_xid)
        entry = self._entries.get(key)
        if entry is None or xmin_of(entry.xid) != xmin or not 0 <= now_xid - entry.xid < _TRUSTED_AGE:
            return None
        return entry.profile

    def remember(self, key: Key, xid: int, profile: Profile) -> None:
        """`profile` is what the transaction `xid` wrote to the key's row (and committed)."""
        entries = self._entries
        entries[key] = Cached(xid, profile)
        entries.move_to_end(key)
        while len(entries) > self._capacity:
            entries.popitem(last=False)

    def _observe(self, now_xid: int) -> None:
        if now_xid < self._latest_xid:
            self._entries.clear()  # the counter went back: not the database these versions came from
        self._latest_xid = now_xid
