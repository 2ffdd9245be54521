"""Where a customer stands in the loyalty funnel: pure decisions from (profile, event, rules).

`decide` returns the new profile and what happened (transitions, funnel events, timer changes); it never
writes or sends anything, so every rule is tested in milliseconds and a replay of the same events gives the
same state. Funnel logic uses event time; timers carry due times that a worker fires by wall time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

from services.segmenter.domain import browsing, carts, health
from services.segmenter.domain.profile import CartFact, OrderFact, Profile, SurveyFact, Transition
from services.segmenter.domain.stages import earned_stage
from services.segmenter.domain.survey import score
from shared.events import (
    SHOP_WIDE,
    CartAbandonedEvent,
    CartUpdatedEvent,
    Customer,
    CustomerErasedEvent,
    CustomEvent,
    IdentityLinkedEvent,
    LineItem,
    OrderPlacedEvent,
    OrderRefundedEvent,
    ProductViewedEvent,
    StorefrontEvent,
    SurveyAnsweredEvent,
)
from shared.funnel import Health
from shared.funnel_events import (
    BirthdayDue,
    BirthdayDueEvent,
    CartAbandoned,
    CartItem,
    CustomerErasedFunnelEvent,
    CustomerUpdated,
    CustomerUpdatedEvent,
    FunnelEvent,
    HealthChanged,
    HealthChangedEvent,
    OrderPlacedFunnelEvent,
    OrderRecorded,
    ProductRef,
    StageChanged,
    StageChangedEvent,
    SurveyScored,
    SurveyScoredEvent,
    funnel_event_id,
)
from shared.funnel_events import (
    CartAbandonedEvent as FunnelCartAbandoned,
)
from shared.funnel_rules import FunnelRules

HEALTH_TIMER = "health"
BIRTHDAY_TIMER = "birthday"

_CONTACT_FIELDS = (
    "email", "first_name", "last_name", "phone", "locale", "city", "country", "timezone", "birthday",
    "accepts_marketing",
)  # fmt: skip


@dataclass
class Decision:
    """What one event (or one timer) did to one profile. Timers: kind -> due time, None = cancel."""

    profile: Profile
    transitions: list[Transition] = field(default_factory=list)
    funnel_events: list[FunnelEvent] = field(default_factory=list)
    timers: dict[str, datetime | None] = field(default_factory=dict)
    new_orders: list[OrderFact] = field(default_factory=list)
    cause: str = ""
    at: datetime | None = None

    def emit(self, kind: str, build: type[FunnelEvent], payload: object, *, key: str = "") -> None:
        """Add a funnel event whose id derives from its cause, so replays produce the same ids."""
        self.funnel_events.append(
            build(
                event_id=funnel_event_id(self.cause, f"{kind}{key}"),
                store_id=self.profile.store_id,
                customer_id=self.profile.customer_id,
                occurred_at=self.at,
                caused_by=self.cause,
                profile=self.profile.snapshot(),
                payload=payload,
            )
        )


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


_LINK_PREFIX = {"anonymous_id": "anon:", "store_customer_id": "id:", "email": "email:"}


def event_identifiers(event: StorefrontEvent) -> list[str]:
    """The identifiers of the event's customer, plus the one an identity link says is theirs too."""
    found = identifiers_of(event.customer)
    if isinstance(event, IdentityLinkedEvent):
        link = event.payload
        previous = link.previous_id.strip().lower() if link.previous_kind == "email" else link.previous_id
        linked = f"{_LINK_PREFIX[link.previous_kind]}{previous}"
        if linked not in found:
            found.append(linked)
    return found


def _with_contact(profile: Profile, customer: Customer) -> Profile:
    """Newer non-empty facts win; a source that omits a field does not erase what we knew."""
    # Only what differs: most events repeat what we know (a Segment call carries the locale and timezone
    # every time), and an unchanged profile stays the very same object, which spares writing it back.
    updates: dict[str, object] = {
        name: value
        for name in _CONTACT_FIELDS
        if (value := getattr(customer, name)) is not None and value != getattr(profile, name)
    }
    known = set(profile.identifiers)
    new_ids = [i for i in identifiers_of(customer) if i not in known and not i.startswith("order:")]
    if new_ids:
        updates["identifiers"] = (*profile.identifiers, *new_ids)
    if profile.erased and updates:
        updates["erased"] = False  # a customer who comes back after an erasure is a new relationship
    return profile.model_copy(update=updates) if updates else profile


