"""WooCommerce REST API v3 client: coupons, customers' consent meta field, webhooks.

Docs: https://woocommerce.github.io/woocommerce-rest-api-docs/ (Authentication over HTTPS: the consumer key
and secret as HTTP Basic auth; Coupons: `POST /wp-json/wc/v3/coupons`, `GET /coupons?code=`; Customers:
`PUT /customers/<id>` with `meta_data`; Webhooks: `GET/POST /webhooks`). Errors are
`{"code": "...", "message": "...", "data": {"status": N}}`; a code the site already has is
`woocommerce_rest_coupon_code_already_exists` (400).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from services.notifier.domain.coupon_platforms import (
    Confirmed,
    CouponOrder,
    PlatformRefused,
    PlatformUnavailable,
    StoreWideRefusal,
    safe_reason,
)
from shared.notifier_rules import CouponKind

ALREADY_EXISTS = "woocommerce_rest_coupon_code_already_exists"


class WooCommerceRest:
    def __init__(self, http: httpx.AsyncClient, *, rest_url: str, key: str, secret: str) -> None:
        self._http = http
        self._base = rest_url.rstrip("/") + "/"
        self._auth = httpx.BasicAuth(key, secret)

    async def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> Any:
        """One call; the decoded JSON body of a 2xx, else PlatformUnavailable / PlatformRefused. A 400
        carrying the duplicate-coupon code comes back as `DuplicateCode`."""
        try:
            response = await self._http.request(
                method, self._base + path, params=params, json=json, auth=self._auth
            )
        except httpx.HTTPError as exc:
            raise PlatformUnavailable(f"woocommerce unreachable: {type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError as exc:
                raise PlatformUnavailable("woocommerce: answer is not JSON") from exc
        code, message = _error(response)
        if status == 429 or status >= 500:
            raise PlatformUnavailable(f"woocommerce: {status} {code}".strip())
        if status in (401, 403):
            raise StoreWideRefusal(safe_reason(f"woocommerce: {status} {code}: {message}"))
        if status == 404 and code == "rest_no_route":
            # WooCommerce (or its REST API) is not installed at that address any more.
            raise StoreWideRefusal("woocommerce: 404 rest_no_route (is WooCommerce installed at site_url?)")
        if code == ALREADY_EXISTS:
            raise DuplicateCode(message)
        raise PlatformRefused(safe_reason(f"woocommerce: {status} {code}: {message}"))

    async def find_coupon(self, code: str) -> str | None:
        found = await self.request("GET", "coupons", params={"code": code})
        for coupon in found if isinstance(found, list) else []:
            if str(coupon.get("code", "")).lower() == code.lower():
                return str(coupon.get("id"))
        return None

    async def ensure_coupon(self, order: CouponOrder, *, first_try: bool = False) -> Confirmed:
        """Looked up first (a retry after a crash finds it), created when absent; a duplicate answer means
        it was created meanwhile, so it is looked up, never created twice. A `first_try` (no earlier try can
        have made it) skips the first look-up: the site refuses an existing code
        (`woocommerce_rest_coupon_code_already_exists`), which is found then."""
        if not first_try:
            found = await self.find_coupon(order.code)
            if found is not None:
                return Confirmed(found, created=False)
        if not order.email:
            # email_restrictions is what makes the code this customer's alone.
            raise PlatformRefused("woocommerce: a coupon for a customer without an email")
        try:
            created = await self.request("POST", "coupons", json=coupon_body(order))
        except DuplicateCode:
            found = await self.find_coupon(order.code)
            if found is None:
                raise PlatformUnavailable("woocommerce: code reported as existing but not found") from None
            return Confirmed(found, created=False)
        return Confirmed(str(created.get("id")) if isinstance(created, dict) else None, created=True)

    async def update_consent(self, customer_id: str, meta_key: str, *, subscribed: bool) -> None:
        if not customer_id.isdigit():
            raise PlatformRefused("woocommerce: the customer has no account on the site")
        await self.request(
            "PUT",
            f"customers/{customer_id}",
            json={"meta_data": [{"key": meta_key, "value": "yes" if subscribed else "no"}]},
        )

    async def webhooks(self) -> dict[str, str]:
        """topic -> delivery URL of the site's active webhooks."""
        found = await self.request("GET", "webhooks", params={"per_page": "100"})
        return {
            str(w.get("topic")): str(w.get("delivery_url"))
            for w in (found if isinstance(found, list) else [])
            if w.get("status") == "active"
        }

    async def create_webhook(self, topic: str, delivery_url: str, secret: str, name: str) -> None:
        await self.request(
            "POST",
            "webhooks",
            json={
                "name": name,
                "topic": topic,
                "delivery_url": delivery_url,
                "secret": secret,
                "status": "active",
            },
        )


class DuplicateCode(PlatformRefused):
    def __init__(self, message: str) -> None:
        super().__init__(f"woocommerce: {ALREADY_EXISTS}: {message}")


def coupon_body(order: CouponOrder) -> dict[str, Any]:
    """The coupon for one customer's email, single use, expiring with ours (GMT, as the API documents)."""
    body: dict[str, Any] = {
        "code": order.code,
        "description": order.title,
        "usage_limit": 1,
        "usage_limit_per_user": 1,
        "email_restrictions": [order.email] if order.email else [],
        "date_expires_gmt": order.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if order.kind == CouponKind.PERCENT:
        return body | {"discount_type": "percent", "amount": f"{order.value.normalize():f}"}
    if order.kind == CouponKind.FREE_SHIPPING:
        return body | {"discount_type": "fixed_cart", "amount": "0", "free_shipping": True}
    return body | {"discount_type": "fixed_cart", "amount": f"{order.value:.2f}"}


def _error(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("code", "")), str(body.get("message", ""))


def gmt(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
