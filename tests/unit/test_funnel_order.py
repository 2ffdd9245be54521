"""The funnel state is a function of the facts, not of the order in which they were delivered.

Shopify and Segment promise no delivery order, and one customer's events can arrive under different keys
(a store id, an email, an anonymous id, only an order id) before an event links them. Random customer
histories go through the domain's own routing (resolve -> merge -> decide, as the consumer does it) in random
orders; the final profile, its history, the set of stage and health steps reached, and the timers must be
the same every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.segmenter.domain.funnel import (
    Decision,
    after_merge,
    decide,
    decide_timer,
    event_identifiers,
    merge,
    tombstone,
)
from services.segmenter.domain.identity import resolve
from services.segmenter.domain.profile import Profile
from shared.funnel_rules import FunnelRules
from shared.storefront_event_structs import (
    CartUpdatedEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    StorefrontEvent,
)
from tests.builders import segmenter_event

START = datetime(2024, 1, 1, tzinfo=UTC)
NOW = START + timedelta(days=900)
RULES = FunnelRules()
STORE = "demo"
CART_START = START + timedelta(days=300)
CARTS = ["k1", "k2"]

# The three keys one customer is known by, and what names them in an event.
KEYS: dict[str, dict[str, Any]] = {
    "id": {"store_customer_id": "42"},
    "email": {"email": "ann@example.com"},
    "anon": {"anonymous_id": "a-1"},
}
SURVEY_STATEMENTS = {
    "none": [],
    "affective": ["affective.really_like"],
    "conative": ["conative.buy_again"],
    "action": ["action.recommend"],
}


@dataclass
class Pipeline:
    """The consumer's routing without a database: identifiers -> profile, merges, timers."""

    known: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    timers: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def _record(self, d: Decision) -> None:
        p = d.profile
        self.profiles[p.customer_id] = p
        for kind, due in d.timers.items():
            if due is None:
                self.timers.pop((p.customer_id, kind), None)
            else:
                self.timers[(p.customer_id, kind)] = due

    def feed(self, event: StorefrontEvent) -> None:
        ids = event_identifiers(event)
        resolution = resolve(ids, self.known)
        profile = self.profiles.get(resolution.customer_id)
        for absorbed_id in resolution.absorbed:
            absorbed = self.profiles.get(absorbed_id)
            if absorbed is None or absorbed.merged_into is not None:
                continue
            base = profile or absorbed.model_copy(
                update={"customer_id": resolution.customer_id, "identifiers": ()}
            )
            merged = merge(base, absorbed)
            self.profiles[absorbed_id] = tombstone(absorbed, resolution.customer_id)
            self.timers = {k: v for k, v in self.timers.items() if k[0] != absorbed_id}
            for identifier, owner in list(self.known.items()):
                if owner == absorbed_id:
                    self.known[identifier] = resolution.customer_id
            d = after_merge(merged, RULES, event.event_id, event.occurred_at)
            self._record(d)
            profile = d.profile
        d = decide(profile, event, RULES, resolution.customer_id, ids)
        self._record(d)
        for identifier in (*ids, *d.profile.identifiers):
            self.known[identifier] = resolution.customer_id

    def fire_timers(self, now: datetime) -> None:
        """Fire due timers earliest first, as the timer worker does by wall time, until none is due."""
        while True:
            due = sorted((at, key) for key, at in self.timers.items() if at <= now)
            if not due:
                return
            at, (customer_id, kind) = due[0]
            del self.timers[(customer_id, kind)]
            self._record(decide_timer(self.profiles[customer_id], kind, at, now, RULES))

    def live(self) -> dict[str, Profile]:
        return {c: p for c, p in self.profiles.items() if p.merged_into is None}


def _event(
    n: int, kind: str, at: datetime, who: dict[str, Any], payload: dict[str, Any] | None, prefix: str = "e"
) -> Any:
    return segmenter_event(STORE, kind, at, who, payload, event_id=f"{prefix}{n:03d}")


# What one version of an order may hold: its products and its total.
VERSION_PRODUCTS = ["p9", "q1", "q2"]
VERSION_TOTALS = ["20.00", "35.00", "50.00"]


