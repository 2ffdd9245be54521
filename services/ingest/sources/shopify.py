"""Shopify webhooks: signature check and translation to canonical events. Pure: no I/O, no clock.

Shopify signs the raw body with the app's webhook secret (HMAC-SHA256, base64) in X-Shopify-Hmac-Sha256,
and names the delivery with X-Shopify-Event-Id (the same id on every retry of one event).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events import (
    Customer,
    CustomerUpserted,
    CustomerUpsertedEvent,
    LineItem,
    OrderPlaced,
    OrderPlacedEvent,
    Source,
    StorefrontEvent,
)

HANDLED_TOPICS = frozenset({"orders/create", "customers/create", "customers/update"})


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def signature_is_valid(secret: str, body: bytes, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), presented.strip().encode())


class _Model(BaseModel):
    # Shopify adds fields over API versions; we read what we need and ignore the rest.
    model_config = ConfigDict(extra="ignore")


class ShopifyAddress(_Model):
    city: str | None = None
    country: str | None = None
    country_code: str | None = None


class ShopifyMarketingConsent(_Model):
    state: str | None = None


class ShopifyCustomer(_Model):
    id: int
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    locale: str | None = None
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    accepts_marketing: bool | None = None
    email_marketing_consent: ShopifyMarketingConsent | None = None
    default_address: ShopifyAddress | None = None


class ShopifyLineItem(_Model):
    id: int
    product_id: int | None = None
    variant_id: int | None = None
    sku: str | None = None
    title: str | None = None
    quantity: Annotated[int, Field(ge=1)]
    price: Annotated[Decimal, Field(ge=0)]


class ShopifyDiscountCode(_Model):
    code: str


class ShopifyOrder(_Model):
    id: int
    email: str | None = None
    created_at: AwareDatetime
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    total_price: Annotated[Decimal, Field(ge=0)]
    customer_locale: str | None = None
    cart_token: str | None = None
    checkout_token: str | None = None
    line_items: list[ShopifyLineItem] = []
    discount_codes: list[ShopifyDiscountCode] = []
    customer: ShopifyCustomer | None = None
    shipping_address: ShopifyAddress | None = None
    billing_address: ShopifyAddress | None = None


def _accepts_marketing(customer: ShopifyCustomer) -> bool | None:
    # `email_marketing_consent` replaced `accepts_marketing` in API 2022-04; honour whichever is present.
    if customer.email_marketing_consent is not None and customer.email_marketing_consent.state is not None:
        return customer.email_marketing_consent.state == "subscribed"
    return customer.accepts_marketing


def _customer(
    customer: ShopifyCustomer | None, *, email: str | None, locale: str | None, address: ShopifyAddress | None
) -> Customer:
    # The customer's own address says where they live; the order's shipping address may be a gift's.
    place = (customer.default_address if customer else None) or address
    if customer is None:
        return Customer(
            email=email, locale=locale, city=place and place.city, country=place and place.country
        )
    return Customer(
        store_customer_id=str(customer.id),
        email=customer.email or email,
        phone=customer.phone,
        first_name=customer.first_name,
        last_name=customer.last_name,
        locale=customer.locale or locale,
        city=place.city if place else None,
        country=place.country if place else None,
        accepts_marketing=_accepts_marketing(customer),
    )


def _line_item(item: ShopifyLineItem) -> LineItem:
    return LineItem(
        # Custom line items have no product; the line item id keeps them distinct.
        product_id=str(item.product_id) if item.product_id is not None else f"line:{item.id}",
        variant_id=str(item.variant_id) if item.variant_id is not None else None,
        sku=item.sku or None,
        title=item.title,
        quantity=item.quantity,
        price=item.price,
    )


def to_canonical(
    topic: str, payload: Any, *, store_id: str, event_id: str, received_at: datetime
) -> StorefrontEvent | None:
    """Translate one webhook; None for a topic we acknowledge but do not use.

    Raises pydantic.ValidationError naming the field when the payload is not what the topic promises.
    """
    common = {
        "event_id": event_id,
        "store_id": store_id,
        "received_at": received_at,
        "source": Source.SHOPIFY,
    }
    if topic == "orders/create":
        order = ShopifyOrder.model_validate(payload)
        return OrderPlacedEvent(
            **common,
            customer=_customer(
                order.customer,
                email=order.email,
                locale=order.customer_locale,
                address=order.shipping_address or order.billing_address,
            ),
            occurred_at=order.created_at,
            payload=OrderPlaced(
                order_id=str(order.id),
                total=order.total_price,
                currency=order.currency,
                line_items=tuple(_line_item(i) for i in order.line_items),
                cart_id=order.cart_token or order.checkout_token,
                discount_codes=tuple(d.code for d in order.discount_codes),
            ),
        )
    if topic in ("customers/create", "customers/update"):
        customer = ShopifyCustomer.model_validate(payload)
        return CustomerUpsertedEvent(
            **common,
            customer=_customer(customer, email=None, locale=None, address=None),
            occurred_at=customer.updated_at or customer.created_at or received_at,
            payload=CustomerUpserted(created_at=customer.created_at),
        )
    return None
