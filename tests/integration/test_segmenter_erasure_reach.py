"""What a customer's erasure reaches beyond the customer's own profile, through the segmenter's batch handler
(processor.py) and PostgreSQL: the profiles merged into them (which keep only their pointer), the notifier's
rows under each merged id (told by a `customer_erased` for each), and a link between the erased customer and
an older profile that we hear of only after the erasure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.segmenter.adapters.tables import identities, profiles
from services.segmenter.entrypoints.processor import FunnelProcessor
from shared.storefront_event_structs import StorefrontEvent
from tests.integration.test_segmenter_engine import (
    cart,
    event,
    funnel_events,
    order,
    pending_timers,
    registry,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)
GIL = {"email": "gil@x.io", "first_name": "Gil", "city": "Oslo", "phone": "+4790000000"}
PERSONAL = ("gil@x.io", "Gil", "Oslo", "+4790000000")


async def _rows(engine: AsyncEngine, store_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        return await _rows_in(conn, store_id)


async def _identities(engine: AsyncEngine, store_id: str) -> dict[str, str]:
    async with engine.connect() as conn:
        found = await conn.execute(
            select(identities.c.identifier, identities.c.customer_id).where(identities.c.store_id == store_id)
        )
        return {r.identifier: r.customer_id for r in found.all()}


async def _personal_data_left(engine: AsyncEngine, store_id: str) -> list[str]:
    """Where any of Gil's details is still stored: profile rows and identities. A guest's customer id is
    their email ("email:gil@x.io"), so the keys and pointers that name one are left aside (see the README)."""
    left = []
    for customer_id, row in (await _rows(engine, store_id)).items():
        named = {k: v for k, v in row.facts.items() if k not in ("customer_id", "merged_into")}
        document = json.dumps(named)
        left += [f"{customer_id}: {v}" for v in PERSONAL if v in document or v == row.email]
    for identifier in await _identities(engine, store_id):
        left += [f"identity {identifier}" for v in PERSONAL if v in identifier]
    return left


async def _erased_ids(engine: AsyncEngine, store_id: str) -> list[str]:
    return sorted(e.customer_id for e in await funnel_events(engine, store_id) if e.type == "customer_erased")


def _erase(store_id: str, customer_id: str, at: datetime) -> StorefrontEvent:
    return event(store_id, "customer_erased", None, at, store_customer_id=customer_id)


async def _guest_then_account(engine: AsyncEngine, store_id: str) -> None:
    """Gil orders as a guest (profile email:gil@x.io), then opens account u-9 with that email."""
    processor = FunnelProcessor(engine, registry(store_id))
    await processor([order(store_id, GIL, "o1", T0)])
    account = {"store_customer_id": "u-9", "email": "gil@x.io"}
    await processor([event(store_id, "customer_upserted", None, T0 + timedelta(hours=1), **account)])


async def test_a_profile_merged_away_keeps_only_its_pointer(engine: AsyncEngine, store_id: str) -> None:
    await _guest_then_account(engine, store_id)
    rows = await _rows(engine, store_id)
    tombstone = rows["email:gil@x.io"]
    assert tombstone.merged_into == "u-9"
    assert tombstone.email is None
    held = {k: v for k, v in tombstone.facts.items() if v not in (None, [], {}, 0, False)}
    assert held == {
        "store_id": store_id,
        "customer_id": "email:gil@x.io",
        "merged_into": "u-9",
        "stage": "prospect",
        "health": "active",
    }
    # What it held is the survivor's.
    survivor = rows["u-9"].facts
    assert (survivor["first_name"], survivor["city"], len(survivor["orders"])) == ("Gil", "Oslo", 1)


@pytest.mark.parametrize("one_batch", [False, True], ids=["batch by batch", "one batch"])
async def test_an_erasure_reaches_the_ids_merged_into_the_customer_at_any_depth(
    engine: AsyncEngine, store_id: str, one_batch: bool
) -> None:
    processor = FunnelProcessor(engine, registry(store_id))
    steps = [
        [cart(store_id, {"anonymous_id": "a-1"}, "k1", T0)],
        [order(store_id, GIL, "o1", T0 + timedelta(minutes=10))],
        # The browser and the guest are one customer: anon:a-1 goes into email:gil@x.io ...
        [order(store_id, {"anonymous_id": "a-1", **GIL}, "o2", T0 + timedelta(minutes=20))],
        # ... which goes into the account.
        [event(store_id, "customer_upserted", None, T0 + timedelta(hours=1), store_customer_id="u-9", **GIL)],
        [_erase(store_id, "u-9", T0 + timedelta(days=2))],
    ]
    if one_batch:
        await processor([e for step in steps for e in step])
    else:
        for step in steps:
            await processor(step)
    rows = await _rows(engine, store_id)
    assert {c: r.merged_into for c, r in rows.items()} == {
        "anon:a-1": "email:gil@x.io",
        "email:gil@x.io": "u-9",
        "u-9": None,
    }
    assert await _personal_data_left(engine, store_id) == []
    # The notifier forgets each id it heard of Gil under, not only the account's.
    assert await _erased_ids(engine, store_id) == ["anon:a-1", "email:gil@x.io", "u-9"]
    # A redelivered erasure changes nothing and tells nothing again.
    before = await funnel_events(engine, store_id)
    await processor(steps[-1])
    assert len(await funnel_events(engine, store_id)) == len(before)


async def _link_then_erase(
    processor: FunnelProcessor, store_id: str, link_first: bool, since: tuple[StorefrontEvent, ...] = ()
) -> list[StorefrontEvent]:
    """The events, in the order they happened (which is not the order they reach us in). `since`: what the
    customer does after the erasure, heard before the late link."""
    # A guest who signs up for the newsletter (profile email:gil@x.io) and leaves a cart ...
    signup = event(store_id, "customer_upserted", None, T0, anonymous_id="a-1", **GIL)
    left = cart(store_id, {"anonymous_id": "a-1"}, "k1", T0 + timedelta(minutes=5))
    bought = order(store_id, {"store_customer_id": "u-9"}, "o1", T0 + timedelta(minutes=30))
    for e in (signup, left, bought):
        await processor([e])
    # ... and who has an account, u-9. The login that links the browser to it happened before the erasure ...
    link = event(
        store_id,
        "customer_upserted",
        None,
        T0 + timedelta(hours=1),
        store_customer_id="u-9",
        anonymous_id="a-1",
    )
    erase = _erase(store_id, "u-9", T0 + timedelta(days=2))
    # ... and reaches us before it, or after it.
    for e in [link, erase, *since] if link_first else [erase, *since, link]:
        await processor([e])
    return [signup, left, bought, link, erase, *since]


async def _state(
    engine: AsyncEngine, store_id: str, happened: list[StorefrontEvent]
) -> tuple[Any, list[tuple[str, str]]]:
    """The store's profiles and identities, comparable between two stores fed the same events (`happened`,
    in the order they happened) in different orders."""
    names = {e.event_id: f"event {n}" for n, e in enumerate(happened)} | {store_id: "store"}
    rows = await _rows(engine, store_id)
    return (
        _comparable({c: r.facts for c, r in rows.items()}, names),
        sorted((await _identities(engine, store_id)).items()),
    )


def _back_with_a_new_email(store_id: str) -> StorefrontEvent:
    """Gil, erased two days after T0, comes back on the third with a new email: no longer `erased`."""
    return event(
        store_id,
        "customer_upserted",
        None,
        T0 + timedelta(days=3),
        store_customer_id="u-9",
        email="gil@new.io",
    )


def _comparable(value: Any, names: dict[str, str]) -> Any:
    """A stored document with the run's own names (store and event ids) put as the same placeholders."""
    document = json.dumps(value, sort_keys=True)
    for name, placeholder in names.items():
        document = document.replace(name, placeholder)
    return json.loads(document)


