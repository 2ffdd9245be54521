"""Where a customer stands in the loyalty funnel: pure decisions from (profile, event, rules).

`decide` returns the new profile and what happened (transitions, funnel events, timer changes); it never
writes or sends anything, so every rule is tested in milliseconds and a replay of the same events gives the
same state. Funnel logic uses event time; timers carry due times that a worker fires by wall time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from services.segmenter.domain import browsing, carts
from services.segmenter.domain.event_classes import (
    CART_ABANDONED,
    CART_UPDATED,
    CUSTOM,
    CUSTOMER_ERASED,
    IDENTITY_LINKED,
    ORDER_PLACED,
    ORDER_REFUNDED,
    PRODUCT_VIEWED,
    SURVEY_ANSWERED,
)
from services.segmenter.domain.event_ids import funnel_event_id
from services.segmenter.domain.figures import ORDER_KEY, profile_snapshot
from services.segmenter.domain.history import (
    HEALTH_TIMER,
    derive,
    occurrences,
    timer_cause,
)
from services.segmenter.domain.identity import holds, joined_identifiers, merged_identifiers
from services.segmenter.domain.profile import (
    CartFact,
    ItemFact,
    Mark,
    OrderFact,
    ProductFact,
    Profile,
    RefundFact,
    SurveyFact,
    Transition,
    one_order,
)
from services.segmenter.domain.struct_functions import astuple, replace
from services.segmenter.domain.survey import score
from services.segmenter.domain.vocabulary import ACTIVE, HEALTH_OF, PROSPECT, STAGE_OF
from shared.events import CONTACT_FIELDS, MOST_MONEY, SHOP_WIDE
from shared.funnel_event_structs import (
    BirthdayDue,
    BirthdayDueEvent,
    CartAbandoned,
    CartItem,
    CustomerErasedFunnelEvent,
    CustomerUpdated,
    CustomerUpdatedEvent,
    FunnelEvent,
    FunnelPayload,
    HealthChanged,
    HealthChangedEvent,
    OrderPlacedFunnelEvent,
    OrderRecorded,
    ProfileSnapshot,
    StageChanged,
    StageChangedEvent,
    SurveyScored,
    SurveyScoredEvent,
)
from shared.funnel_event_structs import (
    CartAbandonedEvent as FunnelCartAbandoned,
)
from shared.funnel_events import SCHEMA_VERSION
from shared.funnel_rules import FunnelRules
from shared.storefront_event_structs import (
    CartAbandonedEvent,
    CartUpdatedEvent,
    Customer,
    CustomEvent,
    LineItem,
    OrderPlacedEvent,
    OrderRefundedEvent,
    OrderRefundLine,
    StorefrontEvent,
    SurveyAnsweredEvent,
)

__all__ = ["HEALTH_TIMER"]

BIRTHDAY_TIMER: Final = "birthday"
_NOTHING: Final = Decimal("0")


@dataclass(slots=True, init=False)
class Decision:
    """What one event (or one timer) did to one profile. Timers: kind -> due time, None = cancel.

    Its own `__init__`, not the one `dataclasses` generates: compiled, a dataclass keeps that one, which is
    interpreted Python, run once or more an event (1.5 % of the client's CPU in process over the replay
    mix); this one is compiled with the rest."""

    profile: Profile
    transitions: list[Transition]
    funnel_events: list[FunnelEvent]
    timers: dict[str, datetime | None]
    new_orders: list[OrderFact]
    # Orders held before whose products a later version changed: (as they were, as they are now).
    edited_orders: list[tuple[OrderFact, OrderFact]]
    cause: str
    at: datetime | None
    # The snapshot last emitted and the profile it is of: a second funnel event of the same profile (or of
    # one `_refresh` derived from it) starts from it instead of building one again (`_refresh`).
    snapshot_of: Profile | None = field(repr=False, compare=False)
    snapshot: ProfileSnapshot | None = field(repr=False, compare=False)

    def __init__(self, profile: Profile, *, cause: str = "", at: datetime | None = None) -> None:
        self.profile = profile
        self.transitions = []
        self.funnel_events = []
        self.timers = {}
        self.new_orders = []
        self.edited_orders = []
        self.cause = cause
        self.at = at
        self.snapshot_of = None
        self.snapshot = None

    def emit(
        self,
        kind: str,
        build: type[FunnelEvent],
        payload: FunnelPayload | None,
        *,
        key: str = "",
        at: datetime | None = None,
    ) -> None:
        """Add a funnel event whose id derives from its cause, so replays produce the same ids.

        Funnel events are msgspec Structs with the contract's bytes (shared/funnel_event_structs.py), not the
        pydantic models built unvalidated: 19.2 -> 16.8 µs an emit with its snapshot's figures made (6,000
        profiles of the mix), and encoding them for the outbox 5.8 -> 1.8 µs per storefront event."""
        profile = self.profile
        snapshot = self.snapshot
        if snapshot is None or profile is not self.snapshot_of:
            snapshot = self.snapshot = profile_snapshot(profile)
            self.snapshot_of = profile
        # Keywords written out, not a dict of them passed with `**`: the dict's building and copying cost
        # more than the Struct's own (3,500-4,600 instructions an emit, under callgrind). As untyped as the
        # dict was: each caller pairs a class with its payload's, which mypy cannot follow through the union.
        make: Any = build
        event = make(
            schema_version=SCHEMA_VERSION,
            event_id=funnel_event_id(self.cause, f"{kind}{key}"),
            store_id=profile.store_id,
            customer_id=profile.customer_id,
            occurred_at=at or self.at,
            caused_by=self.cause,
            profile=snapshot,
            type=build.TYPE,
            payload=payload,
        )
        self.funnel_events.append(event)


def new_profile(store_id: str, customer_id: str) -> Profile:
    return Profile(store_id=store_id, customer_id=customer_id)


def identifiers_of(customer: Customer) -> list[str]:
    """Every identifier an event gives for its customer, most authoritative first."""
    found = []
    if customer.store_customer_id:
        found.append(f"id:{customer.store_customer_id}")
    if customer.email:
        found.append(f"email:{customer.email}")
    if customer.anonymous_id:
        found.append(f"anon:{customer.anonymous_id}")
    if customer.placed_order_id:
        found.append(f"order:{customer.placed_order_id}")
    return found


_LINK_PREFIX: Final = {"anonymous_id": "anon:", "store_customer_id": "id:", "email": "email:"}


def event_identifiers(event: StorefrontEvent) -> list[str]:
    """The identifiers of the event's customer, plus the one an identity link says is theirs too."""
    found = identifiers_of(event.customer)
    if type(event) is ORDER_PLACED:
        # A refund that came before its order waits under the order's id; the order finds it there.
        placed = f"order:{event.payload.order_id}"
        if placed not in found:
            found.append(placed)
    if type(event) is IDENTITY_LINKED:
        link = event.payload
        previous = link.previous_id.strip().lower() if link.previous_kind == "email" else link.previous_id
        linked = f"{_LINK_PREFIX[link.previous_kind]}{previous}"
        if linked not in found:
            found.append(linked)
    return found


