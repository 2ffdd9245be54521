"""The profiles a batch decided ahead has read without locks, kept from the timer worker of the same process
until the batch has locked them again.

A batch decided ahead (processor.py, `_decide_ahead`) reads its customers' profiles while the batch before
is written; once that one has committed, it locks them and checks that each still holds the version it read
(`repository.relock_profiles`), and if one does not, the whole batch is decided again. A timer round in
between (timers.py), which takes any profile no transaction holds, did that to 6 to 10 of the 62 batches of
each single segmenter run of the benchmark's backlog (whose four days of carts have their abandonment timers
due at once: about 14,500 fired a run), and 6 to 11 more were not decided ahead after them; with the timers
stopped, none (bench/README.md, sixty-fourth round). In one process the two need not meet: a timer round
leaves the customers a batch is reading ahead for a later round, as it leaves a profile another transaction
holds, and a batch about to read ahead waits for a round that has already loaded one of its customers.
Another instance's timers are not kept off: the relock still finds what they wrote.

Both sides run on the process's one event loop, so each call's check and mark happen with nothing between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Set

from services.segmenter.service_layer.write_set import Key


class ProfilesAhead:
    def __init__(self) -> None:
        self._reading: frozenset[Key] = frozenset()
        self._reader: object | None = None  # the batch reading them (its events' sequence)
        self._firing: frozenset[Key] = frozenset()
        self._fired = asyncio.Event()
        self._fired.set()

    async def read(self, reader: object, keys: Set[Key]) -> None:
        """Marks `keys` as read ahead by `reader` (in place of any marked before), once no timer round holds
        one of them: returns when the round that loaded one has ended."""
        self._reading = frozenset(keys)
        self._reader = reader
        while not self._firing.isdisjoint(keys):
            await self._fired.wait()

    def locked(self, reader: object) -> None:
        """`reader`'s batch holds its profiles' locks now, or was dropped: its keys are free again."""
        if reader is self._reader:
            self.clear()

    def clear(self) -> None:
        """Nothing is read ahead (a batch other than the one read ahead came, or none will)."""
        self._reading = frozenset()
        self._reader = None

    def reading(self, reader: object) -> bool:
        return reader is self._reader

    def fire(self, keys: Iterable[Key]) -> set[Key]:
        """A timer round is about to load these customers' profiles: those it may take (none that a batch
        is reading ahead), marked as the round's until `fired`."""
        free = {key for key in keys if key not in self._reading}
        self._firing = frozenset(free)
        self._fired.clear()
        return free

    def fired(self) -> None:
        """The round has committed, or failed."""
        self._firing = frozenset()
        self._fired.set()