@st.composite
def histories(draw: st.DrawFn) -> list[StorefrontEvent]:
    """One customer's history: orders under any of their keys, refunds naming only the order, survey
    answers, referrals, carts (snapshots, added/removed deltas, completed checkouts, abandonments, orders
    naming a cart), contact changes with consent, and the identify that links the keys."""
    day = st.integers(min_value=0, max_value=700)
    key = st.sampled_from(sorted(KEYS))
    events: list[StorefrontEvent] = []

    def add(
        kind: str, at: datetime, who: dict[str, Any], payload: dict[str, Any] | None = None, prefix: str = "e"
    ) -> None:
        events.append(_event(len(events), kind, at, who, payload, prefix))

    for i in range(draw(st.integers(min_value=1, max_value=6))):
        # Some orders fall among the cart activity (below), so that they close what came before them.
        placed = draw(st.sampled_from([START, CART_START])) + timedelta(
            days=draw(st.integers(0, 3)) if draw(st.booleans()) else draw(day), hours=draw(st.integers(0, 23))
        )
        total = draw(st.sampled_from(["20.00", "50.00"]))
        add(
            "order_placed",
            placed,
            dict(KEYS[draw(key)]),
            {
                "order_id": f"o{i}",
                "total": total,
                "currency": "EUR",
                "line_items": [{"product_id": f"p{i}"}],
                "cart_id": draw(st.sampled_from([None, None, *CARTS])),
            },
        )
        # The same order again, changed: a platform's edit (orders/updated: the same placing time, a later
        # `updated_at`) or a source that sent it twice (a later event time, no `updated_at`). Each version
        # is made at its own hour; Shopify's event ids are random, so a later version's may sort first.
        # A platform's edit may list the order's refunds so far (WooCommerce's `refunds`, partial ones): a
        # later version lists those of the versions before it and maybe more.
        listed_pool = [
            {"refund_id": f"w{i}-{j}", "amount": draw(st.sampled_from(["5.00", "10.00"]))}
            for j in range(draw(st.sampled_from([0, 0, 1, 2])))
        ]
        listed_count = 0
        for v in range(1, draw(st.sampled_from([0, 0, 0, 1, 2])) + 1):
            made = placed + timedelta(hours=100 * v + draw(st.integers(1, 99)))
            edit = draw(st.booleans())
            version: dict[str, Any] = {
                "order_id": f"o{i}",
                "total": draw(st.sampled_from(VERSION_TOTALS)),
                "currency": "EUR",
                "line_items": [
                    {"product_id": p}
                    for p in draw(
                        st.lists(st.sampled_from([f"p{i}", *VERSION_PRODUCTS]), min_size=1, unique=True)
                    )
                ],
                "cart_id": draw(st.sampled_from([None, None, *CARTS])),
            }
            if edit:
                version["updated_at"] = made.isoformat()
                listed_count = draw(st.integers(listed_count, len(listed_pool)))
                if listed_count:
                    version["refunds"] = listed_pool[:listed_count]
            add("order_placed", placed if edit else made, dict(KEYS[draw(key)]), version,
                prefix=draw(st.sampled_from(["d", "e"])))  # fmt: skip
        refund = draw(
            st.sampled_from(["none", "none", "partial", "full", "cancelled", "two halves", "in full"])
        )
        amounts = {
            "partial": ["5.00"],
            "full": [total],
            "cancelled": [total],
            "two halves": ["10.00"] * 2,
            "in full": ["0"],  # Segment's `Order Refunded` naming only the order
        }
        for j, amount in enumerate(amounts.get(refund, [])):
            when = placed + timedelta(days=draw(st.integers(1, 60)) + j)
            if refund == "two halves":
                amount = str(float(total) / 2)
            add(
                "order_refunded",
                when,
                {"placed_order_id": f"o{i}"},
                {
                    "order_id": f"o{i}",
                    "amount": amount,
                    "currency": "EUR",
                    "cancelled": refund == "cancelled",
                }
                | ({"in_full": True} if refund == "in full" else {}),
            )
    for i in range(draw(st.integers(0, 2))):
        answers = [
            {"statement_id": s, "agree": True}
            for s in SURVEY_STATEMENTS[draw(st.sampled_from(sorted(SURVEY_STATEMENTS)))]
        ]
        add(
            "survey_answered",
            START + timedelta(days=draw(day)),
            dict(KEYS[draw(key)]),
            {"survey_id": f"s{i}", "answers": answers},
        )
    for _ in range(draw(st.integers(0, 1))):
        add(
            "custom", START + timedelta(days=draw(day)), dict(KEYS[draw(key)]), {"name": "Referral Completed"}
        )
    # Carts: whole snapshots, Segment's Product Added/Removed deltas, completed checkouts, abandonments, and
    # orders naming a cart (above), close together in time so that they interleave with one another.
    cart_day = st.integers(min_value=0, max_value=3)
    for _ in range(draw(st.integers(0, 6))):
        fact = draw(
            st.sampled_from(["snapshot", "snapshot", "added", "added", "removed", "completed", "abandoned"])
        )
        products = draw(st.lists(st.sampled_from(["p1", "p2"]), min_size=1, max_size=2, unique=True))
        quantities = [draw(st.integers(1, 2)) for _ in products]
        items = [
            {"product_id": p, "quantity": q, "price": "10.00"}
            for p, q in zip(products, quantities, strict=True)
        ]
        cart: dict[str, Any] = {"cart_id": draw(st.sampled_from(CARTS)), "currency": "EUR"}
        if fact in ("snapshot", "abandoned"):
            cart |= {"line_items": items, "total": f"{10 * sum(quantities)}.00"}
        elif fact == "completed":
            cart |= {"completed": True}
        else:
            cart |= {"action": fact, "line_items": items}
        add(
            "cart_abandoned" if fact == "abandoned" else "cart_updated",
            CART_START + timedelta(days=draw(cart_day), hours=draw(st.integers(0, 23))),
            dict(KEYS[draw(key)]),
            cart,
        )
    for _ in range(draw(st.integers(0, 3))):
        add(
            "customer_upserted",
            START + timedelta(days=draw(day), hours=draw(st.integers(0, 23))),
            {
                **KEYS[draw(key)],
                "accepts_marketing": draw(st.booleans()),
                "first_name": draw(st.sampled_from(["Ann", "Anna"])),
            },
        )
    # The identify that tells the three keys are one customer, at some point in the history.
    add(
        "customer_upserted",
        START + timedelta(days=draw(day)),
        {k: v for w in KEYS.values() for k, v in w.items()},
    )
    return events