def _contact_is_newer(profile: Profile, name: str, value: object, at: datetime) -> bool:
    """Whether a contact fact said at `at` replaces the one held: only a newer one does, so a replay or a
    late delivery changes nothing. At the same instant a withdrawn consent wins, and otherwise the larger
    value, so that even a tie comes out the same in any order."""
    if profile.erased_at is not None and at <= profile.erased_at:
        return False  # said before the customer asked to be forgotten
    held_at = profile.contact_at.get(name)
    if held_at is None or at > held_at:
        return True
    if at < held_at:
        return False
    held = getattr(profile, name)
    if held is None or held == value:
        return False
    if name == "accepts_marketing":
        return value is False
    return str(value) > str(held)


def _joined(held: tuple[str, ...], new: Iterable[str], *, orders: bool = True) -> tuple[str, ...] | None:
    """`held` with the `new` identifiers in it (without the orders' among them unless `orders`), within the
    bound on emails and anonymous ids (`identity.joined_identifiers`); None when none is new and taken (the
    profile keeps its very tuple). Held ones (nearly all) are passed over first."""
    fresh = [i for i in new if not holds(held, i) and (orders or not i.startswith("order:"))]
    return joined_identifiers(held, fresh) if fresh else None


def _with_identifiers(profile: Profile, new: Sequence[str]) -> Profile:
    """The profile knowing these identifiers too (`_joined`)."""
    joined = _joined(profile.identifiers, new)
    return profile if joined is None else replace(profile, identifiers=joined)


# Where each contact field sits among the values `astuple` gives of the event's customer and of the profile,
# and the two times of the customer's: one call in C for all of a Struct's fields instead of a look-up by
# name through its type for each (the contact step read ten on the customer and one on the profile for each
# field said, about 120 instructions each; bench/README.md, fifty-third round).
_CONTACT_PLACES: Final[tuple[tuple[str, int, int], ...]] = tuple(
    (name, Customer.__struct_fields__.index(name), Profile.__struct_fields__.index(name))
    for name in CONTACT_FIELDS
)
_CONSENT_PLACE: Final = Customer.__struct_fields__.index("accepts_marketing")
_UPDATED_AT: Final = Customer.__struct_fields__.index("updated_at")
_CONSENT_AT: Final = Customer.__struct_fields__.index("consent_at")


def _contact_changes(
    profile: Profile, customer: Customer, at: datetime
) -> tuple[dict[str, object], tuple[str, ...], datetime]:
    """The updates that bring the profile's contact details up to what the event's customer says (newer
    non-empty facts win; a source that omits a field does not erase what we knew), the contact fields whose
    value changed, and when the source says these details were current.

    `at`: when the source says these details were current (its signed timestamp); consent may carry its own.
    """
    # Only what differs: most events repeat what we know (a Segment call carries the locale and timezone
    # every time), and an unchanged profile stays the very same object, which spares writing it back.
    updates: dict[str, object] = {}
    stamps: dict[str, datetime] | None = None  # the profile's stamps, copied at the first one said anew
    said = astuple(customer)
    details_at: datetime = said[_UPDATED_AT] or at
    consent_at: datetime = said[_CONSENT_AT] or details_at
    erased_at = profile.erased_at
    held_stamps = profile.contact_at
    held: tuple[Any, ...] | None = None  # the profile's values, once a field is said
    for name, in_customer, in_profile in _CONTACT_PLACES:
        value = said[in_customer]
        if value is None:
            continue
        said_at = consent_at if in_customer == _CONSENT_PLACE else details_at
        held_at = held_stamps.get(name)
        # The common case inline (never erased, first said or said later than what is held): newer by the
        # rule below, and a new stamp without comparing the two times again.
        if erased_at is None and (held_at is None or not said_at <= held_at):
            stamp = True
        elif _contact_is_newer(profile, name, value, said_at):
            stamp = held_at != said_at
        else:
            continue
        if held is None:
            held = astuple(profile)
        held_value = held[in_profile]
        if held_value is None or value != held_value:  # a comparison with None takes Python's slow way
            updates[name] = value
        if stamp:
            if stamps is None:
                stamps = dict(held_stamps)
            stamps[name] = said_at
    # The loop above put them in CONTACT_FIELDS's order, and nothing else yet: the dict's keys are the changed
    # fields in that order (a generator over the ten names cost about 1 µs, in two events of five).
    changed = tuple(updates)
    if stamps is not None:
        updates["contact_at"] = stamps
    if profile.erased and changed:
        updates["erased"] = False  # a customer who comes back after an erasure is a new relationship
    return updates, changed, details_at


