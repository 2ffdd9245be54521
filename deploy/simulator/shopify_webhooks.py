"""Storefront actions as Shopify webhooks (topic and JSON body), shaped like Shopify's own. Pure.

Shopify sends prices as strings and ids as integers; line items carry no category (Shopify's line items
have no product type, and ingest's mapper reads none), so categories reach the funnel through Segment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from deploy.simulator.actions import Action, CheckoutStarted, OrderPlaced, OrderRefunded, SignedUp
from deploy.simulator.catalog import BasketLine
from deploy.simulator.people import Shopper

VENDOR = "Loyalty Funnel Roasters"


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


def _money(value: object) -> str:
    return f"{value:.2f}"


def _address(shopper: Shopper) -> dict[str, Any]:
    return {
        "first_name": shopper.first_name,
        "last_name": shopper.last_name,
        "city": shopper.place.city,
        "country": shopper.place.country,
        "country_code": shopper.place.country_code,
    }


def _customer(shopper: Shopper, at: datetime) -> dict[str, Any]:
    consent = "subscribed" if shopper.accepts_marketing else "not_subscribed"
    return {
        "id": shopper.customer_id,
        "email": shopper.email,
        "first_name": shopper.first_name,
        "last_name": shopper.last_name,
        "phone": shopper.phone,
        "created_at": _time(at),
        "updated_at": _time(at),
        "state": "enabled",
        "verified_email": True,
        "tags": "",
        "email_marketing_consent": {
            "state": consent,
            "opt_in_level": "single_opt_in" if shopper.accepts_marketing else None,
            "consent_updated_at": _time(at) if shopper.accepts_marketing else None,
        },
        "default_address": {**_address(shopper), "default": True},
    }


def _line_items(lines: tuple[BasketLine, ...], first_id: int) -> list[dict[str, Any]]:
    return [
        {
            "id": first_id + i,
            "product_id": line.product.product_id,
            "variant_id": line.product.variant_id,
            "sku": line.product.sku,
            "title": line.product.title,
            "vendor": VENDOR,
            "quantity": line.quantity,
            "price": _money(line.product.price),
            "requires_shipping": True,
            "gift_card": False,
        }
        for i, line in enumerate(lines)
    ]


def shopify_webhook(action: Action, currency: str, shop_domain: str) -> tuple[str, dict[str, Any]]:
    """(X-Shopify-Topic, body) for an action Shopify knows about."""
    shopper = action.shopper
    if isinstance(action, SignedUp):
        return "customers/create", _customer(shopper, action.at)
    if isinstance(action, OrderPlaced):
        total = _money(action.total)
        return "orders/create", {
            "id": action.order_id,
            "name": f"#{action.order_id % 1_000_000}",
            "email": shopper.email,
            "created_at": _time(action.at),
            "processed_at": _time(action.at),
            "updated_at": _time(action.at),
            "currency": currency,
            "presentment_currency": currency,
            "total_price": total,
            "subtotal_price": total,
            "total_line_items_price": _money(action.subtotal),
            "total_tax": "0.00",
            "total_discounts": _money(action.discount),
            "financial_status": "paid",
            "customer_locale": shopper.place.locale,
            "checkout_token": action.cart_token,
            "source_name": "web",
            "line_items": _line_items(action.lines, action.order_id * 10),
            "discount_codes": (
                [{"code": action.discount_code, "amount": _money(action.discount), "type": "percentage"}]
                if action.discount_code
                else []
            ),
            "customer": _customer(shopper, action.at),
            "shipping_address": _address(shopper),
            "billing_address": _address(shopper),
        }
    if isinstance(action, CheckoutStarted):
        total = _money(action.total)
        return "checkouts/create", {
            "id": int(action.cart_token[:12], 16),
            "token": action.cart_token,
            "cart_token": action.cart_token,
            "email": shopper.email,
            "created_at": _time(action.at),
            "updated_at": _time(action.at),
            "completed_at": None,
            "currency": currency,
            "presentment_currency": currency,
            "total_price": total,
            "subtotal_price": total,
            "abandoned_checkout_url": f"https://{shop_domain}/checkouts/{action.cart_token}/recover",
            "customer_locale": shopper.place.locale,
            "buyer_accepts_marketing": shopper.accepts_marketing,
            "line_items": [
                # A checkout's line items have a string key instead of an id.
                {**{k: v for k, v in item.items() if k != "id"}, "key": f"{action.cart_token[:8]}-{i}"}
                for i, item in enumerate(_line_items(action.lines, 0))
            ],
            "customer": _customer(shopper, action.at),
            "shipping_address": _address(shopper),
        }
    if isinstance(action, OrderRefunded):
        amount = _money(action.amount)
        return "refunds/create", {
            "id": action.refund_id,
            "order_id": action.order_id,
            "created_at": _time(action.at),
            "processed_at": _time(action.at),
            "note": "Returned item",
            "restock": True,
            "transactions": [
                {
                    "id": action.refund_id * 10,
                    "order_id": action.order_id,
                    "kind": "refund",
                    "status": "success",
                    "amount": amount,
                    "currency": currency,
                    "gateway": "shopify_payments",
                }
            ],
            "refund_line_items": [
                {"quantity": line.quantity, "line_item": {"product_id": line.product.product_id}}
                for line in action.lines
            ],
        }
    raise TypeError(f"no Shopify webhook for {type(action).__name__}")