def run(events: Sequence[StorefrontEvent]) -> Pipeline:
    pipeline = Pipeline()
    for event in events:
        pipeline.feed(event)
    pipeline.fire_timers(NOW)
    return pipeline


def _differences(got: Profile, expected: Profile) -> dict[str, Any]:
    a, b = got.model_dump(), expected.model_dump()
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def reached(profile: Profile) -> set[tuple[str, str, str, datetime, str]]:
    return {(t.dimension, t.from_value, t.to_value, t.occurred_at, t.event_id) for t in profile.transitions}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), events=histories())
def test_any_delivery_order_gives_the_same_state(data: st.DataObject, events: list[StorefrontEvent]) -> None:
    in_order = run(sorted(events, key=lambda e: (e.occurred_at, e.event_id)))
    shuffled_events = data.draw(st.permutations(events))
    shuffled = run(shuffled_events)

    [expected] = in_order.live().values()
    [got] = shuffled.live().values()
    assert got.customer_id == expected.customer_id == "42"
    assert _differences(got, expected) == {}
    assert reached(got) == reached(expected)
    assert (got.stage, got.health) == (expected.stage, expected.health)
    assert shuffled.timers == in_order.timers
    # Not only the same, but right: the refunds that came before their order were applied...
    assert not got.pending_refunds
    refunded = {e.payload.order_id for e in events if isinstance(e, OrderRefundedEvent)}
    refunded |= {e.payload.order_id for e in events if isinstance(e, OrderPlacedEvent) and e.payload.refunds}
    assert {o.order_id for o in got.orders if o.refunds} == refunded
    # ...a refund an order lists counts once, dated by the first version that lists it...
    listed: dict[tuple[str, str], tuple[datetime, Decimal]] = {}
    for e in events:
        if isinstance(e, OrderPlacedEvent) and e.payload.refunds:
            assert e.payload.updated_at is not None
            for line in e.payload.refunds:
                k = (e.payload.order_id, f"refund:{line.refund_id}")
                listed[k] = min(
                    listed.get(k, (e.payload.updated_at, line.amount)), (e.payload.updated_at, line.amount)
                )
    held = {(o.order_id, r.event_id): (r.at, r.amount) for o in got.orders for r in o.refunds}
    assert {k: v for k, v in held.items() if k[1].startswith("refund:")} == listed
    for order in got.orders:
        if not order.cancelled:
            assert order.refunded == min(order.total, sum((r.amount for r in order.refunds), Decimal("0")))
    # ...no completed checkout is open again, whatever came after it...
    completed = {e.payload.cart_id for e in events if isinstance(e, CartUpdatedEvent) and e.payload.completed}
    completed |= {e.payload.cart_id for e in events if isinstance(e, OrderPlacedEvent) and e.payload.cart_id}
    assert set(got.completed_carts) == completed
    assert not completed & {c.cart_id for c in got.carts}
    # ...each order holds what its version made last held, placed when the last report says...
    versions: dict[str, list[OrderPlacedEvent]] = {}
    for e in events:
        if isinstance(e, OrderPlacedEvent):
            versions.setdefault(e.payload.order_id, []).append(e)
    for order in got.orders:
        delivered = versions[order.order_id]
        last = max(delivered, key=lambda e: e.payload.updated_at or e.occurred_at)
        assert (order.total, [p.product_id for p in order.products]) == (
            last.payload.total,
            [i.product_id for i in last.payload.line_items],
        )
        assert order.placed_at == max(e.occurred_at for e in delivered)
        assert order.event_id == min(e.event_id for e in delivered)
    # ...and the consent held is the one said last (a withdrawal wins a tie).
    said = [
        (e.occurred_at, e.customer.accepts_marketing is False, e.customer.accepts_marketing)
        for e in events
        if e.customer.accepts_marketing is not None
    ]
    if said:
        assert got.accepts_marketing == max(said)[2]


