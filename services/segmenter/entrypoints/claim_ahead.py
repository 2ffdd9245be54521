"""The next batch's transaction begun, and its claim sent, while the batch before it is still handled.

A backlog's batch spends about a tenth of its time in its claim (PostgreSQL inserting its event ids), while
the client waits; the batch before it, meanwhile, spends most of its own in the client's CPU while PostgreSQL
waits. Begun on a connection of its own as soon as the consumer has decoded it, the next batch's claim runs
in that time instead (bench/README.md, thirty-fourth round). The rest of the batch (its look-ups, decisions
and writes) runs on the same transaction once the batch before it committed, so the batches' effects come in
the same order as without.

What keeps this safe, as `FunnelProcessor` uses it:
- A claim starts only once the claim before it is done: a batch's claim is never overtaken by the next
  one's, so an event in both is the first batch's, as without (the second's claim waits for the first's
  transaction, which never waits for the second: it has claimed already, and the later steps touch no claim).
- A claim sent ahead is used only by a call for exactly the batch it was sent for (the same event objects,
  in the same order); any other call (a retry, the isolation of a bad message, a batch a rebalance cut)
  first rolls it back, so no batch ever waits for claims held by one that will not run before it.
- A batch handled without a claim sent ahead holds back the next batch's claim until it is done, retries of
  its own included (`take` and `release`).

A claim may also be sent before its batch is decoded, from its events' keys alone (`announce`: the
segmenter reads the ids from the raw messages, which costs a fraction of decoding them): it then runs while
they are decoded. `send` with the decoded batch takes that claim over when the batch's keys are the very keys
announced, in order, and otherwise (a message that did not decode, so one event fewer) rolls it back and
claims the batch as it is. A claim is a function of the keys alone, so a batch on a claim announced is as
one on a claim sent with its events.

A batch handled on its claim sent ahead may also give work to do on the next batch's transaction while it
goes on (`work_ahead`: the processor decides the next batch while this one's writes run). That work assumes
the batch in hand commits: if it fails instead, the next batch's claim is rolled back with the work, and the
next batch claims anew in its own call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from shared.logging import get_logger

log = get_logger(__name__)

E = TypeVar("E")  # a batch's event
K = TypeVar("K")  # what an event's claim needs of it (the segmenter's: its id and its store's)
C = TypeVar("C")  # what a claim returns
S = TypeVar("S")  # what the work done ahead on a claimed batch returns (`work_ahead`)
R = TypeVar("R")

CLAIMS_AHEAD = Counter(
    "segmenter_claims_ahead_total",
    "Batches whose claim was sent while the batch before was handled, by what became of it",
    ["outcome"],
)

# Connections kept for the claims sent ahead: one for the batch being handled, one for the next one's claim.
_SPARES = 2


@dataclass(frozen=True, slots=True)
class Begun(Generic[C, S]):
    """A batch's transaction, begun on `conn`, what its claim returned, and the work done ahead on it, if
    any was (`ClaimAhead.work_ahead`)."""

    conn: AsyncConnection
    trans: AsyncTransaction
    claimed: C
    ahead: asyncio.Task[S] | None = None


# Work done ahead on the next batch's transaction: given its events and its begun transaction.
WorkAhead = Callable[[Sequence[E], Begun[C, S]], Awaitable[S]]


@dataclass(slots=True)
class _Next(Generic[E, K, C, S]):
    """The next batch's claim: the keys it claims, the events it is for (None while only announced), the
    task that begins its transaction and claims, the task of the work done ahead on it, if any, and the
    work given for it before its events came (started when they do)."""

    keys: list[K]
    events: Sequence[E] | None
    task: asyncio.Task[Begun[C, S]] = field(init=False)
    sent: bool = False  # the claim is on its way (or done): cancelling is then no longer the way out
    ahead: asyncio.Task[S] | None = None
    work: WorkAhead[E, C, S] | None = None

    def give(self, work: WorkAhead[E, C, S]) -> None:
        """Start the work on this batch, or keep it until its events come (`came`)."""
        if self.events is None:
            self.work = work
        else:
            _start(self, work)

    def came(self, events: Sequence[E]) -> None:
        """The events of a batch announced: the work kept for them starts."""
        self.events = events
        work, self.work = self.work, None
        if work is not None:
            _start(self, work)

    def is_for(self, events: Sequence[E]) -> bool:
        mine = self.events
        return (
            mine is not None
            and len(mine) == len(events)
            and all(a is b for a, b in zip(mine, events, strict=True))
        )


class ClaimAhead(Generic[E, K, C, S]):
    """Claims sent ahead for one consumer's batches, handled one at a time. `claim(conn, keys)` runs in the
    transaction begun for a batch whose events' keys (`key(event)` of each) are `keys`; it is what the
    batch's handling would have run first."""

    def __init__(
        self,
        engine: AsyncEngine,
        claim: Callable[[AsyncConnection, Sequence[K]], Awaitable[C]],
        key: Callable[[E], K],
    ):
        self._engine = engine
        self._claim = claim
        self._key = key
        self._next: _Next[E, K, C, S] | None = None
        # Work for the next batch, given by the batch in hand (`work_ahead`) before that batch was sent.
        self._pending: WorkAhead[E, C, S] | None = None
        # Done when the latest claim of this consumer's is: the one the next claim sent ahead waits for.
        self._last: asyncio.Future[None] | None = None
        # Unresolved while a batch claims for itself (`take` gave None): every claim sent meanwhile waits.
        self._held: asyncio.Future[None] | None = None
        self._spares: list[AsyncConnection] = []

    def announce(self, keys: list[K]) -> None:
        """Begin the transaction of a batch not decoded yet, whose events' keys are `keys`, and send its
        claim as `send` would; `send` with the batch's events then takes it over (see the module's
        docstring)."""
        self._begin_next(keys, None)

    def send(self, events: Sequence[E]) -> None:
        """Begin `events`'s transaction and send its claim as soon as the claim in flight is done (now when
        none is), unless it was announced with the same keys: the events then go to that claim. A claim sent
        before for other events and not taken is rolled back first."""
        keys = list(map(self._key, events))
        entry = self._next
        if entry is not None and entry.events is None and entry.keys == keys:
            entry.came(events)
            return
        self._begin_next(keys, events)

    def _begin_next(self, keys: list[K], events: Sequence[E] | None) -> None:
        old = self._next
        after = self._held if self._held is not None else self._last
        entry: _Next[E, K, C, S] = _Next(keys, events)
        entry.task = asyncio.create_task(self._begin(entry, old, after))
        self._next = entry
        self._last = _done_when(entry.task)
        # Work for the next batch carries over from a claim announced for it and replaced (a message of it
        # did not decode).
        work = self._pending or (old.work if old is not None else None)
        self._pending = None
        if work is not None:
            entry.give(work)

    def work_ahead(self, work: WorkAhead[E, C, S]) -> None:
        """Run `work(events, begun)` on the next batch's transaction once its claim is done, while the batch
        in hand (inside `finish`) goes on: at once if the next batch was sent, otherwise when it is, until
        that `finish` returns. `take` hands its task over with the transaction (`Begun.ahead`); a batch
        rolled back instead (`clear`, `close`, the batch in hand failing) has it cancelled first."""
        entry = self._next
        if entry is None:
            self._pending = work
        elif entry.ahead is None:
            entry.give(work)

    async def take(self, events: Sequence[E]) -> Begun[C, S] | None:
        """The transaction begun and claimed for exactly `events`, if one was; otherwise None, and then no
        other claim of ours is open or in flight, and none starts until `release` is called: the caller
        claims `events` itself."""
        entry, self._next = self._next, None
        if entry is not None and entry.is_for(events):
            begun = await _outcome(entry)
            if begun is not None:
                CLAIMS_AHEAD.labels("used").inc()
                return dataclasses.replace(begun, ahead=entry.ahead)
            if entry.ahead is not None:  # it failed with the claim (it awaits the claim first)
                await _cancel(entry.ahead)
            entry = None  # failed, and nothing to roll back; another may have been sent meanwhile
        await self.clear(entry)
        return None

    async def clear(self, entry: _Next[E, K, C, S] | None = None) -> None:
        """Roll back every claim sent ahead (`entry`, taken from the slot already, and the slot's), and hold
        back those sent from now on until `release`."""
        if self._held is None:
            self._held = asyncio.get_running_loop().create_future()
        if entry is not None:
            await self._discard(entry)
        # One more may have been sent while that was rolled back: it waits for `release`, and is not needed.
        while (sent := self._next) is not None:
            self._next = None
            await self._discard(sent)

    def release(self) -> None:
        """The batch that `take` left to its caller has claimed and is done (committed or not)."""
        held, self._held = self._held, None
        if held is not None:
            held.set_result(None)

    async def finish(self, begun: Begun[C, S], work: Callable[[AsyncConnection], Awaitable[R]]) -> R:
        """`work(conn)` in the begun transaction, committed when it returns (rolled back when it raises).
        Work it gave for the next batch (`work_ahead`) assumed it would commit: when it does not, the next
        batch's claim is rolled back with that work, and the next batch claims anew in its own call."""
        try:
            result = await work(begun.conn)
            await begun.trans.commit()
        except Exception:
            self._forget_work()
            await _drop(begun.conn)
            entry = self._next
            if entry is not None and entry.ahead is not None:
                self._next = None
                await self._discard(entry)
            raise
        except BaseException:
            self._forget_work()
            await _drop(begun.conn)
            raise
        # Work given for a batch not sent by now is not for it: that batch comes after this one committed.
        # (Work given for a batch announced and not decoded yet stays: it is for that batch, and what it
        # assumed, this one committed, holds.)
        self._pending = None
        await self._give(begun.conn)
        return result

    def _forget_work(self) -> None:
        """The batch in hand failed: work it gave for the next batch assumed it would commit."""
        self._pending = None
        if self._next is not None:
            self._next.work = None

    async def close(self) -> None:
        """Roll back a claim sent ahead (the consumer stops, or its batch will not be handled) and close the
        connections kept for them."""
        entry, self._next = self._next, None
        self._pending = None
        if entry is not None:
            if entry.ahead is not None:
                await _cancel(entry.ahead)
            entry.task.cancel()
            with contextlib.suppress(BaseException):
                begun = await entry.task
                await _drop(begun.conn)
        spares, self._spares = self._spares, []
        for conn in spares:
            await _drop(conn)

    async def _begin(
        self, entry: _Next[E, K, C, S], old: _Next[E, K, C, S] | None, after: Awaitable[None] | None
    ) -> Begun[C, S]:
        if old is not None:
            # Shielded: cancelled meanwhile, this task must still not leave the old claim's transaction open.
            await asyncio.shield(self._discard(old))
        if after is not None:
            await after
        entry.sent = True
        conn = self._spares.pop() if self._spares else await self._engine.connect()
        try:
            trans = await conn.begin()
            claimed = await self._claim(conn, entry.keys)
        except BaseException:
            await _drop(conn)
            raise
        return Begun(conn, trans, claimed)

    async def _discard(self, entry: _Next[E, K, C, S]) -> None:
        """Roll back a claim sent ahead that will not be used. One still waiting for the claim before it is
        cancelled; one on its way is waited for (it waits, if at all, only for other consumers' transactions,
        never for ours: we hold none open while we discard), then rolled back. Work done ahead on it is
        cancelled first; if it had not ended, its connection may be mid-statement, and is closed instead."""
        interrupted = entry.ahead is not None and not entry.ahead.done()
        if entry.ahead is not None:
            await _cancel(entry.ahead)
        if not entry.sent:
            entry.task.cancel()
        begun = await _outcome(entry)
        if begun is None:
            return
        CLAIMS_AHEAD.labels("rolled_back").inc()
        if interrupted:
            await _drop(begun.conn)
            return
        try:
            await begun.trans.rollback()
        except Exception:
            await _drop(begun.conn)
        else:
            await self._give(begun.conn)

    async def _give(self, conn: AsyncConnection) -> None:
        if len(self._spares) < _SPARES:
            self._spares.append(conn)
        else:
            # More than needed (a claim was sent while another was rolled back): back to the pool.
            await conn.close()


