"""What a store's public (browser) write key may send. Pure: no I/O.

The browser key sits in every page's snippet and every app's binary, so anyone can read it and send with it.
It may therefore say only what a visitor's own browser knows first-hand: page and screen views, who the
visitor says they are (identify, alias, group) and what they browse and put in their cart. Everything that
moves a customer up the funnel, earns a coupon, changes consent or puts a link into our store-branded email
needs the secret server key, which lives on the store's servers:

- orders, refunds and cancellations (fake orders would buy their way into VIP coupons);
- survey answers and referrals (the survey-thanks coupon; stages earned by surveys and referrals);
- marketing consent in traits (anyone could subscribe a stranger's address, or withdraw someone's consent);
- recovery links that leave the store's own origins (our email would link to the attacker's site);
- any other track event: a browser is not the judge of what the store's flows should act on.

A refused call is a 403 naming the field (`event`, `traits.accepts_marketing`, `batch[2].properties.url`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

# Segment's Ecommerce Events v2 spec: browsing, search, promotions, cart and checkout steps, wishlists,
# sharing and reviews. Nothing here is an order, a payment that happened, or a consent.
BROWSER_TRACK_EVENTS = frozenset(
    {
        "Products Searched",
        "Product List Viewed",
        "Product List Filtered",
        "Promotion Viewed",
        "Promotion Clicked",
        "Product Clicked",
        "Product Viewed",
        "Product Added",
        "Product Removed",
        "Cart Viewed",
        "Checkout Started",
        "Checkout Step Viewed",
        "Checkout Step Completed",
        "Payment Info Entered",
        "Coupon Entered",
        "Coupon Applied",
        "Coupon Denied",
        "Coupon Removed",
        "Product Added to Wishlist",
        "Product Removed from Wishlist",
        "Wishlist Product Added to Cart",
        "Product Shared",
        "Cart Shared",
        "Product Reviewed",
    }
)
BROWSER_CALLS = frozenset({"identify", "track", "page", "screen", "alias", "group"})
# The trait names under which a marketing consent reaches the canonical customer (see SegmentTraits).
CONSENT_TRAITS = ("accepts_marketing", "acceptsMarketing", "email_opt_in")
# The events whose `properties.url` becomes the recovery link of an abandoned-cart email.
RECOVERY_LINK_EVENTS = frozenset({"Checkout Started", "Cart Viewed"})

OriginCheck = Callable[[str], bool]


class BrowserKeyRefused(ValueError):
    """The call needs the server key: `problems` lists (field path, why) for each refused part."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {why}" for field, why in problems))


def url_origin(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, as a browser writes its Origin header."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def check_call(kind: str, call: Any, allows_origin: OriginCheck, field_prefix: str = "") -> None:
    """Raise BrowserKeyRefused if one call (`kind` as its path or batch `type` says) needs the server key.
    Malformed calls pass: the parser names their problems with a 422 afterwards."""
    problems = list(_problems(kind, call, allows_origin))
    if problems:
        raise BrowserKeyRefused([(_join(field_prefix, field), why) for field, why in problems])


def check_batch(payload: Any, allows_origin: OriginCheck) -> None:
    """Every call of a batch; one refused call refuses the batch, as one invalid call does."""
    items = payload.get("batch") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return
    problems: list[tuple[str, str]] = []
    shared_context = payload.get("context")
    if isinstance(shared_context, dict):
        problems.extend(_consent_problems(shared_context.get("traits"), "context.traits"))
    for index, item in enumerate(items):
        if isinstance(item, dict):
            kind = item.get("type")
            found = _problems(kind if isinstance(kind, str) else "", item, allows_origin)
            problems.extend((_join(f"batch[{index}]", field), why) for field, why in found)
    if problems:
        raise BrowserKeyRefused(problems)


def _problems(kind: str, call: Any, allows_origin: OriginCheck) -> Iterable[tuple[str, str]]:
    if not isinstance(call, dict) or kind not in BROWSER_CALLS:
        return
    if kind == "identify":
        yield from _consent_problems(call.get("traits"), "traits")
    context = call.get("context")
    if isinstance(context, dict):
        yield from _consent_problems(context.get("traits"), "context.traits")
    if kind != "track":
        return
    event = call.get("event")
    if not isinstance(event, str):
        return
    if event not in BROWSER_TRACK_EVENTS:
        yield (
            "event",
            f"{event!r} needs the store's server write key; the browser key sends browsing events only",
        )
        return
    properties = call.get("properties")
    if event in RECOVERY_LINK_EVENTS and isinstance(properties, dict):
        url = properties.get("url")
        if isinstance(url, str) and url.strip() and not _on_store_origin(url, allows_origin):
            yield (
                "properties.url",
                "a recovery link sent with the browser key must be on one of the store's allowed origins",
            )


def _consent_problems(traits: Any, field: str) -> Iterable[tuple[str, str]]:
    if not isinstance(traits, dict):
        return
    for name in CONSENT_TRAITS:
        if traits.get(name) is not None:
            yield (
                f"{field}.{name}",
                "marketing consent is set with the store's server write key, not the browser key",
            )


def _on_store_origin(url: str, allows_origin: OriginCheck) -> bool:
    origin = url_origin(url)
    return origin is not None and allows_origin(origin)


def _join(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if prefix else field