def _with_contact(
    profile: Profile, event: StorefrontEvent, identifiers: Sequence[str]
) -> tuple[Profile, tuple[str, ...]]:
    """The profile with the event's contact details (`_contact_changes`) and the identifiers it names
    (`identifiers`: the event's `event_identifiers`, which include its customer's); also returns the contact
    fields whose value changed. Orders' identifiers are added by the order itself."""
    customer = event.customer
    updates, changed, details_at = _contact_changes(profile, customer, event.occurred_at)
    erased_at = profile.erased_at
    if erased_at is None:
        # Never erased (nearly every profile): the identifiers join in the same copy as the details.
        joined = _joined(profile.identifiers, identifiers, orders=False)
        if joined is not None:
            updates["identifiers"] = joined
        return (replace(profile, **updates) if updates else profile), changed
    if updates:
        profile = replace(profile, **updates)
    if details_at > erased_at:
        # An identifier said before the erasure must not find the customer again.
        profile = _with_identifiers(
            profile, [i for i in identifiers_of(customer) if not i.startswith("order:")]
        )
    # After an erasure, an event from before it may name the customer by id only (as the erasure keeps).
    forgotten = event.occurred_at <= erased_at
    named = [
        i for i in identifiers if not i.startswith("order:") and not (forgotten and not i.startswith("id:"))
    ]
    return _with_identifiers(profile, named), changed


# -- stage and health ----------------------------------------------------------------------------------


def _refresh(d: Decision, rules: FunnelRules, before: tuple[Transition, ...]) -> None:
    """Derive the history again from the facts; announce the steps that are new (not merely re-dated)."""
    # A document written before histories were derived holds a stage but no history: what it had reached
    # before this event was announced then, and is not announced again.
    legacy = not before and (d.profile.stage != PROSPECT or d.profile.health != ACTIVE)
    derived_from = d.profile
    d.profile, next_check = derive(derived_from, rules)
    if d.snapshot is not None and d.snapshot_of is derived_from:
        # `derive` changes the history, stage, health and health horizon only, and a snapshot holds the
        # stage and health of these: the snapshot of the event just emitted (an order's, a refund's, a
        # survey's) with those two is the derived profile's, and a stage change's event takes it instead
        # of building its own (1.5-2 µs a snapshot with its figures found in their memo).
        d.snapshot = replace(d.snapshot, stage=d.profile.stage, health=d.profile.health)
        d.snapshot_of = d.profile
    known = set(occurrences(before))
    if legacy and d.at is not None:
        at = d.at
        known |= {
            key
            for t, key in zip(d.profile.transitions, occurrences(d.profile.transitions), strict=True)
            if t.occurred_at < at
        }
    counts: dict[str, int] = {}
    for t, key in zip(d.profile.transitions, occurrences(d.profile.transitions), strict=True):
        if key in known:
            continue
        d.transitions.append(t)
        kind = f"{t.dimension}_changed"
        n = counts[kind] = counts.get(kind, 0) + 1
        suffix = "" if n == 1 else f"#{n}"
        # The members by value from dicts, not the enums' calls (about 0.7 µs each).
        if t.dimension == "stage":
            before_stage, after_stage = STAGE_OF[t.from_value], STAGE_OF[t.to_value]
            stage_change = StageChanged(from_stage=before_stage, to_stage=after_stage, reason=t.reason)
            d.emit(kind, StageChangedEvent, stage_change, key=suffix, at=t.occurred_at)
        else:
            before_health, after_health = HEALTH_OF[t.from_value], HEALTH_OF[t.to_value]
            health_change = HealthChanged(from_health=before_health, to_health=after_health, reason=t.reason)
            d.emit(kind, HealthChangedEvent, health_change, key=suffix, at=t.occurred_at)
    d.timers[HEALTH_TIMER] = next_check


# -- events ----------------------------------------------------------------------------------------------


# The facts (and the funnel events' payloads) below are Structs built from the event's validated fields,
# so not checked again: a pydantic validating constructor cost 1.5-3 µs each, and an order makes a dozen.


def _products(event: OrderPlacedEvent) -> tuple[ProductFact, ...]:
    return tuple(
        ProductFact(product_id=i.product_id, title=i.title, category=i.category, price=None)
        for i in event.payload.line_items
    )


def _settled(profile: Profile) -> Profile:
    """Refunds that were waiting for their order, applied now that it is known."""
    if not profile.pending_refunds:
        return profile
    known = {o.order_id for o in profile.orders}
    due = [r for r in profile.pending_refunds if r.order_id in known]
    if not due:
        return profile
    orders = []
    for order in profile.orders:
        for refund in due:
            if refund.order_id == order.order_id:
                order = order.with_refund(refund)
        orders.append(order)
    return replace(
        profile,
        orders=tuple(orders),
        pending_refunds=tuple(r for r in profile.pending_refunds if r.order_id not in known),
    )


