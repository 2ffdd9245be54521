"""Audience membership rules (pure) and their configuration in the store registry."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.notifier.adapters.audience_rows import facts_from_row
from services.notifier.domain.audiences import (
    CustomerFacts,
    MemberRow,
    Membership,
    evaluate,
    evaluate_all,
    exported_contact,
    membership_changes,
    next_change,
)
from shared.audience_rules import MAX_SYNC_BATCH, AudienceDefinition, AudienceRules
from shared.funnel import Health, LoyaltyStage, SurveyLevel
from shared.settings import REPO_ROOT
from shared.stores import StoreRegistry, StoreRegistryError

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DEFAULTS = AudienceRules().active()


def customer(**overrides: Any) -> CustomerFacts:
    base = CustomerFacts(
        customer_id="c-1",
        email="ines@example.com",
        accepts_marketing=True,
        stage=LoyaltyStage.REPEAT,
        health=Health.ACTIVE,
        orders_count=2,
        total_spent=Decimal("96.00"),
        last_order_at=NOW - timedelta(days=20),
    )
    return replace(base, **overrides)


def members_of(facts: CustomerFacts, definitions: dict[str, AudienceDefinition] = DEFAULTS) -> set[str]:
    return {name for name, m in evaluate_all(definitions, facts, NOW).items() if m.member}


def test_every_store_has_the_four_default_audiences() -> None:
    assert list(DEFAULTS) == ["all_customers", "cart_abandoners", "loyal_and_advocates", "win_back"]


def test_a_known_customer_is_in_all_customers_for_good() -> None:
    assert evaluate(DEFAULTS["all_customers"], customer(), NOW) == Membership(member=True)


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (LoyaltyStage.PROSPECT, False),
        (LoyaltyStage.REPEAT, False),
        (LoyaltyStage.LOYAL, True),
        (LoyaltyStage.ADVOCATE, True),
    ],
)
def test_loyal_and_advocates_follows_the_stage(stage: LoyaltyStage, expected: bool) -> None:
    assert evaluate(DEFAULTS["loyal_and_advocates"], customer(stage=stage), NOW).member is expected


@pytest.mark.parametrize(
    ("health", "expected"), [(Health.ACTIVE, False), (Health.AT_RISK, True), (Health.LAPSED, True)]
)
def test_win_back_takes_at_risk_and_lapsed_customers(health: Health, expected: bool) -> None:
    assert evaluate(DEFAULTS["win_back"], customer(health=health), NOW).member is expected


def test_a_cart_abandoner_stays_seven_days_and_says_when_they_leave() -> None:
    abandoned = NOW - timedelta(days=2)
    facts = customer(last_cart_abandoned_at=abandoned, last_order_at=abandoned - timedelta(days=30))
    assert evaluate(DEFAULTS["cart_abandoners"], facts, NOW) == Membership(
        member=True, changes_at=abandoned + timedelta(days=7)
    )
    later = abandoned + timedelta(days=7)
    assert evaluate(DEFAULTS["cart_abandoners"], facts, later) == Membership(member=False)


def test_an_order_after_the_abandoned_cart_ends_the_membership() -> None:
    abandoned = NOW - timedelta(days=2)
    facts = customer(last_cart_abandoned_at=abandoned, last_order_at=abandoned + timedelta(hours=1))
    assert not evaluate(DEFAULTS["cart_abandoners"], facts, NOW).member


def test_a_customer_who_never_abandoned_a_cart_is_no_cart_abandoner() -> None:
    assert evaluate(DEFAULTS["cart_abandoners"], customer(last_order_at=None), NOW) == Membership(False)


def test_an_erased_customer_belongs_nowhere() -> None:
    erased = customer(email=None, phone=None, accepts_marketing=None)
    assert members_of(erased) == set()


def test_consent_decides_export_not_membership() -> None:
    for facts in (
        customer(accepts_marketing=False),
        customer(accepts_marketing=None),
        customer(unsubscribed_at=NOW - timedelta(minutes=1)),
    ):
        assert "all_customers" in members_of(facts)
        assert exported_contact(facts) is None
    assert exported_contact(customer()) is not None
    assert exported_contact(customer(email=None, phone=None)) is None  # nothing to match on


def test_custom_criteria_must_all_hold() -> None:
    coffee = AudienceDefinition(
        stages=frozenset({LoyaltyStage.REPEAT, LoyaltyStage.LOYAL}),
        health=frozenset({Health.ACTIVE}),
        categories=frozenset({" Coffee "}),
        min_orders=2,
        countries=frozenset({"DE"}),
        min_survey_level=SurveyLevel.AFFECTIVE,
        min_total_spent=Decimal("50"),
    )
    fan = customer(
        categories=frozenset({"coffee"}),
        country="Germany",
        survey_level=SurveyLevel.CONATIVE,
    )
    assert evaluate(coffee, fan, NOW).member
    assert not evaluate(coffee, replace(fan, categories=frozenset({"tea"})), NOW).member
    assert not evaluate(coffee, replace(fan, orders_count=1), NOW).member
    assert not evaluate(coffee, replace(fan, country="France"), NOW).member
    assert not evaluate(coffee, replace(fan, country=None), NOW).member
    assert not evaluate(coffee, replace(fan, health=Health.LAPSED), NOW).member
    assert not evaluate(coffee, replace(fan, survey_level=SurveyLevel.NONE), NOW).member
    assert not evaluate(coffee, replace(fan, total_spent=Decimal("49.99")), NOW).member
    assert not evaluate(coffee, replace(fan, stage=LoyaltyStage.ADVOCATE), NOW).member


def test_recent_buyers_leave_when_the_window_closes() -> None:
    recent = AudienceDefinition(ordered_within=timedelta(days=30))
    facts = customer(last_order_at=NOW - timedelta(days=20))
    assert evaluate(recent, facts, NOW) == Membership(True, NOW + timedelta(days=10))
    assert evaluate(recent, customer(last_order_at=None), NOW) == Membership(False)


def test_quiet_customers_join_when_the_window_opens() -> None:
    quiet = AudienceDefinition(no_order_within=timedelta(days=60))
    facts = customer(last_order_at=NOW - timedelta(days=20))
    assert evaluate(quiet, facts, NOW) == Membership(False, NOW + timedelta(days=40))
    assert evaluate(quiet, facts, NOW + timedelta(days=40)) == Membership(True)
    assert evaluate(quiet, customer(last_order_at=None), NOW) == Membership(False)


def test_windows_combine_and_an_empty_one_never_holds() -> None:
    between = AudienceDefinition(no_order_within=timedelta(days=30), ordered_within=timedelta(days=90))
    facts = customer(last_order_at=NOW - timedelta(days=10))
    assert evaluate(between, facts, NOW) == Membership(False, NOW + timedelta(days=20))
    assert evaluate(between, facts, NOW + timedelta(days=20)) == Membership(True, NOW + timedelta(days=80))
    never = AudienceDefinition(no_order_within=timedelta(days=90), ordered_within=timedelta(days=30))
    assert evaluate(never, facts, NOW) == Membership(False)


def test_the_next_change_is_the_earliest_of_all_audiences() -> None:
    memberships = {
        "a": Membership(True, NOW + timedelta(days=3)),
        "b": Membership(False, NOW + timedelta(days=1)),
        "c": Membership(True),
    }
    assert next_change(memberships) == NOW + timedelta(days=1)
    assert next_change({"c": Membership(True)}) is None


def test_facts_come_from_the_customers_row_and_its_profile() -> None:
    facts = facts_from_row(
        {
            "customer_id": "c-9",
            "email": "x@example.com",
            "phone": None,
            "accepts_marketing": True,
            "unsubscribed_at": None,
            "stage": "loyal",
            "health": "at_risk",
            "profile": {
                "first_name": "Ana",
                "country": "DE",
                "orders_count": 4,
                "total_spent": "120.50",
                "survey_level": "action",
                "favourite_categories": ["Coffee"],
                "last_products": [{"product_id": "P-1", "category": "Mugs"}, {"title": "no id"}],
                "last_order_at": "2026-11-01T10:00:00+00:00",
            },
            "last_order_at": None,
            "last_cart_abandoned_at": None,
        }
    )
    assert facts.stage is LoyaltyStage.LOYAL
    assert facts.health is Health.AT_RISK
    assert facts.orders_count == 4
    assert facts.total_spent == Decimal("120.50")
    assert facts.survey_level is SurveyLevel.ACTION
    assert facts.categories == {"coffee", "mugs"}
    assert facts.products == {"p-1"}
    assert facts.last_order_at == datetime(2026, 11, 1, 10, tzinfo=UTC)


# --- Configuration ------------------------------------------------------------------------------------------


def _registry(tmp_path: Path, audiences_yaml: str) -> StoreRegistry:
    path = tmp_path / "stores.yaml"
    path.write_text(
        "stores:\n  shop1:\n    name: Shop\n    api_key: k\n    audiences:\n"
        + "".join(f"      {line}\n" for line in audiences_yaml.strip().splitlines())
    )
    return StoreRegistry.load(path)


def test_a_store_adds_overrides_and_switches_off_audiences(tmp_path: Path) -> None:
    registry = _registry(
        tmp_path,
        """