def test_a_late_older_order_promotes_dated_by_the_order_that_completed_the_window() -> None:
    """Issue 16's case: orders 0, 2, 1 (the first delivered last) make a loyal customer as 0, 1, 2 do."""
    orders = [
        _event(
            i,
            "order_placed",
            START + timedelta(days=30 * i),
            {"store_customer_id": "42"},
            {"order_id": f"o{i}", "total": "10.00", "currency": "EUR"},
        )
        for i in range(3)
    ]
    for sequence in ([0, 1, 2], [0, 2, 1], [2, 1, 0]):
        p = run([orders[i] for i in sequence]).live()["42"]
        assert p.stage.value == "loyal", sequence
        stages = [(t.to_value, t.occurred_at, t.event_id) for t in p.transitions if t.dimension == "stage"]
        assert stages == [
            ("first_time", START, "e000"),
            ("repeat", START + timedelta(days=30), "e001"),
            ("loyal", START + timedelta(days=60), "e002"),
        ], sequence


def test_a_refund_before_its_order_is_applied_when_the_order_comes() -> None:
    placed = _event(
        1,
        "order_placed",
        START,
        {"store_customer_id": "42"},
        {"order_id": "o1", "total": "30.00", "currency": "EUR"},
    )
    second = _event(
        2,
        "order_placed",
        START + timedelta(days=3),
        {"store_customer_id": "42"},
        {"order_id": "o2", "total": "30.00", "currency": "EUR"},
    )
    refund = _event(
        3,
        "order_refunded",
        START + timedelta(days=5),
        {"placed_order_id": "o2"},
        {"order_id": "o2", "amount": "30.00", "currency": "EUR"},
    )
    early = run([refund, placed, second])
    assert early.live().keys() == {"42"}  # the refund's waiting place was absorbed by the customer
    p = early.live()["42"]
    assert p.orders_count == 1
    assert p.stage.value == "first_time"
    assert [(t.to_value, t.occurred_at) for t in p.transitions if t.dimension == "stage"] == [
        ("first_time", START),
        ("repeat", START + timedelta(days=3)),
        ("first_time", START + timedelta(days=5)),
    ]
    assert p == run([placed, second, refund]).live()["42"]