async def test_a_link_heard_after_the_erasure_forgets_what_a_link_heard_before_it_would(
    engine: AsyncEngine, store_id: str
) -> None:
    stores = {when: f"{store_id}-{when}" for when in ("first", "last")}
    states = {}
    for when, store_id in stores.items():
        processor = FunnelProcessor(engine, registry(store_id))
        happened = await _link_then_erase(processor, store_id, link_first=when == "first")
        assert await _personal_data_left(engine, store_id) == [], when
        assert await _erased_ids(engine, store_id) == ["email:gil@x.io", "u-9"], when
        states[when] = await _state(engine, store_id, happened)
    assert states["first"] == states["last"]
    profiles_, owners = states["first"]
    assert {c: p["merged_into"] for c, p in profiles_.items()} == {"email:gil@x.io": "u-9", "u-9": None}
    assert owners == [("id:u-9", "u-9"), ("order:o1", "u-9")]


async def test_a_late_link_that_is_all_forgotten_leaves_what_the_customer_did_since_the_erasure(
    engine: AsyncEngine, store_id: str
) -> None:
    """After the erasure Gil comes back logged in, by account id alone (no details): a cart, a product view.
    A login from before the erasure that links the browser's older profile reaches us after that, and all
    that profile heard was before the erasure: it brings nothing, and takes nothing away either. Both orders
    end in the same state, the cart and the view still Gil's."""
    stores = {when: f"{store_id}-{when}" for when in ("first", "last")}
    states = {}
    for when, store_id in stores.items():
        processor = FunnelProcessor(engine, registry(store_id))
        account = {"store_customer_id": "u-9"}
        later = T0 + timedelta(days=3)
        since = (
            cart(store_id, account, "k2", later),
            event(store_id, "product_viewed", {"product": {"product_id": "p3"}}, later, **account),
        )
        happened = await _link_then_erase(processor, store_id, link_first=when == "first", since=since)
        assert await _personal_data_left(engine, store_id) == [], when
        customer = (await _rows(engine, store_id))["u-9"].facts
        assert [c["cart_id"] for c in customer["carts"]] == ["k2"], when
        assert [v["product_id"] for v in customer["viewed"]] == ["p3"], when
        states[when] = await _state(engine, store_id, happened)
    assert states["first"] == states["last"]