definitions:
  coffee_lovers:
    description: Coffee people
    stages: [repeat, loyal]
    categories: [coffee]
    min_orders: 2
  cart_abandoners: {cart_abandoned_within: 3d}
  win_back: {enabled: false}
""",
    )
    store = registry.get("shop1")
    assert store is not None
    active = store.audiences.active()
    assert set(active) == {"all_customers", "cart_abandoners", "coffee_lovers", "loyal_and_advocates"}
    assert active["cart_abandoners"].cart_abandoned_within == timedelta(days=3)
    assert active["cart_abandoners"].description.startswith("Abandoned a cart")
    assert active["coffee_lovers"].categories == {"coffee"}
    assert store.audiences.sync is None


@pytest.mark.parametrize(
    ("audiences_yaml", "complaint"),
    [
        ("definitions: {vip: {stages: [loyal], colour: red}}", "colour"),
        ("definitions: {vip: {stages: [platinum]}}", "stages"),
        ("definitions: {Bad Name: {}}", "definitions"),
        ("definitions: {vip: {min_orders: 5, max_orders: 2}}", "min_orders"),
        ("sync: {url: 'http://ads.example.com/hook', secret: 0123456789abcdef}", "https"),
        (
            "sync: {url: 'https://ads.example.com/hook', secret: 0123456789abcdef, batch_size: 10001}",
            "batch_size",
        ),
        ("sync: {url: 'https://ads.example.com/hook', secret: short}", "secret"),
        ("syncing: {}", "syncing"),
    ],
)
def test_the_registry_refuses_bad_audience_settings(
    tmp_path: Path, audiences_yaml: str, complaint: str
) -> None:
    with pytest.raises(StoreRegistryError, match=complaint):
        _registry(tmp_path, audiences_yaml)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8123/hook", "http://localhost/hook", "http://[::1]:9/x"])
def test_plain_http_is_allowed_to_loopback_only(url: str) -> None:
    rules = AudienceRules.model_validate({"sync": {"url": url, "secret": "0123456789abcdef"}})
    assert rules.sync is not None
    assert rules.sync.batch_size == MAX_SYNC_BATCH


def test_a_definition_that_is_always_empty_is_refused() -> None:
    with pytest.raises(ValidationError, match="min_total_spent"):
        AudienceDefinition(min_total_spent=Decimal("10"), max_total_spent=Decimal("5"))


def test_the_development_registry_loads_with_its_audiences() -> None:
    demo = StoreRegistry.load(REPO_ROOT / "deploy" / "stores.dev.yaml").get("demo")
    assert demo is not None
    assert {"all_customers", "loyal_and_advocates", "win_back", "cart_abandoners", "coffee_regulars"} <= set(
        demo.audiences.active()
    )


# --- What the membership rows become (the rule the repository applies) -------------------------------------

VIP = {"vip": AudienceDefinition(description="loyal customers", stages=frozenset({LoyaltyStage.LOYAL}))}


def _vip_member(joined_at: datetime, **sync: Any) -> MemberRow:
    contact = exported_contact(customer(stage=LoyaltyStage.LOYAL))
    assert contact is not None
    return MemberRow(True, joined_at, None, contact.as_json(), False, **sync)


def test_a_new_member_joins_now_and_is_pending_for_sync_only_when_sync_is_on() -> None:
    loyal = customer(stage=LoyaltyStage.LOYAL)
    for sync_on in (False, True):
        changes = membership_changes(VIP, loyal, {}, sync_on=sync_on, now=NOW)
        row = changes.upserts["vip"]
        assert (row.member, row.joined_at, row.sync_pending) == (True, NOW, sync_on)
        assert changes.removals == ()


def test_a_member_whose_facts_did_not_change_writes_nothing_and_keeps_the_time_they_joined() -> None:
    earlier = NOW - timedelta(days=3)
    current = {"vip": _vip_member(earlier)}
    changes = membership_changes(VIP, customer(stage=LoyaltyStage.LOYAL), current, sync_on=False, now=NOW)
    assert changes.upserts == {}
    assert changes.removals == ()


def test_a_former_member_is_removed_at_once_without_sync_but_stays_until_the_endpoint_heard_of_it() -> None:
    earlier = NOW - timedelta(days=3)
    synced = _vip_member(earlier).contact
    gone = customer(stage=LoyaltyStage.REPEAT)
    without_sync = membership_changes(VIP, gone, {"vip": _vip_member(earlier)}, sync_on=False, now=NOW)
    assert without_sync.removals == ("vip",)
    told = {"vip": _vip_member(earlier, synced_contact=synced)}
    with_sync = membership_changes(VIP, gone, told, sync_on=True, now=NOW)
    row = with_sync.upserts["vip"]
    assert (row.member, row.contact, row.sync_pending) == (False, None, True)
    # While a batch is in flight, its completion decides what is pending.
    in_flight = {"vip": _vip_member(earlier, synced_contact=synced, in_flight=True)}
    waiting = membership_changes(VIP, gone, in_flight, sync_on=True, now=NOW)
    assert waiting.upserts["vip"].sync_pending is False


def test_an_erased_or_unknown_customer_leaves_every_audience_and_needs_no_reevaluation() -> None:
    current = {"vip": _vip_member(NOW - timedelta(days=3))}
    changes = membership_changes(VIP, None, current, sync_on=False, now=NOW)
    assert (changes.upserts, changes.removals, changes.reevaluate_at) == ({}, ("vip",), None)
