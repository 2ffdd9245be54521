"""What the funnel should say about a simulated store: every request through ingest's own mappers, then every
customer's events through the segmenter's own pure rules. The unit tests check that personas land where
they should; tests/e2e/test_simulator.py checks that the running services agree with this."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from deploy.simulator.generator import SimulationConfig, StoreHistory, generate
from deploy.simulator.http_plan import RequestPlan, StoreTarget, plan_requests
from deploy.simulator.personas import Persona
from services.ingest.sources import segment, shopify
from services.segmenter.domain.funnel import decide
from services.segmenter.domain.health import health_at
from services.segmenter.domain.profile import Profile
from shared.events import StorefrontEvent
from shared.funnel import Health, LoyaltyStage
from shared.funnel_rules import FunnelRules
from tests.builders import as_segmenter_event

TARGET = StoreTarget("demo", "demo.myshopify.com", "demo-shopify-secret", "demo-write-key")
END = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

Expected = dict[str, tuple[Profile, Health]]  # customer id -> (profile, health now)
Store = tuple[StoreHistory, Expected]


def build(
    *, seed: int = 3, customers: int = 600, days: float = 365, end: datetime = END, lanes: int = 4
) -> tuple[StoreHistory, RequestPlan]:
    history = generate(SimulationConfig(seed=seed, customers=customers, days=days, end=end))
    plan = plan_requests(history, TARGET, lanes=lanes, batch_size=200, shopify_since=end - timedelta(days=14))
    return history, plan


def canonical_events(plan: RequestPlan, received_at: datetime) -> list[StorefrontEvent]:
    """Every request as ingest would turn it into events, lane by lane (each lane in sending order)."""
    events: list[StorefrontEvent] = []
    for request in plan.requests():
        body = json.loads(request.body)
        headers = dict(request.headers)
        if request.path == "/v1/batch":
            events.extend(segment.batch_to_canonical(body, store_id=TARGET.store_id, received_at=received_at))
            continue
        event = shopify.to_canonical(
            headers["X-Shopify-Topic"],
            body,
            store_id=TARGET.store_id,
            event_id=f"shopify:{headers['X-Shopify-Event-Id']}",
            received_at=received_at,
        )
        assert event is not None
        events.append(event)
    return events


def expected_profiles(
    history: StoreHistory, plan: RequestPlan, now: datetime, rules: FunnelRules | None = None
) -> Expected:
    """customer id -> (profile after all their events, health at `now` once the health timers fired)."""
    rules = rules or FunnelRules()
    by_anonymous = {s.anonymous_id: s.user_id for s in history.shoppers}
    by_order: dict[str, str] = {}
    events_of: dict[str, list[StorefrontEvent]] = defaultdict(list)
    for event in canonical_events(plan, now):
        c = event.customer
        customer = (
            c.store_customer_id
            or (by_anonymous.get(c.anonymous_id or ""))
            or by_order.get(c.placed_order_id or "")
        )
        assert customer is not None, f"an event names no simulated customer: {event}"
        if event.type == "order_placed":
            by_order[event.payload.order_id] = customer
        events_of[customer].append(event)
    expected: Expected = {}
    for customer, events in events_of.items():
        profile: Profile | None = None
        for event in events:
            profile = decide(profile, as_segmenter_event(event), rules, customer).profile
        assert profile is not None
        expected[customer] = (profile, health_at(profile, rules.health, now))
    return expected


# -- the personas' places in the funnel ------------------------------------------------------------------


@pytest.fixture(scope="module")
def store() -> Store:
    history, plan = build()
    return history, expected_profiles(history, plan, END + timedelta(minutes=5))


def _by_persona(store: Store, persona: Persona) -> list[tuple[Profile, Health]]:
    history, expected = store
    found = [expected[s.user_id] for s in history.shoppers if s.persona == persona]
    assert found, f"no {persona} in the sample"
    return found


def test_every_customer_has_one_profile(store: Store) -> None:
    history, expected = store
    assert set(expected) == {s.user_id for s in history.shoppers}


def test_browsers_stay_prospects(store: Store) -> None:
    assert {(p.stage, p.orders_count) for p, _ in _by_persona(store, Persona.BROWSER)} == {
        (LoyaltyStage.PROSPECT, 0)
    }


def test_one_off_buyers_are_first_time(store: Store) -> None:
    assert {(p.stage, p.orders_count) for p, _ in _by_persona(store, Persona.ONE_OFF)} == {
        (LoyaltyStage.FIRST_TIME, 1)
    }


def test_repeaters_are_repeat(store: Store) -> None:
    assert {(p.stage, p.orders_count) for p, _ in _by_persona(store, Persona.REPEATER)} == {
        (LoyaltyStage.REPEAT, 2)
    }


def test_loyalists_are_loyal_or_advocates_and_active(
    store: Store,
) -> None:
    loyalists = _by_persona(store, Persona.LOYALIST)
    stages = Counter(p.stage for p, _ in loyalists)
    assert set(stages) == {LoyaltyStage.LOYAL, LoyaltyStage.ADVOCATE}
    assert all(p.orders_count >= 3 for p, _ in loyalists)
    assert {h for _, h in loyalists} == {Health.ACTIVE}


def test_churners_are_at_risk_or_lapsed(store: Store) -> None:
    churners = _by_persona(store, Persona.CHURNER)
    assert {p.stage for p, _ in churners} <= {LoyaltyStage.FIRST_TIME, LoyaltyStage.REPEAT}
    health = Counter(h for _, h in churners)
    assert set(health) == {Health.AT_RISK, Health.LAPSED}


def test_the_store_has_every_stage_and_health(
    store: Store,
) -> None:
    _, expected = store
    assert {p.stage for p, _ in expected.values()} == set(LoyaltyStage)
    assert {h for _, h in expected.values()} == set(Health)


def test_surveys_reach_the_profiles(store: Store) -> None:
    _, expected = store
    levels = Counter(p.survey_level.value for p, _ in expected.values() if p.survey is not None)
    assert {"affective", "conative", "action"} <= set(levels)