# -- stage and health ----------------------------------------------------------------------------------


def _record(d: Decision, dimension: Literal["stage", "health"], before: str, after: str, reason: str) -> None:
    d.transitions.append(
        Transition(
            dimension=dimension,
            from_value=before,
            to_value=after,
            reason=reason,
            occurred_at=d.at,
            event_id=d.cause,
        )
    )


def _move_stage(d: Decision, rules: FunnelRules, *, may_go_down: bool) -> None:
    target, reason = earned_stage(d.profile, rules, d.at or datetime.min)
    current = d.profile.stage
    if target == current or (target.rank < current.rank and not may_go_down):
        return
    d.profile = d.profile.model_copy(update={"stage": target})
    _record(d, "stage", current.value, target.value, reason)
    d.emit(
        "stage_changed", StageChangedEvent, StageChanged(from_stage=current, to_stage=target, reason=reason)
    )


def _set_health(d: Decision, to: Health, reason: str) -> None:
    current = d.profile.health
    if to == current:
        return
    d.profile = d.profile.model_copy(update={"health": to})
    _record(d, "health", current.value, to.value, reason)
    d.emit(
        "health_changed", HealthChangedEvent, HealthChanged(from_health=current, to_health=to, reason=reason)
    )


def _schedule_health(d: Decision, rules: FunnelRules) -> None:
    d.timers[HEALTH_TIMER] = health.next_check(d.profile, rules.health)


# -- events ----------------------------------------------------------------------------------------------


def _products(event: OrderPlacedEvent) -> tuple[ProductRef, ...]:
    return tuple(
        ProductRef(product_id=i.product_id, title=i.title, category=i.category)
        for i in event.payload.line_items
    )


def _on_order(d: Decision, event: OrderPlacedEvent, rules: FunnelRules) -> None:
    order = event.payload
    if any(o.order_id == order.order_id for o in d.profile.orders):
        return  # the same order again (orders/updated, or a new delivery of orders/create)
    fact = OrderFact(
        order_id=order.order_id,
        placed_at=event.occurred_at,
        total=order.total,
        currency=order.currency,
        products=_products(event),
        discount_codes=order.discount_codes,
    )
    d.new_orders.append(fact)
    closed = [c.cart_id for c in d.profile.carts]
    d.profile = d.profile.model_copy(
        update={
            "orders": (*d.profile.orders, fact),
            "carts": (),  # an order closes the customer's carts: nothing is abandoned any more
            "identifiers": (*d.profile.identifiers, f"order:{order.order_id}"),
        }
    )
    for cart_id in closed:
        d.timers[carts.timer_kind(cart_id)] = None
    d.emit(
        "order_placed",
        OrderPlacedFunnelEvent,
        OrderRecorded(
            order_id=order.order_id,
            total=order.total,
            currency=order.currency,
            items=tuple(_cart_item(i) for i in order.line_items),
            discount_codes=order.discount_codes,
            cart_id=order.cart_id,
        ),
    )
    _move_stage(d, rules, may_go_down=False)
    if d.profile.last_order_at == event.occurred_at and d.profile.health != Health.ACTIVE:
        _set_health(d, Health.ACTIVE, "ordered again")
    _schedule_health(d, rules)


def _on_refund(d: Decision, event: OrderRefundedEvent, rules: FunnelRules) -> None:
    refund = event.payload
    orders = list(d.profile.orders)
    for i, order in enumerate(orders):
        if order.order_id == refund.order_id:
            refunded = order.total if refund.cancelled else min(order.total, order.refunded + refund.amount)
            orders[i] = order.model_copy(
                update={"refunded": refunded, "cancelled": order.cancelled or refund.cancelled}
            )
            break
    else:
        return  # a refund for an order we never counted (e.g. an unpaid order that timed out) changes nothing
    d.profile = d.profile.model_copy(update={"orders": tuple(orders)})
    # A refund is one of the two things that may correct a stage down (erasure is the other).
    _move_stage(d, rules, may_go_down=True)
    _schedule_health(d, rules)