def _start(entry: _Next[E, K, C, S], work: WorkAhead[E, C, S]) -> None:
    events = entry.events
    assert events is not None  # started only once the batch's events came

    async def ahead() -> S:
        # Shielded: cancelling the work must not cancel the claim, which is rolled back on its own.
        begun = await asyncio.shield(entry.task)
        return await work(events, begun)

    entry.ahead = asyncio.create_task(ahead())


async def _cancel(task: asyncio.Task[S]) -> None:
    """Cancel the task and wait until it has stopped, whatever it gave."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def _outcome(entry: _Next[E, K, C, S]) -> Begun[C, S] | None:
    """What the entry's task gave: its begun transaction, or None when it failed or was cancelled (a failed
    claim sent ahead is only a lost overlap: the batch claims again in its own call)."""
    try:
        return await entry.task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are cancelled ourselves (which cancelled the task too)
        return None
    except Exception as exc:
        CLAIMS_AHEAD.labels("failed").inc()
        log.warning("claim_ahead_failed", error=type(exc).__name__)
        return None


def _done_when(task: asyncio.Task[object]) -> asyncio.Future[None]:
    """A future resolved when `task` ends, however it ends."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def resolve(_: object) -> None:
        if not done.done():
            done.set_result(None)

    task.add_done_callback(resolve)
    return done


async def _drop(conn: AsyncConnection) -> None:
    """Close a connection whose state is unknown (a failure or a cancellation mid-statement): invalidated,
    so it is not given back to the pool; the server rolls its transaction back."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
