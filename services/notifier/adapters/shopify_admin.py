"""Shopify Admin GraphQL API client: discount codes, store credit, email marketing consent, webhooks.

Docs (API version pinned per store, default 2025-10):
- https://shopify.dev/docs/api/admin-graphql/2025-10/mutations/discountCodeBasicCreate
- https://shopify.dev/docs/api/admin-graphql/2025-10/queries/codeDiscountNodeByCode
- https://shopify.dev/docs/api/admin-graphql/2025-10/mutations/storeCreditAccountCredit
- https://shopify.dev/docs/api/admin-graphql/2025-10/mutations/customerEmailMarketingConsentUpdate
- https://shopify.dev/docs/api/admin-graphql/2025-10/mutations/webhookSubscriptionCreate
- https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits (calculated query cost, leaky bucket)

Rate limit: every response carries `extensions.cost.throttleStatus` (maximumAvailable, currentlyAvailable,
restoreRate). We keep that bucket per shop, reserve a query's cost from it before sending, and wait for it to
refill when it would not cover the next query, so a batch of coupons never bursts into THROTTLED. When Shopify
answers THROTTLED anyway (another app of the same shop does not share our view), we wait for the refill and
try again a few times, then give the message back to the sender as "platform unavailable".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
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
from shared.stores import DiscountCombination

Sleep = Callable[[float], Awaitable[None]]
# What we assume a query costs before Shopify tells us (mutations are 10 points; our queries are small).
MUTATION_COST = 10.0
QUERY_COST = 5.0
THROTTLED_RETRIES = 4
LONGEST_WAIT_SECONDS = 20.0
# Points kept back from an answer's currentlyAvailable, which may be rounded (see _observe).
ROUNDING = 1.0


@dataclass
class _Bucket:
    maximum: float = 100.0  # the Standard plan's 100 points/second bucket until Shopify tells us otherwise
    available: float = 100.0
    restore_rate: float = 100.0
    observed_at: float = 0.0

    def estimate(self, now: float) -> float:
        return min(self.maximum, self.available + (now - self.observed_at) * self.restore_rate)


def customer_gid(customer_id: str) -> str | None:
    """Our customer id is Shopify's numeric id for customers that came from Shopify."""
    return f"gid://shopify/Customer/{customer_id}" if customer_id.isdigit() else None


