"""The store's platforms behind one door: make a coupon exist where the store's checkout will accept it,
and tell the platform about consent changes. Clients are kept per store (Shopify's cost bucket is per shop).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import httpx

from services.notifier.adapters.shopify_admin import ShopifyAdmin, Sleep
from services.notifier.adapters.webhooks import SIGNATURE_HEADER, signature
from services.notifier.adapters.woocommerce_rest import WooCommerceRest
from services.notifier.domain.coupon_platforms import (
    Confirmed,
    CouponOrder,
    CouponPlatform,
    Delivery,
    PlatformRefused,
    PlatformUnavailable,
    StoreWideRefusal,
)
from shared.stores import StoreConfig, StoreRegistry


class PlatformClients:
    def __init__(
        self, http: httpx.AsyncClient, stores: StoreRegistry, *, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._http = http
        self._stores = stores
        self._sleep = sleep
        self._shopify: dict[str, ShopifyAdmin] = {}
        self._woo: dict[str, WooCommerceRest] = {}

    def forget(self) -> None:
        """Drop the clients after a registry reload: the next call builds them with the new URL and token."""
        self._shopify.clear()
        self._woo.clear()

    def shopify(self, store: StoreConfig) -> ShopifyAdmin:
        client = self._shopify.get(store.store_id)
        if client is None:
            token = self._stores.credentials(store.store_id).shopify_admin_token
            if store.shopify is None or token is None:
                raise StoreWideRefusal("shopify: no admin API access token (shopify.admin_token_env/_file)")
            client = ShopifyAdmin(
                self._http, url=store.shopify.admin_url, token=token.get_secret_value(), sleep=self._sleep
            )
            self._shopify[store.store_id] = client
        return client

    def woocommerce(self, store: StoreConfig) -> WooCommerceRest:
        client = self._woo.get(store.store_id)
        if client is None:
            credentials = self._stores.credentials(store.store_id)
            key, secret = credentials.woo_consumer_key, credentials.woo_consumer_secret
            if store.woocommerce is None or key is None or secret is None:
                raise StoreWideRefusal(
                    "woocommerce: no consumer key and secret (woocommerce.consumer_key_env/_file, "
                    "consumer_secret_env/_file)"
                )
            client = WooCommerceRest(
                self._http,
                rest_url=store.woocommerce.rest_url,
                key=key.get_secret_value(),
                secret=secret.get_secret_value(),
            )
            self._woo[store.store_id] = client
        return client

    async def ensure(
        self, store: StoreConfig, platform: CouponPlatform, order: CouponOrder, *, first_try: bool = False
    ) -> Confirmed:
        """The coupon exists where the store's checkout looks for it, exactly once. `first_try`: no earlier
        try can have made it, so a code is created without a look-up first (a duplicate is still found).
        Store credit is always looked up first: a second credit would not be refused."""
        if platform == CouponPlatform.SHOPIFY:
            assert store.shopify is not None
            client = self.shopify(store)
            if order.delivery == Delivery.STORE_CREDIT:
                return await client.ensure_store_credit(order)
            return await client.ensure_discount(order, store.shopify.combines_with, first_try=first_try)
        if platform == CouponPlatform.WOOCOMMERCE:
            return await self.woocommerce(store).ensure_coupon(order, first_try=first_try)
        if platform == CouponPlatform.WEBHOOK:
            await self._post_coupon(store, order)
            return Confirmed(None, created=True)
        return Confirmed(None, created=False)

    async def _post_coupon(self, store: StoreConfig, order: CouponOrder) -> None:
        """The store's own coupon endpoint: signed JSON, keyed so a retry is recognised. Its 2xx is the
        store saying its checkout accepts the code."""
        hook = store.notifier.coupon_webhook
        if hook is None:
            raise StoreWideRefusal("coupon_webhook is no longer configured")
        payload = {
            "type": "coupon_issued",
            "store_id": store.store_id,
            "customer_id": order.customer_id,
            "email": order.email,
            "code": order.code,
            "kind": order.kind.value,
            "value": str(order.value),
            "currency": order.currency,
            "starts_at": order.starts_at.isoformat(),
            "expires_at": order.expires_at.isoformat(),
            "usage_limit": 1,
            "title": order.title,
        }
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": f"coupon-{store.store_id}-{order.code}",
            SIGNATURE_HEADER: signature(hook.secret.get_secret_value(), body),
        }
        try:
            response = await self._http.post(str(hook.url), content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PlatformUnavailable(f"coupon webhook unreachable: {type(exc).__name__}") from exc
        status = response.status_code
        if status >= 500 or status in (408, 425, 429):
            raise PlatformUnavailable(f"coupon webhook answered {status}")
        if status in (401, 403, 404, 410):
            raise StoreWideRefusal(f"coupon webhook refused with {status}")
        if status >= 300:
            raise PlatformRefused(f"coupon webhook refused with {status}")

    async def update_consent(
        self,
        store: StoreConfig,
        platform: CouponPlatform,
        customer_id: str,
        email: str | None,
        *,
        subscribed: bool,
        changed_at: datetime,
    ) -> None:
        if platform == CouponPlatform.SHOPIFY:
            await self.shopify(store).update_consent(
                customer_id, email, subscribed=subscribed, changed_at=changed_at
            )
        elif platform == CouponPlatform.WOOCOMMERCE:
            assert store.woocommerce is not None
            if store.woocommerce.consent_meta_key is None:
                return  # the site records no consent of its own: nothing to tell it
            await self.woocommerce(store).update_consent(
                customer_id, store.woocommerce.consent_meta_key, subscribed=subscribed
            )