async def test_a_late_link_after_the_customer_came_back_with_new_details_still_forgets_the_older_profile(
    engine: AsyncEngine, store_id: str
) -> None:
    """Gil comes back after the erasure with a new email (no longer `erased`, a new relationship); then the
    login from before the erasure reaches us. The browser's older profile, its old email's and anonymous id's
    look-ups among it, stays forgotten as if the link had come first, and the notifier hears of its id."""
    stores = {when: f"{store_id}-{when}" for when in ("first", "last")}
    states = {}
    for when, store_id in stores.items():
        processor = FunnelProcessor(engine, registry(store_id))
        since = (_back_with_a_new_email(store_id),)
        happened = await _link_then_erase(processor, store_id, link_first=when == "first", since=since)
        assert await _personal_data_left(engine, store_id) == [], when
        assert await _erased_ids(engine, store_id) == ["email:gil@x.io", "u-9"], when
        states[when] = await _state(engine, store_id, happened)
    assert states["first"] == states["last"]
    profiles_, owners = states["first"]
    assert profiles_["u-9"]["email"] == "gil@new.io"
    assert owners == [("email:gil@new.io", "u-9"), ("id:u-9", "u-9"), ("order:o1", "u-9")]


@pytest.mark.parametrize("one_batch", [False, True], ids=["batch by batch", "one batch"])
async def test_an_event_from_before_the_erasure_names_no_old_identifier_after_the_customer_came_back(
    engine: AsyncEngine, store_id: str, one_batch: bool
) -> None:
    """Delivered late, after Gil came back with a new email: an update from before the erasure that names the
    account with the old email and a browser's id. Neither finds the customer again, in a later batch or in
    the same one: a guest cart under the old email, days later, is a new customer's."""
    happened = [
        order(store_id, {"store_customer_id": "u-9"}, "o1", T0),
        _erase(store_id, "u-9", T0 + timedelta(days=2)),
        _back_with_a_new_email(store_id),
        event(
            store_id,
            "customer_upserted",
            None,
            T0 + timedelta(hours=1),
            store_customer_id="u-9",
            anonymous_id="a-9",
            **GIL,
        ),
        cart(store_id, {"email": "gil@x.io"}, "k5", T0 + timedelta(days=4)),
    ]
    processor = FunnelProcessor(engine, registry(store_id))
    for batch in [happened] if one_batch else [[e] for e in happened]:
        await processor(batch)
    rows = await _rows(engine, store_id)
    assert (rows["u-9"].email, rows["u-9"].facts["carts"]) == ("gil@new.io", [])
    assert [c["cart_id"] for c in rows["email:gil@x.io"].facts["carts"]] == ["k5"]
    assert sorted((await _identities(engine, store_id)).items()) == [
        ("email:gil@new.io", "u-9"),
        ("email:gil@x.io", "email:gil@x.io"),
        ("id:u-9", "u-9"),
        ("order:o1", "u-9"),
    ]


