"""Shopify webhooks: signature check and translation to canonical events. Pure: no I/O, no clock.

Shopify signs the raw body with the app's webhook secret (HMAC-SHA256, base64) in X-Shopify-Hmac-Sha256,
and names the delivery with X-Shopify-Event-Id (the same id on every retry of one event).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, Field

from services.ingest.sources import deleted_orders, fitting, shopify_reader
from services.ingest.sources.base import (
    NOTHING_CHECKED,
    Checked,
    SignedSourceModel,
    hmac_sha256_base64,
    signature_matches,
)
from services.ingest.sources.fitting import LenientEmail, LenientLanguageTag
from shared.events import (
    SHOP_WIDE,
    TITLE_LENGTH,
    CartUpdated,
    CartUpdatedEvent,
    Customer,
    CustomerErased,
    CustomerErasedEvent,
    CustomerUpserted,
    CustomerUpsertedEvent,
    LineItem,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefunded,
    OrderRefundedEvent,
    Source,
    StorefrontEvent,
)
from shared.fields import OptionalEmail

ORDER_TOPICS = frozenset({"orders/create", "orders/updated"})
CHECKOUT_TOPICS = frozenset({"checkouts/create", "checkouts/update"})
CUSTOMER_TOPICS = frozenset({"customers/create", "customers/update"})
# Shopify's mandatory privacy webhooks: every app must answer them.
PRIVACY_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
# An order deleted from the admin (a test order, one paid by a manual method or imported by an app: Shopify
# Help Center, "Canceling, archiving and deleting orders"). Its payload is the order's id alone (the webhook
# reference's orders/delete example: `{"id": 450789469}`).
DELETED_TOPIC = "orders/delete"
HANDLED_TOPICS = (
    ORDER_TOPICS
    | CHECKOUT_TOPICS
    | CUSTOMER_TOPICS
    | PRIVACY_TOPICS
    | {
        "orders/cancelled",
        DELETED_TOPIC,
        "refunds/create",
    }
)


sign = hmac_sha256_base64
signature_is_valid = signature_matches


class _Model(SignedSourceModel):
    pass


class ShopifyAddress(_Model):
    city: str | None = None
    country: str | None = None
    country_code: str | None = None


class ShopifyMarketingConsent(_Model):
    state: str | None = None
    # "The customer's consent state reflects the consent record with the most recent consent_updated_at
    # date" (shopify.dev, CustomerEmailMarketingConsentState): the time the consent fact was said.
    consent_updated_at: AwareDatetime | None = None


class ShopifyCustomer(_Model):
    id: int
    email: LenientEmail = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    locale: LenientLanguageTag = None
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    accepts_marketing: bool | None = None
    # Before API 2022-04, when `accepts_marketing` last changed.
    accepts_marketing_updated_at: AwareDatetime | None = None
    email_marketing_consent: ShopifyMarketingConsent | None = None
    default_address: ShopifyAddress | None = None


class ShopifyLineItem(_Model):
    # Checkout line items have a string `key` instead of an `id`.
    id: int | None = None
    key: str | None = None
    product_id: int | None = None
    variant_id: int | None = None
    sku: str | None = None
    title: str | None = None
    quantity: Annotated[int, Field(ge=1)]
    # "The line item's quantity, minus the removed quantity" (REST Order, line_items): an order edit
    # removes units by lowering it and leaves `quantity` as ordered; since API 2024-07 it also leaves out
    # refunded units ("The number of units ordered, excluding refunded and removed units", GraphQL
    # LineItem.currentQuantity). Absent from checkouts and from payloads before order editing.
    current_quantity: Annotated[int, Field(ge=0)] | None = None
    price: Annotated[Decimal, Field(ge=0)]


class ShopifyDiscountCode(_Model):
    code: str


class ShopifyOrder(_Model):
    id: int
    email: LenientEmail = None
    created_at: AwareDatetime
    updated_at: AwareDatetime | None = None
    cancelled_at: AwareDatetime | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    total_price: Annotated[Decimal, Field(ge=0)]
    customer_locale: LenientLanguageTag = None
    cart_token: str | None = None
    checkout_token: str | None = None
    line_items: tuple[ShopifyLineItem, ...] = ()
    discount_codes: tuple[ShopifyDiscountCode, ...] = ()
    customer: ShopifyCustomer | None = None
    shipping_address: ShopifyAddress | None = None
    billing_address: ShopifyAddress | None = None


class ShopifyCheckout(_Model):
    token: str
    cart_token: str | None = None
    email: LenientEmail = None
    created_at: AwareDatetime
    updated_at: AwareDatetime | None = None
    completed_at: AwareDatetime | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    total_price: Annotated[Decimal, Field(ge=0)]
    abandoned_checkout_url: str | None = None
    customer_locale: LenientLanguageTag = None
    buyer_accepts_marketing: bool | None = None
    line_items: tuple[ShopifyLineItem, ...] = ()
    customer: ShopifyCustomer | None = None
    shipping_address: ShopifyAddress | None = None
    billing_address: ShopifyAddress | None = None


class ShopifyTransaction(_Model):
    kind: str
    status: str | None = None
    amount: Annotated[Decimal, Field(ge=0)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None


class ShopifyRefund(_Model):
    id: int
    order_id: int
    created_at: AwareDatetime
    transactions: tuple[ShopifyTransaction, ...] = ()


class ShopifyDeletedOrder(_Model):
    id: Annotated[int, Field(ge=1, le=2**63 - 1)]


class ShopifyPrivacyCustomer(_Model):
    id: int | None = None
    email: OptionalEmail = None
    phone: str | None = None


class ShopifyCustomerRedact(_Model):
    shop_domain: str
    customer: ShopifyPrivacyCustomer


class ShopifyShopRedact(_Model):
    shop_domain: str


def _accepts_marketing(customer: ShopifyCustomer) -> bool | None:
    # `email_marketing_consent` replaced `accepts_marketing` in API 2022-04; honour whichever is present.
    if customer.email_marketing_consent is not None and customer.email_marketing_consent.state is not None:
        return customer.email_marketing_consent.state == "subscribed"
    return customer.accepts_marketing


def _consent_at(customer: ShopifyCustomer) -> datetime | None:
    consent = customer.email_marketing_consent
    if consent is not None and consent.state is not None:
        return consent.consent_updated_at or customer.updated_at
    return customer.accepts_marketing_updated_at or customer.updated_at


def _customer(
    customer: ShopifyCustomer | None, *, email: str | None, locale: str | None, address: ShopifyAddress | None
) -> Customer:
    # The customer's own address says where they live; the order's shipping address may be a gift's.
    place = (customer.default_address if customer else None) or address
    if customer is None:
        return Customer(
            email=email,
            locale=locale,
            city=fitting.clipped(place.city) if place else None,
            country=fitting.clipped(place.country) if place else None,
        )
    return Customer(
        store_customer_id=str(customer.id),
        email=customer.email or email,
        phone=fitting.phone(customer.phone),
        first_name=fitting.clipped(customer.first_name),
        last_name=fitting.clipped(customer.last_name),
        locale=customer.locale or locale,
        city=fitting.clipped(place.city) if place else None,
        country=fitting.clipped(place.country) if place else None,
        accepts_marketing=_accepts_marketing(customer),
        # The signed times of these facts: the segmenter keeps a contact fact only if it is newer than the
        # one it holds, so a late or replayed webhook changes nothing.
        updated_at=customer.updated_at,
        consent_at=_consent_at(customer),
    )


def _line_items(items: tuple[ShopifyLineItem, ...]) -> tuple[LineItem, ...]:
    """What the customer has of the order now: a line an edit removed (or, since 2024-07, refunded) whole
    is left out, and one it lowered counts what is left."""
    return tuple(_line_item(i) for i in items if i.current_quantity != 0)


def _line_item(item: ShopifyLineItem) -> LineItem:
    held = item.quantity if item.current_quantity is None else item.current_quantity
    return LineItem(
        # Custom line items have no product; the line item id keeps them distinct.
        product_id=str(item.product_id) if item.product_id is not None else f"line:{item.id or item.key}",
        variant_id=str(item.variant_id) if item.variant_id is not None else None,
        sku=fitting.clipped(item.sku or None),
        title=fitting.clipped(item.title, TITLE_LENGTH),
        quantity=fitting.quantity(held),
        price=fitting.money(item.price),
    )


def to_canonical(
    topic: str,
    payload: Any,
    *,
    store_id: str,
    event_id: str,
    received_at: datetime,
    checked: Checked = NOTHING_CHECKED,
) -> StorefrontEvent | None:
    """Translate one webhook; None for a topic (or a payload) we acknowledge but do not use.

    Raises pydantic.ValidationError naming the field when the payload is not what the topic promises.
    `checked`: what the caller knows of the raw body (see sources.base.Checked).
    """
    if checked.nul_free and checked.surrogate_free and topic in shopify_reader.TOPICS:
        # The hand reader: the same event for a third of the cost (shopify_reader's docstring). What it
        # does not know, or would refuse, is decided by the models below, which word the 422.
        try:
            return shopify_reader.read(
                topic, payload, store_id=store_id, event_id=event_id, received_at=received_at
            )
        except (shopify_reader.Unusual, ValueError):
            pass
    return _by_models(
        topic, payload, store_id=store_id, event_id=event_id, received_at=received_at, checked=checked
    )


def _by_models(
    topic: str, payload: Any, *, store_id: str, event_id: str, received_at: datetime, checked: Checked
) -> StorefrontEvent | None:
    """to_canonical through the pydantic models alone: what the hand reader leaves to them."""
    common: dict[str, Any] = {
        "event_id": event_id,
        "store_id": store_id,
        "received_at": received_at,
        "source": Source.SHOPIFY,
    }
    if topic in ORDER_TOPICS:
        order = ShopifyOrder.model_validate(payload, context=checked)
        return _order_placed(order, common) if _names_someone(order) else None
    if topic == "orders/cancelled":
        order = ShopifyOrder.model_validate(payload, context=checked)
        if not _names_someone(order):
            return None
        return OrderRefundedEvent(
            **common,
            customer=_order_customer(order),
            occurred_at=order.cancelled_at or order.updated_at or received_at,
            payload=OrderRefunded(
                order_id=str(order.id),
                amount=fitting.money(order.total_price),
                currency=order.currency,
                cancelled=True,
            ),
        )
    if topic == DELETED_TOPIC:
        deleted = ShopifyDeletedOrder.model_validate(payload, context=checked)
        return deleted_orders.cancellation(deleted.id, common, received_at)
    if topic == "refunds/create":
        return _refund(ShopifyRefund.model_validate(payload, context=checked), common)
    if topic in CHECKOUT_TOPICS:
        return _cart_updated(ShopifyCheckout.model_validate(payload, context=checked), common)
    if topic in CUSTOMER_TOPICS:
        customer = ShopifyCustomer.model_validate(payload, context=checked)
        return CustomerUpsertedEvent(
            **common,
            customer=_customer(customer, email=None, locale=None, address=None),
            occurred_at=customer.updated_at or customer.created_at or received_at,
            payload=CustomerUpserted(created_at=customer.created_at),
        )
    if topic == "customers/redact":
        redact = ShopifyCustomerRedact.model_validate(payload, context=checked)
        who = redact.customer
        return CustomerErasedEvent(
            **common,
            customer=Customer(store_customer_id=str(who.id) if who.id is not None else None, email=who.email),
            occurred_at=received_at,
            payload=CustomerErased(scope="customer"),
        )
    if topic == "shop/redact":
        ShopifyShopRedact.model_validate(payload, context=checked)
        return CustomerErasedEvent(
            **common,
            customer=Customer(store_customer_id=SHOP_WIDE),
            occurred_at=received_at,
            payload=CustomerErased(scope="shop"),
        )
    # customers/data_request is answered by the store owner from our API; nothing flows downstream.
    return None


def body_to_canonical(
    topic: str,
    body: bytes,
    parse: Callable[[bytes], Any],
    *,
    store_id: str,
    event_id: str,
    received_at: datetime,
    checked: Checked = NOTHING_CHECKED,
) -> StorefrontEvent | None:
    """`to_canonical(topic, parse(body), ...)`, for the raw body: the usual webhook is read straight from
    its bytes (shopify_reader.read_body: 7 µs to decode an order's fields instead of 25 to parse the whole
    body); `parse` (the route's JSON parser, which words the 400) only for the rest. `checked` must be
    `Checked.body(body)`."""
    if checked.nul_free and checked.surrogate_free and topic in shopify_reader.TOPICS:
        try:
            return shopify_reader.read_body(
                topic, body, store_id=store_id, event_id=event_id, received_at=received_at
            )
        except (shopify_reader.Unusual, ValueError):
            pass
    # Straight to the models, not to_canonical: its reader would only refuse the parsed body again (it reads
    # the same fields), and without the checks above it is not tried at all.
    return _by_models(
        topic, parse(body), store_id=store_id, event_id=event_id, received_at=received_at, checked=checked
    )


def body_shop_matches(topic: str, payload: Any, shop_domain: str) -> bool:
    """Whether a privacy topic's signed body names the shop its X-Shopify-Shop-Domain header claims.

    The header is not signed: with one app secret shared by many shops (a public app), a genuine
    `shop/redact` of shop A with the header changed to B would erase B's customers. The body's
    `shop_domain` is covered by the signature, so it decides. Other topics carry no shop in the body."""
    if topic not in PRIVACY_TOPICS:
        return True
    claimed = payload.get("shop_domain") if isinstance(payload, dict) else None
    return isinstance(claimed, str) and claimed.strip().lower() == shop_domain.strip().lower()


def _names_someone(order: ShopifyOrder) -> bool:
    """Whether the order names a customer or an email. A point-of-sale sale to a walk-in shopper names
    neither: nobody the funnel could know again, so it is acknowledged and not produced, as an anonymous
    checkout is. A 422 would be retried for hours and count against the subscription (see fitting)."""
    return order.customer is not None or order.email is not None


def _order_customer(order: ShopifyOrder) -> Customer:
    return _customer(
        order.customer,
        email=order.email,
        locale=order.customer_locale,
        address=order.shipping_address or order.billing_address,
    )


def _order_placed(order: ShopifyOrder, common: dict[str, Any]) -> OrderPlacedEvent:
    # orders/updated maps to the same event: the segmenter counts an order id once, holds the content of the
    # version Shopify changed last (an order edit changes the lines and the total), and the update may carry
    # fresher customer details.
    return OrderPlacedEvent(
        **common,
        customer=_order_customer(order),
        occurred_at=order.created_at,
        payload=OrderPlaced(
            order_id=str(order.id),
            total=fitting.money(order.total_price),
            currency=order.currency,
            line_items=_line_items(order.line_items),
            cart_id=fitting.clipped(order.cart_token or order.checkout_token or None),
            discount_codes=tuple(fitting.clipped(d.code) for d in order.discount_codes if d.code),
            updated_at=order.updated_at,
        ),
    )


def _refund(refund: ShopifyRefund, common: dict[str, Any]) -> OrderRefundedEvent:
    # A refund names its order, not its customer: the segmenter resolves the customer from the order.
    money = [t for t in refund.transactions if t.kind == "refund" and t.status in (None, "success")]
    currencies = {t.currency for t in money if t.currency}
    return OrderRefundedEvent(
        **common,
        customer=Customer(placed_order_id=str(refund.order_id)),
        occurred_at=refund.created_at,
        payload=OrderRefunded(
            order_id=str(refund.order_id),
            amount=fitting.money(sum((t.amount for t in money), Decimal("0"))),
            currency=currencies.pop() if len(currencies) == 1 else "XXX",
        ),
    )


def _cart_updated(checkout: ShopifyCheckout, common: dict[str, Any]) -> CartUpdatedEvent | None:
    if checkout.customer is None and not checkout.email:
        # An anonymous checkout cannot be recovered by email; acknowledged, not produced.
        return None
    customer = _customer(
        checkout.customer,
        email=checkout.email,
        locale=checkout.customer_locale,
        address=checkout.shipping_address or checkout.billing_address,
    )
    if customer.accepts_marketing is None and checkout.buyer_accepts_marketing is not None:
        customer = customer.model_copy(
            update={
                "accepts_marketing": checkout.buyer_accepts_marketing,
                "consent_at": checkout.updated_at or checkout.created_at,
            }
        )
    return CartUpdatedEvent(
        **common,
        customer=customer,
        occurred_at=checkout.updated_at or checkout.created_at,
        payload=CartUpdated(
            cart_id=fitting.clipped(checkout.token),
            total=fitting.money(checkout.total_price),
            currency=checkout.currency,
            line_items=_line_items(checkout.line_items),
            recovery_url=fitting.url(checkout.abandoned_checkout_url),
            completed=checkout.completed_at is not None,
        ),
    )
