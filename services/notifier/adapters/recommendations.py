"""Products to recommend in a message: complements of what the customer just bought or left in a cart (the
segmenter's co-purchase figures, over its REST API), then the store's pinned best sellers, then what sold
most lately. The segmenter being slow or down only costs the complements: the message still goes.

What goes into a recommendation changes over hours, and a busy sender asks for the same products many times a
second: complements, best sellers and product details are kept for a few minutes instead of being fetched for
every message (they were an eighth of the notifier's time under load, and loaded the segmenter too). The
segmenter's answer that a product has no complements is kept like any other: a kept list is already up to that
long stale, and asking again for every email cost 3-11 % of the notifier's CPU at 1,000 events/s. An ask that
failed (the segmenter away, an error, a timeout) is never kept.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Generic, TypeVar

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import repository
from services.notifier.domain.personalisation import MAX_RECOMMENDATIONS, Product
from shared.fields import url_segment
from shared.logging import get_logger
from shared.stores import StoreConfig

log = get_logger(__name__)

BEST_SELLER_WINDOW = timedelta(days=90)
SEEDS = 2
# How long a looked-up answer is reused, and how many are kept (a store's catalogue, roughly).
FRESH_SECONDS = 300.0
MAX_KEPT = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """Answers reused for `ttl` seconds; when full, the oldest go first."""

    def __init__(self, ttl: float = FRESH_SECONDS, size: int = MAX_KEPT) -> None:
        self._ttl = ttl
        self._size = size
        self._items: dict[K, tuple[float, V]] = {}

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(True, value) when a fresh answer is kept, else (False, None)."""
        found = self._fresh(key)
        return (True, found[0]) if found is not None else (False, None)

    def _fresh(self, key: K) -> tuple[V] | None:
        # The value in a 1-tuple: a kept answer may itself be None.
        found = self._items.get(key)
        if found is not None and time.monotonic() - found[0] < self._ttl:
            return (found[1],)
        return None

    def put(self, key: K, value: V) -> None:
        self._items.pop(key, None)
        if len(self._items) >= self._size:
            del self._items[next(iter(self._items))]  # dicts keep insertion order: this is the oldest
        self._items[key] = (time.monotonic(), value)

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]], *, keep_empty: bool = False) -> V:
        """The kept answer, else a fetched one. An empty answer is kept only with `keep_empty`, else asked
        again next time (a new store's best sellers show as soon as it sells); a fetch that raises keeps
        nothing."""
        found = self._fresh(key)
        if found is not None:
            return found[0]
        fetched = await fetch()
        if fetched or keep_empty:
            self.put(key, fetched)
        return fetched


class ComplementsUnavailable(Exception):
    """The segmenter could not say what goes with a product (away, an error, a timeout, a bad answer)."""


def seed_products(trigger: Mapping[str, Any], customer: Mapping[str, Any]) -> list[str]:
    """What the recommendations start from: the trigger's items, else the customer's latest purchases,
    else what they looked at."""
    items = [str(i["product_id"]) for i in trigger.get("items") or [] if i.get("product_id")]
    for fallback in ("last_products", "viewed_products"):
        if not items:
            items = [str(p["product_id"]) for p in customer.get(fallback) or [] if p.get("product_id")]
    return list(dict.fromkeys(items))


def viewed_products(customer: Mapping[str, Any]) -> list[Product]:
    """The products the customer looked at lately (the profile snapshot's `viewed_products`, newest first),
    with the details they were shown with; those without a title cannot be shown and are left out."""
    found: list[Product] = []
    for p in customer.get("viewed_products") or []:
        if not (p.get("product_id") and p.get("title")):
            continue
        try:
            price = Decimal(str(p["price"])) if p.get("price") is not None else None
        except ArithmeticError:
            price = None
        found.append(
            Product(
                product_id=str(p["product_id"]),
                title=str(p["title"]),
                price=price,
                category=p.get("category"),
            )
        )
    return found