async def test_a_late_link_to_an_erased_guest_forgets_what_the_other_profiles_heard_before_the_erasure(
    engine: AsyncEngine, store_id: str
) -> None:
    """The erased one is the profile absorbed, not the survivor: Gil's guest profile (email:gil@x.io) is
    erased by email; the browser a-1 that gave Gil's phone and left a cart before it was never linked to it.
    Then Segment's Order Completed for the guest order, sent by the store's account u-9 with a-1's id before
    the erasure, reaches us: u-9 absorbs both, and what either heard before the erasure stays forgotten, as
    when the order reaches us before the erasure."""
    stores = {when: f"{store_id}-{when}" for when in ("first", "last")}
    states = {}
    for when, store_id in stores.items():
        browser = {"anonymous_id": "a-1"}
        before = T0 + timedelta(minutes=30)
        happened = [
            order(store_id, GIL, "o1", T0),
            event(store_id, "customer_upserted", None, before, phone=GIL["phone"], city="Oslo", **browser),
            cart(store_id, browser, "k1", before),
            event(store_id, "product_viewed", {"product": {"product_id": "p7"}}, before, **browser),
        ]
        erase = event(store_id, "customer_erased", None, T0 + timedelta(days=2), email="gil@x.io")
        late = order(store_id, {"store_customer_id": "u-9", **browser}, "o1", T0 + timedelta(minutes=5))
        # The order keeps the lower of its two events' ids; fix which one, to compare the two stores' rows.
        late = msgspec.structs.replace(late, event_id=f"{happened[0].event_id}-late")
        processor = FunnelProcessor(engine, registry(store_id))
        for e in [*happened, *([late, erase] if when == "first" else [erase, late])]:
            await processor([e])
        assert await _personal_data_left(engine, store_id) == [], when
        assert await _erased_ids(engine, store_id) == ["anon:a-1", "email:gil@x.io", "u-9"], when
        customer = (await _rows(engine, store_id))["u-9"].facts
        assert (customer["carts"], customer["viewed"], customer["erased"]) == ([], [], True), when
        states[when] = await _state(engine, store_id, [*happened, late, erase])
    assert states["first"] == states["last"]
    _, owners = states["first"]
    assert owners == [("id:u-9", "u-9"), ("order:o1", "u-9")]


async def test_what_the_older_profile_heard_without_details_after_the_erasure_is_kept_by_a_late_link(
    engine: AsyncEngine, store_id: str
) -> None:
    """The browser's older profile heard a cart after the erasure, by its anonymous id alone: the late link is
    still all forgotten (no details since), and the cart, accepted, joins the customer instead of being lost.
    Its identities stay forgotten."""
    processor = FunnelProcessor(engine, registry(store_id))
    since = (cart(store_id, {"anonymous_id": "a-1"}, "k3", T0 + timedelta(days=3)),)
    await _link_then_erase(processor, store_id, link_first=False, since=since)
    rows = await _rows(engine, store_id)
    assert [c["cart_id"] for c in rows["u-9"].facts["carts"]] == ["k3"]
    assert rows["email:gil@x.io"].merged_into == "u-9"
    assert await _personal_data_left(engine, store_id) == []
    assert await _erased_ids(engine, store_id) == ["email:gil@x.io", "u-9"]
    assert sorted((await _identities(engine, store_id)).items()) == [("id:u-9", "u-9"), ("order:o1", "u-9")]