def _on_order(d: Decision, event: OrderPlacedEvent, rules: FunnelRules) -> None:
    order = event.payload
    version = order.updated_at
    # `OrderPlaced.total`, read once and without its interpreted property (see figures.order_counts).
    total = Decimal(order.total_text)
    fact = OrderFact(
        order_id=order.order_id,
        placed_at=event.occurred_at,
        total=total,
        currency=order.currency,
        refunded=_NOTHING,
        cancelled=False,
        products=_products(event),
        discount_codes=tuple(order.discount_codes),
        event_id=event.event_id,
        refunds=(),
        updated_at=None if version is None or version == event.occurred_at else version,
    )
    if order.refunds:
        fact = _with_listed_refunds(fact, order.refunds)
    held = next((o for o in d.profile.orders if o.order_id == order.order_id), None)
    if held is not None:
        _on_order_again(d, held, fact, order.cart_id, rules)
        return
    d.new_orders.append(fact)
    before = d.profile.transitions
    before_carts = d.profile.carts
    # An order closes what the carts held up to it (and for good the cart it names): nothing there is
    # abandoned any more. Activity after the order stays, whichever of the two arrived first. The order's
    # identifier joins in the same copy (what follows changes carts and orders only).
    update: dict[str, object] = {"orders": tuple(sorted((*d.profile.orders, fact), key=ORDER_KEY))}
    joined = _joined(d.profile.identifiers, (f"order:{order.order_id}",))
    if joined is not None:
        update["identifiers"] = joined
    with_order = replace(d.profile, **update)
    if order.cart_id:
        with_order = carts.completed(with_order, order.cart_id)
    d.profile = _settled(carts.closed_by_order(with_order, fact.placed_at)[0])
    _cart_timers(d, rules, {c.cart_id for c in before_carts})
    d.emit(
        "order_placed",
        OrderPlacedFunnelEvent,
        OrderRecorded(
            order_id=order.order_id,
            total=total,
            currency=order.currency,
            items=tuple(_cart_item(i) for i in order.line_items),
            discount_codes=tuple(order.discount_codes),
            cart_id=order.cart_id,
        ),
    )
    _refresh(d, rules, before)


def _on_order_again(
    d: Decision, held: OrderFact, fact: OrderFact, cart_id: str | None, rules: FunnelRules
) -> None:
    """The same order again (orders/updated, or a new delivery of orders/create): counted once, holding
    the content of its latest version (an edit changes lines and total), whichever delivery came first."""
    one = one_order(held, fact)
    completes = cart_id is not None and cart_id not in d.profile.completed_carts
    if one == held and not completes:
        return
    if _products_bought(one) != _products_bought(held):
        d.edited_orders.append((held, one))
    before = d.profile.transitions
    before_carts = d.profile.carts
    orders = (one if o is held else o for o in d.profile.orders)
    d.profile = replace(d.profile, orders=tuple(sorted(orders, key=ORDER_KEY)))
    if completes:
        assert cart_id is not None
        d.profile = carts.completed(d.profile, cart_id)
    if one.placed_at != held.placed_at:
        d.profile = carts.closed_by_order(d.profile, one.placed_at)[0]
    if d.profile.carts != before_carts:
        _cart_timers(d, rules, {c.cart_id for c in before_carts})
    _refresh(d, rules, before)


def _with_listed_refunds(fact: OrderFact, listed: tuple[OrderRefundLine, ...]) -> OrderFact:
    """The refunds a delivery of the order lists (WooCommerce's partial refunds), dated by the version that
    lists them: a refund made since the version before. Named by the platform's refund id (a `refund:` id is
    no delivery's: those are `<source>:<delivery>`), so that every later delivery listing it again changes
    nothing, and its earliest sighting dates it, whichever delivery comes first."""
    for line in listed:
        fact = fact.with_refund(
            RefundFact(
                order_id=fact.order_id,
                event_id=f"refund:{line.refund_id}",
                at=fact.version_at,
                amount=line.amount,
            )
        )
    return fact


def _products_bought(order: OrderFact) -> set[str]:
    return {p.product_id for p in order.products}


def _on_refund(d: Decision, event: OrderRefundedEvent, rules: FunnelRules) -> None:
    refund = event.payload
    fact = RefundFact(
        order_id=refund.order_id,
        event_id=event.event_id,
        at=event.occurred_at,
        # A refund in full of an amount not said (Segment's `Order Refunded` naming only the order): at least
        # any order's total, so that the order's refunded sum, which is capped at its total, is all of it.
        amount=MOST_MONEY if refund.in_full else refund.amount,
        cancelled=refund.cancelled,
    )
    before = d.profile.transitions
    if any(o.order_id == refund.order_id for o in d.profile.orders):
        orders = tuple(o.with_refund(fact) if o.order_id == refund.order_id else o for o in d.profile.orders)
        d.profile = replace(d.profile, orders=orders)
    elif all(r.event_id != fact.event_id for r in d.profile.pending_refunds):
        # A refund of an order not seen yet (Shopify promises no order): kept until the order comes. One for
        # an order that never comes (an unpaid order that timed out) stays here and changes nothing.
        pending = sorted((*d.profile.pending_refunds, fact), key=lambda r: (r.at, r.event_id))
        d.profile = replace(d.profile, pending_refunds=tuple(pending))
        return
    # A refund is one of the two things that may correct a stage down (erasure is the other).
    _refresh(d, rules, before)