class Recommender:
    def __init__(
        self,
        engine: AsyncEngine,
        client: httpx.AsyncClient,
        segmenter_url: str,
        ttl: float = FRESH_SECONDS,
        *,
        service_api_key: str | None = None,
    ) -> None:
        self._engine = engine
        self._client = client
        self._segmenter = segmenter_url.rstrip("/")
        # Store keys are kept hashed, so the notifier presents its own service key (SERVICE_API_KEY).
        self._auth = {"Authorization": f"Bearer {service_api_key}"} if service_api_key else None
        self._complements_of: Kept[tuple[str, str], list[str]] = Kept(ttl)
        self._best_sellers: Kept[str, list[str]] = Kept(ttl)
        self._products: Kept[tuple[str, str], Product | None] = Kept(ttl)

    async def recommend(
        self, store: StoreConfig, seeds: Sequence[str], now: datetime, viewed: Sequence[Product] = ()
    ) -> list[Product]:
        """What the customer looked at and has not got in the trigger (a cart's items, an order's) first,
        then complements of the seeds, the store's pinned best sellers and what sold most lately."""
        looked_at = [p for p in viewed if p.product_id not in set(seeds)][:MAX_RECOMMENDATIONS]
        if len(looked_at) == MAX_RECOMMENDATIONS:
            return looked_at
        shown = {p.product_id for p in looked_at}
        others = await self._others(store, seeds, now)
        return [*looked_at, *(p for p in others if p.product_id not in shown)][:MAX_RECOMMENDATIONS]

    async def _others(self, store: StoreConfig, seeds: Sequence[str], now: datetime) -> list[Product]:
        wanted: list[str] = []
        for seed in seeds[:SEEDS]:
            wanted.extend(await self.complements(store, seed))
        wanted.extend(store.notifier.best_sellers)
        # A few more than shown, so that seeds and unknown products can drop out.
        wanted.extend(await self._best_sellers.get(store.store_id, lambda: self._sellers(store, now)))
        chosen = [p for p in dict.fromkeys(wanted) if p not in set(seeds)]
        products: dict[str, Product | None] = {}
        missing: list[str] = []
        for product_id in chosen:
            hit, product = self._products.lookup((store.store_id, product_id))
            if hit:
                products[product_id] = product
            else:
                missing.append(product_id)
        if missing:
            async with self._engine.connect() as conn:
                rows = {
                    r.product_id: r for r in await repository.products_by_id(conn, store.store_id, missing)
                }
            for product_id in missing:
                row = rows.get(product_id)
                products[product_id] = (
                    Product(
                        product_id=row.product_id, title=row.title, price=row.price, category=row.category
                    )
                    if row is not None and row.title
                    else None
                )
                if products[product_id] is not None:
                    self._products.put((store.store_id, product_id), products[product_id])
        return [p for p in (products[i] for i in chosen) if p is not None][:MAX_RECOMMENDATIONS]

    async def _sellers(self, store: StoreConfig, now: datetime) -> list[str]:
        async with self._engine.connect() as conn:
            best = await repository.best_sellers(
                conn, store.store_id, now - BEST_SELLER_WINDOW, MAX_RECOMMENDATIONS + SEEDS * 2
            )
        return [r.product_id for r in best]

    async def complements(self, store: StoreConfig, product_id: str) -> list[str]:
        """What is bought with the product, best first: the kept answer, an empty one included, else the
        segmenter's; none when it cannot answer, and then it is asked again next time."""
        try:
            return await self._complements_of.get(
                (store.store_id, product_id),
                partial(self._ask_complements, store, product_id),
                keep_empty=True,
            )
        except ComplementsUnavailable:
            return []

    async def _ask_complements(self, store: StoreConfig, product_id: str) -> list[str]:
        if self._auth is None:
            return []  # no service key: nothing can be asked, and that does not change while running
        # Product ids come from storefront events: escaped, so `../` or `?` cannot reach another route.
        url = (
            f"{self._segmenter}/v1/stores/{url_segment(store.store_id)}"
            f"/products/{url_segment(product_id)}/complements"
        )
        try:
            response = await self._client.get(url, params={"limit": MAX_RECOMMENDATIONS}, headers=self._auth)
            response.raise_for_status()
            return [str(c["product_id"]) for c in response.json()]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("complements_unavailable", store_id=store.store_id, error=type(exc).__name__)
            raise ComplementsUnavailable from exc