async def test_a_late_link_brings_into_the_erased_customer_only_what_was_said_after_the_erasure(
    engine: AsyncEngine, store_id: str
) -> None:
    """The browser's own profile heard from Gil again after the erasure (a new email and a new cart), so the
    link is not all forgotten: what it heard before the erasure (the old details, cart and product view)
    stays forgotten, and what came after is the customer's."""
    processor = FunnelProcessor(engine, registry(store_id))
    browser = {"anonymous_id": "a-1"}
    viewed = event(
        store_id, "product_viewed", {"product": {"product_id": "p3"}}, T0 + timedelta(minutes=41), **browser
    )
    for e in (
        event(store_id, "customer_upserted", None, T0, **browser, **GIL),
        order(store_id, {"store_customer_id": "u-9"}, "o1", T0 + timedelta(minutes=30)),
        # After the order (which would close an older cart), before the erasure.
        cart(store_id, browser, "k1", T0 + timedelta(minutes=40)),
        viewed,
        _erase(store_id, "u-9", T0 + timedelta(days=2)),
        event(store_id, "customer_upserted", None, T0 + timedelta(days=3), email="gil@new.io", **browser),
        cart(store_id, browser, "k2", T0 + timedelta(days=3)),
        # The login that links the browser to the account happened before the erasure; it reaches us last.
        event(
            store_id, "customer_upserted", None, T0 + timedelta(hours=1), store_customer_id="u-9", **browser
        ),
    ):
        await processor([e])
    customer = (await _rows(engine, store_id))["u-9"].facts
    assert customer["email"] == "gil@new.io"
    assert [customer[k] for k in ("first_name", "city", "phone")] == [None, None, None]
    assert [c["cart_id"] for c in customer["carts"]] == ["k2"]
    assert customer["viewed"] == []
    assert len(customer["orders"]) == 1


def _erased_then_back(store_id: str, with_details: bool) -> list[StorefrontEvent]:
    """Gil's account u-9, in the order things happened: details, a cart and an order, then the erasure on the
    second day; on the third Gil comes back logged in (with a new email and consent, or by account id
    alone), leaves a cart and views a product."""
    account = {"store_customer_id": "u-9"}
    back = T0 + timedelta(days=3)
    details = {"email": "gil@new.io", "accepts_marketing": True} if with_details else {}
    return [
        event(store_id, "customer_upserted", None, T0, anonymous_id="a-1", **account, **GIL),
        cart(store_id, account, "k1", T0 + timedelta(minutes=5)),
        order(store_id, account, "o1", T0 + timedelta(minutes=30)),
        _erase(store_id, "u-9", T0 + timedelta(days=2)),
        *([event(store_id, "customer_upserted", None, back, **account, **details)] if with_details else []),
        cart(store_id, account, "k2", back + timedelta(minutes=1)),
        event(
            store_id,
            "product_viewed",
            {"product": {"product_id": "p3"}},
            back + timedelta(minutes=2),
            **account,
        ),
    ]


