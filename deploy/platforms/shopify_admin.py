"""A Shopify Admin GraphQL API test shop (POST /admin/api/<version>/graphql.json).

It answers the operations the notifier and `stores connect` use, with the request and response shapes of
Shopify's 2025-10 reference:
- auth: `X-Shopify-Access-Token`; a wrong token is HTTP 401 with `{"errors": "[API] Invalid API key or access
  token (unrecognized login or wrong password)"}` (shopify.dev/docs/api/usage/authentication#errors).
- rate limit: calculated query cost in a leaky bucket; every answer carries `extensions.cost`
  {requestedQueryCost, actualQueryCost, throttleStatus {maximumAvailable, currentlyAvailable, restoreRate}};
  over the limit the answer is `errors: [{message: "Throttled", extensions: {code: "THROTTLED"}}]`
  without data (shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits). Mutations cost 10 points.
- scopes: a field the token's scopes do not allow is `errors: [{extensions: {code: "ACCESS_DENIED"}}]`.
- discountCodeBasicCreate / discountCodeFreeShippingCreate: input `basicCodeDiscount` /
  `freeShippingCodeDiscount` (DiscountCodeBasicInput: title, code, startsAt, endsAt, context or the deprecated
  customerSelection, customerGets {value {percentage | discountAmount {amount appliesOnEachItem}}, items},
  appliesOncePerCustomer, usageLimit, combinesWith); returns `codeDiscountNode {id}` and
  `userErrors [{field, code, message}]` (DiscountUserError; a code in use is code TAKEN).
- codeDiscountNodeByCode(code): the DiscountCodeNode or null; codes are case-insensitive.
- storeCreditAccountCredit(id, creditInput {creditAmount {amount currencyCode}, expiresAt}): creates the
  account when the customer has none; returns storeCreditAccountTransaction and userErrors.
- customerEmailMarketingConsentUpdate(input {customerId, emailMarketingConsent {marketingState,
  marketingOptInLevel, consentUpdatedAt}}): only SUBSCRIBED, UNSUBSCRIBED and PENDING may be set.
- currentAppInstallation.accessScopes, webhookSubscriptions, webhookSubscriptionCreate(topic,
  webhookSubscription {uri, format}).

The operation is recognised by its root field (this shop does not implement GraphQL in general); inputs come
from `variables`, as the notifier always sends them. `/_test/...` routes are this shop's own controls.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deploy.platforms.server import hold

MUTATION_COST = 10
QUERY_COST = 2
ALL_SCOPES = frozenset(
    {
        "read_customers",
        "write_customers",
        "read_discounts",
        "write_discounts",
        "read_orders",
        "read_store_credit_account_transactions",
        "write_store_credit_account_transactions",
    }
)
# Which scope each root field needs (as each field's reference page says under "Requires").
NEEDS = {
    "codeDiscountNodeByCode": "read_discounts",
    "discountCodeBasicCreate": "write_discounts",
    "discountCodeFreeShippingCreate": "write_discounts",
    "storeCreditAccountCredit": "write_store_credit_account_transactions",
    "customerEmailMarketingConsentUpdate": "write_customers",
    "customers": "read_customers",
    "customer": "read_customers",
}
_ROOT = re.compile(
    r"(?:query|mutation)\b[^{]*\{\s*([A-Za-z_][A-Za-z0-9_]*)|^\s*\{\s*([A-Za-z_][A-Za-z0-9_]*)"
)


@dataclass
class Discount:
    id: str
    code: str
    title: str
    kind: str  # percentage | amount | free_shipping
    value: str
    starts_at: str
    ends_at: str | None
    customers: list[str]
    usage_limit: int | None
    once_per_customer: bool
    combines_with: dict[str, bool]
    used: list[str] = field(default_factory=list)


@dataclass
class ShopState:
    token: str = "demo-admin-token"  # noqa: S105 (the documented development token)
    scopes: set[str] = field(default_factory=lambda: set(ALL_SCOPES))
    maximum: float = 1000.0
    restore_rate: float = 50.0
    available: float = 1000.0
    refilled_at: float = field(default_factory=time.monotonic)
    # None: any numeric customer id exists (the demo's simulated customers); a set: only these do.
    customers: set[str] | None = None
    emails: dict[str, str] = field(default_factory=dict)  # email -> customer id
    discounts: dict[str, Discount] = field(default_factory=dict)  # upper-cased code -> discount
    credits: list[dict[str, Any]] = field(default_factory=list)
    consent: dict[str, dict[str, Any]] = field(default_factory=dict)  # customer gid -> consent state
    webhooks: dict[str, str] = field(default_factory=dict)  # topic -> uri
    calls: list[str] = field(default_factory=list)  # root fields, in order
    throttled: int = 0  # THROTTLED answers given
    # Fault injection for tests: HTTP statuses to answer next; seconds to hold the answer after a create.
    fail_next: list[int] = field(default_factory=list)
    stall_after_create: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 1000

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def take(self, cost: float) -> bool:
        now = time.monotonic()
        self.available = min(self.maximum, self.available + (now - self.refilled_at) * self.restore_rate)
        self.refilled_at = now
        if self.available < cost:
            return False
        self.available -= cost
        return True

    def knows(self, gid: str) -> bool:
        match = re.fullmatch(r"gid://shopify/Customer/(\d+)", gid)
        if match is None:
            return False
        return self.customers is None or match.group(1) in self.customers

    def snapshot(self) -> dict[str, Any]:
        return {
            "discounts": [d.__dict__ for d in self.discounts.values()],
            "credits": self.credits,
            "consent": self.consent,
            "webhooks": self.webhooks,
            "calls": self.calls,
        }


def create_app(state: ShopState | None = None) -> FastAPI:
    shop = state or ShopState()
    app = FastAPI(title="Shopify Admin API test shop", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.shop = shop

    @app.post("/admin/api/{version}/graphql.json")
    async def graphql(version: str, request: Request) -> JSONResponse:
        if request.headers.get("X-Shopify-Access-Token") != shop.token:
            return JSONResponse(
                {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"},
                status_code=401,
            )
        try:
            body = await request.json()
            query = str(body["query"])
            variables = body.get("variables") or {}
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"errors": [{"message": "Bad Request"}]}, status_code=400)
        match = _ROOT.search(query)
        root = (match.group(1) or match.group(2)) if match else ""
        mutation = query.lstrip().startswith("mutation")
        cost = MUTATION_COST if mutation else QUERY_COST
        with shop.lock:
            if shop.fail_next:
                status = shop.fail_next.pop(0)
                return JSONResponse({"errors": "Internal Server Error"}, status_code=status)
            if not shop.take(cost):
                shop.throttled += 1
                return JSONResponse(_throttled(shop, cost))
            shop.calls.append(root)
            needed = NEEDS.get(root)
            if needed is not None and needed not in shop.scopes:
                return JSONResponse(_access_denied(shop, root, needed, cost))
            handler = HANDLERS.get(root)
            if handler is None:
                return JSONResponse(
                    {
                        "errors": [
                            {
                                "message": f"Field '{root}' doesn't exist on type 'QueryRoot'",
                                "extensions": {"code": "undefinedField"},
                            }
                        ]
                    }
                )
            data = handler(shop, variables)
            stall = (
                shop.stall_after_create
                if root.endswith("Create") or root == "storeCreditAccountCredit"
                else 0
            )
        if stall:
            # The discount exists now; the answer is late (a test kills the caller meanwhile). Setting
            # stall_after_create back to 0 lets a held answer go.
            await hold(stall, lambda: shop.stall_after_create > 0)
        return JSONResponse({"data": {root: data}, "extensions": _cost(shop, cost)})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_test/state")
    async def state_view() -> dict[str, Any]:
        with shop.lock:
            return shop.snapshot()

    @app.post("/_test/checkout")
    async def checkout(request: Request) -> JSONResponse:
        """A customer applies a code at checkout: accepted only as Shopify would (exists, theirs, in date,
        not used up); then it counts as used."""
        body = await request.json()
        code, customer = str(body.get("code", "")), str(body.get("customer_id", ""))
        with shop.lock:
            reason = redeem(shop, code, f"gid://shopify/Customer/{customer}", datetime.now(UTC))
        if reason:
            return JSONResponse({"accepted": False, "reason": reason}, status_code=422)
        return JSONResponse({"accepted": True})

    return app


def redeem(shop: ShopState, code: str, customer: str, now: datetime) -> str | None:
    discount = shop.discounts.get(code.strip().upper())
    if discount is None:
        return "Enter a valid discount code"
    if discount.customers and customer not in discount.customers:
        return "This discount code is not valid for this customer"
    if datetime.fromisoformat(discount.starts_at.replace("Z", "+00:00")) > now:
        return "This discount code is not active yet"
    if discount.ends_at and datetime.fromisoformat(discount.ends_at.replace("Z", "+00:00")) < now:
        return "This discount code has expired"
    if discount.usage_limit is not None and len(discount.used) >= discount.usage_limit:
        return "This discount code has reached its usage limit"
    if discount.once_per_customer and customer in discount.used:
        return "This discount code has already been used"
    discount.used.append(customer)
    return None


def _cost(shop: ShopState, cost: int) -> dict[str, Any]:
    return {
        "cost": {
            "requestedQueryCost": cost,
            "actualQueryCost": cost,
            "throttleStatus": {
                "maximumAvailable": shop.maximum,
                "currentlyAvailable": round(shop.available, 1),
                "restoreRate": shop.restore_rate,
            },
        }
    }


def _throttled(shop: ShopState, cost: int) -> dict[str, Any]:
    extensions = _cost(shop, cost)
    extensions["cost"]["actualQueryCost"] = None
    return {
        "errors": [
            {
                "message": "Throttled",
                "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                },
            }
        ],
        "extensions": extensions,
    }


def _access_denied(shop: ShopState, root: str, scope: str, cost: int) -> dict[str, Any]:
    return {
        "errors": [
            {
                "message": f"Access denied for {root} field. Required access: `{scope}` access scope.",
                "extensions": {
                    "code": "ACCESS_DENIED",
                    "documentation": "https://shopify.dev/api/usage/access-scopes",
                    "requiredAccess": f"`{scope}` access scope.",
                },
            }
        ],
        "data": {root: None},
        "extensions": _cost(shop, cost),
    }


def _user_error(path: list[str], code: str, message: str) -> dict[str, Any]:
    return {"field": path, "code": code, "message": message}


def _create_discount(
    shop: ShopState, variables: dict[str, Any], arg: str, kind: str | None
) -> dict[str, Any]:
    given = variables.get(arg) or {}
    errors: list[dict[str, Any]] = []
    code = str(given.get("code") or "")
    if not code:
        errors.append(_user_error([arg, "code"], "BLANK", "Code can't be blank"))
    if not given.get("title"):
        errors.append(_user_error([arg, "title"], "BLANK", "Title can't be blank"))
    if code and code.upper() in shop.discounts:
        errors.append(
            _user_error([arg, "code"], "TAKEN", "Code must be unique. Please try a different code.")
        )
    context = given.get("context") or {}
    selection = given.get("customerSelection") or {}
    customers = list(((context.get("customers") or selection.get("customers") or {}).get("add")) or [])
    everyone = bool(context.get("all") or selection.get("all"))
    if not customers and not everyone:
        errors.append(_user_error([arg, "context"], "BLANK", "Context can't be blank"))
    for gid in customers:
        if not shop.knows(str(gid)):
            errors.append(
                _user_error([arg, "context", "customers", "add"], "INVALID", "Customer does not exist")
            )
    starts, ends = given.get("startsAt"), given.get("endsAt")
    if not starts:
        errors.append(_user_error([arg, "startsAt"], "BLANK", "Starts at can't be blank"))
    if starts and ends and _parse(ends) <= _parse(starts):
        errors.append(_user_error([arg, "endsAt"], "INVALID", "Ends at needs to be after starts_at"))
    value = ""
    if kind is None:  # basic: percentage or fixed amount
        gets = ((given.get("customerGets") or {}).get("value")) or {}
        if "percentage" in gets:
            kind, value = "percentage", str(gets["percentage"])
            if not 0 < float(gets["percentage"]) <= 1:
                errors.append(
                    _user_error(
                        [arg, "customerGets", "value", "percentage"],
                        "VALUE_OUTSIDE_RANGE",
                        "Value must be between 0.0 and 1.0",
                    )
                )
        elif "discountAmount" in gets:
            kind, value = "amount", str((gets["discountAmount"] or {}).get("amount"))
            try:
                if Decimal(value) <= 0:
                    raise InvalidOperation
            except InvalidOperation:
                errors.append(
                    _user_error(
                        [arg, "customerGets", "value", "discountAmount", "amount"],
                        "INVALID",
                        "Value must be greater than 0",
                    )
                )
        else:
            errors.append(_user_error([arg, "customerGets", "value"], "BLANK", "Value can't be blank"))
    if errors:
        return {"codeDiscountNode": None, "userErrors": errors}
    node_id = f"gid://shopify/DiscountCodeNode/{shop.new_id()}"
    shop.discounts[code.upper()] = Discount(
        id=node_id,
        code=code,
        title=str(given["title"]),
        kind=kind or "free_shipping",
        value=value,
        starts_at=str(starts),
        ends_at=str(ends) if ends else None,
        customers=[str(c) for c in customers],
        usage_limit=given.get("usageLimit"),
        once_per_customer=bool(given.get("appliesOncePerCustomer")),
        combines_with=dict(given.get("combinesWith") or {}),
    )
    return {"codeDiscountNode": {"id": node_id}, "userErrors": []}


def _basic(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any]:
    return _create_discount(shop, variables, "basicCodeDiscount", None)


def _free_shipping(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any]:
    return _create_discount(shop, variables, "freeShippingCodeDiscount", "free_shipping")


def _by_code(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any] | None:
    found = shop.discounts.get(str(variables.get("code", "")).upper())
    return (
        {"id": found.id, "codeDiscount": {"title": found.title, "codes": {"nodes": [{"code": found.code}]}}}
        if found
        else None
    )


def _customers(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any]:
    match = re.search(r'email:"?([^"\s]+)"?', str(variables.get("query", "")))
    found = shop.emails.get(match.group(1).lower()) if match else None
    return {"nodes": [{"id": f"gid://shopify/Customer/{found}"}] if found else []}


def _credit(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any]:
    owner = str(variables.get("id", ""))
    given = variables.get("creditInput") or {}
    amount = (given.get("creditAmount") or {}).get("amount")
    currency = (given.get("creditAmount") or {}).get("currencyCode")
    errors = []
    if not shop.knows(owner):
        errors.append(_user_error(["id"], "ACCOUNT_NOT_FOUND", "Store credit account does not exist."))
    try:
        if Decimal(str(amount)) <= 0:
            raise InvalidOperation
    except InvalidOperation:
        errors.append(
            _user_error(
                ["creditInput", "creditAmount", "amount"],
                "NEGATIVE_OR_ZERO_AMOUNT",
                "A positive amount must be used to credit a store credit account.",
            )
        )
    expires = given.get("expiresAt")
    if expires and _parse(expires) <= datetime.now(UTC):
        errors.append(
            _user_error(
                ["creditInput", "expiresAt"], "EXPIRES_AT_IN_PAST", "The expiry date must be in the future."
            )
        )
    if errors:
        return {"storeCreditAccountTransaction": None, "userErrors": errors}
    transaction = {
        "id": f"gid://shopify/StoreCreditAccountCreditTransaction/{shop.new_id()}",
        "owner": owner,
        "amount": {"amount": str(amount), "currencyCode": currency},
        "expiresAt": expires,
    }
    shop.credits.append(transaction)
    return {
        "storeCreditAccountTransaction": {k: transaction[k] for k in ("id", "amount", "expiresAt")},
        "userErrors": [],
    }


def _customer(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any] | None:
    owner = str(variables.get("id", ""))
    if not shop.knows(owner):
        return None
    mine = [{k: t[k] for k in ("id", "amount", "expiresAt")} for t in shop.credits if t["owner"] == owner]
    accounts = [{"id": f"{owner}/StoreCreditAccount", "transactions": {"nodes": mine}}] if mine else []
    return {"id": owner, "storeCreditAccounts": {"nodes": accounts}}


def _consent(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any]:
    given = variables.get("input") or {}
    customer = str(given.get("customerId", ""))
    consent = given.get("emailMarketingConsent") or {}
    state = consent.get("marketingState")
    if not shop.knows(customer):
        return {
            "customer": None,
            "userErrors": [_user_error(["input", "customerId"], "INVALID", "Customer not found")],
        }
    if state not in ("SUBSCRIBED", "UNSUBSCRIBED", "PENDING"):
        return {
            "customer": None,
            "userErrors": [
                _user_error(
                    ["input", "emailMarketingConsent", "marketingState"],
                    "INCLUSION",
                    "Marketing state is not included in the list",
                )
            ],
        }
    shop.consent[customer] = {
        "marketingState": state,
        "marketingOptInLevel": consent.get("marketingOptInLevel"),
        "consentUpdatedAt": consent.get("consentUpdatedAt"),
    }
    return {"customer": {"id": customer}, "userErrors": []}


def _scopes(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any]:
    return {"accessScopes": [{"handle": s} for s in sorted(shop.scopes)]}


def _webhooks(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": f"gid://shopify/WebhookSubscription/{i}", "topic": t, "uri": u}
            for i, (t, u) in enumerate(sorted(shop.webhooks.items()), 1)
        ]
    }


def _subscribe(shop: ShopState, variables: dict[str, Any]) -> dict[str, Any]:
    topic = str(variables.get("topic", ""))
    uri = str((variables.get("webhookSubscription") or {}).get("uri", ""))
    if not uri.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        return {
            "webhookSubscription": None,
            "userErrors": [
                {"field": ["webhookSubscription", "callbackUrl"], "message": "Address is invalid"}
            ],
        }
    if shop.webhooks.get(topic) == uri:
        return {
            "webhookSubscription": None,
            "userErrors": [
                {
                    "field": ["webhookSubscription", "callbackUrl"],
                    "message": "Address for this topic has already been taken",
                }
            ],
        }
    shop.webhooks[topic] = uri
    return {
        "webhookSubscription": {
            "id": f"gid://shopify/WebhookSubscription/{shop.new_id()}",
            "topic": topic,
            "uri": uri,
        },
        "userErrors": [],
    }


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


HANDLERS = {
    "discountCodeBasicCreate": _basic,
    "discountCodeFreeShippingCreate": _free_shipping,
    "codeDiscountNodeByCode": _by_code,
    "customers": _customers,
    "customer": _customer,
    "storeCreditAccountCredit": _credit,
    "customerEmailMarketingConsentUpdate": _consent,
    "currentAppInstallation": _scopes,
    "webhookSubscriptions": _webhooks,
    "webhookSubscriptionCreate": _subscribe,
}
