"""The profiles this process wrote last, each with the transaction that wrote it, so a batch need not parse
again a document it wrote itself a batch ago (about four in five of the profiles a backlog's batch loads;
parsing one cost 40-90 µs on the loaded benchmark machine).

A row's `xmin` is the transaction that wrote its current version, and a profile row is written at most once
per transaction (one upsert per batch or timer round, whoever writes), so while the row's xmin is the
transaction that wrote our copy, the row holds exactly our copy. Any later write, by whoever (another
instance, the timer worker, a test), changes the xmin and the row is read and parsed as before. The lock is
taken as before (`FOR UPDATE`): nothing changes about who may write a row meanwhile.

`xmin` is the low 32 bits of the 64-bit transaction id (`pg_current_xact_id()`), which only grows within one
server: an entry is trusted only while the loading statement's horizon (the next id to be assigned when it
began, `pg_snapshot_xmax`) is less than 2^31 past the entry's writer, so no later writer can share those low
bits. Another server behind the same address (a restored copy, which would number transactions anew) shows
another start time, and every entry is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from services.segmenter.domain.profile import Profile

Key = tuple[str, str]
_XID_SPAN = 2**32
_TRUSTED_AGE = 2**31


# (the 64-bit id of the transaction that wrote the row, what it wrote)
Cached = tuple[int, Profile]


def xmin_of(xid: int) -> str:
    """The `xmin` a row written by the transaction with this 64-bit id has."""
    return str(xid % _XID_SPAN)


class ProfileCache:
    """At most `capacity` profiles, the least recently remembered forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[Key, Cached] = OrderedDict()
        self._server: str | None = None  # the start time of the server the entries come from

    def __len__(self) -> int:
        return len(self._entries)

    def versions(self, keys: Iterable[Key]) -> list[str | None]:
        """The xmin each key's row has if it still holds our copy (None when we have none), to send with
        the load."""
        entries = self._entries
        return [xmin_of(entry[0]) if (entry := entries.get(key)) is not None else None for key in keys]

    def hit(self, key: Key, xmin: str, horizon: int, server: str) -> Profile | None:
        """Our copy, when the row still holds it (its xmin is our copy's writer); None when it must be read.
        `horizon`: the first transaction id not yet assigned when the loading statement began."""
        self._on_server(server)
        entry = self._entries.get(key)
        if entry is None:
            return None
        xid, profile = entry
        if xmin_of(xid) != xmin or not 0 < horizon - xid < _TRUSTED_AGE:
            return None
        return profile

    def remember(self, written: Iterable[Profile], xid: int, server: str) -> None:
        """`written` is what the transaction `xid` of `server` wrote to these profiles' rows (and
        committed). A batch's profiles at once: one call a batch instead of one a profile (about 1,700 in a
        backlog's batch of 3,000 events of the benchmark's mix), the same entries as one at a time, since
        the least recently remembered still go first."""
        self._on_server(server)
        entries = self._entries
        for profile in written:
            key = (profile.store_id, profile.customer_id)
            entries[key] = (xid, profile)
            entries.move_to_end(key)
        while len(entries) > self._capacity:
            entries.popitem(last=False)

    def _on_server(self, server: str) -> None:
        if server != self._server:
            self._entries.clear()
            self._server = server