@pytest.mark.parametrize("with_details", [True, False], ids=["back with a new email", "back by account id"])
async def test_an_erasure_that_reaches_us_late_keeps_what_the_customer_said_after_it(
    engine: AsyncEngine, store_id: str, with_details: bool
) -> None:
    """A customers/redact retried late, a Segment queue flushed after Gil came back: the erasure reaches us
    after what Gil said since. It forgets what was said before it, and leaves what was said after it, as it
    would had it reached us first: the same profiles, identities and timers, in separate batches or in one."""
    orders = {"first": False, "last": False, "last, one batch": True}
    states = {}
    for when, one_batch in orders.items():
        store = f"{store_id}-{when.replace(', ', '-').replace(' ', '-')}"
        happened = _erased_then_back(store, with_details)
        erasure = happened[3]
        arrival = happened if when == "first" else [e for e in happened if e is not erasure] + [erasure]
        processor = FunnelProcessor(engine, registry(store))
        for batch in [arrival] if one_batch else [[e] for e in arrival]:
            await processor(batch)
        assert await _personal_data_left(engine, store) == [], when
        customer = (await _rows(engine, store))["u-9"].facts
        assert [c["cart_id"] for c in customer["carts"]] == ["k2"], when
        assert [v["product_id"] for v in customer["viewed"]] == ["p3"], when
        assert (customer["email"], customer["accepts_marketing"], customer["erased"]) == (
            ("gil@new.io", True, False) if with_details else (None, None, True)
        ), when
        # What the notifier is told last of u-9 carries what was said since (its erasure snapshot, late).
        told = [e for e in await funnel_events(engine, store) if e.customer_id == "u-9"]
        assert told[-1].profile.email == ("gil@new.io" if with_details else None), when
        names = {e.event_id: f"event {n}" for n, e in enumerate(happened)} | {store: "store"}
        due = sorted(
            (f"{c} {k}", at.isoformat()) for (c, k), at in (await pending_timers(engine, store)).items()
        )
        states[when] = (await _state(engine, store, happened), _comparable(due, names))
    assert states["first"] == states["last"] == states["last, one batch"]
    (_, owners), due = states["first"]
    assert owners == [
        *([("email:gil@new.io", "u-9")] if with_details else []),
        ("id:u-9", "u-9"),
        ("order:o1", "u-9"),
    ]
    assert "u-9 cart:k2" in dict(due)


def _late_by_a_forgotten_look_up(store_id: str, case: str) -> tuple[list[StorefrontEvent], list[int]]:
    """Events from before Gil's erasure (at E, by account u-9) that reach us after it and name Gil only by
    an email or anonymous id the erasure forgot, or never heard of: the events in the order they happened,
    and the order they reach us in (indexes)."""
    erased = T0 + timedelta(days=2)
    before = erased - timedelta(hours=10)
    erase = _erase(store_id, "u-9", erased)
    if case == "a link heard after the erasure":
        guest = event(store_id, "customer_upserted", None, before, email="gil@x.io", first_name="Gil")
        link = event(store_id, "customer_upserted", None, before, store_customer_id="u-9", email="gil@x.io")
        return [guest, link, erase], [2, 1, 0]
    if case == "a look-up the erasure forgot":
        link = event(store_id, "customer_upserted", None, before, store_customer_id="u-9", anonymous_id="a-1")
        view = event(
            store_id,
            "product_viewed",
            {"product": {"product_id": "p3"}},
            before,
            anonymous_id="a-1",
            city="Oslo",
        )
        return [link, view, erase], [0, 2, 1]
    if case == "a tombstone's id":
        left = cart(store_id, {"email": "gil@x.io"}, "k1", before)
        link = event(store_id, "customer_upserted", None, before, store_customer_id="u-9", email="gil@x.io")
        moved = event(
            store_id, "customer_upserted", None, before + timedelta(hours=1), email="gil@x.io", city="Oslo"
        )
        return [left, link, moved, erase], [0, 1, 3, 2]
    assert case == "a chain through a forgotten look-up"
    guest = event(store_id, "customer_upserted", None, before, anonymous_id="a-2", email="gil@x.io")
    left = cart(store_id, {"email": "gil@x.io"}, "k3", before)
    login = event(
        store_id,
        "customer_upserted",
        None,
        before,
        anonymous_id="a-2",
        store_customer_id="u-9",
        first_name="Gil",
    )
    return [guest, left, login, erase], [3, 2, 1, 0]


LATE_CASES = [
    "a link heard after the erasure",
    "a look-up the erasure forgot",
    "a tombstone's id",
    "a chain through a forgotten look-up",
]


