"""The Shopify payload fields that shopify_reader.read_body decodes a raw body into, as msgspec Structs.

Decoding a body into them skips the fields no payload model reads (an order's body holds about 60, with
addresses, taxes and fulfilments) instead of building Python objects for them. Every field is Any (the
reader checks the types exactly as it checks a parsed dict's) and UNSET when absent, so
`msgspec.to_builtins` gives the parsed body's dict less the fields nobody reads. Each Struct holds the
fields of one payload model of shopify.py, by the same names and in the same order (`_Order` and `_Checkout`
look alike because ShopifyOrder and ShopifyCheckout do); tests/unit/test_shopify_reader_equivalence.py keeps
them so: a field left out here would be missing from every body the reader reads (the usual webhook), while
the models, which parse the whole body, still read it for the rest.

A module of their own, interpreted, while the reader is compiled by mypyc (shared/compiled.py): msgspec
decodes a body by a Struct's field annotations, which a compiled class definition keeps only in part
(shared/compiled.py), so these would not decode the same compiled.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType


class _Address(Struct):
    city: Any = UNSET
    country: Any = UNSET
    country_code: Any = UNSET


class _Consent(Struct):
    state: Any = UNSET
    consent_updated_at: Any = UNSET


class _Customer(Struct):
    id: Any = UNSET
    email: Any = UNSET
    first_name: Any = UNSET
    last_name: Any = UNSET
    phone: Any = UNSET
    locale: Any = UNSET
    created_at: Any = UNSET
    updated_at: Any = UNSET
    accepts_marketing: Any = UNSET
    accepts_marketing_updated_at: Any = UNSET
    email_marketing_consent: _Consent | UnsetType | None = UNSET
    default_address: _Address | UnsetType | None = UNSET


class _LineItem(Struct):
    id: Any = UNSET
    key: Any = UNSET
    product_id: Any = UNSET
    variant_id: Any = UNSET
    sku: Any = UNSET
    title: Any = UNSET
    quantity: Any = UNSET
    current_quantity: Any = UNSET
    price: Any = UNSET


class _DiscountCode(Struct):
    code: Any = UNSET


class _Order(Struct):
    id: Any = UNSET
    email: Any = UNSET
    created_at: Any = UNSET
    updated_at: Any = UNSET
    cancelled_at: Any = UNSET
    currency: Any = UNSET
    total_price: Any = UNSET
    customer_locale: Any = UNSET
    cart_token: Any = UNSET
    checkout_token: Any = UNSET
    line_items: list[_LineItem] | UnsetType = UNSET
    discount_codes: list[_DiscountCode] | UnsetType = UNSET
    customer: _Customer | UnsetType | None = UNSET
    shipping_address: _Address | UnsetType | None = UNSET
    billing_address: _Address | UnsetType | None = UNSET


class _Checkout(Struct):
    token: Any = UNSET
    cart_token: Any = UNSET
    email: Any = UNSET
    created_at: Any = UNSET
    updated_at: Any = UNSET
    completed_at: Any = UNSET
    currency: Any = UNSET
    total_price: Any = UNSET
    abandoned_checkout_url: Any = UNSET
    customer_locale: Any = UNSET
    buyer_accepts_marketing: Any = UNSET
    line_items: list[_LineItem] | UnsetType = UNSET
    customer: _Customer | UnsetType | None = UNSET
    shipping_address: _Address | UnsetType | None = UNSET
    billing_address: _Address | UnsetType | None = UNSET


class _Transaction(Struct):
    kind: Any = UNSET
    status: Any = UNSET
    amount: Any = UNSET
    currency: Any = UNSET


class _Refund(Struct):
    id: Any = UNSET
    order_id: Any = UNSET
    created_at: Any = UNSET
    transactions: list[_Transaction] | UnsetType = UNSET


DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    **dict.fromkeys(("orders/create", "orders/updated", "orders/cancelled"), msgspec.json.Decoder(_Order)),
    "refunds/create": msgspec.json.Decoder(_Refund),
    **dict.fromkeys(("checkouts/create", "checkouts/update"), msgspec.json.Decoder(_Checkout)),
    **dict.fromkeys(("customers/create", "customers/update"), msgspec.json.Decoder(_Customer)),
}
