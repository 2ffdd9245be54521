"""The funnel's rules as pure functions of (profile, event, rules), with the clock passed in."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.segmenter.adapters.event_decoding import decode_storefront_event
from services.segmenter.domain import stages
from services.segmenter.domain.event_ids import funnel_event_id
from services.segmenter.domain.funnel import (
    BIRTHDAY_TIMER,
    HEALTH_TIMER,
    Decision,
    decide,
    decide_timer,
    erase_shop,
    identifiers_of,
    merge,
    next_birthday_reminder,
)
from services.segmenter.domain.identity import named_alone, resolve
from services.segmenter.domain.profile import Profile
from shared.events import (
    CONTACT_FIELDS,
    CUSTOMER_FACT_TIMES,
    CUSTOMER_IDENTIFIERS,
    SHOP_WIDE,
    Customer,
)
from shared.examples import example_files
from shared.funnel import Health, LoyaltyStage, SurveyLevel
from shared.funnel_event_structs import CustomerUpdatedEvent
from shared.funnel_rules import FunnelRules
from shared.storefront_event_structs import StorefrontEvent
from tests.builders import segmenter_event

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RULES = FunnelRules()
_seq = iter(range(10**9))


def ev(
    kind: str, payload: dict[str, Any] | None = None, *, at: datetime = T0, **customer: Any
) -> StorefrontEvent:
    """A canonical event with a unique id; the customer defaults to store customer id c1."""
    who = customer or {"store_customer_id": "c1"}
    return segmenter_event("demo", kind, at, who, payload, event_id=f"e{next(_seq)}")


def order(
    order_id: str, *, at: datetime = T0, total: str = "50.00", products: tuple[str, ...] = ("p1",), **who: Any
) -> StorefrontEvent:
    items = [
        {"product_id": p, "title": p.upper(), "category": "tea" if p != "p9" else "mugs", "price": "10"}
        for p in products
    ]
    return ev(
        "order_placed",
        {"order_id": order_id, "total": total, "currency": "EUR", "line_items": items},
        at=at,
        **who,
    )


def run(
    *events: StorefrontEvent, profile: Profile | None = None, rules: FunnelRules = RULES
) -> tuple[Profile, list[Decision]]:
    decisions = []
    for event in events:
        d = decide(profile, event, rules, profile.customer_id if profile else event.customer.key)
        decisions.append(d)
        profile = d.profile
    assert profile is not None
    return profile, decisions


def stage_moves(decisions: list[Decision]) -> list[str]:
    return [t.to_value for d in decisions for t in d.transitions if t.dimension == "stage"]


# -- stages -----------------------------------------------------------------------------------------------


def test_first_order_first_time_then_repeat() -> None:
    profile, decisions = run(
        ev("customer_upserted", email="Ann@Example.com", first_name="Ann", store_customer_id="c1"),
        order("o1"),
        order("o2", at=T0 + timedelta(days=20)),
    )
    assert stage_moves(decisions) == ["first_time", "repeat"]
    assert profile.orders_count == 2
    assert str(profile.total_spent) == "100.00"
    assert profile.email == "ann@example.com"
    placed, event = decisions[1].funnel_events
    assert event.type == "stage_changed"
    assert event.profile.first_name == "Ann"
    assert event.caused_by == decisions[1].cause
    assert placed.type == "order_placed"
    assert placed.payload.order_id == "o1"
    assert placed.profile.orders_count == 1


def test_contact_changes_alone_reach_the_notifier_as_customer_updated() -> None:
    profile, [created] = run(ev("customer_upserted", email="ann@example.com", store_customer_id="c1"))
    [new] = created.funnel_events
    assert isinstance(new, CustomerUpdatedEvent)
    assert "email" in new.payload.changed
    _, [opted_out] = run(
        ev("customer_upserted", store_customer_id="c1", accepts_marketing=False, phone="+4915112345678"),
        profile=profile,
    )
    [updated] = opted_out.funnel_events
    assert isinstance(updated, CustomerUpdatedEvent)
    assert updated.payload.changed == ("phone", "accepts_marketing")
    assert updated.profile.accepts_marketing is False
    assert updated.profile.phone == "+4915112345678"
    _, [same] = run(ev("customer_upserted", store_customer_id="c1", email="ann@example.com"), profile=profile)
    assert same.funnel_events == []


def test_the_same_order_under_a_new_delivery_changes_nothing() -> None:
    profile, _ = run(order("o1"))
    again, [d] = run(order("o1"), profile=profile)
    assert again == profile
    assert (d.transitions, d.funnel_events) == ([], [])


def test_loyal_at_three_orders_within_a_year() -> None:
    _, decisions = run(
        order("o1"), order("o2", at=T0 + timedelta(days=100)), order("o3", at=T0 + timedelta(days=200))
    )
    assert stage_moves(decisions) == ["first_time", "repeat", "loyal"]


def test_three_orders_spread_over_more_than_a_year_stay_repeat() -> None:
    _, decisions = run(
        order("o1"), order("o2", at=T0 + timedelta(days=300)), order("o3", at=T0 + timedelta(days=400))
    )
    assert stage_moves(decisions) == ["first_time", "repeat"]


def survey(*agreed: str, **scores: int) -> StorefrontEvent:
    answers = [{"statement_id": s, "agree": True} for s in agreed]
    return ev("survey_answered", {"survey_id": "loyalty-3part", "answers": answers, **scores})


def test_two_orders_and_a_conative_answer_make_loyal() -> None:
    profile, decisions = run(
        order("o1"), order("o2", at=T0 + timedelta(days=1)), survey("conative.buy_again")
    )
    assert stage_moves(decisions) == ["first_time", "repeat", "loyal"]
    assert profile.survey_level == SurveyLevel.CONATIVE
    assert [e.type for e in decisions[-1].funnel_events] == ["survey_scored", "stage_changed"]


def test_an_action_answer_makes_a_repeat_customer_an_advocate_but_not_a_first_timer() -> None:
    _, first_timer = run(order("o1"), survey("action.recommend"))
    assert stage_moves(first_timer) == ["first_time"]
    _, repeat = run(order("o1"), order("o2"), survey("action.recommend"))
    assert stage_moves(repeat) == ["first_time", "repeat", "advocate"]


def test_a_referral_makes_a_repeat_customer_an_advocate() -> None:
    referral = ev("custom", {"name": "Referral Completed", "properties": {}})
    profile, decisions = run(order("o1"), order("o2"), referral)
    assert stage_moves(decisions)[-1] == "advocate"
    assert profile.referrals == 1


def test_store_rules_change_the_thresholds() -> None:
    strict = FunnelRules.model_validate({"first_time_orders": 1, "repeat_orders": 3, "loyal": {"orders": 5}})
    _, decisions = run(order("o1"), order("o2"), order("o3"), rules=strict)
    assert stage_moves(decisions) == ["first_time", "repeat"]


def test_each_rules_object_is_followed_even_where_another_was_read_before() -> None:
    # `earned` reads a rules object's thresholds once and keeps them by the object's id (stages._ladder): an
    # entry left by a collected object whose address a new one took must not be taken for the new one's.
    strict = FunnelRules.model_validate({"repeat_orders": 3, "loyal": {"orders": 5}})
    lenient = FunnelRules.model_validate({"repeat_orders": 2, "loyal": {"orders": 3}})
    placed = [T0, T0 + timedelta(days=1), T0 + timedelta(days=2)]
    assert stages.earned(placed, SurveyLevel.NONE, 0, strict)[0] == LoyaltyStage.REPEAT
    stages._ladders[id(lenient)] = stages._ladders[id(strict)]  # as if lenient lived where strict did
    assert stages.earned(placed, SurveyLevel.NONE, 0, lenient)[0] == LoyaltyStage.LOYAL
    orders = (order("o1"), order("o2", at=T0 + timedelta(days=1)), order("o3", at=T0 + timedelta(days=2)))
    assert stage_moves(run(*orders, rules=strict)[1]) == ["first_time", "repeat"]
    assert stage_moves(run(*orders, rules=lenient)[1]) == ["first_time", "repeat", "loyal"]


def test_rules_must_climb() -> None:
    with pytest.raises(ValueError, match="climb"):
        FunnelRules.model_validate({"first_time_orders": 2, "repeat_orders": 2})


def test_a_full_refund_corrects_the_stage_down_and_nothing_else_does() -> None:
    profile, _ = run(order("o1"), order("o2"))
    assert profile.stage == LoyaltyStage.REPEAT
    refunded, [d] = run(
        ev("order_refunded", {"order_id": "o2", "amount": "50.00", "currency": "EUR"}), profile=profile
    )
    assert refunded.stage == LoyaltyStage.FIRST_TIME
    assert refunded.orders_count == 1
    assert [t.reason for t in d.transitions] == ["1 order"]
    partial, [p] = run(
        ev("order_refunded", {"order_id": "o1", "amount": "10.00", "currency": "EUR"}), profile=profile
    )
    assert partial.stage == LoyaltyStage.REPEAT
    assert str(partial.total_spent) == "90.00"
    assert p.transitions == []


def _listing(order_id: str, made: datetime, *refunds: tuple[str, str]) -> StorefrontEvent:
    """A delivery of the order (placed at T0) made at `made`, listing these (id, amount) refunds, as a
    WooCommerce order.updated after a partial refund reads."""
    listed = [{"refund_id": r, "amount": a} for r, a in refunds]
    return ev(
        "order_placed",
        {"order_id": order_id, "total": "50.00", "currency": "EUR", "line_items": [{"product_id": "p1"}]}
        | {"updated_at": made.isoformat(), "refunds": listed},
    )


def test_refunds_an_order_lists_count_once_and_can_correct_the_stage_down() -> None:
    first, second = T0 + timedelta(days=2), T0 + timedelta(days=5)
    placed = [order("o1"), order("o2", at=T0 + timedelta(days=1))]
    partial_listed = _listing("o2", first, ("r1", "20.00"))
    listed_again = _listing("o2", second, ("r1", "20.00"))
    both_listed = _listing("o2", second, ("r1", "20.00"), ("r2", "30.00"))
    profile, _ = run(*placed)
    assert profile.stage == LoyaltyStage.REPEAT
    # A partial refund: the spend drops, the order still counts. Listed again by a later version, it
    # counts once.
    partial, [d] = run(partial_listed, profile=profile)
    assert (partial.stage, str(partial.total_spent)) == (LoyaltyStage.REPEAT, "80.00")
    assert d.transitions == []
    again, _ = run(listed_again, profile=partial)
    assert [o.refunds for o in again.orders] == [o.refunds for o in partial.orders]
    assert (again.stage, str(again.total_spent)) == (LoyaltyStage.REPEAT, "80.00")
    # Listed refunds that add up to the total: the order no longer counts, from the refund that completed
    # them, which the transition names.
    full, [f] = run(both_listed, profile=again)
    assert (full.stage, full.orders_count, str(full.total_spent)) == (LoyaltyStage.FIRST_TIME, 1, "50.00")
    assert [(t.reason, t.event_id, t.occurred_at) for t in f.transitions] == [
        ("1 order", "refund:r2", second)
    ]
    # The same deliveries backwards: the same orders, each refund dated by the first version listing it.
    backwards, _ = run(*reversed([*placed, partial_listed, listed_again, both_listed]))
    assert backwards.orders == full.orders
    [o2] = [o for o in backwards.orders if o.order_id == "o2"]
    assert [(r.event_id, r.at) for r in o2.refunds] == [("refund:r1", first), ("refund:r2", second)]
    assert (backwards.stage, backwards.transitions) == (full.stage, full.transitions)


def test_a_refund_in_full_of_no_said_amount_takes_the_whole_order_back_whenever_it_comes() -> None:
    # Segment's `Order Refunded` naming only the order: `in_full`, amount 0.
    placed = [order("o1"), order("o2", at=T0 + timedelta(days=1), total="30.00")]
    refund = ev(
        "order_refunded",
        {"order_id": "o2", "amount": "0", "currency": "EUR", "in_full": True},
        at=T0 + timedelta(days=2),
    )
    profile, decisions = run(*placed, refund)
    assert (profile.stage, profile.orders_count, str(profile.total_spent)) == (
        LoyaltyStage.FIRST_TIME,
        1,
        "50.00",
    )
    assert [t.reason for t in decisions[-1].transitions] == ["1 order"]
    [o2] = [o for o in profile.orders if o.order_id == "o2"]
    assert (o2.refunded, o2.counts) == (o2.total, False)
    # Before its order (it waits for it), or between the two: the same profile.
    assert run(refund, *placed)[0] == profile
    assert run(placed[0], refund, placed[1])[0] == profile


def test_a_refund_of_an_unknown_order_changes_nothing() -> None:
    profile, _ = run(order("o1"))
    after, [d] = run(
        ev("order_refunded", {"order_id": "zz", "amount": "5.00", "currency": "EUR"}), profile=profile
    )
    assert after.orders == profile.orders
    assert d.funnel_events == []


def test_profile_figures() -> None:
    profile, _ = run(
        order("o1", products=("p1", "p9")),
        order("o2", at=T0 + timedelta(days=10), products=("p2",)),
        order("o3", at=T0 + timedelta(days=30), products=("p1",), total="20.00"),
    )
    assert profile.median_days_between_orders == 15.0
    assert str(profile.average_order_value) == "40.00"
    assert profile.favourite_categories == ("tea", "mugs")
    assert [p.product_id for p in profile.last_products] == ["p1", "p2", "p9"]


def test_figures_follow_the_orders_of_each_profile_asked_about() -> None:
    # The counted orders are remembered for the last tuple of orders asked about: asking about profiles in
    # turn, and about a refunded copy of one, must never answer with another profile's orders.
    one, _ = run(order("o1"))
    two, _ = run(order("o2", at=T0 + timedelta(days=5)), order("o3", at=T0 + timedelta(days=9)))
    assert [one.orders_count, two.orders_count, one.orders_count] == [1, 2, 1]
    assert (one.last_order_at, two.last_order_at) == (T0, T0 + timedelta(days=9))
    refunded, _ = run(
        ev("order_refunded", {"order_id": "o3", "amount": "50.00", "currency": "EUR"}), profile=two
    )
    assert refunded.orders is not two.orders
    assert [two.orders_count, refunded.orders_count] == [2, 1]
    assert [o.order_id for o in refunded.counted_orders] == ["o2"]


def test_a_contact_change_that_comes_with_an_order_changes_the_snapshot_only() -> None:
    profile, _ = run(ev("customer_upserted", store_customer_id="c1", email="ann@example.com"))
    _, [d] = run(order("o1", store_customer_id="c1", phone="+4915112345678"), profile=profile)
    # The order's own funnel events carry the new phone number; no separate customer_updated.
    assert [e.type for e in d.funnel_events] == ["order_placed", "stage_changed"]
    assert all(e.profile.phone == "+4915112345678" for e in d.funnel_events)


def test_identifiers_worked_out_by_the_caller_decide_the_same() -> None:
    event = ev("identity_linked", {"previous_id": "a1"}, store_customer_id="c1")
    assert decide(None, event, RULES, "c1", ["id:c1", "anon:a1"]) == decide(None, event, RULES, "c1")


# -- health and timers ------------------------------------------------------------------------------------


def test_an_order_schedules_the_health_check_at_the_store_default() -> None:
    _, [d] = run(order("o1"))
    assert d.timers[HEALTH_TIMER] == T0 + timedelta(days=90)


def test_health_goes_at_risk_then_lapsed_when_its_timers_fire_then_active_on_the_next_order() -> None:
    profile, _ = run(order("o1"))
    due = T0 + timedelta(days=90)
    at_risk = decide_timer(profile, HEALTH_TIMER, due, now=due, rules=RULES)
    assert at_risk.profile.health == Health.AT_RISK
    assert [e.type for e in at_risk.funnel_events] == ["health_changed"]
    assert at_risk.funnel_events[0].occurred_at == due
    lapse_due = at_risk.timers[HEALTH_TIMER]
    assert lapse_due == T0 + timedelta(days=180)
    lapsed = decide_timer(at_risk.profile, HEALTH_TIMER, lapse_due, now=lapse_due, rules=RULES)
    assert lapsed.profile.health == Health.LAPSED
    assert lapsed.timers[HEALTH_TIMER] is None
    back, [d] = run(order("o2", at=lapse_due + timedelta(days=1)), profile=lapsed.profile)
    assert back.health == Health.ACTIVE
    assert [(t.dimension, t.to_value) for t in d.transitions] == [("stage", "repeat"), ("health", "active")]


def test_a_customer_with_a_slow_rhythm_is_at_risk_later() -> None:
    profile, _ = run(
        order("o1"), order("o2", at=T0 + timedelta(days=70)), order("o3", at=T0 + timedelta(days=140))
    )
    _, [d] = run(order("o4", at=T0 + timedelta(days=210)), profile=profile)
    assert d.timers[HEALTH_TIMER] == T0 + timedelta(days=210 + 140)  # 2 x the 70-day median beats 90 days


def test_a_backfilled_old_timer_transitions_at_its_due_time_not_now() -> None:
    profile, _ = run(order("o1"))
    now = T0 + timedelta(days=400)
    d = decide_timer(profile, HEALTH_TIMER, T0 + timedelta(days=90), now=now, rules=RULES)
    assert d.transitions[0].occurred_at == T0 + timedelta(days=90)


# -- carts --------------------------------------------------------------------------------------------------


def cart(
    cart_id: str = "k1", action: str = "snapshot", *, at: datetime = T0, completed: bool = False, **who: Any
) -> StorefrontEvent:
    return ev(
        "cart_updated",
        {
            "cart_id": cart_id,
            "action": action,
            "currency": "EUR",
            "total": "20.00",
            "recovery_url": "https://shop.example/cart/k1",
            "completed": completed,
            "line_items": [{"product_id": "p1", "quantity": 2, "price": "10.00"}],
        },
        at=at,
        **who,
    )


def test_a_cart_opens_a_timer_that_abandons_it() -> None:
    profile, [d] = run(cart())
    due = d.timers["cart:k1"]
    assert due == T0 + RULES.cart_abandonment
    assert due is not None
    fired = decide_timer(profile, "cart:k1", due, now=due, rules=RULES)
    [abandoned] = fired.funnel_events
    assert abandoned.type == "cart_abandoned"
    assert abandoned.payload.recovery_url == "https://shop.example/cart/k1"
    assert [i.quantity for i in abandoned.payload.items] == [2]
    assert fired.timers["cart:k1"] is None


def test_activity_pushes_the_cart_timer_back() -> None:
    _, decisions = run(cart(), cart(action="added", at=T0 + timedelta(minutes=30)))
    assert decisions[-1].timers["cart:k1"] == T0 + timedelta(minutes=30) + RULES.cart_abandonment
    assert decisions[-1].profile.carts[0].items[0].quantity == 4


def test_an_order_or_a_completed_checkout_closes_the_cart() -> None:
    _, ordered = run(cart(), order("o1"))
    assert ordered[-1].timers["cart:k1"] is None
    assert ordered[-1].profile.carts == ()
    _, completed = run(cart(), cart(completed=True))
    assert completed[-1].timers["cart:k1"] is None


def test_an_explicit_abandonment_never_doubles_with_the_timer() -> None:
    explicit = ev("cart_abandoned", {"cart_id": "k1", "currency": "EUR", "total": "20.00"})
    profile, decisions = run(cart(), explicit)
    assert [e.type for e in decisions[-1].funnel_events] == ["cart_abandoned"]
    assert decisions[-1].timers["cart:k1"] is None
    due = T0 + RULES.cart_abandonment
    assert decide_timer(profile, "cart:k1", due, now=due, rules=RULES).funnel_events == []
    _, [again] = run(explicit, profile=profile)
    assert again.funnel_events == []


# -- surveys and birthdays ----------------------------------------------------------------------------------


def test_survey_level_is_the_highest_scale_agreed_with_and_cognitive_weighs_nothing() -> None:
    answers = [
        {"statement_id": "affective.really_like", "agree": True},
        {"statement_id": "conative.buy_again", "score": 4},
        {"statement_id": "action.recommend", "score": 3},
        {"statement_id": "cognitive.better_value", "agree": True},
    ]
    profile, [d] = run(ev("survey_answered", {"survey_id": "s", "answers": answers, "csat": 2, "nps": 9}))
    assert profile.survey_level == SurveyLevel.CONATIVE
    [scored] = d.funnel_events
    assert scored.payload.agreed == {"affective": 1, "conative": 1}
    assert scored.payload.csat == 2


def test_birthday_reminders_every_year() -> None:
    assert next_birthday_reminder(date(1990, 3, 14), 7, T0) == datetime(2026, 3, 7, tzinfo=UTC)
    assert next_birthday_reminder(date(1990, 1, 3), 7, T0) == datetime(2026, 12, 27, tzinfo=UTC)
    assert next_birthday_reminder(date(2000, 2, 29), 0, T0) == datetime(2026, 2, 28, tzinfo=UTC)
    profile, [d] = run(ev("customer_upserted", store_customer_id="c1", birthday="1990-03-14"))
    due = d.timers[BIRTHDAY_TIMER]
    assert due is not None
    fired = decide_timer(profile, BIRTHDAY_TIMER, due, now=due, rules=RULES)
    assert [e.type for e in fired.funnel_events] == ["birthday_due"]
    assert fired.timers[BIRTHDAY_TIMER] == datetime(2027, 3, 7, tzinfo=UTC)


# -- identity and erasure -----------------------------------------------------------------------------------


def test_resolution_prefers_the_store_id_and_merges_whatever_else_the_event_names() -> None:
    known = {"anon:a1": "anon:a1", "email:x@y.z": "email:x@y.z"}
    r = resolve(["id:42", "email:x@y.z", "anon:a1"], known)
    assert (r.customer_id, r.absorbed) == ("42", ("anon:a1", "email:x@y.z"))
    assert resolve(["anon:new"], {}).customer_id == "anon:new"
    assert resolve(["email:x@y.z", "anon:a1"], known).customer_id == "email:x@y.z"


_IDENTIFIER = st.sampled_from(
    ["id:42", "id:7", "id:email:x@y.z", "id:anon:q", "email:x@y.z", "anon:a1", "order:9", "order:1", "q"]
)


@given(st.lists(_IDENTIFIER, min_size=1, max_size=6))
def test_the_customer_named_alone_is_the_one_resolution_picks_with_nothing_known(ids: list[str]) -> None:
    # Two store ids that rank apart ("id:email:..." ranks as an email), one, none: as `resolve` ranks them.
    assert named_alone(ids) == resolve(ids, {}).customer_id


def test_merging_keeps_both_histories_and_is_order_independent() -> None:
    # The cart came after the order (an order closes the carts last touched before it).
    anon, _ = run(
        cart(anonymous_id="a1", at=T0 + timedelta(minutes=1)),
        ev("product_viewed", {"product": {"product_id": "p1"}}, anonymous_id="a1"),
    )
    anon = anon.model_copy(update={"customer_id": "anon:a1"})
    known, _ = run(order("o1"))
    merged = merge(known, anon)
    assert [c.cart_id for c in merged.carts] == ["k1"]
    assert merged.orders_count == 1
    assert set(merged.identifiers) >= {"id:c1", "anon:a1"}
    twice = merge(merged, anon)
    assert twice.orders == merged.orders
    assert twice.carts == merged.carts


def test_erasure_removes_personal_data_and_keeps_the_aggregates() -> None:
    profile, _ = run(
        order("o1", email="ann@example.com", first_name="Ann", city="Lyon", store_customer_id="c1")
    )
    erased, [d] = run(ev("customer_erased", {"scope": "customer"}), profile=profile)
    assert (erased.email, erased.first_name, erased.city) == (None, None, None)
    assert erased.identifiers == ("id:c1", "order:o1")
    assert erased.orders_count == 1
    assert erased.stage == LoyaltyStage.FIRST_TIME
    assert [e.type for e in d.funnel_events] == ["customer_erased"]


ERASED_AT = T0 + timedelta(hours=1)
BEFORE_IT = T0 + timedelta(minutes=30)
AFTER_IT = T0 + timedelta(hours=2)

# What an erasure forgets of a customer's behaviour, each said before the erasure (BEFORE_IT).
SAID_BEFORE = {
    "product view": lambda: ev("product_viewed", {"product": {"product_id": "p1"}}, at=BEFORE_IT),
    "cart": lambda: cart("k1", at=BEFORE_IT),
    "abandoned cart": lambda: ev(
        "cart_abandoned",
        {
            "cart_id": "k1",
            "currency": "EUR",
            "total": "20.00",
            "line_items": [{"product_id": "p1", "quantity": 2, "price": "10.00"}],
        },
        at=BEFORE_IT,
    ),
    "survey answer": lambda: ev(
        "survey_answered",
        {"survey_id": "s", "answers": [{"statement_id": "conative.buy_again", "score": 5}], "nps": 9},
        at=BEFORE_IT,
    ),
}


@pytest.mark.parametrize("said", SAID_BEFORE)
def test_behaviour_said_before_an_erasure_stays_forgotten_when_it_reaches_us_after_it(said: str) -> None:
    """A late delivery (a Segment client's offline queue, a redelivered webhook) of something said before
    the customer asked to be forgotten: the profile ends as if it had come first and been erased, while
    what was said after the erasure stays."""
    late = SAID_BEFORE[said]()
    erasure = ev("customer_erased", {"scope": "customer"}, at=ERASED_AT)
    since = cart("k2", at=AFTER_IT)
    bought = order("o1")
    in_order, _ = run(bought, late, erasure, since)
    profile, decisions = run(bought, erasure, since, late)
    kept = ("carts", "viewed", "survey", "survey_levels", "completed_carts", "stage")
    assert {k: getattr(profile, k) for k in kept} == {k: getattr(in_order, k) for k in kept}
    assert [c.cart_id for c in profile.carts] == ["k2"]
    assert (profile.viewed, profile.survey) == ((), None)
    # Nothing said before the erasure is announced after it, nor brings a timer back.
    assert [e.type for e in decisions[-1].funnel_events if e.type != "stage_changed"] == []
    assert "cart:k1" not in decisions[-1].timers
    if said == "survey answer":  # the level stays, as the erasure keeps it (the history's aggregate)
        assert [m[1] for m in profile.survey_levels] == [late.event_id]


def test_a_checkout_completed_before_an_erasure_still_closes_its_cart() -> None:
    completed = cart("k1", at=BEFORE_IT, completed=True)
    erasure = ev("customer_erased", {"scope": "customer"}, at=ERASED_AT)
    reopened = cart("k1", action="added", at=AFTER_IT)
    in_order, _ = run(completed, erasure, reopened)
    profile, _ = run(erasure, reopened, completed)
    assert (
        (profile.carts, profile.completed_carts)
        == (in_order.carts, in_order.completed_carts)
        == ((), ("k1",))
    )


def _erased_c1(*since: StorefrontEvent) -> Profile:
    """Customer c1, with one order, erased at ERASED_AT; then `since`."""
    return run(order("o1"), ev("customer_erased", {"scope": "customer"}, at=ERASED_AT), *since)[0]


A1: dict[str, Any] = {"anonymous_id": "a1"}


def _browser_before_the_erasure(*since: StorefrontEvent) -> Profile:
    """Browser a1's profile: Gil's email, name and city, a cart and a product view, all said before the
    erasure (never linked to c1 then); then `since` (by a1 too)."""
    return run(
        ev("customer_upserted", at=BEFORE_IT, email="gil@x.example", first_name="Gil", city="Oslo", **A1),
        cart("k1", at=BEFORE_IT, **A1),
        ev("product_viewed", {"product": {"product_id": "p1"}}, at=BEFORE_IT, **A1),
        *since,
    )[0]


def test_a_profile_merging_into_an_erased_customer_brings_only_what_it_heard_after_the_erasure() -> None:
    older = _browser_before_the_erasure(
        ev("customer_upserted", at=AFTER_IT, email="gil@new.example", **A1), cart("k2", at=AFTER_IT, **A1)
    )
    merged = merge(_erased_c1(), older)
    # Contact details from before the erasure are never taken up into it, even with nothing held instead.
    assert (merged.first_name, merged.city, merged.email) == (None, None, "gil@new.example")
    assert ([c.cart_id for c in merged.carts], merged.viewed) == (["k2"], ())
    assert merged.orders_count == 1
    # Of its identities only the new email's look-up: its anonymous id and old email were heard before.
    assert merged.identifiers == ("email:gil@new.example", "id:c1", "order:o1")


def test_a_profile_that_gave_no_details_since_the_erasure_brings_none_of_its_identities() -> None:
    # The erased customer came back by account id alone (no details), and left a cart.
    erased = _erased_c1(cart("k2", at=AFTER_IT))
    older = _browser_before_the_erasure(cart("k3", at=AFTER_IT, **A1))  # after the erasure, without details
    merged = merge(erased, older)
    # Its identifiers (its anonymous id, its email's look-up) are what the erasure forgot: none join.
    assert merged.identifiers == erased.identifiers
    # What either heard after the erasure stays: the customer's own cart, and the older profile's.
    assert sorted(c.cart_id for c in merged.carts) == ["k2", "k3"]
    assert (merged.email, merged.first_name, merged.erased) == (None, None, True)


def test_a_merge_forgets_what_either_side_heard_before_the_erasure_whichever_is_the_survivor() -> None:
    erased = _erased_c1()
    other = _browser_before_the_erasure(cart("k3", at=AFTER_IT, **A1))  # after the erasure, without details

    def seen(p: Profile) -> tuple[object, ...]:
        return (p.first_name, p.city, [c.cart_id for c in p.carts], p.viewed, p.identifiers, p.erased)

    # The erased profile absorbed into the other, or the other into it: the same customer comes out.
    assert (
        seen(merge(other, erased))
        == seen(merge(erased, other))
        == (None, None, ["k3"], (), erased.identifiers, True)
    )
    assert merge(other, erased).orders_count == 1


@pytest.mark.parametrize("with_details", [True, False], ids=["back with a new email", "back by id alone"])
def test_an_erasure_that_reaches_us_after_what_was_said_since_keeps_it(with_details: bool) -> None:
    """The erasure of c1 (a customers/redact retried late) reaches us after what c1 said since: the profile
    is the one it would be had the erasure come first."""
    before = (
        ev("customer_upserted", at=BEFORE_IT, email="gil@x.example", first_name="Gil", city="Oslo", **A1),
        ev("customer_upserted", at=BEFORE_IT, store_customer_id="c1", **A1),
        cart("k1", at=BEFORE_IT),
        ev("product_viewed", {"product": {"product_id": "p1"}}, at=BEFORE_IT),
        order("o1", at=T0),
    )
    erasure = ev("customer_erased", {"scope": "customer"}, at=ERASED_AT)
    details: dict[str, Any] = {
        "email": "gil@new.example",
        "accepts_marketing": True,
        "birthday": "1990-06-01",
    }
    since = (
        *([ev("customer_upserted", at=AFTER_IT, store_customer_id="c1", **details)] if with_details else []),
        cart("k2", at=AFTER_IT),
        ev("product_viewed", {"product": {"product_id": "p2"}}, at=AFTER_IT),
    )
    first = run(*before, erasure, *since)[0]
    late, decisions = run(*before, *since, erasure)
    assert late == first
    assert ([c.cart_id for c in late.carts], [v.product_id for v in late.viewed]) == (["k2"], ["p2"])
    assert (late.email, late.first_name, late.city) == (("gil@new.example",) if with_details else (None,)) + (
        None,
        None,
    )
    assert late.erased is not with_details
    # The timers of what it forgot go (k1's cart); those of what it kept stay (k2's, the birthday said since).
    forgotten = {"cart:k1": None} | ({} if with_details else {"birthday": None})
    assert decisions[-1].timers == forgotten


def test_a_shop_wide_erasure_erases_every_customer_and_tells_the_notifier_once() -> None:
    ann, _ = run(order("o1", email="ann@example.com", first_name="Ann", store_customer_id="c1"))
    bob, _ = run(
        ev("customer_upserted", email="bob@example.com", birthday="1990-05-01", store_customer_id="c2")
    )
    erasure = erase_shop("demo", [ann, bob], "redact-1", T0)
    assert [(d.profile.customer_id, d.profile.email, d.profile.erased) for d in erasure.decisions] == [
        ("c1", None, True),
        ("c2", None, True),
    ]
    assert [d.funnel_events for d in erasure.decisions] == [[], []]  # no event per customer...
    assert erasure.decisions[1].timers[BIRTHDAY_TIMER] is None  # ...but their timers go
    [shop] = erasure.funnel_events  # ...and one for the store
    assert (shop.type, shop.store_id, shop.customer_id, shop.caused_by) == (
        "customer_erased",
        "demo",
        SHOP_WIDE,
        "redact-1",
    )
    assert shop.event_id == funnel_event_id("redact-1", "customer_erased")


def test_the_contact_fields_are_the_customers_facts_and_the_profile_holds_each() -> None:
    assert set(CONTACT_FIELDS) == set(Customer.model_fields) - CUSTOMER_IDENTIFIERS - CUSTOMER_FACT_TIMES
    assert set(CONTACT_FIELDS) <= set(Profile.__struct_fields__)


def test_identifiers_of_an_event() -> None:
    event = ev("customer_upserted", store_customer_id="9", email="A@B.c", anonymous_id="z")
    assert identifiers_of(event.customer) == ["id:9", "email:a@b.c", "anon:z"]


@pytest.mark.parametrize("path", example_files("storefront-events"), ids=lambda p: p.stem)
def test_every_storefront_example_goes_through_the_funnel_decision(path: Path) -> None:
    event = decode_storefront_event(path.read_bytes())
    d = decide(None, event, RULES, event.customer.key)
    assert d.profile.store_id == event.store_id
    assert all(e.caused_by == event.event_id for e in d.funnel_events)


# Written out, not imported: changing the namespace would change every id published before.
ID_NAMESPACE = uuid.UUID("6f1f7d2e-4a43-4b8e-9a55-0c7b3f1d2a10")


@pytest.mark.parametrize(
    ("caused_by", "kind"),
    [("e1", "stage_changed"), ("timer:demo:c1:cart:k1:2026-01-01T00:00:00+00:00", "cart_abandonedk1"),
     ("ünïcødé €", "𝄞"), ("", "")],
)  # fmt: skip
def test_funnel_event_ids_are_the_uuid5_of_cause_and_kind(caused_by: str, kind: str) -> None:
    # Replays must keep producing the ids earlier runs published, which downstream dedupes on.
    assert funnel_event_id(caused_by, kind) == str(uuid.uuid5(ID_NAMESPACE, f"{caused_by}/{kind}"))


@settings(max_examples=300)
@given(caused_by=st.text(), kind=st.text())
def test_funnel_event_ids_set_the_version_and_variant_of_any_digest(caused_by: str, kind: str) -> None:
    # The version's and variant's digits are read from the hex digest, not set in its bytes: every one of
    # the sixteen digits the variant's position can hold must map as uuid5's bit operations do.
    assert funnel_event_id(caused_by, kind) == str(uuid.uuid5(ID_NAMESPACE, f"{caused_by}/{kind}"))