def _cart_timers(d: Decision, rules: FunnelRules, cart_ids: set[str]) -> None:
    """Each cart's abandonment timer as its state says: newest activity + the delay while open."""
    held = {c.cart_id: c for c in d.profile.carts}
    for cart_id in sorted(cart_ids):
        d.timers[carts.timer_kind(cart_id)] = carts.abandonment_due(held.get(cart_id), rules.cart_abandonment)


def _on_cart(d: Decision, event: CartUpdatedEvent, rules: FunnelRules) -> None:
    d.profile, _ = carts.updated_cart(d.profile, event.payload, event.occurred_at, event.event_id)
    _cart_timers(d, rules, {event.payload.cart_id})


def _cart_item(item: LineItem | ItemFact) -> CartItem:
    return CartItem(
        product_id=item.product_id,
        title=item.title,
        category=item.category,
        quantity=item.quantity,
        # An order's line: `LineItem.price` without its interpreted property (see figures.order_counts).
        price=Decimal(item.price_text) if type(item) is LineItem else item.price,
    )


def _abandoned_payload(cart: CartFact, source: str) -> CartAbandoned:
    return CartAbandoned(
        cart_id=cart.cart_id,
        items=tuple(_cart_item(i) for i in cart.items),
        total=cart.total,
        currency=cart.currency,
        recovery_url=cart.recovery_url,
        last_activity_at=cart.updated_at,
        source=source,
    )


def _on_explicit_abandonment(d: Decision, event: CartAbandonedEvent, rules: FunnelRules) -> None:
    payload = event.payload
    # What the abandoned cart held is a snapshot like any other (an empty one says nothing about it).
    if payload.line_items or not any(c.cart_id == payload.cart_id for c in d.profile.carts):
        d.profile, _ = carts.updated_cart(d.profile, payload, event.occurred_at, event.event_id)
    d.profile, abandoned = carts.mark_abandoned(d.profile, payload.cart_id, event.occurred_at)
    _cart_timers(d, rules, {payload.cart_id})
    if abandoned is not None:  # already abandoned by our own timer: never twice
        d.emit(
            "cart_abandoned",
            FunnelCartAbandoned,
            _abandoned_payload(abandoned, "storefront"),
            key=payload.cart_id,
        )


def _on_survey(
    d: Decision, event: SurveyAnsweredEvent, rules: FunnelRules, *, forgotten: bool = False
) -> None:
    """The answer's level marks the customer's history; the answer becomes their survey if it is the latest
    and not one their erasure forgot (`forgotten`: then no one is told of it either)."""
    answer = event.payload
    level, agreed = score(answer.answers, rules.survey)
    fact = SurveyFact(
        survey_id=answer.survey_id,
        answered_at=event.occurred_at,
        event_id=event.event_id,
        level=level,
        agreed=agreed,
        csat=answer.csat,
        ces=answer.ces,
        nps=answer.nps,
    )
    held = d.profile.survey
    latest = held if forgotten or (held is not None and _survey_key(fact) <= _survey_key(held)) else fact
    before = d.profile.transitions
    marks = {m[1]: m for m in d.profile.survey_levels} | {
        fact.event_id: (fact.answered_at, fact.event_id, level)
    }
    d.profile = replace(
        d.profile,
        survey=latest,
        survey_levels=tuple(sorted(marks.values(), key=lambda m: (m[0], m[1]))),
    )
    if not forgotten:
        d.emit(
            "survey_scored",
            SurveyScoredEvent,
            SurveyScored(
                survey_id=answer.survey_id,
                level=level,
                agreed=agreed,
                csat=answer.csat,
                ces=answer.ces,
                nps=answer.nps,
            ),
        )
    _refresh(d, rules, before)


def _survey_key(s: SurveyFact) -> tuple[datetime, str, str]:
    """The latest answer is the profile's survey, whichever arrived last."""
    return (s.answered_at, s.survey_id, s.event_id)


def _on_custom(d: Decision, event: CustomEvent, rules: FunnelRules) -> None:
    if event.payload.name in rules.referral_events:
        if any(m.event_id == event.event_id for m in d.profile.referred):
            return
        before = d.profile.transitions
        referred = sorted(
            (*d.profile.referred, Mark(at=event.occurred_at, event_id=event.event_id)),
            key=lambda m: (m.at, m.event_id),
        )
        d.profile = replace(d.profile, referred=tuple(referred), referrals=len(referred))
        _refresh(d, rules, before)


def erase(d: Decision) -> None:
    """Remove the personal data said up to the erasure; keep what aggregates need (orders' amounts and
    dates, stage, health) and what the customer said after it (`erased_since`)."""
    assert d.at is not None
    _become(d, erased_since(d.profile, d.at))
    d.emit("customer_erased", CustomerErasedFunnelEvent, None)


def erased_since(profile: Profile, at: datetime) -> Profile:
    """The profile of a customer who asked at `at` to be forgotten. What was said up to then goes; what was
    said after it stays, as it would had the erasure reached us first and the rest after it (what the
    customer did since, by an identifier keyed to another partition than the erasure's): contact details
    said since, and the carts, views and survey answer since (`_since`). Erased again at an earlier time
    than the one held, the later one stands. Still `erased` unless the customer gave details since (then a
    new relationship, as in `decide`)."""
    when = max(filter(None, (profile.erased_at, at)))
    kept = _since(profile, when)
    return replace(kept, erased_at=when, erased=not _gave_details_after(kept, when))


