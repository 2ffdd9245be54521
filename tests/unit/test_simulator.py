"""The storefront simulator: deterministic for a seed, believable shapes, and payloads ingest accepts."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import combinations, pairwise

import pytest

from deploy.simulator.actions import (
    Action,
    CheckoutStarted,
    OrderPlaced,
    OrderRefunded,
    ProductAdded,
    SignedUp,
    SurveyAnswered,
)
from deploy.simulator.catalog import BUNDLES, PRODUCTS
from deploy.simulator.generator import SimulationConfig, StoreHistory, generate
from deploy.simulator.http_plan import MAX_BATCH_BYTES, HttpRequest, RequestPlan, plan_requests
from deploy.simulator.personas import Persona
from services.ingest.sources import segment, shopify
from shared.clock import MAX_CLOCK_AHEAD
from shared.funnel_rules import DEFAULT_STATEMENTS
from tests.unit.test_simulator_expectations import END, TARGET, build, canonical_events


@pytest.fixture(scope="module")
def sample() -> tuple[StoreHistory, RequestPlan]:
    return build(seed=11, customers=1500)


def _orders(history: StoreHistory) -> dict[int, list[OrderPlaced]]:
    found: dict[int, list[OrderPlaced]] = defaultdict(list)
    for action in history.actions():
        if isinstance(action, OrderPlaced):
            found[action.shopper.number].append(action)
    return found


def _bodies(plan: RequestPlan) -> list[bytes]:
    return [r.body for r in plan.requests()]


# -- determinism and ids -----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_requests_byte_for_byte() -> None:
    assert _bodies(build(seed=5, customers=80)[1]) == _bodies(build(seed=5, customers=80)[1])


def test_another_seed_gives_other_customers_with_ids_of_their_own() -> None:
    first, _ = build(seed=5, customers=80)
    second, _ = build(seed=6, customers=80)
    assert {s.email for s in first.shoppers}.isdisjoint(s.email for s in second.shoppers)
    assert {s.customer_id for s in first.shoppers}.isdisjoint(s.customer_id for s in second.shoppers)
    assert {a.action_id for a in first.actions()}.isdisjoint(a.action_id for a in second.actions())
    assert [s.persona for s in first.shoppers] != [s.persona for s in second.shoppers]


def test_ids_are_stable_when_the_history_ends_later_so_a_rerun_is_deduplicated() -> None:
    now, _ = build(seed=5, customers=80)
    later, _ = build(seed=5, customers=80, end=END + timedelta(hours=3))
    assert [a.action_id for a in now.actions()] == [a.action_id for a in later.actions()]
    assert [a.at + timedelta(hours=3) for a in now.actions()] == [a.at for a in later.actions()]


def test_a_customer_is_the_same_person_whatever_the_number_of_customers() -> None:
    small, _ = build(seed=5, customers=20)
    large, _ = build(seed=5, customers=200)
    assert small.shoppers == large.shoppers[:20]


def test_action_ids_are_unique(sample: tuple[StoreHistory, RequestPlan]) -> None:
    ids = [a.action_id for a in sample[0].actions()]
    assert len(ids) == len(set(ids))


# -- shapes ------------------------------------------------------------------------------------------


def test_personas_are_mixed_by_their_weights(sample: tuple[StoreHistory, RequestPlan]) -> None:
    share = Counter(s.persona for s in sample[0].shoppers)
    total = sum(share.values())
    assert 0.29 < share[Persona.BROWSER] / total < 0.41
    assert 0.07 < share[Persona.LOYALIST] / total < 0.13


def test_order_counts_follow_the_personas(sample: tuple[StoreHistory, RequestPlan]) -> None:
    history, _ = sample
    orders = _orders(history)
    for shopper in history.shoppers:
        count = len(orders[shopper.number])
        expected = {
            Persona.BROWSER: count == 0,
            Persona.ONE_OFF: count == 1,
            Persona.REPEATER: count == 2,
            Persona.LOYALIST: count >= 3,
            Persona.CHURNER: count in (1, 2),
        }[shopper.persona]
        assert expected, f"{shopper.persona} with {count} orders"


def test_churners_went_quiet_long_ago(sample: tuple[StoreHistory, RequestPlan]) -> None:
    history, _ = sample
    orders = _orders(history)
    quiet = [END - orders[s.number][-1].at for s in history.shoppers if s.persona == Persona.CHURNER]
    assert min(quiet) >= timedelta(days=90)


def test_every_customer_signs_up_before_anything_identified(sample: tuple[StoreHistory, RequestPlan]) -> None:
    history, _ = sample
    seen: set[int] = set()
    for action in history.actions():
        number = action.shopper.number
        if isinstance(action, SignedUp):
            assert number not in seen
            seen.add(number)
        assert number in seen or not action.identified
    assert seen == {s.number for s in history.shoppers}


def test_time_runs_forward_within_the_span(sample: tuple[StoreHistory, RequestPlan]) -> None:
    history, _ = sample
    config = history.config
    last: dict[int, datetime] = {}
    for session in history.sessions:
        for action in session.actions:
            assert config.start <= action.at <= config.end
            previous = last.get(action.shopper.number)
            assert previous is None or previous < action.at
            last[action.shopper.number] = action.at
    assert all(a <= b for a, b in pairwise(s.at for s in history.sessions))


def test_refunds_are_partial_and_follow_their_own_orders(sample: tuple[StoreHistory, RequestPlan]) -> None:
    history, _ = sample
    placed: dict[int, OrderPlaced] = {}
    refunds = 0
    for action in history.actions():
        if isinstance(action, OrderPlaced):
            placed[action.order_id] = action
        elif isinstance(action, OrderRefunded):
            order = placed[action.order_id]  # placed earlier
            assert order.shopper == action.shopper
            assert order.at < action.at
            assert Decimal("0") < action.amount < order.total
            refunds += 1
    assert 0.02 < refunds / len(placed) < 0.08


def test_bundles_are_bought_together(sample: tuple[StoreHistory, RequestPlan]) -> None:
    history, _ = sample
    baskets = [{line.product.product_id for line in o.lines} for os in _orders(history).values() for o in os]
    popularity = {p.product_id: sum(p.product_id in b for b in baskets) / len(baskets) for p in PRODUCTS}
    for bundle in BUNDLES:
        for a, b in combinations(bundle.product_ids, 2):
            together = sum(a in basket and b in basket for basket in baskets) / len(baskets)
            # Far more often together than two independent picks would be.
            assert together > 3 * popularity[a] * popularity[b], bundle.name


def test_carts_are_abandoned_and_some_recovered(sample: tuple[StoreHistory, RequestPlan]) -> None:
    history, _ = sample
    checkouts = [a for a in history.actions() if isinstance(a, CheckoutStarted)]
    abandoned = {c.cart_token for c in checkouts if not c.converts_now}
    orders = [o for os in _orders(history).values() for o in os]
    recovered = [o for o in orders if o.recovered]
    assert len(abandoned) > 0.1 * len(checkouts)
    assert recovered
    assert all(o.cart_token in abandoned for o in recovered)
    browsers = {s.number for s in history.shoppers if s.persona == Persona.BROWSER}
    assert any(a.shopper.number in browsers for a in history.actions() if isinstance(a, ProductAdded))


def test_surveys_use_the_default_statements(sample: tuple[StoreHistory, RequestPlan]) -> None:
    surveys = [a for a in sample[0].actions() if isinstance(a, SurveyAnswered)]
    assert surveys
    for survey in surveys:
        for answer in survey.answers:
            assert DEFAULT_STATEMENTS[answer.statement_id].value == answer.scale
            assert (answer.agree is None) != (answer.score is None)


def test_the_last_hours_have_fresh_activity(sample: tuple[StoreHistory, RequestPlan]) -> None:
    fresh = Counter(type(a).__name__ for a in sample[0].actions() if END - a.at < timedelta(hours=6))
    assert fresh["OrderPlaced"] >= 10
    assert fresh["CheckoutStarted"] >= 5
    assert fresh["SurveyAnswered"] >= 1


def test_people_are_varied(sample: tuple[StoreHistory, RequestPlan]) -> None:
    shoppers = sample[0].shoppers
    assert len({s.place.country for s in shoppers}) >= 10
    assert len({s.place.timezone for s in shoppers}) >= 10
    phones = [s.phone for s in shoppers if s.phone]
    assert 0.3 < len(phones) / len(shoppers) < 0.7
    assert all(p.startswith("+") and p[1:].isdigit() and len(p) <= 16 for p in phones)
    assert 0.7 < sum(s.accepts_marketing for s in shoppers) / len(shoppers) < 0.9
    birthdays = [s.birthday for s in shoppers if s.birthday]
    assert 0.3 < len(birthdays) / len(shoppers) < 0.5
    due = (END + timedelta(days=7)).date()
    assert any((b.month, b.day) == (due.month, due.day) for b in birthdays)


# -- requests ingest accepts ---------------------------------------------------------------------------


def test_every_request_passes_ingests_own_parsers(sample: tuple[StoreHistory, RequestPlan]) -> None:
    _, plan = sample
    events = canonical_events(plan, received_at=END)
    assert len(events) == plan.events
    assert all(e.occurred_at - END <= MAX_CLOCK_AHEAD for e in events)
    assert {e.type for e in events} >= {
        "customer_upserted", "identity_linked", "product_viewed", "cart_updated", "order_placed",
        "order_refunded", "survey_answered", "custom",
    }  # fmt: skip


def test_webhooks_are_signed_and_named_as_shopify_does(sample: tuple[StoreHistory, RequestPlan]) -> None:
    webhooks = [r for r in sample[1].requests() if r.path == "/webhooks/shopify"]
    assert {dict(r.headers)["X-Shopify-Topic"] for r in webhooks} == {
        "customers/create", "orders/create", "checkouts/create", "refunds/create",
    }  # fmt: skip
    for request in webhooks:
        headers = dict(request.headers)
        assert shopify.signature_is_valid(
            TARGET.webhook_secret, request.body, headers["X-Shopify-Hmac-Sha256"]
        )
        assert headers["X-Shopify-Shop-Domain"] == TARGET.shop_domain
        assert headers["X-Shopify-Event-Id"]
        assert headers["X-Shopify-Webhook-Id"]
        if headers["X-Shopify-Topic"] == "checkouts/create":
            assert json.loads(request.body)["abandoned_checkout_url"]


def test_batches_use_the_write_key_and_stay_within_ingests_limits(
    sample: tuple[StoreHistory, RequestPlan],
) -> None:
    batches = [r for r in sample[1].requests() if r.path == "/v1/batch"]
    for request in batches:
        auth = dict(request.headers)["Authorization"]
        assert auth == "Basic ZGVtby13cml0ZS1rZXk6"  # base64("demo-write-key:")
        assert len(request.body) <= MAX_BATCH_BYTES
        assert len(json.loads(request.body)["batch"]) <= 200


def _session_of(plan: RequestPlan) -> dict[str, HttpRequest]:
    where: dict[str, HttpRequest] = {}
    for request in plan.requests():
        if request.path == "/v1/batch":
            for call in json.loads(request.body)["batch"]:
                where[call["messageId"]] = request
        else:
            where[dict(request.headers)["X-Shopify-Event-Id"]] = request
    return where


def test_a_checkout_and_its_order_travel_together(sample: tuple[StoreHistory, RequestPlan]) -> None:
    history, plan = sample
    where = _session_of(plan)
    for session in history.sessions:
        checkouts = [a for a in session.actions if isinstance(a, CheckoutStarted) and a.converts_now]
        orders = [a for a in session.actions if isinstance(a, OrderPlaced)]
        if checkouts and checkouts[0].action_id in where:
            assert where[checkouts[0].action_id] is where[orders[0].action_id]


def test_a_customer_uses_one_lane_in_time_order(sample: tuple[StoreHistory, RequestPlan]) -> None:
    history, plan = sample
    sent: dict[str, tuple[int, int]] = {}  # action id -> (lane, position in the lane)
    for lane in plan.lanes:
        for position, request in enumerate(lane):
            if request.path == "/v1/batch":
                for call in json.loads(request.body)["batch"]:
                    sent[call["messageId"]] = (request.lane, position)
            else:
                sent[dict(request.headers)["X-Shopify-Event-Id"]] = (request.lane, position)
    by_customer: dict[int, list[Action]] = defaultdict(list)
    for action in history.actions():
        if action.action_id in sent:
            by_customer[action.shopper.number].append(action)
    for actions in by_customer.values():
        places = [sent[a.action_id] for a in actions]
        assert len({lane for lane, _ in places}) == 1
        assert [p for _, p in places] == sorted(p for _, p in places)


def test_recent_orders_are_shopify_webhooks_and_older_ones_segment_calls(
    sample: tuple[StoreHistory, RequestPlan],
) -> None:
    history, plan = sample
    where = _session_of(plan)
    since = END - timedelta(days=14)
    for action in history.actions():
        if isinstance(action, OrderPlaced):
            expected = "/webhooks/shopify" if action.at >= since else "/v1/batch"
            assert where[action.action_id].path == expected


def test_an_empty_store_plans_nothing() -> None:
    history = generate(SimulationConfig(seed=1, customers=0, days=30, end=END))
    plan = plan_requests(history, TARGET, lanes=2, batch_size=10, shopify_since=END)
    assert plan.lanes == ((), ())
    assert plan.calls == 0


def test_short_histories_keep_the_shapes() -> None:
    history, plan = build(seed=2, customers=300, days=3)
    assert canonical_events(plan, received_at=END)
    orders = _orders(history)
    for shopper in history.shoppers:
        if shopper.persona == Persona.LOYALIST:
            assert len(orders[shopper.number]) >= 3


def test_segment_calls_parse_one_by_one_too(sample: tuple[StoreHistory, RequestPlan]) -> None:
    request = next(r for r in sample[1].requests() if r.path == "/v1/batch")
    for call in json.loads(request.body)["batch"]:
        kind = call.pop("type")
        assert segment.to_canonical(kind, call, store_id="demo", received_at=END)


def test_dates_are_utc() -> None:
    history, _ = build(seed=4, customers=10, end=datetime(2026, 6, 1, 12, tzinfo=UTC))
    assert all(a.at.tzinfo is not None and a.at.utcoffset() == timedelta(0) for a in history.actions())