def _on_cart(d: Decision, event: CartUpdatedEvent, rules: FunnelRules) -> None:
    d.profile, open_cart = carts.updated_cart(d.profile, event.payload, event.occurred_at)
    kind = carts.timer_kind(event.payload.cart_id)
    d.timers[kind] = open_cart.updated_at + rules.cart_abandonment if open_cart else None


def _cart_item(item: LineItem) -> CartItem:
    return CartItem(
        product_id=item.product_id,
        title=item.title,
        category=item.category,
        quantity=item.quantity,
        price=item.price,
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


def _on_explicit_abandonment(d: Decision, event: CartAbandonedEvent) -> None:
    payload = event.payload
    if not any(c.cart_id == payload.cart_id for c in d.profile.carts):
        d.profile, _ = carts.updated_cart(d.profile, payload, event.occurred_at)
    d.profile, abandoned = carts.mark_abandoned(d.profile, payload.cart_id, event.occurred_at)
    d.timers[carts.timer_kind(payload.cart_id)] = None
    if abandoned is not None:  # already abandoned by our own timer: never twice
        d.emit(
            "cart_abandoned",
            FunnelCartAbandoned,
            _abandoned_payload(abandoned, "storefront"),
            key=payload.cart_id,
        )


def _on_survey(d: Decision, event: SurveyAnsweredEvent, rules: FunnelRules) -> None:
    answer = event.payload
    level, agreed = score(answer.answers, rules.survey)
    d.profile = d.profile.model_copy(
        update={
            "survey": SurveyFact(
                survey_id=answer.survey_id,
                answered_at=event.occurred_at,
                level=level,
                agreed=agreed,
                csat=answer.csat,
                ces=answer.ces,
                nps=answer.nps,
            )
        }
    )
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
    _move_stage(d, rules, may_go_down=False)


def _on_custom(d: Decision, event: CustomEvent, rules: FunnelRules) -> None:
    if event.payload.name in rules.referral_events:
        d.profile = d.profile.model_copy(update={"referrals": d.profile.referrals + 1})
        _move_stage(d, rules, may_go_down=False)


def erase(d: Decision) -> None:
    """Remove personal data; keep what aggregates need (orders' amounts and dates, stage, health)."""
    _forget_personal_data(d)
    d.emit("customer_erased", CustomerErasedFunnelEvent, None)


def _forget_personal_data(d: Decision) -> None:
    for cart in d.profile.carts:
        d.timers[carts.timer_kind(cart.cart_id)] = None
    d.profile = d.profile.model_copy(
        update={
            **dict.fromkeys(_CONTACT_FIELDS),
            "identifiers": tuple(i for i in d.profile.identifiers if i.startswith(("id:", "order:"))),
            "carts": (),
            "viewed": (),
            "survey": None,
            "erased": True,
        }
    )
    d.timers[BIRTHDAY_TIMER] = None


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
        _forget_personal_data(d)
        decisions.append(d)
    shop = Decision(profile=Profile(store_id=store_id, customer_id=SHOP_WIDE), cause=cause, at=at)
    erase(shop)
    return ShopErasure(decisions, shop.funnel_events)


def _birthday_timer(d: Decision, rules: FunnelRules, after: datetime) -> None:
    if d.profile.birthday is None or d.profile.erased:
        d.timers[BIRTHDAY_TIMER] = None
        return
    d.timers[BIRTHDAY_TIMER] = next_birthday_reminder(d.profile.birthday, rules.birthday_days_before, after)


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
    if isinstance(event, CustomerErasedEvent):
        erase(d)
        return d
    had_birthday = current.birthday
    d.profile = _with_contact(current, event.customer)
    # Only the contact step changes contact fields (the handlers below change orders, carts, the survey,
    # referrals, stage and health), and it returns the very profile it got when it changed nothing.
    changed = (
        ()
        if d.profile is current
        else tuple(n for n in _CONTACT_FIELDS if getattr(d.profile, n) != getattr(current, n))
    )
    if identifiers is None:
        identifiers = event_identifiers(event)
    linked = [i for i in identifiers if i not in d.profile.identifiers and not i.startswith("order:")]
    if linked:
        d.profile = d.profile.model_copy(update={"identifiers": (*d.profile.identifiers, *linked)})
    if isinstance(event, OrderPlacedEvent):
        _on_order(d, event, rules)
    elif isinstance(event, OrderRefundedEvent):
        _on_refund(d, event, rules)
    elif isinstance(event, CartAbandonedEvent):
        _on_explicit_abandonment(d, event)
    elif isinstance(event, CartUpdatedEvent):
        _on_cart(d, event, rules)
    elif isinstance(event, SurveyAnsweredEvent):
        _on_survey(d, event, rules)
    elif isinstance(event, CustomEvent):
        _on_custom(d, event, rules)
    elif isinstance(event, ProductViewedEvent):
        views = browsing.viewed(d.profile.viewed, event)
        if views != d.profile.viewed:  # an older view of a product seen since changes nothing
            d.profile = d.profile.model_copy(update={"viewed": views})
    if changed and not d.funnel_events:
        # Every funnel event carries the snapshot; this one exists so that consent or address changes reach
        # the notifier (audiences, exports) even when nothing else happened.
        d.emit("customer_updated", CustomerUpdatedEvent, CustomerUpdated(changed=changed))
    if d.profile.birthday != had_birthday:
        _birthday_timer(d, rules, event.occurred_at)
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
        target = health.health_at(profile, rules.health, due_at)
        quiet = (due_at - profile.last_order_at).days if profile.last_order_at else 0
        _set_health(d, target, f"no order for {quiet} days")
        _schedule_health(d, rules)
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


def merge(survivor: Profile, absorbed: Profile) -> Profile:
    """One customer known under two profiles becomes one: a union of facts, the survivor's contact first.

    Commutative in its facts (orders, carts, identifiers are unions), so the result does not depend on
    which event revealed the link first.
    """
    orders = {o.order_id: o for o in absorbed.orders} | {o.order_id: o for o in survivor.orders}
    cart_map = {c.cart_id: c for c in absorbed.carts} | {c.cart_id: c for c in survivor.carts}
    contact = {n: _first_known(getattr(survivor, n), getattr(absorbed, n)) for n in _CONTACT_FIELDS}
    surveys = [s for s in (survivor.survey, absorbed.survey) if s is not None]
    return survivor.model_copy(
        update={
            **contact,
            "identifiers": tuple(dict.fromkeys((*survivor.identifiers, *absorbed.identifiers))),
            "orders": tuple(sorted(orders.values(), key=lambda o: (o.placed_at, o.order_id))),
            "carts": tuple(sorted(cart_map.values(), key=lambda c: c.updated_at)[-carts.MAX_CARTS :]),
            "viewed": browsing.newest_first((*survivor.viewed, *absorbed.viewed)),
            "survey": max(surveys, key=lambda s: s.answered_at) if surveys else None,
            "referrals": survivor.referrals + absorbed.referrals,
            "stage": max(survivor.stage, absorbed.stage, key=lambda s: s.rank),
        }
    )


def _first_known(preferred: object, fallback: object) -> object:
    return preferred if preferred is not None else fallback


def after_merge(profile: Profile, rules: FunnelRules, cause: str, at: datetime) -> Decision:
    """Re-evaluate a merged profile: its combined facts may earn a higher stage, and timers restart."""
    d = Decision(profile=profile, cause=f"{cause}:merge", at=at)
    _move_stage(d, rules, may_go_down=False)
    if d.profile.last_order_at is not None:
        _set_health(d, health.health_at(d.profile, rules.health, at), "merged profiles")
    _schedule_health(d, rules)
    for cart in d.profile.open_carts:
        d.timers[carts.timer_kind(cart.cart_id)] = cart.updated_at + rules.cart_abandonment
    if d.profile.birthday is not None:
        _birthday_timer(d, rules, at)
    return d
