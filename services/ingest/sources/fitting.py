"""What a platform's signed webhook says that the canonical event cannot hold: clipped or left out, never a
reason to refuse the webhook. Pure: no I/O.

A Segment call that breaks the contract gets a 422 naming the field: its caller can fix and resend it. A
signed Shopify or WooCommerce webhook is a fact the platform already accepted, and much of it was typed by a
shopper at checkout or in their account (names, phone, city; the quantity of an item whose stock is not
managed). A 422 fixes nothing there: the platform resends the same body, then gives up on it (Shopify: 8
retries over 4 hours, shopify.dev changelog "Updates to webhook retry mechanism", 2024-09-10), and counts
the failures against the whole subscription. WooCommerce disables a webhook after 5 consecutive failed
deliveries (woocommerce.com, "Webhooks": "Webhooks are disabled after 5 retries by default if the delivery
URL returns an unsuccessful status"); Shopify deletes a subscription made through its Admin API after 8
consecutive failures (shopify.dev, troubleshooting webhooks). So five checkouts
with a 300-character first name and a bank transfer (an on-hold order, no payment needed) would stop a
store's orders from reaching us at all. The order is kept instead, with what does not fit made to fit:

- text a person typed (names, city, country, product titles, SKUs, discount codes, tokens) is clipped to
  the canonical field's length;
- contact details that are not one well-formed value (an email address, a phone number longer than any
  number, a language tag) are left out: absent, they leave what another source said untouched;
- a quantity beyond the contract's is the contract's largest, an amount beyond it likewise, and an amount
  in fractions of a cent is rounded to the cent (as a checkout would charge it);
- a NUL character, which PostgreSQL text cannot hold, is removed (WordPress's sanitize_text_field trims
  one from the ends of a checkout field, not from its middle).

The limits are the canonical models' own (shared/events.py); tests/unit/test_webhook_fitting.py checks each
against its model.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator

from shared.events import (
    MOST_MONEY,
    MOST_QUANTITY,
    PHONE_LENGTH,
    SHORT_TEXT_LENGTH,
    URL_LENGTH,
)
from shared.fields import email_address, language_tag

CENT = Decimal("0.01")


def clipped(value: str | None, limit: int = SHORT_TEXT_LENGTH) -> str | None:
    """The text, cut to its first `limit` characters."""
    return value[:limit] if value is not None and len(value) > limit else value


def phone(value: str | None) -> str | None:
    """The number as given, or None when it is too long to be one (half a number is a wrong number)."""
    return value if value is None or len(value) <= PHONE_LENGTH else None


def url(value: str | None) -> str | None:
    """The address as given, or None when it is too long to hold (a cut one leads nowhere)."""
    return value if value is None or len(value) <= URL_LENGTH else None


def quantity(value: int) -> int:
    return min(value, MOST_QUANTITY)


def money(value: Decimal) -> Decimal:
    """At most the contract's largest amount; to the cent (half up) only if it holds fractions of one."""
    value = min(value, MOST_MONEY)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        return value.quantize(CENT, rounding=ROUND_HALF_UP)
    return value


def without_nul(value: Any) -> Any:
    """The value with every NUL character removed from its text, however deeply nested."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(without_nul(v) for v in value)
    return value


def _or_none(check: Callable[[str], str]) -> Callable[[Any], Any]:
    def lenient(value: Any) -> Any:
        if not isinstance(value, str):
            return value  # not text at all: the type check that follows names it
        if not value.strip():
            return None
        try:
            return check(value)
        except ValueError:
            return None

    return lenient


# For the platforms' payload models: a value that is not one email address (or language tag) is left out.
LenientEmail = Annotated[str | None, BeforeValidator(_or_none(email_address))]
LenientLanguageTag = Annotated[str | None, BeforeValidator(_or_none(language_tag))]
