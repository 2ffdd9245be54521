"""One batch of storefront events -> one transaction: dedupe records, identity resolution, profiles,
transitions, timers, order projections, co-purchases and outbox rows. This reads and writes; the decisions,
event after event, are service_layer/deciding.py's.

In a backlog (`claim_ahead`), a batch is decided while the batch before it is written (`_decide_ahead`): the
look-ups and profiles that batch holds are taken from its decisions, as its writes will leave them, the rest
read without locks. Once the batch before has committed, the batch locks its profiles' rows as a batch
always does and checks that each still holds the version it was decided from (`repository.relock_profiles`):
another writer in between (another instance, the timer worker) has it decided again, from the rows as they
are, and the next batches are not decided ahead for a while (`PauseAhead`). In process over the benchmark's
mix, alternated runs: the replay 14.7-16.3 s -> 11.7-13.1 (bench/README.md, thirty-sixth round). Its claim
is sent from its messages' ids before they are decoded (`announce`), so that it is done by the time they
are: in alternated stack runs the two cores 25.3 -> 22.6 % idle at the median, 15,868 -> 16,696 events/s,
with the look-ups the batch before holds no longer read (bench/README.md, forty-third round)."""

from __future__ import annotations

import asyncio
import dataclasses
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.segmenter.adapters import repository
from services.segmenter.adapters.profile_cache import ProfileCache, xmin_of
from services.segmenter.adapters.writes_in_order import alongside
from services.segmenter.domain.instants import standardise_events
from services.segmenter.domain.profile import Profile
from services.segmenter.entrypoints.claim_ahead import Begun, ClaimAhead
from services.segmenter.entrypoints.profiles_ahead import ProfilesAhead
from services.segmenter.service_layer.deciding import Keys, Loaded, deciding, is_shop_wide
from services.segmenter.service_layer.write_set import Changes, Key, first_copies
from shared.kept_connection import KeptConnection
from shared.logging import get_logger
from shared.raw_sql import ConnectionLost
from shared.storefront_event_structs import CustomerErasedEvent, StorefrontEvent, event_key
from shared.stores import StoreRegistry

DUPLICATES = Counter(
    "segmenter_duplicate_events_total", "Events skipped because their id was already processed"
)
MERGES = Counter("segmenter_profile_merges_total", "Profiles found to be one customer and merged")
DECIDED_AHEAD = Counter(
    "segmenter_decided_ahead_total",
    "Batches decided while the batch before was written, by what became of the decisions (used; stale:"
    " decided again; failed), and batches not decided ahead while PauseAhead pauses (paused)",
    ["outcome"],
)

log = get_logger(__name__)
# Profiles remembered between batches (adapters/profile_cache.py): a backlog's batch of 3,000 events writes
# about 2,000, and many of the profiles a batch loads were written by one of the batches just before it. A
# profile found here is neither sent by PostgreSQL as text nor parsed again (about 35,000 instructions a
# document). Of the 120,897 profiles the replay of the benchmark's 200,000 events asks for, 1,000 entries
# answered 34,861, 3,000 answer 66,979 and 8,000 would 69,051. Bounded by memory: 3,000 against 1,000 took
# the segmenter's peak 164.5 -> 169.4 MiB (issue 14 allows 179), its CPU an event 73.7 -> 68.2 us and
# PostgreSQL's 74.8 -> 68.5 (medians of 3 alternated runs; bench/README.md, fifty-eighth round).
PROFILE_CACHE_SIZE = 3000

# What a claim sent ahead gave: the (store, event) pairs seen for the first time.
_Claimed = set[tuple[str, str]]
# What a batch's own claim gave: those, with the batch's look-up keys (worked out while it ran).
_ClaimedHere = tuple[set[tuple[str, str]], Keys]
# What a batch's transaction gave: outbox rows written, the writer of its profiles, its changes.
_Batch = tuple[int, repository.Writer | None, Changes]