def _become(d: Decision, erased: Profile) -> None:
    """The decision's profile becomes `erased`; the timers of what the erasure removed (its carts, the
    birthday) are cancelled, those of what it kept stay."""
    kept = {cart.cart_id for cart in erased.carts}
    for cart in d.profile.carts:
        if cart.cart_id not in kept:
            d.timers[carts.timer_kind(cart.cart_id)] = None
    if erased.birthday is None:
        d.timers[BIRTHDAY_TIMER] = None
    d.profile = erased


def without_personal_data(profile: Profile, at: datetime | None) -> Profile:
    """The profile erased at `at`: what aggregates need stays (orders' amounts and dates, stage, health)."""
    return replace(
        profile,
        **dict.fromkeys(CONTACT_FIELDS),
        contact_at={},
        identifiers=_kept_identifiers(profile),
        carts=(),
        viewed=(),
        survey=None,
        erased=True,
        # Contact details said before now are never taken up again, whenever they arrive.
        erased_at=max(filter(None, (profile.erased_at, at))) if at else profile.erased_at,
    )


def _kept_identifiers(profile: Profile) -> tuple[str, ...]:
    """The identifiers an erasure keeps: the store's customer id and the orders', which name no one."""
    return tuple(i for i in profile.identifiers if i.startswith(("id:", "order:")))


def _identifiers_since(profile: Profile, at: datetime) -> tuple[str, ...]:
    """The identifiers of a profile that an erasure at `at` keeps (`_kept_identifiers`), and its email's
    look-up if the email was said after then. Identifiers carry no date: an anonymous id or an email heard
    before the erasure must not find the customer again, so of the others only the email said since (which
    the profile holds) is known to be new. An anonymous id heard since goes too, erring on forgetting: its
    browser is a new customer until a login or an email links it again."""
    kept = _kept_identifiers(profile)
    email, said = profile.email, profile.contact_at.get("email")
    if email and said is not None and said > at:
        look_up = f"email:{email}"
        if look_up in profile.identifiers:
            return tuple(sorted({*kept, look_up}))
    return kept


def _said_after(profile: Profile, at: datetime) -> Profile:
    """The profile without the behaviour it heard at or before `at` (carts' changes, product views, the
    survey answer): what a profile merging with a customer erased at `at` brings of it (`_since`, which
    also leaves out its contact details and identities from before then)."""
    survey = profile.survey
    return replace(
        profile,
        carts=carts.changed_after(profile.carts, at),
        viewed=tuple(v for v in profile.viewed if v.viewed_at > at),
        survey=survey if survey is not None and survey.answered_at > at else None,
    )


def tombstone(absorbed: Profile, survivor_id: str) -> Profile:
    """What stays of a profile merged into another: only the pointer to its survivor (which followers of an
    old id use, the REST reads among them). Everything it held is the survivor's now, so a copy here would
    only be personal data that the survivor's erasure does not reach."""
    return Profile(store_id=absorbed.store_id, customer_id=absorbed.customer_id, merged_into=survivor_id)


def _merge_erased_at(survivor: Profile, absorbed: Profile) -> datetime | None:
    """When either of two profiles that a link says are one customer was last erased."""
    return max(filter(None, (survivor.erased_at, absorbed.erased_at)), default=None)


def _gave_details_after(profile: Profile, at: datetime) -> bool:
    return any(said > at for said in profile.contact_at.values())


def _since(profile: Profile, at: datetime) -> Profile:
    """What a profile keeps of itself after an erasure at `at` (its own, or, in a merge, the other's): what it
    heard after then, the contact details and the behaviour (`_said_after`), and of its identities the ones
    `_identifiers_since` keeps; its orders, refunds, levels and history, as the erasure keeps them."""
    if profile.erased_at is not None and profile.erased_at >= at:
        return profile  # erased then (or later) itself: it holds nothing said before
    said = profile.contact_at
    stale = [n for n in CONTACT_FIELDS if getattr(profile, n) is not None and said.get(n, at) <= at]
    return replace(
        _said_after(profile, at),
        **dict.fromkeys(stale),
        contact_at={n: t for n, t in said.items() if t > at},
        identifiers=_identifiers_since(profile, at),
    )


def forgotten_in_merge(survivor: Profile, absorbed: Profile) -> tuple[bool, bool]:
    """Whether what the survivor, and what the absorbed profile, were known as is what an erasure forgot:
    a link says the two are one customer, one of them (or both) was erased, and the other was not erased
    then itself and gave no details since. Its ids' consumers (the notifier) must forget what they heard under
    them, whichever came first to us, the erasure or the link (the identities an erasure keeps, "id:" and
    "order:", still link)."""
    erased_at = _merge_erased_at(survivor, absorbed)
    if erased_at is None:
        return False, False
    return _forgotten_side(survivor, erased_at), _forgotten_side(absorbed, erased_at)


def _forgotten_side(profile: Profile, erased_at: datetime) -> bool:
    return profile.erased_at != erased_at and not _gave_details_after(profile, erased_at)


def erasure_notices(
    store_id: str, customer_ids: Iterable[str], cause: str, at: datetime
) -> list[FunnelEvent]:
    """A `customer_erased` for each id merged into an erased customer, for the consumers (the notifier)
    that still hold what they heard under that id before the merge. Each id its own event id, derived from
    the cause and the id, so that a replay gives the same ones."""
    notices: list[FunnelEvent] = []
    for customer_id in sorted(customer_ids):
        d = Decision(profile=new_profile(store_id, customer_id), cause=cause, at=at)
        d.emit("customer_erased", CustomerErasedFunnelEvent, None, key=f":{customer_id}")
        notices.extend(d.funnel_events)
    return notices


