"""What a visitor looked at follows them into their profile, through a merge, and into the recommendations
of the emails they get."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.notifier.adapters.recommendations import Recommender, seed_products, viewed_products
from services.notifier.domain.personalisation import Product
from services.segmenter.domain.browsing import MAX_VIEWED
from services.segmenter.domain.funnel import Decision, decide, erase, merge
from services.segmenter.domain.profile import Profile
from shared.funnel_rules import FunnelRules
from shared.settings import REPO_ROOT
from shared.storefront_event_structs import StorefrontEvent
from shared.stores import StoreRegistry
from tests.builders import segmenter_event

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
RULES = FunnelRules()


def _view(product_id: str, minutes: int, title: str | None = None, visitor: str = "v-1") -> StorefrontEvent:
    product = {"product_id": product_id, "title": title or f"Product {product_id}", "price": "12.50"}
    return segmenter_event(
        "demo",
        "product_viewed",
        T0 + timedelta(minutes=minutes),
        {"anonymous_id": visitor},
        {"product": product},
    )


def _apply(events: list[StorefrontEvent], profile: Profile | None = None) -> Profile:
    for event in events:
        profile = decide(profile, event, RULES, "anon:v-1").profile
    assert profile is not None
    return profile


def test_views_are_kept_newest_first_once_per_product() -> None:
    profile = _apply([_view("a", 1), _view("b", 2), _view("a", 3)])
    assert [v.product_id for v in profile.viewed] == ["a", "b"]
    assert profile.viewed[0].viewed_at == T0 + timedelta(minutes=3)
    assert profile.viewed[1].price == Decimal("12.50")


def test_views_are_capped() -> None:
    profile = _apply([_view(f"p{i}", i) for i in range(MAX_VIEWED + 5)])
    assert len(profile.viewed) == MAX_VIEWED
    assert profile.viewed[0].product_id == f"p{MAX_VIEWED + 4}"


def test_the_order_in_which_views_arrive_does_not_matter() -> None:
    views = [_view("a", 1), _view("b", 2), _view("a", 3, title="A, renamed"), _view("c", 4)]
    results = {_apply(list(order)).viewed for order in itertools.permutations(views)}
    assert len(results) == 1


def test_an_older_view_changes_nothing() -> None:
    profile = _apply([_view("a", 5)])
    assert decide(profile, _view("a", 1), RULES, "anon:v-1").profile.viewed == profile.viewed


def test_a_merge_keeps_both_histories_and_the_snapshot_shows_them() -> None:
    anonymous = _apply([_view("a", 1), _view("b", 4)])
    known = _apply([_view("c", 2)]).model_copy(update={"customer_id": "id:u-1"})
    merged = merge(known, anonymous)
    assert [v.product_id for v in merged.viewed] == ["b", "c", "a"]
    snapshot = merged.snapshot()
    assert [(p.product_id, p.price) for p in snapshot.viewed_products] == [
        ("b", Decimal("12.50")),
        ("c", Decimal("12.50")),
        ("a", Decimal("12.50")),
    ]


def test_erasure_forgets_what_was_viewed_before_it() -> None:
    profile = _apply([_view("a", 1), _view("b", 3)])
    d = Decision(profile=profile, cause="erase", at=T0 + timedelta(minutes=2))
    erase(d)
    # b was viewed after the customer asked to be forgotten (an erasure that reached us late): it stays.
    assert [v.product_id for v in d.profile.viewed] == ["b"]


# --- The notifier's side -----------------------------------------------------------------------------------

SNAPSHOT: dict[str, Any] = {
    "viewed_products": [
        {"product_id": "p-grinder", "title": "Hand Grinder", "price": "49.00", "category": "gear"},
        {"product_id": "p-beans", "title": "Colombia Huila", "price": "14.50"},
        {"product_id": "p-untitled"},
    ]
}


def test_viewed_products_read_from_the_snapshot_skip_those_without_a_title() -> None:
    found = viewed_products(SNAPSHOT)
    assert [(p.product_id, p.title, p.price) for p in found] == [
        ("p-grinder", "Hand Grinder", Decimal("49.00")),
        ("p-beans", "Colombia Huila", Decimal("14.50")),
    ]


def test_seeds_fall_back_to_what_was_viewed() -> None:
    assert seed_products({"items": [{"product_id": "p-cart"}]}, SNAPSHOT) == ["p-cart"]
    assert seed_products({}, SNAPSHOT) == ["p-grinder", "p-beans", "p-untitled"]


async def test_recommendations_start_with_what_was_viewed_and_not_left_in_the_cart() -> None:
    store = StoreRegistry.load(REPO_ROOT / "deploy" / "stores.dev.yaml").get("demo")
    assert store is not None

    class _NoOthers(Recommender):
        async def _others(self, store: Any, seeds: Any, now: datetime) -> list[Product]:
            return [Product("p-best", "Best Seller"), Product("p-grinder", "Hand Grinder")]

    recommender = _NoOthers(engine=None, client=None, segmenter_url="http://segmenter")  # type: ignore[arg-type]
    viewed = viewed_products(SNAPSHOT)
    chosen = await recommender.recommend(store, ["p-beans"], T0, viewed)
    # The beans are in the cart already; the grinder they looked at comes first, then the best seller.
    assert [p.product_id for p in chosen] == ["p-grinder", "p-best"]