@dataclass(frozen=True, slots=True)
class _Basis:
    """What a batch decided leaves for the next batch to be decided while it is written: its customers'
    profiles and the identities as its writes will leave them, and the version each profile's row will then
    have (its own transaction's for a row it writes; the one it read otherwise)."""

    profiles: dict[Key, Profile]
    versions: dict[Key, str]
    identities: dict[tuple[str, str], str]
    owners: dict[Key, str]  # (store, absorbed) -> survivor, for its merges (repository.final_owners)

    @classmethod
    def of(cls, events: Sequence[StorefrontEvent], loaded: Loaded, changes: Changes) -> _Basis | None:
        """None for a batch the next one's look-ups could not follow from memory: one whose erasures forget
        identities or reach customers' merged ids, or whose merges drop look-ups (all rare), or whose
        transaction is not known yet (no row read: the first batches)."""
        if (
            loaded.writer is None
            or loaded.forgotten
            or loaded.shops
            or loaded.merged
            or changes.forgotten
            or changes.dropped
            or any(type(e) is CustomerErasedEvent for e in events)
        ):
            return None
        written = xmin_of(loaded.writer.xid)
        stored = loaded.profiles
        versions = dict(loaded.versions)
        for key, p in changes.profiles.items():
            if p is not stored.get(key):
                versions[key] = written
        return cls(
            {**stored, **changes.profiles},
            versions,
            changes.identities,
            repository.final_owners(changes.merges),
        )


@dataclass(frozen=True, slots=True)
class _Decided:
    """A batch decided ahead: its fresh events, their look-up keys, what was read (or taken from the batch
    before), the customers whose profiles were looked for (found or not) and the decisions."""

    fresh: list[StorefrontEvent]
    keys: Keys
    loaded: Loaded
    candidates: set[Key]
    changes: Changes


# Claims sent ahead: keyed by what a claim records of an event, giving the first-seen pairs, and the batch
# decided ahead on them.
_Ahead = ClaimAhead[StorefrontEvent, tuple[str, str], _Claimed, _Decided | None]


class PauseAhead:
    """Whether the next batch is decided ahead: not for a while after a batch decided ahead was found stale,
    its rows written meanwhile by another writer (in the benchmark, a second instance taking the partitions
    of the same customers' other identifiers), so decided twice; the pause doubles each time that happens
    again, up to LONGEST batches, and ends with the first batch decided ahead that holds. Two segmenters
    with full batches found 22-25 of each one's 27-29 decided ahead stale (thirty-ninth round); one process,
    2 of 62 or none."""

    LONGEST = 32

    def __init__(self) -> None:
        self._pause = 0  # batches the last stale one paused for
        self._left = 0  # batches of it still to go

    def deciding(self) -> bool:
        if self._left:
            self._left -= 1
            return False
        return True

    def stale(self) -> None:
        self._pause = min(max(1, 2 * self._pause), self.LONGEST)
        self._left = self._pause

    def used(self) -> None:
        self._pause = 0