def sample_histories(n: int) -> list[tuple[list[StorefrontEvent], list[StorefrontEvent]]]:
    """`n` generated histories, each in time order and in a random delivery order (reproducible), for the
    slower tests that run them through the real consumer."""
    found: list[tuple[list[StorefrontEvent], list[StorefrontEvent]]] = []

    @settings(max_examples=n, database=None, derandomize=True, phases=[Phase.generate], deadline=None)
    @given(events=histories(), rnd=st.randoms(use_true_random=False))
    def collect(events: list[StorefrontEvent], rnd: Random) -> None:
        shuffled = list(events)
        rnd.shuffle(shuffled)
        found.append((sorted(events, key=lambda e: (e.occurred_at, e.event_id)), shuffled))

    collect()
    return found[:n]


def test_a_profile_stored_before_histories_were_derived_is_not_announced_again() -> None:
    first = _event(
        1,
        "order_placed",
        START,
        {"store_customer_id": "42"},
        {"order_id": "o1", "total": "9.00", "currency": "EUR"},
    )
    second = _event(
        2,
        "order_placed",
        START + timedelta(days=9),
        {"store_customer_id": "42"},
        {"order_id": "o2", "total": "9.00", "currency": "EUR"},
    )
    # As an older document reads: a stage, no history.
    stored = decide(None, first, RULES, "42").profile.model_copy(update={"transitions": ()})
    d = decide(stored, second, RULES, "42")
    assert [t.to_value for t in d.transitions] == ["repeat"]  # not "first_time" once more
    assert [t.to_value for t in d.profile.transitions] == ["first_time", "repeat"]


def test_a_late_older_update_does_not_reopen_a_completed_checkout() -> None:
    """The gap issue 16 left in carts: an update delivered after the checkout completed, dated before."""
    who = {"store_customer_id": "42"}
    added = _event(
        1,
        "cart_updated",
        CART_START,
        who,
        {"cart_id": "k1", "currency": "EUR", "action": "added", "line_items": [{"product_id": "p1"}]},
    )
    removed = _event(
        2,
        "cart_updated",
        CART_START + timedelta(hours=1),
        who,
        {"cart_id": "k1", "currency": "EUR", "action": "removed", "line_items": [{"product_id": "p1"}]},
    )
    again = _event(
        3,
        "cart_updated",
        CART_START + timedelta(hours=2),
        who,
        {"cart_id": "k1", "currency": "EUR", "action": "added", "line_items": [{"product_id": "p2"}]},
    )
    done = _event(
        4,
        "cart_updated",
        CART_START + timedelta(hours=3),
        who,
        {"cart_id": "k1", "currency": "EUR", "completed": True},
    )
    # The deltas alone, in any order: p2 only (p1 was added, then removed), and an abandonment timer.
    for sequence in ([added, removed, again], [again, removed, added], [removed, again, added]):
        pipeline = Pipeline()
        for event in sequence:
            pipeline.feed(event)
        [cart] = pipeline.live()["42"].carts
        assert [(i.product_id, i.quantity) for i in cart.items] == [("p2", 1)]
        assert pipeline.timers == {("42", "cart:k1"): again.occurred_at + RULES.cart_abandonment}
    # Completed, then the older updates: closed for good, no timer.
    p = Pipeline()
    for event in (done, again, added, removed):
        p.feed(event)
    assert p.live()["42"].carts == ()
    assert p.live()["42"].completed_carts == ("k1",)
    assert p.timers == {}
