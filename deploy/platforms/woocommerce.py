"""A WooCommerce REST API v3 test site (`<site>/wp-json/wc/v3/...`).

Shapes from the WooCommerce REST API documentation (woocommerce.github.io/woocommerce-rest-api-docs):
- Authentication: over HTTPS the consumer key and secret as HTTP Basic auth (this site, on loopback only, also
  takes it over plain http, like a development site). Wrong or missing credentials:
  401 `{"code": "woocommerce_rest_cannot_view", "message": "Sorry, you cannot list resources.",
  "data": {"status": 401}}` (`..._cannot_create` for POST, `..._cannot_edit` for PUT). A read-only key may
  not write (401 as well).
- Coupons: `GET /coupons?code=` (a list), `POST /coupons` (201 with the coupon: id, code, amount,
  discount_type percent | fixed_cart | fixed_product, date_expires_gmt, usage_limit, usage_limit_per_user,
  email_restrictions, free_shipping...). A code the site has: 400
  `woocommerce_rest_coupon_code_already_exists`
  "The coupon code already exists". Codes are stored lower-case, as WooCommerce does (wc_format_coupon_code).
- Customers: `PUT /customers/<id>` with `meta_data: [{key, value}]`; unknown id: 400
  `woocommerce_rest_invalid_id` "Invalid resource ID.".
- Webhooks: `GET /webhooks`, `POST /webhooks` {name, topic, delivery_url, secret, status}.
- An unknown route: 404 `{"code": "rest_no_route", ...}` (WordPress REST API).
`/_test/...` routes are this site's own controls (state for tests and the demo; a checkout applying a code).
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deploy.platforms.server import hold


@dataclass
class SiteState:
    key: str = "ck_demo_woo_key"
    secret: str = "cs_demo_woo_secret"  # noqa: S105 (the development site's key)
    read_only: bool = False
    coupons: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-cased code -> coupon
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> customer (meta_data)
    auto_customers: bool = True  # any numeric id exists (the demo's simulated customers)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    # Seconds to hold the answer after a coupon is created (0 again lets it go): a test kills the caller.
    stall_after_create: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 500

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


def _error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "data": {"status": status}}, status_code=status)


_CANNOT = {
    "GET": ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources."),
    "POST": ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."),
    "PUT": ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."),
}


def create_app(state: SiteState | None = None) -> FastAPI:
    site = state or SiteState()
    app = FastAPI(title="WooCommerce REST API test site", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.site = site
    base = "/wp-json/wc/v3"

    def authorised(request: Request) -> JSONResponse | None:
        with site.lock:
            if site.fail_next:
                return _error("internal_server_error", "Internal Server Error", site.fail_next.pop(0))
        header = request.headers.get("Authorization", "")
        presented = ""
        if header.startswith("Basic "):
            try:
                presented = base64.b64decode(header[6:]).decode()
            except ValueError:
                presented = ""
        code, message = _CANNOT.get(request.method, _CANNOT["GET"])
        if presented != f"{site.key}:{site.secret}":
            return _error(code, message, 401)
        if site.read_only and request.method != "GET":
            return _error(code, message, 401)
        site.calls.append(f"{request.method} {request.url.path.removeprefix(base)}")
        return None

    @app.get(base + "/coupons")
    async def list_coupons(request: Request, code: str | None = None) -> JSONResponse:
        if (denied := authorised(request)) is not None:
            return denied
        with site.lock:
            found = [c for k, c in site.coupons.items() if code is None or k == code.strip().lower()]
        return JSONResponse(found)

    @app.post(base + "/coupons")
    async def create_coupon(request: Request) -> JSONResponse:
        if (denied := authorised(request)) is not None:
            return denied
        body = await request.json()
        code = str(body.get("code") or "").strip().lower()
        if not code:
            return _error("rest_missing_callback_param", "Missing parameter(s): code", 400)
        discount_type = body.get("discount_type", "fixed_cart")
        if discount_type not in ("percent", "fixed_cart", "fixed_product"):
            return _error(
                "rest_invalid_param",
                "Invalid parameter(s): discount_type",
                400,
            )
        with site.lock:
            if code in site.coupons:
                return _error(
                    "woocommerce_rest_coupon_code_already_exists", "The coupon code already exists", 400
                )
            coupon = {
                "id": site.new_id(),
                "code": code,
                "amount": str(body.get("amount", "0")),
                "date_created_gmt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "discount_type": discount_type,
                "description": str(body.get("description", "")),
                "date_expires_gmt": body.get("date_expires_gmt"),
                "usage_count": 0,
                "individual_use": bool(body.get("individual_use", False)),
                "usage_limit": body.get("usage_limit"),
                "usage_limit_per_user": body.get("usage_limit_per_user"),
                "free_shipping": bool(body.get("free_shipping", False)),
                "email_restrictions": [str(e).lower() for e in body.get("email_restrictions") or []],
                "used_by": [],
                "meta_data": [],
            }
            site.coupons[code] = coupon
            stall = site.stall_after_create
        if stall:
            await hold(stall, lambda: site.stall_after_create > 0)
        return JSONResponse(coupon, status_code=201)

    @app.put(base + "/customers/{customer_id}")
    async def update_customer(customer_id: str, request: Request) -> JSONResponse:
        if (denied := authorised(request)) is not None:
            return denied
        body = await request.json()
        with site.lock:
            customer = site.customers.get(customer_id)
            if customer is None and site.auto_customers and customer_id.isdigit():
                customer = site.customers.setdefault(customer_id, {"id": int(customer_id), "meta_data": []})
            if customer is None:
                return _error("woocommerce_rest_invalid_id", "Invalid resource ID.", 400)
            for item in body.get("meta_data") or []:
                meta = [m for m in customer["meta_data"] if m["key"] != item.get("key")]
                meta.append({"id": site.new_id(), "key": item.get("key"), "value": item.get("value")})
                customer["meta_data"] = meta
        return JSONResponse(customer)

    @app.get(base + "/webhooks")
    async def list_webhooks(request: Request) -> JSONResponse:
        if (denied := authorised(request)) is not None:
            return denied
        with site.lock:
            return JSONResponse([{k: v for k, v in w.items() if k != "secret"} for w in site.webhooks])

    @app.post(base + "/webhooks")
    async def create_webhook(request: Request) -> JSONResponse:
        if (denied := authorised(request)) is not None:
            return denied
        body = await request.json()
        if not body.get("topic") or not body.get("delivery_url"):
            return _error("rest_missing_callback_param", "Missing parameter(s): topic, delivery_url", 400)
        with site.lock:
            hook = {
                "id": site.new_id(),
                "name": body.get("name", ""),
                "status": body.get("status", "active"),
                "topic": body["topic"],
                "delivery_url": body["delivery_url"],
                "secret": body.get("secret", ""),
            }
            site.webhooks.append(hook)
        return JSONResponse({k: v for k, v in hook.items() if k != "secret"}, status_code=201)

    @app.api_route(base + "/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def no_route(rest: str) -> JSONResponse:
        return _error("rest_no_route", "No route was found matching the URL and request method.", 404)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_test/state")
    async def state_view() -> dict[str, Any]:
        with site.lock:
            return {"coupons": list(site.coupons.values()), "customers": site.customers, "calls": site.calls}

    @app.post("/_test/checkout")
    async def checkout(request: Request) -> JSONResponse:
        """Apply a code as WooCommerce's cart would: it must exist, be this email's, in date, not used up."""
        body = await request.json()
        code, email = str(body.get("code", "")).lower(), str(body.get("email", "")).lower()
        with site.lock:
            coupon = site.coupons.get(code)
            if coupon is None:
                return JSONResponse({"accepted": False, "reason": f'Coupon "{code}" does not exist!'}, 422)
            if coupon["email_restrictions"] and email not in coupon["email_restrictions"]:
                return JSONResponse(
                    {"accepted": False, "reason": "Sorry, this coupon is not valid for you."}, 422
                )
            expires = coupon.get("date_expires_gmt")
            if expires and datetime.fromisoformat(expires).replace(tzinfo=UTC) < datetime.now(UTC):
                return JSONResponse({"accepted": False, "reason": "This coupon has expired."}, 422)
            if coupon["usage_limit"] is not None and coupon["usage_count"] >= coupon["usage_limit"]:
                return JSONResponse(
                    {"accepted": False, "reason": "Coupon usage limit has been reached."}, 422
                )
            coupon["usage_count"] += 1
            coupon["used_by"].append(email)
        return JSONResponse({"accepted": True})

    return app
