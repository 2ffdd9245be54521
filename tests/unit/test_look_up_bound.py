"""The bound on the emails and anonymous ids one profile holds (`identity.MAX_LOOK_UPS`): the public browser
key may identify and alias, so without it anyone could give one customer a new look-up with every call, and
each event of theirs cost more than the one before. Past the bound no look-up is added, by an event or by a
merge; the events still resolve to their customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.segmenter.domain.identity import (
    FORGETTABLE,
    MAX_LOOK_UPS,
    holds,
    joined_identifiers,
    merged_identifiers,
    within_limit,
)
from services.segmenter.domain.profile import Profile
from services.segmenter.service_layer.deciding import Keys, Loaded, deciding
from services.segmenter.service_layer.write_set import Changes
from shared.storefront_event_structs import StorefrontEvent
from shared.stores import StoreRegistry
from tests.builders import segmenter_event

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
VIEW = {"product": {"product_id": "p1"}}


def _anon(n: int, prefix: str = "a") -> list[str]:
    return [f"anon:{prefix}{k:05d}" for k in range(n)]


def _event(n: int, kind: str, payload: dict[str, Any] | None = None, **customer: Any) -> StorefrontEvent:
    return segmenter_event("demo", kind, T0 + timedelta(minutes=n), customer, payload, event_id=f"e{n}")


def _profile(customer_id: str, identifiers: list[str]) -> Profile:
    return Profile(store_id="demo", customer_id=customer_id, identifiers=tuple(sorted(identifiers)))


def _decided(profiles: list[Profile], *events: StorefrontEvent) -> Changes:
    """The batch's decisions, with `profiles` stored and their identifiers' look-ups as stored."""
    stored = {("demo", p.customer_id): p for p in profiles}
    look_ups = {("demo", i): p.customer_id for p in profiles for i in p.identifiers}
    loaded = Loaded(
        identities=look_ups, profiles=stored, shops={}, writer=None, merged={}, forgotten={}, versions={}
    )
    changes = Changes(stored_profiles=stored, stored_identities=look_ups)
    for _ in deciding(events, Keys.of(events), loaded, changes, StoreRegistry([])):
        pass
    return changes


def test_a_customer_at_the_bound_takes_no_new_anonymous_id_and_the_event_is_still_theirs() -> None:
    full = _profile("c1", ["id:c1", *_anon(MAX_LOOK_UPS)])
    changes = _decided(
        [full],
        _event(1, "product_viewed", VIEW, store_customer_id="c1", anonymous_id="new"),
        # The same browser alone, later in the batch: its id found no one, so it is someone new.
        _event(2, "product_viewed", VIEW, anonymous_id="new"),
    )
    after = changes.profiles[("demo", "c1")]
    assert after.identifiers == full.identifiers
    assert [v.product_id for v in after.viewed] == ["p1"]  # the event is c1's all the same
    assert changes.identities.get(("demo", "anon:new")) == "anon:new"
    assert changes.profiles[("demo", "anon:new")].merged_into is None


def test_below_the_bound_a_customer_takes_new_ids_up_to_it_and_no_further() -> None:
    almost = _profile("c1", ["id:c1", *_anon(MAX_LOOK_UPS - 2)])
    changes = _decided(
        [almost],
        _event(
            1, "customer_upserted", {}, store_customer_id="c1", anonymous_id="n1", email="ann@example.com"
        ),
        _event(2, "customer_upserted", {}, store_customer_id="c1", anonymous_id="n2"),
    )
    after = changes.profiles[("demo", "c1")]
    assert _count(after.identifiers) == MAX_LOOK_UPS
    assert {"anon:n1", "email:ann@example.com"} <= set(after.identifiers)
    assert "anon:n2" not in after.identifiers
    written = {i for (_, i), c in changes.identities.items() if c == "c1"}
    assert {"anon:n1", "email:ann@example.com"} <= written
    assert "anon:n2" not in written


def test_a_customer_at_the_bound_still_takes_its_orders_ids() -> None:
    full = _profile("c1", ["id:c1", *_anon(MAX_LOOK_UPS)])
    items = [{"product_id": "p1", "title": "P1", "price": "10"}]
    payload = {"order_id": "o1", "total": "10.00", "currency": "EUR", "line_items": items}
    changes = _decided([full], _event(1, "order_placed", payload, store_customer_id="c1", anonymous_id="x"))
    after = changes.profiles[("demo", "c1")]
    assert "order:o1" in after.identifiers
    assert "anon:x" not in after.identifiers
    assert changes.identities[("demo", "order:o1")] == "c1"
    assert len(after.orders) == 1


def test_a_merge_past_the_bound_leaves_the_absorbed_look_ups_out_and_they_find_no_one() -> None:
    full = _profile("c1", ["id:c1", *_anon(MAX_LOOK_UPS)])
    guest = _profile("email:g@example.com", ["email:g@example.com", "anon:b1", "anon:b2"])
    changes = _decided(
        [full, guest],
        # The account and the guest are one customer (the guest's email): the guest merges into c1 ...
        _event(1, "customer_upserted", {}, store_customer_id="c1", email="g@example.com"),
        # ... whose look-ups have no room for the guest's: that browser, later in the batch, is someone new.
        _event(2, "product_viewed", VIEW, anonymous_id="b1"),
    )
    survivor = changes.profiles[("demo", "c1")]
    assert changes.profiles[("demo", "email:g@example.com")].merged_into == "c1"
    assert survivor.identifiers == full.identifiers
    assert changes.dropped == {
        ("demo", "email:g@example.com", "c1"),
        ("demo", "anon:b1", "c1"),
        ("demo", "anon:b2", "c1"),
    }
    assert changes.identities[("demo", "anon:b1")] == "anon:b1"
    assert ("demo", "anon:b2") not in changes.identities
    assert changes.merges == [("demo", "email:g@example.com", "c1")]


def test_a_merge_within_the_bound_keeps_every_look_up() -> None:
    some = _profile("c1", ["id:c1", *_anon(10)])
    guest = _profile("email:g@example.com", ["email:g@example.com", "anon:b1"])
    changes = _decided(
        [some, guest], _event(1, "customer_upserted", {}, store_customer_id="c1", email="g@example.com")
    )
    survivor = changes.profiles[("demo", "c1")]
    assert {"email:g@example.com", "anon:b1"} <= set(survivor.identifiers)
    assert changes.dropped == set()


_IDS = st.lists(
    st.builds(
        lambda kind, n: f"{kind}{n}",
        st.sampled_from(["anon:", "email:", "id:", "order:"]),
        st.integers(0, 60),
    ),
    max_size=40,
)


@given(held=_IDS, fresh=_IDS, padding=st.integers(0, MAX_LOOK_UPS))
def test_joining_keeps_every_id_held_and_every_store_id_and_past_the_bound_no_email_or_anonymous_id(
    held: list[str], fresh: list[str], padding: int
) -> None:
    base = tuple(sorted({*held, *_anon(padding, "p")}))
    new = [i for i in fresh if not holds(base, i)]
    joined = joined_identifiers(base, new)
    out = base if joined is None else joined
    assert list(out) == sorted(set(out))
    assert set(base) <= set(out)
    assert {i for i in new if not i.startswith(FORGETTABLE)} <= set(out)
    assert _count(out) <= max(MAX_LOOK_UPS, _count(base))
    # Within the bound, nothing is left out.
    if _count(base) + len({i for i in new if i.startswith(FORGETTABLE)}) <= MAX_LOOK_UPS:
        assert set(out) == {*base, *new}
    assert within_limit(base, new) == [i for i in dict.fromkeys(new) if i in out]
    assert merged_identifiers(base, tuple(sorted(set(fresh)))) == out


def _count(ids: tuple[str, ...]) -> int:
    return sum(1 for i in ids if i.startswith(FORGETTABLE))


@given(st.lists(st.text(max_size=6), max_size=30), st.text(max_size=6))
def test_holds_answers_as_a_look_through_a_sorted_tuple(ids: list[str], one: str) -> None:
    held = tuple(sorted(set(ids)))
    assert holds(held, one) == (one in held)
    for i in held:
        assert holds(held, i)
