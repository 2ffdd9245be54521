"""A profile's figures drawn from its facts (orders counted, spend, average, interval, favourite categories,
last products) and the snapshot a funnel event carries of it.

Its own module so that mypyc compiles it (shared/compiled.py): profile.py stays interpreted for its Structs'
sake, and the snapshot, built for four in ten storefront events, cost about 30,000 instructions there (the
whole replay of the benchmark's mix under callgrind), most of them the interpreter's own work. The facts are
profile.py's classes, read here by attribute as interpreted code reads them; this module imports them only
for the type checker, so that profile.py can import it.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import TYPE_CHECKING, Final

from services.segmenter.domain.vocabulary import NO_LEVEL
from shared import funnel_event_structs as out
from shared.events import MOST_MONEY
from shared.funnel import SurveyLevel

if TYPE_CHECKING:
    from services.segmenter.domain.profile import OrderFact, ProductFact, Profile, ViewedProduct

LAST_PRODUCTS: Final = 5
FAVOURITE_CATEGORIES: Final = 3

# Orders' sort key, (placed_at, order_id), by C's attrgetter rather than a lambda called in Python.
ORDER_KEY: Final = attrgetter("placed_at", "order_id")

# The counted orders of the last tuple of orders asked about. One decision asks for them again and again
# (its stage, its health timer, the snapshot of each funnel event), always of the same tuple: model_copy
# shares it between the copies of a profile whose orders did not change, so the tuple's identity is the
# key. No cache on the model itself: model_copy would carry it over to a copy whose orders did change. The
# memo holds the tuple, so its identity cannot be reused by another object meanwhile.
_last_counted: Final[list[tuple[tuple[OrderFact, ...], tuple[OrderFact, ...]]]] = [((), ())]


_ZERO: Final = Decimal(0)


def order_counts(order: OrderFact) -> bool:
    """Whether the order counts as a purchase (`OrderFact.counts`, which calls this): a cancelled or fully
    refunded order does not. Here, compiled, for the rules' sake: compiled code reaches a property of
    profile.py's or the events' Structs through its descriptor, an interpreted frame, and the replay's
    calls to such properties took about 1,700 instructions each, their bodies included (callgrind)."""
    return not order.cancelled and (order.total == _ZERO or order.refunded < order.total)


def counted(orders: tuple[OrderFact, ...]) -> tuple[OrderFact, ...]:
    """The orders that count (`order_counts`), in date order."""
    held, kept = _last_counted[0]
    if held is not orders:
        kept = tuple(sorted((o for o in orders if order_counts(o)), key=ORDER_KEY))
        _last_counted[0] = (orders, kept)
    return kept


_CENT: Final = Decimal("0.01")


def held_spend(spent: Decimal) -> Decimal:
    """The spend a profile holds: at most the largest amount an order may carry, which is what the profiles
    table's numeric(14, 2) holds. Only absurd orders pass it (two on-hold WooCommerce orders of half a
    trillion, which nobody pays); had the sum gone on, the database would have refused the batch."""
    return spent if spent <= MOST_MONEY else MOST_MONEY


def _spent(orders: tuple[OrderFact, ...]) -> Decimal:
    """What the orders not cancelled came to, less their refunds."""
    return sum((o.total - o.refunded for o in orders if not o.cancelled), Decimal("0"))


def total_spent(orders: tuple[OrderFact, ...]) -> Decimal:
    return held_spend(_spent(orders))


def average_order_value(counted: tuple[OrderFact, ...]) -> Decimal | None:
    if not counted:
        return None
    return (sum((o.total - o.refunded for o in counted), Decimal("0")) / len(counted)).quantize(_CENT)


def median_days_between(counted: tuple[OrderFact, ...]) -> float | None:
    if len(counted) < 2:
        return None
    gaps = sorted((b.placed_at - a.placed_at).total_seconds() / 86400 for a, b in itertools.pairwise(counted))
    # statistics.median's own arithmetic (the middle one, or the mean of the middle two), without its checks.
    n = len(gaps)
    return round(gaps[n // 2] if n % 2 else (gaps[n // 2 - 1] + gaps[n // 2]) / 2, 2)


def favourite_categories(counted: tuple[OrderFact, ...]) -> tuple[str, ...]:
    # A plain dict, not collections.Counter: a handful of products per customer, counted on every funnel
    # event's snapshot, where Counter's set-up cost more than the counting.
    counts: dict[str, int] = {}
    for order in counted:
        for product in order.products:
            if product.category:
                counts[product.category] = counts.get(product.category, 0) + 1
    if not counts:
        return ()
    return tuple(c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:FAVOURITE_CATEGORIES])


def last_product_facts(counted: tuple[OrderFact, ...]) -> list[ProductFact]:
    seen: dict[str, ProductFact] = {}
    for order in reversed(counted):
        for product in order.products:
            seen.setdefault(product.product_id, product)
    return list(seen.values())[:LAST_PRODUCTS]


def _snapshot_ref(p: ProductFact | ViewedProduct) -> out.ProductRef:
    """A snapshot's ProductRef of a product fact (the Struct, as profile.py's `_ref` is the REST API's)."""
    return out.ProductRef(product_id=p.product_id, title=p.title, category=p.category, price=p.price)


