"""A believable store history from a seed. Pure and deterministic: no clock, no I/O.

Each customer draws from a `random.Random` seeded with (seed, customer number), so customer n of a seed is
the same person whatever `--customers` says, and ids derived from the seed never collide with another
seed's. A customer's history is planned as visits (sessions) in logical order — sign-up, carts, orders,
surveys, refunds, referrals — then laid out in time so one customer's actions never overlap or reorder.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TypedDict

from deploy.simulator import catalog
from deploy.simulator.actions import (
    Action,
    CheckoutStarted,
    OrderPlaced,
    OrderRefunded,
    ProductAdded,
    ProductViewed,
    ReferralCompleted,
    Session,
    SignedUp,
    SurveyAnswer,
    SurveyAnswered,
)
from deploy.simulator.catalog import BasketLine, Product
from deploy.simulator.people import Shopper, make_shopper
from deploy.simulator.personas import RECENT_SHARE, RECENT_WINDOW, Persona, anchor, order_times, pick_persona

RECOVERY_URL = "https://demo-store.example/checkouts/{token}/recover"
SURVEY_ID = "loyalty-3part"
REFUND_SHARE = 0.05
RECOVERED_SHARE = 0.12
EXTRA_ABANDONED_SHARE = 0.15

# The three-part survey of docs/domain.md plus the optional cognitive part: statement id -> scale (the ids of
# shared/funnel_rules.py DEFAULT_STATEMENTS, repeated here because the simulator is a storefront, which
# knows its survey but not our rules).
SURVEY: dict[str, tuple[str, ...]] = {
    "affective": (
        "affective.really_like",
        "affective.happy_to_buy",
        "affective.like_more",
        "affective.more_attached",
        "affective.more_interested",
    ),
    "conative": ("conative.buy_again", "conative.buy_other_products"),
    "action": ("action.recommend", "action.say_positive", "action.first_choice"),
    "cognitive": ("cognitive.better_value", "cognitive.better_quality"),
}


@dataclass(frozen=True)
class SimulationConfig:
    seed: int
    customers: int
    days: float
    end: datetime

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


@dataclass(frozen=True)
class StoreHistory:
    config: SimulationConfig
    shoppers: tuple[Shopper, ...]
    sessions: tuple[Session, ...]  # every customer's visits, oldest first

    def actions(self) -> Iterator[Action]:
        for session in self.sessions:
            yield from session.actions


def generate(config: SimulationConfig) -> StoreHistory:
    per_customer = [customer_history(config, n) for n in range(config.customers)]
    shoppers = tuple(shopper for shopper, _ in per_customer)
    # Each customer's sessions are already in time order; a k-way merge keeps them so.
    merged = heapq.merge(*(sessions for _, sessions in per_customer), key=lambda s: (s.at, s.shopper.number))
    return StoreHistory(config=config, shoppers=shoppers, sessions=tuple(merged))


def customer_history(config: SimulationConfig, number: int) -> tuple[Shopper, list[Session]]:
    rng = random.Random(f"loyalty-funnel-simulator:{config.seed}:{number}")
    persona = pick_persona(rng)
    shopper = make_shopper(rng, seed=config.seed, number=number, persona=persona, end=config.end)
    recent = rng.random() < RECENT_SHARE
    planner = _Planner(rng, shopper, config)
    planner.plan(persona, recent=recent)
    return shopper, planner.lay_out()


def _token(seed: int, number: int, what: str, index: int) -> str:
    return hashlib.sha256(f"{seed}:{number}:{what}:{index}".encode()).hexdigest()[:32]


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class _Common(TypedDict):
    action_id: str
    at: datetime
    shopper: Shopper
    identified: bool


@dataclass
class _Visit:
    # When the visit's last action happens (an order at its planned time, whatever browsing led to it).
    ends_at: datetime
    seq: int
    # (offset from the visit's first action, action with placeholder id and time)
    steps: list[tuple[timedelta, Action]] = field(default_factory=list)

    def start(self, earliest: datetime) -> datetime:
        return max(earliest, self.ends_at - self.steps[-1][0])


class _Planner:
    """Plans one customer's visits, then lays them out in time."""

    def __init__(self, rng: random.Random, shopper: Shopper, config: SimulationConfig) -> None:
        self.rng = rng
        self.shopper = shopper
        self.config = config
        self.visits: list[_Visit] = []
        self.carts = 0
        self.usual: Product | None = None

    # -- building blocks ---------------------------------------------------------------------------------

    def _visit(self, ends_at: datetime) -> _Visit:
        visit = _Visit(ends_at=ends_at, seq=len(self.visits))
        self.visits.append(visit)
        return visit

    def _step(self, visit: _Visit, offset: timedelta, action: Action) -> None:
        visit.steps.append((offset, action))

    def _base(self, identified: bool = True) -> _Common:
        # Id and time are placeholders until lay_out() puts the visit in time.
        return {"action_id": "", "at": self.config.start, "shopper": self.shopper, "identified": identified}

    def _cart_token(self) -> str:
        self.carts += 1
        return _token(self.config.seed, self.shopper.number, "cart", self.carts)

    def _views(self, visit: _Visit, products: list[Product], *, identified: bool = True) -> timedelta:
        offset = timedelta(0)
        for product in products:
            self._step(visit, offset, ProductViewed(**self._base(identified), product=product))
            offset += timedelta(seconds=self.rng.randint(20, 180))
        return offset

    def _browse_list(self, basket: tuple[BasketLine, ...] = ()) -> list[Product]:
        seen = [line.product for line in basket[:2]]
        for _ in range(self.rng.randint(0, 2)):
            seen.append(catalog.pick_product(self.rng, self.shopper.favourite_category))
        self.rng.shuffle(seen)
        return seen or [catalog.pick_product(self.rng, self.shopper.favourite_category)]

    def _cart(
        self, visit: _Visit, offset: timedelta, basket: tuple[BasketLine, ...], token: str
    ) -> timedelta:
        for line in basket:
            self._step(visit, offset, ProductAdded(**self._base(), cart_token=token, line=line))
            offset += timedelta(seconds=self.rng.randint(15, 90))
        return offset

    def _checkout(
        self, visit: _Visit, offset: timedelta, basket: tuple[BasketLine, ...], token: str, *, converts: bool
    ) -> timedelta:
        checkout = CheckoutStarted(
            **self._base(),
            cart_token=token,
            lines=basket,
            recovery_url=RECOVERY_URL.format(token=token),
            converts_now=converts,
        )
        self._step(visit, offset, checkout)
        return offset + timedelta(seconds=self.rng.randint(40, 240))

    def _basket(self) -> tuple[BasketLine, ...]:
        return catalog.pick_basket(self.rng, self.shopper.favourite_category, self.usual)

    # -- visits --------------------------------------------------------------------------------------------

    def sign_up(self, at: datetime) -> None:
        visit = self._visit(at)
        offset = timedelta(0)
        if self.rng.random() < 0.5:
            # Browsing before creating an account: analytics.js links it to the account on identify.
            products = [catalog.pick_product(self.rng, self.shopper.favourite_category)]
            offset = self._views(visit, products * self.rng.randint(1, 2), identified=False)
        self._step(visit, offset, SignedUp(**self._base()))

    def abandoned_cart(self, at: datetime, *, checkout: bool) -> None:
        visit = self._visit(at)
        basket = self._basket()
        offset = self._views(visit, self._browse_list(basket))
        token = self._cart_token()
        offset = self._cart(visit, offset, basket, token)
        if checkout:
            self._checkout(visit, offset, basket, token, converts=False)

    def browse(self, at: datetime) -> None:
        visit = self._visit(at)
        self._views(visit, self._browse_list())

    def purchase(self, at: datetime, number: int, previous: datetime) -> OrderPlaced:
        basket = self._basket()
        token = self._cart_token()
        recovery_at = at - timedelta(hours=self.rng.uniform(1, 30))
        recovered = self.rng.random() < RECOVERED_SHARE and recovery_at > previous + timedelta(minutes=10)
        if recovered:
            # Left at checkout, came back later (a reminder, or second thoughts) and completed it.
            early = self._visit(recovery_at)
            offset = self._views(early, self._browse_list(basket))
            offset = self._cart(early, offset, basket, token)
            self._checkout(early, offset, basket, token, converts=False)
        visit = self._visit(at)
        offset = timedelta(0)
        if not recovered:
            offset = self._views(visit, self._browse_list(basket))
            offset = self._cart(visit, offset, basket, token)
            offset = self._checkout(visit, offset, basket, token, converts=True)
        order = OrderPlaced(
            **self._base(),
            order_id=self.shopper.customer_id * 100 + number,
            number=number,
            cart_token=token,
            lines=basket,
            recovered=recovered,
        )
        self._step(visit, offset, order)
        consumables = [line.product for line in basket if line.product.consumable]
        if consumables and self.usual is None:
            self.usual = consumables[0]
        return order

    def refund(self, order: OrderPlaced, at: datetime) -> None:
        line = self.rng.choice(order.lines)
        units = sum(x.quantity for x in order.lines)
        # One unit back when the order had several; a goodwill partial refund on a single-item order.
        amount = line.product.price if units > 1 else _cents(line.product.price * Decimal("0.4"))
        visit = self._visit(at)
        refund = OrderRefunded(
            **self._base(),
            refund_id=order.order_id * 10 + 1,
            order_id=order.order_id,
            amount=amount,
            lines=(BasketLine(product=line.product, quantity=1),),
        )
        self._step(visit, timedelta(0), refund)

    def survey(self, at: datetime, persona: Persona) -> None:
        rng = self.rng
        agree = {"affective": rng.random() < 0.75, "conative": False, "action": False}
        if persona == Persona.LOYALIST:
            agree = {"affective": True, "conative": True, "action": rng.random() < 0.5}
        elif persona == Persona.ONE_OFF:
            agree["conative"] = rng.random() < 0.3
        answers: list[SurveyAnswer] = []
        parts = ["affective", "conative", "action"] + (["cognitive"] if rng.random() < 0.3 else [])
        for scale in parts:
            for statement in SURVEY[scale]:
                yes = agree.get(scale, rng.random() < 0.5)
                # Loyalty is shown by agreeing with at least one statement of a part, not with all of them.
                yes = yes and (statement == SURVEY[scale][0] or rng.random() < 0.7)
                answers.append(self._answer(statement, scale, yes))
        happy = persona == Persona.LOYALIST or agree["affective"]
        visit = self._visit(at)
        answered = SurveyAnswered(
            **self._base(),
            survey_id=SURVEY_ID,
            answers=tuple(answers),
            csat=rng.randint(4, 5) if happy else rng.randint(1, 4),
            ces=rng.randint(1, 3) if happy else rng.randint(2, 7),
            nps=rng.randint(8, 10) if happy else rng.randint(0, 8),
        )
        self._step(visit, timedelta(0), answered)

    def _answer(self, statement: str, scale: str, yes: bool) -> SurveyAnswer:
        # Surveys mix yes/no and 1-5 agreement scales (4 and 5 count as agreeing by the default rules).
        if self.rng.random() < 0.5:
            return SurveyAnswer(statement, scale, agree=yes)
        return SurveyAnswer(statement, scale, score=self.rng.randint(4, 5) if yes else self.rng.randint(1, 3))

    def referral(self, at: datetime) -> None:
        visit = self._visit(at)
        code = _token(self.config.seed, self.shopper.number, "referral", 1)[:10].upper()
        self._step(visit, timedelta(0), ReferralCompleted(**self._base(), referral_code=code))

    # -- the plan --------------------------------------------------------------------------------------

    def plan(self, persona: Persona, *, recent: bool) -> None:
        rng, start, end = self.rng, self.config.start, self.config.end
        times = order_times(persona, rng, start, end, recent=recent)
        if not times:
            self._plan_browser(recent=recent)
            return
        first = times[0]
        if rng.random() < 0.3:
            arrival = first - timedelta(minutes=rng.uniform(15, 180))
        else:
            arrival = first - timedelta(days=rng.uniform(1, 30))
        self.sign_up(arrival)
        previous = max(arrival, start)
        surveyed = False
        for number, at in enumerate(times, start=1):
            if rng.random() < EXTRA_ABANDONED_SHARE:
                gap = at - previous
                if gap > timedelta(hours=2):
                    self.abandoned_cart(previous + gap * rng.uniform(0.2, 0.8), checkout=rng.random() < 0.6)
            order = self.purchase(at, number, previous)
            fresh = end - at < RECENT_WINDOW
            if not surveyed and self._surveys_after(persona, number, len(times)):
                surveyed = True
                delay = (
                    timedelta(minutes=rng.uniform(3, 40)) if fresh else timedelta(hours=rng.uniform(1, 72))
                )
                self.survey(at + delay, persona)
            if rng.random() < REFUND_SHARE:
                self.refund(order, at + timedelta(days=rng.uniform(2, 20)))
            if persona == Persona.LOYALIST and number == 3 and rng.random() < 0.3:
                self.referral(at + timedelta(days=rng.uniform(1, 20)))
            previous = at
        if persona != Persona.CHURNER and rng.random() < EXTRA_ABANDONED_SHARE:
            # Back for a look after the last order, leaving a cart: the freshest ones get a reminder.
            later = previous + (end - previous) * rng.uniform(0.3, 1.0)
            self.abandoned_cart(later, checkout=rng.random() < 0.6)

    def _surveys_after(self, persona: Persona, number: int, orders: int) -> bool:
        # The survey is shown after checkout. Loyalists answer after a repeat order; repeaters and
        # churners are only ever shown the affective part's agreement (see survey()), so a conative
        # answer never makes them loyal, which their persona says they are not.
        chance = {
            Persona.LOYALIST: 0.7 if number >= 2 else 0.0,
            Persona.ONE_OFF: 0.25,
            Persona.REPEATER: 0.3,
            Persona.CHURNER: 0.15 if number == orders else 0.0,
        }[persona]
        return self.rng.random() < chance

    def _plan_browser(self, *, recent: bool) -> None:
        rng, start, end = self.rng, self.config.start, self.config.end
        last = anchor(rng, start, end, recent=recent)
        arrival = last - timedelta(days=rng.uniform(0, 60))
        self.sign_up(arrival)
        visits = rng.randint(1, 4)
        for i in range(visits):
            at = arrival + (last - arrival) * ((i + 1) / visits) + timedelta(minutes=10)
            is_last = i == visits - 1
            # Right-now browsers mostly have a cart open: the demo's fresh abandoned carts.
            cart_chance = 0.7 if recent and is_last else 0.3
            if rng.random() < cart_chance:
                self.abandoned_cart(at, checkout=rng.random() < 0.6)
            else:
                self.browse(at)

    # -- layout ----------------------------------------------------------------------------------------

    def lay_out(self) -> list[Session]:
        """Visits in time order (planning order breaks ties); each starts after the previous one ended, and
        nothing goes past the end of the history. Ids follow the final order, so they are stable."""
        sessions: list[Session] = []
        last: datetime | None = None
        counter = 0
        end = self.config.end
        begin = self.config.start
        for visit in sorted(self.visits, key=lambda v: (v.start(begin), v.seq)):
            actions: list[Action] = []
            start = visit.start(begin)
            for offset, template in visit.steps:
                at = (start + offset).replace(microsecond=0)
                if last is not None and at <= last:
                    at = last + timedelta(seconds=1)
                actions.append(
                    replace(
                        template, at=at, action_id=f"sim-{self.config.seed}-{self.shopper.number}-{counter}"
                    )
                )
                counter += 1
                last = at
            if actions[-1].at > end:
                break  # this visit (and so every later one) would be in the future
            sessions.append(Session(shopper=self.shopper, actions=tuple(actions)))
        return sessions
