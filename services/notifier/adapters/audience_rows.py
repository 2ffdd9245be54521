"""A `notifier.customers` row as the facts audiences decide on."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from services.notifier.domain.audiences import CustomerFacts
from shared.funnel import Health, LoyaltyStage, SurveyLevel


def facts_from_row(row: Mapping[Any, Any]) -> CustomerFacts:
    """A `notifier.customers` row (its `profile` the latest ProfileSnapshot as JSON) -> facts."""
    profile: Mapping[str, Any] = row.get("profile") or {}
    last_products = profile.get("last_products") or ()
    categories = {str(c) for c in profile.get("favourite_categories") or ()}
    categories |= {str(p["category"]) for p in last_products if isinstance(p, dict) and p.get("category")}
    products = {str(p["product_id"]) for p in last_products if isinstance(p, dict) and p.get("product_id")}
    return CustomerFacts(
        customer_id=str(row["customer_id"]),
        email=row.get("email"),
        phone=row.get("phone"),
        accepts_marketing=row.get("accepts_marketing"),
        unsubscribed_at=row.get("unsubscribed_at"),
        first_name=_text(profile.get("first_name")),
        last_name=_text(profile.get("last_name")),
        country=_text(profile.get("country")),
        locale=_text(profile.get("locale")),
        stage=_enum(LoyaltyStage, row.get("stage") or profile.get("stage")),
        health=_enum(Health, row.get("health") or profile.get("health")),
        survey_level=_enum(SurveyLevel, profile.get("survey_level")) or SurveyLevel.NONE,
        orders_count=_int(profile.get("orders_count")),
        total_spent=_decimal(profile.get("total_spent")),
        categories=frozenset(c.strip().casefold() for c in categories),
        products=frozenset(p.strip().casefold() for p in products),
        last_order_at=row.get("last_order_at") or _datetime(profile.get("last_order_at")),
        last_cart_abandoned_at=row.get("last_cart_abandoned_at"),
    )


_E = TypeVar("_E", LoyaltyStage, Health, SurveyLevel)


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _enum(kind: type[_E], value: object) -> _E | None:
    if not isinstance(value, str):
        return None
    try:
        return kind(value)
    except ValueError:
        return None


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return 0


def _decimal(value: object) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal("0")
    except InvalidOperation:
        return Decimal("0")


def _datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None