@pytest.mark.parametrize("case", LATE_CASES)
async def test_an_event_from_before_the_erasure_by_a_forgotten_look_up_starts_no_customer(
    engine: AsyncEngine, store_id: str, case: str
) -> None:
    """Said before the erasure, heard after it, by an email or anonymous id that no look-up knows any more
    (or ever knew): the event is the erased customer's and forgotten as theirs, as it would have been had it
    come first, instead of a new customer holding what the erasure removed."""
    states = {}
    for when in ("in time order", "late"):
        store = f"{store_id}-{when.replace(' ', '-')}"
        happened, arrival = _late_by_a_forgotten_look_up(store, case)
        processor = FunnelProcessor(engine, registry(store))
        for i in range(len(happened)) if when == "in time order" else arrival:
            await processor([happened[i]])
        assert await _personal_data_left(engine, store) == [], when
        rows = await _rows(engine, store)
        live = {c: r.facts for c, r in rows.items() if r.merged_into is None}
        assert list(live) == ["u-9"], when
        assert (live["u-9"]["carts"], live["u-9"]["viewed"]) == ([], []), when
        assert sorted(await _identities(engine, store)) == ["id:u-9"], when
        states[when] = await _state(engine, store, happened)
    # The late order ends as time order did, but for what a tombstone holds (its pointer alone either way).
    assert states["late"][1] == states["in time order"][1]


async def test_a_shopper_back_under_an_id_whose_customer_was_erased_is_a_new_customer(
    engine: AsyncEngine, store_id: str
) -> None:
    processor = FunnelProcessor(engine, registry(store_id))
    await _link_then_erase(processor, store_id, link_first=True)
    # The same guest email, after the erasure: its identity went with the erased customer's personal data,
    # and its id is a tombstone's (email:gil@x.io, merged into u-9).
    await processor([cart(store_id, {"email": "gil@x.io"}, "k2", T0 + timedelta(days=3))])
    rows = await _rows(engine, store_id)
    back = rows["email:gil@x.io"]
    assert (back.merged_into, back.email) == (None, "gil@x.io")
    assert [c["cart_id"] for c in back.facts["carts"]] == ["k2"]
    assert rows["u-9"].facts["carts"] == []
    assert rows["u-9"].facts["email"] is None
    assert (await _identities(engine, store_id))["email:gil@x.io"] == "email:gil@x.io"


async def test_migration_0003_leaves_stored_tombstones_only_their_pointer(
    engine: AsyncEngine, store_id: str
) -> None:
    """The migration's statement, run again over a tombstone as the code before it wrote them (its
    document copied from its profile): the row becomes what the code writes for a tombstone now."""
    from importlib import import_module

    migration = import_module(
        "services.segmenter.migrations.versions.0003_tombstones_keep_only_their_pointer"
    )
    await _guest_then_account(engine, store_id)
    now = await _rows(engine, store_id)
    async with engine.begin() as conn:
        # The old tombstone: the absorbed profile's document with its pointer set.
        old = {**now["u-9"].facts, "customer_id": "email:gil@x.io", "merged_into": "u-9"}
        await conn.execute(
            text(
                "UPDATE segmenter.profiles SET facts = CAST(:f AS jsonb), email = 'gil@x.io', "
                "orders_count = 1 WHERE store_id = :s AND customer_id = 'email:gil@x.io'"
            ),
            {"f": json.dumps(old), "s": store_id},
        )
        assert "Oslo" in json.dumps((await _rows_in(conn, store_id))["email:gil@x.io"].facts)
        await conn.execute(text(migration.TOMBSTONES + " AND store_id = :s"), {"s": store_id})
    after = await _rows(engine, store_id)
    assert after["email:gil@x.io"].facts == now["email:gil@x.io"].facts
    assert after["email:gil@x.io"].email is None
    assert after["u-9"].facts == now["u-9"].facts  # live profiles untouched
    left = await _personal_data_left(engine, store_id)
    assert [where for where in left if where.startswith("email:gil@x.io: ")] == []
    assert "u-9: Oslo" in left  # the live profile keeps what it holds: it is not erased


async def _rows_in(conn: AsyncConnection, store_id: str) -> dict[str, Any]:
    found = await conn.execute(
        select(profiles.c.customer_id, profiles.c.email, profiles.c.merged_into, profiles.c.facts).where(
            profiles.c.store_id == store_id
        )
    )
    return {r.customer_id: r for r in found.all()}