class FunnelProcessor:
    def __init__(
        self,
        engine: AsyncEngine,
        stores: StoreRegistry,
        on_outbox_written: Callable[[], None] = lambda: None,
        *,
        profile_cache: ProfileCache | None = None,
        hold_connection: bool = False,
        claim_ahead: bool = False,
        profiles_ahead: ProfilesAhead | None = None,
    ) -> None:
        self._engine = engine
        self._stores = stores
        self._on_outbox_written = on_outbox_written
        self._cache = profile_cache if profile_cache is not None else ProfileCache(PROFILE_CACHE_SIZE)
        # With `hold_connection`, one connection is kept from batch to batch (the consumer's handler runs
        # one batch at a time) instead of a pool checkout per batch (shared/kept_connection.py): in process,
        # at batches of 100 events, 297 -> 248 us of CPU an event while checkouts were still pinged. `close`
        # gives it back.
        self._connections = KeptConnection(engine, keep=hold_connection)
        # With `claim_ahead`, the consumer's next batch, handed over by `send_ahead` while this one is
        # handled, has its transaction begun and its claim sent at once on a connection of its own
        # (claim_ahead.py).
        self._pause_ahead = PauseAhead()
        # The profiles a batch decided ahead reads, kept from the timer worker's rounds that share them
        # (profiles_ahead.py) until the batch has locked them.
        self._profiles_ahead = profiles_ahead if profiles_ahead is not None else ProfilesAhead()
        self._ahead: _Ahead | None = (
            ClaimAhead(engine, repository.claim_events, _claim_key) if claim_ahead else None
        )

    async def close(self) -> None:
        """Roll back a claim sent ahead, and give the connections kept between batches back to the pool."""
        if self._ahead is not None:
            await self._ahead.close()
        self._profiles_ahead.clear()
        await self._connections.close()

    def announce(self, values: Sequence[bytes | None]) -> None:
        """The next batch's messages, before they are decoded: the claim of their events' ids is sent at once
        (with `claim_ahead`; nothing otherwise) and runs while they are decoded; `send_ahead` then hands it
        the decoded events. Nothing when an id cannot be read (that message will not decode either): the
        claim goes with the decoded events."""
        if self._ahead is None:
            return
        try:
            keys = [event_key(v) for v in values if v is not None]
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            # (msgspec gives up on a value nested near Python's own limit, in a field it skips too: such a
            # message is the contract decoder's to refuse, and must not stop the consumer here.)
            return
        if len(keys) == len(values):  # (a message without a value will not decode either)
            self._ahead.announce(keys)

    def send_ahead(self, events: Sequence[StorefrontEvent]) -> None:
        """The next batch, as the next call will get it: its claim is sent as soon as the batch in hand has
        claimed (with `claim_ahead`; nothing otherwise)."""
        if self._ahead is not None:
            self._ahead.send(events)

    async def drop_ahead(self) -> None:
        """The batch sent ahead will not come as it was: its claim is rolled back."""
        if self._ahead is not None:
            await self._ahead.clear()
            self._ahead.release()
        self._profiles_ahead.clear()

    async def __call__(self, events: Sequence[StorefrontEvent]) -> None:
        standardise_events(events)
        ahead = self._ahead
        if ahead is None:
            result = await self._connections.transaction(lambda conn: self._batch(conn, events))
        else:
            if not self._profiles_ahead.reading(events):
                self._profiles_ahead.clear()  # read ahead for a batch that did not come as it was sent
            try:
                result = await self._claimed_ahead(ahead, events)
            finally:
                self._profiles_ahead.locked(events)
        written, writer, changes = result
        MERGES.inc(len(changes.merges))  # counted once committed: a batch decided ahead may be decided again
        # Committed: these rows now hold what this transaction wrote.
        if changes.written:
            assert writer is not None
            self._cache.remember(changes.written, writer.xid, writer.server)
        if written:
            self._on_outbox_written()

    async def _claimed_ahead(
        self,
        ahead: _Ahead,
        events: Sequence[StorefrontEvent],
    ) -> _Batch:
        """The batch on the transaction its claim was sent ahead in, if it was; otherwise as without."""
        begun = await ahead.take(events)
        if begun is not None:
            first_seen = begun.claimed
            try:
                return await ahead.finish(
                    begun,
                    lambda conn: self._after_claim(
                        conn, events, first_seen, None, ahead=ahead, decided=begun.ahead
                    ),
                )
            except (DBAPIError, ConnectionLost) as exc:
                if isinstance(exc, DBAPIError) and not exc.connection_invalidated:
                    raise
                # Its connection died while it waited for the batch before (a restart, an idle-transaction
                # timeout): as a kept connection found dead, the batch is done again at once, claim and all.
                # (Its next statement goes to asyncpg directly, whose loss is ConnectionLost.)
                await ahead.clear()
        try:
            return await self._connections.transaction(lambda conn: self._batch(conn, events))
        finally:
            ahead.release()

    async def _claim(self, conn: AsyncConnection, events: Sequence[StorefrontEvent]) -> _ClaimedHere:
        """A batch's first statement: its events' ids recorded, those seen for the first time returned."""
        # The claim goes out first, and while PostgreSQL inserts the batch's ids, what the look-ups need of
        # the events is worked out for all of them (a duplicate is rare; when there is one, again for the
        # fresh ones): that CPU then overlaps the claim instead of following it. The claim stays first: sent
        # after the look-ups instead, to run while the batch is decided, it gained one process 2 % and cost
        # two processes as much (bench/README.md, fourteenth round), whose consumers claim while they would
        # otherwise wait for each other's profile locks.
        return await alongside(
            repository.claim_events(conn, list(map(_claim_key, events))),
            lambda: Keys.of(events),
        )

    async def _batch(self, conn: AsyncConnection, events: Sequence[StorefrontEvent]) -> _Batch:
        first_seen, keys = await self._claim(conn, events)
        return await self._after_claim(conn, events, first_seen, keys)

    async def _after_claim(
        self,
        conn: AsyncConnection,
        events: Sequence[StorefrontEvent],
        first_seen: set[tuple[str, str]],
        keys: Keys | None,
        *,
        ahead: _Ahead | None = None,
        decided: asyncio.Task[_Decided | None] | None = None,
    ) -> _Batch:
        done = await self._still_decided(conn, decided) if decided is not None else None
        if done is not None:
            fresh, keys, loaded, changes = done.fresh, done.keys, done.loaded, done.changes
            DUPLICATES.inc(len(events) - len(fresh))
        else:
            fresh = first_copies(events, first_seen)
            DUPLICATES.inc(len(events) - len(fresh))
            if not fresh:
                return 0, None, Changes()
            if keys is None or len(fresh) < len(events):
                keys = Keys.of(fresh)  # (a claim sent ahead does not work them out: see _decide_ahead)
            loaded = await self._load(conn, fresh, keys)
            changes = self._decide(fresh, keys, loaded)
        if ahead is not None:
            if self._pause_ahead.deciding():
                # The next batch is decided while this one's writes run, from what they will leave.
                ahead.work_ahead(
                    lambda next_events, begun: self._decide_ahead(
                        next_events, begun, _Basis.of(fresh, loaded, changes)
                    )
                )
            else:
                # Counted so that an SRE sees how often a second instance makes deciding ahead not pay.
                DECIDED_AHEAD.labels("paused").inc()
        written = await changes.write(conn)
        writer = loaded.writer
        if writer is None and changes.written:
            writer = await repository.current_writer(conn)
        return written, writer, changes

    async def _decide_ahead(
        self,
        events: Sequence[StorefrontEvent],
        begun: Begun[_Claimed, _Decided | None],
        basis: _Basis | None,
    ) -> _Decided | None:
        """The batch decided on its claimed transaction while the batch before it (`basis`) is written: the
        look-ups and the profiles that batch holds are taken from it, the rest read without locks. None when
        the batch needs what only the usual path reads (an erasure, an identifier an erasure forgot, an
        erased customer). `_still_decided` checks, once the batch before has committed, that the rows read
        are still as read. (`basis` is worked out as this starts, in the time the batch before's writes
        run, and is None when that batch leaves nothing to decide from.)"""
        if basis is None:
            return None
        conn = begun.conn
        standardise_events(events)
        fresh = first_copies(events, begun.claimed)
        if not fresh or any(type(e) is CustomerErasedEvent for e in fresh):
            return None
        # Worked out here, not alongside the claim: a claim sent ahead may have been announced, and have
        # run while the events were decoded.
        keys = Keys.of(fresh)
        # As the batch before leaves them: its look-ups written, then its merges' repointing. The look-ups
        # it holds are not read: the database holds what it read of them, or less (`theirs` wins below).
        theirs = basis.identities
        looked_up = await repository.load_identities(conn, (k for k in keys.wanted if k not in theirs))
        if looked_up.forgotten:
            return None
        stored = looked_up.identities
        identities: dict[tuple[str, str], str] = {}
        for key in keys.wanted:
            customer = theirs.get(key) or stored.get(key)
            if customer is not None:
                identities[key] = basis.owners.get((key[0], customer), customer)
        candidates = {(s, c) for (s, _), c in identities.items()} | keys.named_alone
        # From here until this batch locks them, this process's timer rounds leave these customers alone.
        await self._profiles_ahead.read(events, candidates)
        held = candidates & basis.profiles.keys()
        read = await repository.read_profiles_with_versions(conn, candidates - held, self._cache)
        profiles = read.profiles
        versions = read.versions
        for key in held:
            profiles[key] = basis.profiles[key]
            versions[key] = basis.versions[key]
        if any(p.erased_at is not None for p in profiles.values()):
            return None
        loaded = Loaded(identities, profiles, {}, None, {}, {}, versions)
        return _Decided(fresh, keys, loaded, candidates, await self._decide_in_turns(fresh, keys, loaded))

    async def _still_decided(
        self, conn: AsyncConnection, decided: asyncio.Task[_Decided | None]
    ) -> _Decided | None:
        """The decisions made ahead, if they still hold: the profiles' rows, now locked, still hold what
        they were decided from (the batch before committed, and nobody wrote them since)."""
        try:
            done = await decided
        except (DBAPIError, ConnectionLost):
            raise  # the transaction's own statement failed: the batch fails as it would have
        except Exception as exc:
            DECIDED_AHEAD.labels("failed").inc()
            log.warning("decided_ahead_failed", error=type(exc).__name__)
            return None
        if done is None:
            return None
        loaded = done.loaded
        same, writer = await repository.relock_profiles(conn, done.candidates, loaded.versions)
        if not same:
            DECIDED_AHEAD.labels("stale").inc()
            self._pause_ahead.stale()
            return None
        DECIDED_AHEAD.labels("used").inc()
        self._pause_ahead.used()
        return dataclasses.replace(done, loaded=dataclasses.replace(loaded, writer=writer))

    async def _load(self, conn: AsyncConnection, events: Sequence[StorefrontEvent], keys: Keys) -> Loaded:
        """What deciding `events` reads, its profiles locked (a whole store's for a shop-wide erasure)."""
        # The look-ups, and which of the emails and anonymous ids no look-up knows (a new customer's, nearly
        # always) an erasure forgot (it forgets no other kind; a batch's new orders alone are a third of its
        # identifiers).
        looked_up = await repository.load_identities(conn, keys.wanted)
        found, forgotten = looked_up.identities, looked_up.forgotten
        candidates = {(s, c) for (s, _), c in found.items()} | keys.named_alone
        candidates |= {(s, f.customer_id) for (s, _), f in forgotten.items()}
        versioned = await repository.load_profiles_with_versions(conn, candidates, self._cache)
        loaded = versioned.profiles
        versions = versioned.versions
        # An erased customer merged into another since: the late events its forgotten look-ups name are the
        # survivor's (`deciding._as_when_said` follows the pointers), so the survivors are loaded too.
        owners = {(s, f.customer_id) for (s, _), f in forgotten.items()}
        while pointed := {
            (k[0], p.merged_into)
            for k in owners
            if (p := loaded.get(k)) is not None and p.merged_into and (k[0], p.merged_into) not in loaded
        }:
            more = await repository.load_profiles_with_versions(conn, pointed, self._cache)
            loaded = {**loaded, **more.profiles}
            versions = {**versions, **more.versions}
            owners = pointed
        shops = {}
        erasing = {e.store_id for e in events if type(e) is CustomerErasedEvent and is_shop_wide(e)}
        for store_id in sorted(erasing):
            shops[store_id] = await repository.load_store_profiles_for_update(conn, store_id)
        merged: dict[Key, set[str]] = {}
        if any(type(e) is CustomerErasedEvent for e in events) or any(
            p.erased_at is not None for p in loaded.values()
        ):
            for store_id, absorbed_id, survivor_id in await repository.load_merged_into(conn, candidates):
                merged.setdefault((store_id, survivor_id), set()).add(absorbed_id)
        return Loaded(found, loaded, shops, versioned.writer, merged, forgotten, versions)

    def _decide(self, events: Sequence[StorefrontEvent], keys: Keys, loaded: Loaded) -> Changes:
        """The decisions of a batch, from what was read for it."""
        changes = Changes(stored_profiles=loaded.profiles, stored_identities=loaded.identities)
        for _ in deciding(events, keys, loaded, changes, self._stores):
            pass
        return changes

    async def _decide_in_turns(
        self, events: Sequence[StorefrontEvent], keys: Keys, loaded: Loaded
    ) -> Changes:
        """`_decide`, giving the event loop a turn every `TURN` events: decided while the batch before is
        written, the batch does not hold that batch's statements back for the whole of its decisions
        (each goes out when the one before it answers)."""
        changes = Changes(stored_profiles=loaded.profiles, stored_identities=loaded.identities)
        for _ in deciding(events, keys, loaded, changes, self._stores):
            await asyncio.sleep(0)
        return changes


# What a claim records of an event (repository.claim_events): its (event_id, store_id). An `attrgetter` of
# the two, not a function returning them: called for every event of a batch, twice when its claim went
# ahead, it reads both in C instead of running a Python frame each time.
_claim_key: Callable[[StorefrontEvent], tuple[str, str]] = operator.attrgetter("event_id", "store_id")