@dataclass(frozen=True)
class ShopErasure:
    decisions: list[Decision]
    funnel_events: list[FunnelEvent]


def erase_shop(store_id: str, profiles: Iterable[Profile], cause: str, at: datetime) -> ShopErasure:
    """Shopify's shop/redact (the store uninstalled us): every customer's personal data goes. The notifier
    hears of it once, by one erasure event for the whole store (customer SHOP_WIDE), not once per customer."""
    decisions = []
    for profile in profiles:
        d = Decision(profile=profile, cause=cause, at=at)
        _become(d, without_personal_data(profile, at))
        decisions.append(d)
    shop = Decision(profile=Profile(store_id=store_id, customer_id=SHOP_WIDE), cause=cause, at=at)
    erase(shop)
    return ShopErasure(decisions, shop.funnel_events)


def _birthday_timer(d: Decision, rules: FunnelRules, after: datetime | None = None) -> None:
    """The next reminder after `after`, by default after the birthday was said (not after whichever event
    happened to bring it), so that the timer is the same in any order."""
    if d.profile.birthday is None or d.profile.erased:
        d.timers[BIRTHDAY_TIMER] = None
        return
    since = after or d.profile.contact_at.get("birthday") or d.at
    assert since is not None
    d.timers[BIRTHDAY_TIMER] = next_birthday_reminder(d.profile.birthday, rules.birthday_days_before, since)


def next_birthday_reminder(birthday: date, days_before: int, after: datetime) -> datetime:
    """The first `birthday - days_before` (at 00:00 UTC) strictly after `after`."""
    for year in (after.year, after.year + 1, after.year + 2):
        try:
            day = birthday.replace(year=year)
        except ValueError:  # 29 February in a common year: celebrate on the 28th
            day = birthday.replace(year=year, day=28)
        due = datetime(day.year, day.month, day.day, tzinfo=after.tzinfo) - timedelta(days=days_before)
        if due > after:
            return due
    raise AssertionError("unreachable: a birthday comes every year")


def decide(
    profile: Profile | None,
    event: StorefrontEvent,
    rules: FunnelRules,
    customer_id: str,
    identifiers: Sequence[str] | None = None,
) -> Decision:
    """Apply one storefront event to the profile of `customer_id` (already resolved from its identifiers).

    `identifiers`: the event's `event_identifiers`, when the caller worked them out already.
    """
    current = profile or new_profile(event.store_id, customer_id)
    d = Decision(profile=current, cause=event.event_id, at=event.occurred_at)
    if type(event) is CUSTOMER_ERASED:
        erase(d)
        return d
    had_birthday = current.birthday
    if identifiers is None:
        identifiers = event_identifiers(event)
    # Only the contact step changes contact fields (the handlers below change orders, carts, the survey,
    # referrals, stage and health).
    d.profile, changed = _with_contact(current, event, identifiers)
    # Said before the customer's erasure and heard only after it (a late delivery, a client's offline
    # queue): what the erasure forgets of their behaviour (carts, product views, the survey answer) is not
    # taken up, so the profile ends as if the event had come first and been erased. What the erasure keeps
    # (orders, a completed checkout, the survey's level, referrals) is, as then.
    erased_at = current.erased_at
    forgotten = erased_at is not None and event.occurred_at <= erased_at
    # `type(...) is`, not isinstance: one pointer comparison each (the event classes have no subclasses;
    # when they were pydantic models, ABCs, seven isinstance calls an event cost about 3 µs).
    if type(event) is ORDER_PLACED:
        _on_order(d, event, rules)
    elif type(event) is ORDER_REFUNDED:
        _on_refund(d, event, rules)
    elif type(event) is CART_ABANDONED:
        if not forgotten:
            _on_explicit_abandonment(d, event, rules)
    elif type(event) is CART_UPDATED:
        if not forgotten or event.payload.completed:
            _on_cart(d, event, rules)
    elif type(event) is SURVEY_ANSWERED:
        _on_survey(d, event, rules, forgotten=forgotten)
    elif type(event) is CUSTOM:
        _on_custom(d, event, rules)
    elif type(event) is PRODUCT_VIEWED and not forgotten:
        views = browsing.viewed(d.profile.viewed, event)
        if views != d.profile.viewed:  # an older view of a product seen since changes nothing
            d.profile = replace(d.profile, viewed=views)
    if changed and not d.funnel_events:
        # Every funnel event carries the snapshot; this one exists so that consent or address changes reach
        # the notifier (audiences, exports) even when nothing else happened.
        d.emit("customer_updated", CustomerUpdatedEvent, CustomerUpdated(changed=changed))
    if d.profile.birthday != had_birthday:
        _birthday_timer(d, rules)
    return d