class ShopifyAdmin:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        url: str,
        token: str,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._url = url
        self._token = token
        self._sleep = sleep
        self._monotonic = monotonic
        self._bucket = _Bucket(observed_at=monotonic())
        self._lock = asyncio.Lock()
        # Cost reserved by calls Shopify has not answered yet: an answer's bucket does not include them.
        self._in_flight = 0.0
        # Calls numbered as they reserve, and the number of the latest whose bucket we took (see _observe).
        self._sent = 0
        self._seen = 0

    # -- transport ------------------------------------------------------------------------------------

    async def _reserve(self, cost: float) -> int:
        """Wait until the bucket holds `cost`, then take it (under a lock, so concurrent calls share it);
        return the call's number."""
        async with self._lock:
            now = self._monotonic()
            available = self._bucket.estimate(now)
            if available < cost:
                wait = min(LONGEST_WAIT_SECONDS, (cost - available) / max(self._bucket.restore_rate, 1.0))
                await self._sleep(wait)
                now = self._monotonic()
                available = self._bucket.estimate(now)
            self._bucket.available = max(0.0, available - cost)
            self._bucket.observed_at = now
            self._in_flight += cost
            self._sent += 1
            return self._sent

    def _observe(self, body: dict[str, Any], cost: float, call: int) -> None:
        self._in_flight = max(0.0, self._in_flight - cost)
        # Concurrent calls' answers can arrive in another order than they were sent: an earlier call's answer
        # coming after a later one's tells a bucket from before the later call took its points, and those are
        # no longer in flight, so taking it would count them as free again and send the next call into
        # THROTTLED (seen on a loaded machine). The later call's answer already told as much or less.
        if call < self._seen:
            return
        status = (((body.get("extensions") or {}).get("cost") or {}).get("throttleStatus")) or {}
        try:
            self._bucket = _Bucket(
                maximum=float(status["maximumAvailable"]),
                # Less a point: the figure may be rounded up (Shopify's are whole points).
                available=max(0.0, float(status["currentlyAvailable"]) - self._in_flight - ROUNDING),
                restore_rate=float(status["restoreRate"]),
                observed_at=self._monotonic(),
            )
        except (KeyError, TypeError, ValueError):
            return
        self._seen = call

    async def execute(
        self, query: str, variables: dict[str, Any], *, cost: float = QUERY_COST
    ) -> dict[str, Any]:
        """Run one GraphQL operation and return its `data`; raise PlatformUnavailable or PlatformRefused."""
        for attempt in range(THROTTLED_RETRIES + 1):
            call = await self._reserve(cost)
            try:
                body = await self._post(query, variables)
            except BaseException:
                self._in_flight = max(0.0, self._in_flight - cost)
                raise
            self._observe(body, cost, call)
            errors = body.get("errors") or []
            codes = {str((e.get("extensions") or {}).get("code", "")) for e in errors if isinstance(e, dict)}
            if "THROTTLED" in codes:
                requested = (
                    ((body.get("extensions") or {}).get("cost") or {}).get("requestedQueryCost")
                ) or cost
                cost = max(cost, float(requested))
                if attempt == THROTTLED_RETRIES:
                    raise PlatformUnavailable("shopify: THROTTLED", retry_after=timedelta(seconds=10))
                continue  # _reserve waits for the bucket to refill to this query's cost
            if "ACCESS_DENIED" in codes:
                raise StoreWideRefusal("shopify: access denied (a scope the app needs is missing)")
            if "INTERNAL_SERVER_ERROR" in codes:
                raise PlatformUnavailable("shopify: internal server error")
            if errors:
                messages = "; ".join(str(e.get("message", e)) for e in errors if isinstance(e, dict))
                raise PlatformRefused(safe_reason(f"shopify: {messages or errors}"))
            data = body.get("data")
            if not isinstance(data, dict):
                raise PlatformUnavailable("shopify: answer without data")
            return data
        raise AssertionError("unreachable")

    async def _post(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        headers = {"X-Shopify-Access-Token": self._token, "Content-Type": "application/json"}
        try:
            response = await self._http.post(
                self._url, json={"query": query, "variables": variables}, headers=headers
            )
        except httpx.HTTPError as exc:
            raise PlatformUnavailable(f"shopify unreachable: {type(exc).__name__}") from exc
        status = response.status_code
        if status == 401:
            raise StoreWideRefusal("shopify: 401 the access token is invalid or revoked")
        if status in (402, 403, 404, 423):
            # 402 frozen shop, 403 forbidden, 404 shop not found or app uninstalled, 423 locked shop.
            raise StoreWideRefusal(f"shopify: {status} the shop refuses the app")
        if status == 429 or status >= 500:
            raise PlatformUnavailable(f"shopify: {status}", retry_after=_retry_after(response))
        if status != 200:
            raise PlatformRefused(f"shopify: unexpected status {status}")
        try:
            body = response.json()
        except ValueError as exc:
            raise PlatformUnavailable("shopify: answer is not JSON") from exc
        if not isinstance(body, dict):
            raise PlatformUnavailable("shopify: answer is not a JSON object")
        return body

    # -- discount codes ---------------------------------------------------------------------------------

    async def find_discount(self, code: str) -> str | None:
        data = await self.execute(FIND_DISCOUNT, {"code": code})
        node = data.get("codeDiscountNodeByCode")
        return str(node["id"]) if isinstance(node, dict) and node.get("id") else None

    async def ensure_discount(
        self, order: CouponOrder, combines: DiscountCombination, *, first_try: bool = False
    ) -> Confirmed:
        """The code exists in the shop for this one customer: looked up first (a retry after a crash or a lost
        answer finds it), created only when absent, and looked up if Shopify says it is taken. A `first_try`
        (no earlier try can have made it) skips the first look-up: codes are unique in a shop, so a code
        there all the same is refused as TAKEN and found then."""
        if not first_try:
            found = await self.find_discount(order.code)
            if found is not None:
                return Confirmed(found, created=False)
        # A customer the shop does not know (known to us only through Segment, say) still gets a working
        # code: single use and unguessable, open to any buyer, as Klaviyo's unique codes are.
        gid = await self.find_customer(order.customer_id, order.email)
        mutation, payload_key, variables = discount_mutation(order, gid, combines)
        data = await self.execute(mutation, variables, cost=MUTATION_COST)
        payload = data.get(payload_key) or {}
        user_errors = payload.get("userErrors") or []
        if any(e.get("code") == "TAKEN" for e in user_errors):
            found = await self.find_discount(order.code)
            if found is not None:
                return Confirmed(found, created=False)
        if user_errors:
            raise PlatformRefused(safe_reason("shopify: " + describe_user_errors(user_errors)))
        node = payload.get("codeDiscountNode") or {}
        if not node.get("id"):
            raise PlatformUnavailable("shopify: discount created without an id")
        return Confirmed(str(node["id"]), created=True)

    async def find_customer(self, customer_id: str, email: str | None) -> str | None:
        """The customer's GID: our id when it is Shopify's, else looked up by email; None if unknown."""
        gid = customer_gid(customer_id)
        if gid is not None:
            return gid
        if email:
            data = await self.execute(FIND_CUSTOMER, {"query": f'email:"{email}"'})
            nodes = ((data.get("customers") or {}).get("nodes")) or []
            if nodes and nodes[0].get("id"):
                return str(nodes[0]["id"])
        return None

    async def customer_id(self, customer_id: str, email: str | None) -> str:
        gid = await self.find_customer(customer_id, email)
        if gid is None:
            raise PlatformRefused("shopify: the customer has no account in the shop")
        return gid

    # -- store credit -----------------------------------------------------------------------------------

    async def ensure_store_credit(self, order: CouponOrder) -> Confirmed:
        """Credit the customer's store credit account once: a credit of this amount expiring at this exact
        second is ours (the expiry is fixed when the coupon is issued), so a retry finds it and stops."""
        gid = await self.customer_id(order.customer_id, order.email)
        existing = await self._find_credit(gid, order)
        if existing is not None:
            return Confirmed(existing, created=False)
        variables = {
            "id": gid,
            "creditInput": {
                "creditAmount": {"amount": _money(order.value), "currencyCode": order.currency or "USD"},
                "expiresAt": _iso(order.expires_at),
            },
        }
        data = await self.execute(STORE_CREDIT, variables, cost=MUTATION_COST)
        payload = data.get("storeCreditAccountCredit") or {}
        user_errors = payload.get("userErrors") or []
        if user_errors:
            raise PlatformRefused(safe_reason("shopify: " + describe_user_errors(user_errors)))
        transaction = payload.get("storeCreditAccountTransaction") or {}
        if not transaction.get("id"):
            raise PlatformUnavailable("shopify: store credit without a transaction id")
        return Confirmed(str(transaction["id"]), created=True)

    async def _find_credit(self, gid: str, order: CouponOrder) -> str | None:
        data = await self.execute(FIND_CREDITS, {"id": gid})
        accounts = (((data.get("customer") or {}).get("storeCreditAccounts") or {}).get("nodes")) or []
        want_expiry = _iso(order.expires_at)
        for account in accounts:
            for tx in ((account.get("transactions") or {}).get("nodes")) or []:
                amount = (tx.get("amount") or {}).get("amount")
                if (
                    tx.get("expiresAt") is not None
                    and _same_second(str(tx["expiresAt"]), want_expiry)
                    and amount is not None
                    and Decimal(str(amount)) == order.value
                ):
                    return str(tx.get("id"))
        return None

    # -- consent ----------------------------------------------------------------------------------------

    async def update_consent(
        self, customer_id: str, email: str | None, *, subscribed: bool, changed_at: datetime
    ) -> None:
        gid = await self.customer_id(customer_id, email)
        consent: dict[str, Any] = {
            "marketingState": "SUBSCRIBED" if subscribed else "UNSUBSCRIBED",
            "consentUpdatedAt": _iso(changed_at),
        }
        if subscribed:
            consent["marketingOptInLevel"] = "SINGLE_OPT_IN"
        data = await self.execute(
            CONSENT_UPDATE,
            {"input": {"customerId": gid, "emailMarketingConsent": consent}},
            cost=MUTATION_COST,
        )
        user_errors = (data.get("customerEmailMarketingConsentUpdate") or {}).get("userErrors") or []
        if user_errors:
            raise PlatformRefused(safe_reason("shopify: " + describe_user_errors(user_errors)))

    # -- connection -------------------------------------------------------------------------------------

    async def access_scopes(self) -> set[str]:
        data = await self.execute(ACCESS_SCOPES, {})
        scopes = ((data.get("currentAppInstallation") or {}).get("accessScopes")) or []
        return {str(s.get("handle")) for s in scopes if isinstance(s, dict)}

    async def webhook_subscriptions(self) -> dict[str, str]:
        """topic -> callback URI of the app's webhook subscriptions."""
        data = await self.execute(LIST_WEBHOOKS, {})
        nodes = ((data.get("webhookSubscriptions") or {}).get("nodes")) or []
        return {str(n.get("topic")): str(n.get("uri") or "") for n in nodes if isinstance(n, dict)}

    async def subscribe(self, topic: str, uri: str) -> None:
        data = await self.execute(
            CREATE_WEBHOOK,
            {"topic": topic, "webhookSubscription": {"uri": uri, "format": "JSON"}},
            cost=MUTATION_COST,
        )
        user_errors = (data.get("webhookSubscriptionCreate") or {}).get("userErrors") or []
        if user_errors:
            raise PlatformRefused(safe_reason("shopify: " + describe_user_errors(user_errors)))


def discount_mutation(
    order: CouponOrder, customer: str | None, combines: DiscountCombination
) -> tuple[str, str, dict[str, Any]]:
    """The create mutation for this coupon: an amount-off code (percentage or fixed), or free shipping.
    Eligibility is the one customer (`context.customers.add`, which replaced the deprecated
    `customerSelection` in 2025-10) when the shop knows them, single use, once per customer, expiring with
    the coupon."""
    common: dict[str, Any] = {
        "title": order.title,
        "code": order.code,
        "startsAt": _iso(order.starts_at),
        "endsAt": _iso(order.expires_at),
        "context": {"customers": {"add": [customer]}} if customer else {"all": True},
        "appliesOncePerCustomer": True,
        "usageLimit": 1,
        "combinesWith": {
            "orderDiscounts": combines.order_discounts,
            "productDiscounts": combines.product_discounts,
            "shippingDiscounts": combines.shipping_discounts,
        },
    }
    if order.kind == CouponKind.FREE_SHIPPING:
        body = common | {"destination": {"all": True}}
        return CREATE_FREE_SHIPPING, "discountCodeFreeShippingCreate", {"freeShippingCodeDiscount": body}
    if order.kind == CouponKind.PERCENT:
        value: dict[str, Any] = {"percentage": float(order.value / 100)}
    else:  # fixed, and cashback where the store keeps it as a code
        value = {"discountAmount": {"amount": _money(order.value), "appliesOnEachItem": False}}
    body = common | {"customerGets": {"value": value, "items": {"all": True}}}
    return CREATE_BASIC, "discountCodeBasicCreate", {"basicCodeDiscount": body}


def describe_user_errors(errors: list[dict[str, Any]]) -> str:
    """Each userError by field, e.g. `basicCodeDiscount.endsAt: must be after starts_at`."""
    parts = []
    for error in errors:
        field = ".".join(str(f) for f in (error.get("field") or [])) or "(input)"
        parts.append(f"{field}: {error.get('message', error.get('code', 'refused'))}")
    return "; ".join(parts)


def _retry_after(response: httpx.Response) -> timedelta | None:
    try:
        return timedelta(seconds=float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def _same_second(a: str, b: str) -> bool:
    try:
        return int(datetime.fromisoformat(a.replace("Z", "+00:00")).timestamp()) == int(
            datetime.fromisoformat(b.replace("Z", "+00:00")).timestamp()
        )
    except ValueError:
        return False


FIND_DISCOUNT = """
query FindDiscount($code: String!) {
  codeDiscountNodeByCode(code: $code) { id }
}"""

FIND_CUSTOMER = """
query FindCustomer($query: String!) {
  customers(first: 1, query: $query) { nodes { id } }
}"""

CREATE_BASIC = """
mutation CreateDiscount($basicCodeDiscount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $basicCodeDiscount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}"""

CREATE_FREE_SHIPPING = """
mutation CreateFreeShipping($freeShippingCodeDiscount: DiscountCodeFreeShippingInput!) {
  discountCodeFreeShippingCreate(freeShippingCodeDiscount: $freeShippingCodeDiscount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}"""

STORE_CREDIT = """
mutation Credit($id: ID!, $creditInput: StoreCreditAccountCreditInput!) {
  storeCreditAccountCredit(id: $id, creditInput: $creditInput) {
    storeCreditAccountTransaction { id amount { amount currencyCode } expiresAt }
    userErrors { field code message }
  }
}"""

FIND_CREDITS = """
query Credits($id: ID!) {
  customer(id: $id) {
    storeCreditAccounts(first: 10) {
      nodes {
        id
        transactions(first: 100) {
          nodes { ... on StoreCreditAccountCreditTransaction { id amount { amount currencyCode } expiresAt } }
        }
      }
    }
  }
}"""

CONSENT_UPDATE = """
mutation Consent($input: CustomerEmailMarketingConsentUpdateInput!) {
  customerEmailMarketingConsentUpdate(input: $input) {
    customer { id }
    userErrors { field code message }
  }
}"""

ACCESS_SCOPES = """
query Scopes { currentAppInstallation { accessScopes { handle } } }"""

LIST_WEBHOOKS = """
query Webhooks { webhookSubscriptions(first: 100) { nodes { id topic uri } } }"""

CREATE_WEBHOOK = """
mutation Subscribe($topic: WebhookSubscriptionTopic!, $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}"""