# A snapshot's figures drawn from the orders, by the tuple of orders they come from. Funnel events of one
# customer share it (an order's event and the stage it earned; a contact change of a customer whose orders
# did not change): copies of a profile share the tuple until its orders change, so its identity is the key,
# and the memo holds the tuple, so that identity cannot be reused meanwhile. Profiles with no orders all
# hold the empty tuple, one object. A snapshot of the replay mix's profiles took 17 µs with its figures
# (and viewed products) made, 7.5 when found (6,000 profiles, in process, interpreted). Small, and emptied
# when full, so that it keeps no evicted profile's orders alive (the segmenter's memory must not grow): over
# the mix's first 30,000 events, 64 entries missed 4,442 of 17,477 figures and 2,921 viewed products, 4,096
# entries 4,374 and 1,978.
_OrderFigures = tuple[
    int,
    Decimal,
    str | None,
    datetime | None,
    datetime | None,
    Decimal | None,
    float | None,
    tuple[str, ...],
    tuple[out.ProductRef, ...],
]
_MEMO_SIZE: Final = 64
_figures_of: Final[dict[int, tuple[tuple[OrderFact, ...], _OrderFigures]]] = {}


def _order_figures(orders: tuple[OrderFact, ...]) -> _OrderFigures:
    held = _figures_of.get(id(orders))
    if held is not None and held[0] is orders:
        return held[1]
    kept = counted(orders)
    spent = _spent(orders)
    figures = (
        len(kept),
        held_spend(spent),
        orders[0].currency if orders else None,
        kept[0].placed_at if kept else None,
        kept[-1].placed_at if kept else None,
        # When every order counts (none cancelled or refunded in full: nearly always), the average's sum is
        # `spent`, the same additions in the same order (`kept` is `orders` when they are in date order, as
        # kept): not summed again (about 0.5 µs of an order's 6 µs of figures).
        (spent / len(kept)).quantize(_CENT) if kept and kept == orders else average_order_value(kept),
        median_days_between(kept),
        favourite_categories(kept),
        tuple(_snapshot_ref(p) for p in last_product_facts(kept)),
    )
    if len(_figures_of) >= _MEMO_SIZE:
        _figures_of.clear()
    _figures_of[id(orders)] = (orders, figures)
    return figures


# The viewed products of a snapshot, by the tuple of views they come from (as `_order_figures`).
_refs_of: Final[dict[int, tuple[tuple[ViewedProduct, ...], tuple[out.ProductRef, ...]]]] = {}


def _viewed_refs(viewed: tuple[ViewedProduct, ...]) -> tuple[out.ProductRef, ...]:
    held = _refs_of.get(id(viewed))
    if held is not None and held[0] is viewed:
        return held[1]
    refs = tuple(_snapshot_ref(v) for v in viewed)
    if len(_refs_of) >= _MEMO_SIZE:
        _refs_of.clear()
    _refs_of[id(viewed)] = (viewed, refs)
    return refs


def survey_level(profile: Profile) -> SurveyLevel:
    """The latest survey answer's level, NONE before any (`Profile.survey_level`, which calls this)."""
    survey = profile.survey
    return survey.level if survey is not None else NO_LEVEL


def profile_snapshot(profile: Profile) -> out.ProfileSnapshot:
    """The profile as a funnel event carries it: a msgspec Struct encoding to the bytes of the contract's
    ProfileSnapshot (shared/funnel_event_structs.py). The 17,477 snapshots of the mix's first 30,000 events,
    in process: 5.69 µs a snapshot interpreted, 2.16 compiled (best of 7)."""
    figures = _order_figures(profile.orders)
    contact_at = profile.contact_at
    return out.ProfileSnapshot(
        customer_id=profile.customer_id,
        email=profile.email,
        first_name=profile.first_name,
        last_name=profile.last_name,
        phone=profile.phone,
        locale=profile.locale,
        city=profile.city,
        country=profile.country,
        timezone=profile.timezone,
        accepts_marketing=profile.accepts_marketing,
        consent_at=contact_at.get("accepts_marketing") if contact_at else None,
        stage=profile.stage,
        health=profile.health,
        orders_count=figures[0],
        total_spent=figures[1],
        currency=figures[2],
        first_order_at=figures[3],
        last_order_at=figures[4],
        survey_level=survey_level(profile),
        birthday=profile.birthday,
        average_order_value=figures[5],
        median_days_between_orders=figures[6],
        favourite_categories=figures[7],
        last_products=figures[8],
        viewed_products=_viewed_refs(profile.viewed),
    )