def decide_timer(
    profile: Profile, kind: str, due_at: datetime, now: datetime, rules: FunnelRules
) -> Decision:
    """A timer came due. Transitions happen at the due time (event-time semantics, also for backfills)."""
    d = Decision(
        profile=profile,
        cause=f"timer:{profile.store_id}:{profile.customer_id}:{kind}:{due_at.isoformat()}",
        at=due_at,
    )
    if kind == HEALTH_TIMER:
        assert d.cause == timer_cause(profile.store_id, profile.customer_id, due_at)
        seen = max(filter(None, (profile.health_seen_at, due_at)))
        d.profile = replace(profile, health_seen_at=seen)
        _refresh(d, rules, profile.transitions)
    elif kind == BIRTHDAY_TIMER and profile.birthday is not None and not profile.erased:
        d.emit(
            "birthday_due",
            BirthdayDueEvent,
            BirthdayDue(birthday=profile.birthday, days_before=rules.birthday_days_before),
        )
        _birthday_timer(d, rules, max(now, due_at))
    elif kind.startswith("cart:"):
        cart_id = kind.removeprefix("cart:")
        cart = next((c for c in profile.open_carts if c.cart_id == cart_id), None)
        if cart is not None and cart.updated_at + rules.cart_abandonment <= due_at:
            d.profile, abandoned = carts.mark_abandoned(profile, cart_id, due_at)
            if abandoned is not None:
                d.emit(
                    "cart_abandoned", FunnelCartAbandoned, _abandoned_payload(abandoned, "timer"), key=cart_id
                )
        d.timers[kind] = None
    else:
        d.timers[kind] = None
    return d


def _newer_contact(survivor: Profile, absorbed: Profile, name: str) -> object:
    """Of two profiles' values for one contact field, the one said last (ties as in `_contact_is_newer`)."""
    mine, theirs = getattr(survivor, name), getattr(absorbed, name)
    if theirs is None:
        return mine
    at = absorbed.contact_at.get(name)
    if mine is None or (at is not None and _contact_is_newer(survivor, name, theirs, at)):
        return theirs
    return mine


def merge(survivor: Profile, absorbed: Profile) -> Profile:
    """One customer known under two profiles becomes one: a union of facts, each contact field the newer.

    Commutative in its facts (orders, refunds, carts, surveys, referrals, identifiers are unions), so the
    result does not depend on which event revealed the link first. The history is derived again by
    `after_merge`; until then `transitions` holds both histories, what the customer was already told.
    When either was erased before we heard of the link, each brings only what it heard after the erasure
    (`_since`): the rest is what that erasure forgot, as it would have been had the link come first.
    """
    erased_at = _merge_erased_at(survivor, absorbed)
    if erased_at is not None:
        survivor, absorbed = _since(survivor, erased_at), _since(absorbed, erased_at)
    orders = {o.order_id: o for o in absorbed.orders}
    for o in survivor.orders:
        held = orders.get(o.order_id)
        # The same order under both (a source that named the customer two ways): one fact of the two.
        orders[o.order_id] = o if held is None else one_order(o, held)
    merged_carts, completed_carts = carts.merged_carts(survivor, absorbed)
    contact = {n: _newer_contact(survivor, absorbed, n) for n in CONTACT_FIELDS}
    contact_at = {}
    for n in CONTACT_FIELDS:
        # The value's time is the latest either profile heard it said.
        said = [
            p.contact_at[n] for p in (survivor, absorbed) if n in p.contact_at and getattr(p, n) == contact[n]
        ]
        if said:
            contact_at[n] = max(said)
    surveys = [s for s in (survivor.survey, absorbed.survey) if s is not None]
    pending = {r.event_id: r for r in (*survivor.pending_refunds, *absorbed.pending_refunds)}
    marks = {m[1]: m for m in (*survivor.survey_levels, *absorbed.survey_levels)}
    referred = {m.event_id: m for m in (*survivor.referred, *absorbed.referred)}
    erased = survivor.erased
    if erased_at is not None:
        # Erased, unless one of the two gave details since (a customer who came back, as in `decide`).
        erased = not (_gave_details_after(survivor, erased_at) or _gave_details_after(absorbed, erased_at))
    merged = replace(
        survivor,
        **contact,
        contact_at=contact_at,
        identifiers=merged_identifiers(survivor.identifiers, absorbed.identifiers),
        orders=tuple(sorted(orders.values(), key=ORDER_KEY)),
        viewed=browsing.newest_first((*survivor.viewed, *absorbed.viewed)),
        pending_refunds=tuple(sorted(pending.values(), key=lambda r: (r.at, r.event_id))),
        carts=merged_carts,
        completed_carts=completed_carts,
        survey=max(surveys, key=_survey_key) if surveys else None,
        survey_levels=tuple(sorted(marks.values(), key=lambda m: (m[0], m[1]))),
        referred=tuple(sorted(referred.values(), key=lambda m: (m.at, m.event_id))),
        referrals=len(referred) or survivor.referrals + absorbed.referrals,
        erased_at=erased_at,
        erased=erased,
        health_seen_at=max(filter(None, (survivor.health_seen_at, absorbed.health_seen_at)), default=None),
        transitions=tuple(
            sorted((*survivor.transitions, *absorbed.transitions), key=lambda t: t.occurred_at)
        ),
    )
    # What a cart one profile held is closed by an order the other held, if the order came after it.
    last_order = max((o.placed_at for o in merged.orders), default=None)
    if last_order is not None:
        merged = carts.closed_by_order(merged, last_order)[0]
    return _settled(merged)


def after_merge(profile: Profile, rules: FunnelRules, cause: str, at: datetime) -> Decision:
    """Re-evaluate a merged profile: its combined facts may earn a higher stage, and timers restart."""
    d = Decision(profile=profile, cause=f"{cause}:merge", at=at)
    _refresh(d, rules, profile.transitions)
    _cart_timers(d, rules, {c.cart_id for c in d.profile.carts})
    if d.profile.birthday is not None:
        _birthday_timer(d, rules)
    return d
