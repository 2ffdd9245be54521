"""Products to recommend in a message: complements of what the customer just bought or left in a cart (the
segmenter's co-purchase figures, over its REST API), then the store's pinned best sellers, then what sold
most lately. The segmenter being slow or down only costs the complements: the message still goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import repository
from services.notifier.domain.personalisation import MAX_RECOMMENDATIONS, Product
from shared.logging import get_logger
from shared.stores import StoreConfig

log = get_logger(__name__)

BEST_SELLER_WINDOW = timedelta(days=90)
SEEDS = 2


def seed_products(trigger: Mapping[str, Any], customer: Mapping[str, Any]) -> list[str]:
    """What the recommendations start from: the trigger's items, else the customer's latest purchases."""
    items = [str(i["product_id"]) for i in trigger.get("items") or [] if i.get("product_id")]
    if not items:
        items = [str(p["product_id"]) for p in customer.get("last_products") or [] if p.get("product_id")]
    return list(dict.fromkeys(items))


class Recommender:
    def __init__(self, engine: AsyncEngine, client: httpx.AsyncClient, segmenter_url: str) -> None:
        self._engine = engine
        self._client = client
        self._segmenter = segmenter_url.rstrip("/")

    async def recommend(self, store: StoreConfig, seeds: Sequence[str], now: datetime) -> list[Product]:
        wanted: list[str] = []
        for seed in seeds[:SEEDS]:
            wanted.extend(await self._complements(store, seed))
        wanted.extend(store.notifier.best_sellers)
        async with self._engine.connect() as conn:
            best = await repository.best_sellers(
                conn, store.store_id, now - BEST_SELLER_WINDOW, MAX_RECOMMENDATIONS + len(seeds)
            )
            wanted.extend(r.product_id for r in best)
            chosen = [p for p in dict.fromkeys(wanted) if p not in set(seeds)]
            known = await repository.products_by_id(conn, store.store_id, chosen)
        return [
            Product(product_id=r.product_id, title=r.title, price=r.price, category=r.category)
            for r in known
            if r.title
        ][:MAX_RECOMMENDATIONS]

    async def _complements(self, store: StoreConfig, product_id: str) -> list[str]:
        url = f"{self._segmenter}/v1/stores/{store.store_id}/products/{product_id}/complements"
        try:
            response = await self._client.get(
                url,
                params={"limit": MAX_RECOMMENDATIONS},
                headers={"Authorization": f"Bearer {store.api_key.get_secret_value()}"},
            )
            response.raise_for_status()
            return [str(c["product_id"]) for c in response.json()]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("complements_unavailable", store_id=store.store_id, error=type(exc).__name__)
            return []
