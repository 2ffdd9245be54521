"""Storefront actions as Segment HTTP Tracking API calls, as analytics.js would send them. Pure.

Names and properties follow Segment's Ecommerce Events v2 spec and the loyalty survey's "Survey Answered"
shape that ingest documents (services/ingest/sources/segment.py). Amounts are JSON numbers, as browsers send
them; ingest rounds them to cents.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from deploy.simulator.actions import (
    Action,
    CheckoutStarted,
    OrderPlaced,
    OrderRefunded,
    ProductAdded,
    ProductViewed,
    ReferralCompleted,
    SignedUp,
    SurveyAnswered,
)
from deploy.simulator.catalog import BasketLine, Product
from deploy.simulator.people import Shopper

STORE_URL = "https://demo-store.example"
LIBRARY = {"name": "analytics.js", "version": "next-1.74.0"}


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _product(product: Product, quantity: int | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "product_id": str(product.product_id),
        "sku": product.sku,
        "name": product.title,
        "category": product.category,
        "price": float(product.price),
    }
    if quantity is not None:
        fields["quantity"] = quantity
    return fields


def _products(lines: tuple[BasketLine, ...]) -> list[dict[str, Any]]:
    return [_product(line.product, line.quantity) for line in lines]


def _context(shopper: Shopper, path: str, title: str) -> dict[str, Any]:
    return {
        "locale": shopper.place.locale,
        "timezone": shopper.place.timezone,
        "library": LIBRARY,
        "page": {"path": path, "title": title, "url": f"{STORE_URL}{path}"},
    }


def _traits(shopper: Shopper, at: datetime) -> dict[str, Any]:
    traits: dict[str, Any] = {
        "email": shopper.email,
        "firstName": shopper.first_name,
        "lastName": shopper.last_name,
        "createdAt": iso(at),
        "address": {"city": shopper.place.city, "country": shopper.place.country},
        "accepts_marketing": shopper.accepts_marketing,
    }
    if shopper.phone:
        traits["phone"] = shopper.phone
    if shopper.birthday:
        traits["birthday"] = shopper.birthday.isoformat()
    return traits


def _call(action: Action, kind: str, path: str, title: str) -> dict[str, Any]:
    shopper = action.shopper
    call: dict[str, Any] = {
        "type": kind,
        "messageId": action.action_id,
        "timestamp": iso(action.at),
        # analytics.js sends the visitor's anonymous id on every call, the user id once they are known.
        "anonymousId": shopper.anonymous_id,
        "context": _context(shopper, path, title),
    }
    if action.identified:
        call["userId"] = shopper.user_id
    return call


def _track(action: Action, event: str, properties: dict[str, Any], path: str, title: str) -> dict[str, Any]:
    return {**_call(action, "track", path, title), "event": event, "properties": properties}


def segment_call(action: Action, currency: str) -> dict[str, Any]:
    """The Segment call (as a /v1/batch item, with its `type`) for one action."""
    if isinstance(action, SignedUp):
        call = _call(action, "identify", "/account/register", "Create account")
        return {**call, "traits": _traits(action.shopper, action.at)}
    if isinstance(action, ProductViewed):
        p = action.product
        return _track(
            action,
            "Product Viewed",
            {**_product(p), "currency": currency},
            f"/products/{_slug(p.title)}",
            p.title,
        )
    if isinstance(action, ProductAdded):
        p = action.line.product
        properties = {**_product(p, action.line.quantity), "cart_id": action.cart_token, "currency": currency}
        return _track(action, "Product Added", properties, f"/products/{_slug(p.title)}", p.title)
    if isinstance(action, CheckoutStarted):
        properties = {
            "cart_id": action.cart_token,
            "value": float(action.total),
            "currency": currency,
            "url": action.recovery_url,
            "products": _products(action.lines),
        }
        return _track(action, "Checkout Started", properties, "/checkout", "Checkout")
    if isinstance(action, OrderPlaced):
        properties = {
            "order_id": str(action.order_id),
            "cart_id": action.cart_token,
            "total": float(action.total),
            "revenue": float(action.total),
            "discount": float(action.discount),
            "currency": currency,
            "products": _products(action.lines),
        }
        if action.discount_code:
            properties["coupon"] = action.discount_code
        return _track(action, "Order Completed", properties, "/checkout/thank-you", "Thank you")
    if isinstance(action, OrderRefunded):
        properties = {
            "order_id": str(action.order_id),
            "total": float(action.amount),
            "currency": currency,
            "products": _products(action.lines),
        }
        return _track(action, "Order Refunded", properties, "/account/orders", "Your orders")
    if isinstance(action, SurveyAnswered):
        answers = []
        for a in action.answers:
            answer: dict[str, Any] = {"statement_id": a.statement_id, "scale": a.scale}
            answer.update({"agree": a.agree} if a.agree is not None else {"score": a.score})
            answers.append(answer)
        properties = {
            "survey_id": action.survey_id,
            "answers": answers,
            "csat": action.csat,
            "ces": action.ces,
            "nps": action.nps,
        }
        return _track(action, "Survey Answered", properties, "/survey", "Tell us about your order")
    if isinstance(action, ReferralCompleted):
        properties = {"referral_code": action.referral_code}
        return _track(action, "Referral Completed", properties, "/account/referrals", "Refer a friend")
    raise TypeError(f"no Segment call for {type(action).__name__}")


def canonical_events(call: dict[str, Any]) -> int:
    """How many canonical events ingest makes of this call: an identify that names both the visitor and
    the user also links the two identities."""
    if call["type"] == "identify" and call.get("userId") and call.get("anonymousId"):
        return 2
    return 1
