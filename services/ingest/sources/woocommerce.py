"""WooCommerce webhooks: signature check, ping detection and translation to canonical events. Pure: no I/O,
no clock.

WooCommerce (includes/class-wc-webhook.php, `WC_Webhook::deliver`) posts the REST API v3 representation of the
resource as JSON with X-WC-Webhook-Source (the site's home URL), -Topic (e.g. `order.updated`), -Resource,
-Event, -Signature (base64 HMAC-SHA256 of the raw body), -ID and -Delivery-ID. Dates in that representation
come twice: `date_*` in the site's timezone and `date_*_gmt` in UTC, both without an offset.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from services.ingest.sources import deleted_orders, fitting
from services.ingest.sources.base import (
    NOTHING_CHECKED,
    Checked,
    SignedSourceModel,
    hmac_sha256_base64,
    signature_matches,
)
from services.ingest.sources.fitting import LenientEmail
from shared.events import (
    TITLE_LENGTH,
    Customer,
    CustomerUpserted,
    CustomerUpsertedEvent,
    LineItem,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefunded,
    OrderRefundedEvent,
    OrderRefundLine,
    Source,
    StorefrontEvent,
)

ORDER_TOPICS = frozenset({"order.created", "order.updated"})
CUSTOMER_TOPICS = frozenset({"customer.created", "customer.updated"})
# An order moved to the trash (WC_Webhook::get_default_topic_hooks: `wp_trash_post`, and under HPOS
# `woocommerce_trash_order`, which only writes the status and fires no order.updated). A deleted resource's
# payload is its id alone (WC_Webhook::build_payload: "If a resource has been deleted, just include the ID").
TRASHED_TOPIC = "order.deleted"
HANDLED_TOPICS = ORDER_TOPICS | CUSTOMER_TOPICS | {TRASHED_TOPIC}

# The money has been taken (or, for on-hold, promised by an offline method such as a bank transfer): a
# purchase. Anything else (pending, failed, draft, checkout-draft, trash, or a plugin's own status) is not one
# yet; WooCommerce sends order.updated again when the status moves on.
PAID_STATUSES = frozenset({"processing", "completed", "on-hold"})
REFUNDED = "refunded"
CANCELLED = "cancelled"

# Found in WooCommerce's source (woocommerce/woocommerce, includes/class-wc-webhook.php, `deliver_ping`):
# when a webhook is created or activated, WooCommerce POSTs the plain string `webhook_id=<id>` with only a
# User-Agent of its own. None of the X-WC-Webhook-* headers is added to it (no Source, Topic, Signature or
# Delivery-ID), so it cannot be authenticated and must be recognised by its body alone. The Content-Type is
# left to WordPress's HTTP transport, which sends application/x-www-form-urlencoded (with `; charset=UTF-8`
# from the fsockopen transport). Anything but a 200 makes WooCommerce refuse to activate the webhook.
_PING_BODY = re.compile(rb"webhook_id=\d{1,20}")
_FORM = "application/x-www-form-urlencoded"

_MAX_ID = 2**63 - 1


sign = hmac_sha256_base64
signature_is_valid = signature_matches


def is_ping(content_type: str | None, body: bytes) -> bool:
    """True for the unsigned ping WooCommerce sends when a webhook is saved; it carries no event."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    # A proxy or a `woocommerce_webhook_http_args` filter may drop the Content-Type; a JSON body can never
    # look like `webhook_id=1`, so the body alone is enough then.
    if media_type not in ("", _FORM):
        return False
    return _PING_BODY.fullmatch(body.strip()) is not None


def _as_utc(value: datetime) -> datetime:
    # `*_gmt` fields are UTC without an offset; should a plugin ever send one, honour it.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. year 1 with a positive offset
        raise ValueError("date is out of range") from exc


def _cents(value: Decimal) -> Decimal:
    # Line prices are total/quantity as a float (3.3333333333) and some stores keep 3 decimals; the
    # canonical Money holds cents. copy_abs: "-0.00" passes ge=0 but should not reach consumers signed.
    return fitting.money(value).quantize(fitting.CENT, rounding=ROUND_HALF_UP).copy_abs()


GmtDatetime = Annotated[datetime, AfterValidator(_as_utc)]
Amount = Annotated[Decimal, Field(ge=0, allow_inf_nan=False), AfterValidator(_cents)]
# The REST API writes a refund's amount negated in the order's `refunds` ("-10.00": `'-' . wc_format_decimal(
# $refund->get_amount())` in WC_REST_Orders_V2_Controller): the amount is its magnitude.
RefundTotal = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(lambda v: _cents(v.copy_abs()))]
WooId = Annotated[int, Field(ge=0, le=_MAX_ID)]


class _Model(SignedSourceModel):
    pass


class WooAddress(_Model):
    first_name: str | None = None
    last_name: str | None = None
    email: LenientEmail = None
    phone: str | None = None
    city: str | None = None
    country: str | None = None


class WooLineItem(_Model):
    id: WooId
    name: str | None = None
    product_id: WooId = 0
    variation_id: WooId = 0
    quantity: Annotated[int, Field(ge=1)]
    sku: str | None = None
    price: Amount | None = None
    total: Amount | None = None


class WooRefund(_Model):
    """An entry of the order's `refunds` (REST API v3, "Order - Refunds properties": id, reason, total)."""

    id: Annotated[int, Field(ge=1, le=_MAX_ID)]
    total: RefundTotal


class WooCouponLine(_Model):
    code: str


class WooMeta(_Model):
    key: str = ""
    value: Any = None


@dataclass(frozen=True)
class ConsentField:
    """The order or customer meta field a store's opt-in checkbox writes (WooCommerce core records no
    marketing consent): a value in `yes_values` is consent, any other value withdraws it, no field says
    nothing. Named per store in the registry (`woocommerce.consent_meta_key`)."""

    key: str
    yes_values: tuple[str, ...] = ("yes", "1", "true", "on", "subscribed")

    def read(self, meta: tuple[WooMeta, ...]) -> bool | None:
        found = [m for m in meta if m.key == self.key]
        if not found:
            return None
        value = found[-1].value
        text = str(value).strip().lower() if not isinstance(value, bool) else ("true" if value else "false")
        return text in {v.lower() for v in self.yes_values}


class WooOrder(_Model):
    id: Annotated[int, Field(ge=1, le=_MAX_ID)]
    status: str
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    date_created_gmt: GmtDatetime
    date_modified_gmt: GmtDatetime | None = None
    date_paid_gmt: GmtDatetime | None = None
    date_completed_gmt: GmtDatetime | None = None
    total: Amount
    customer_id: WooId = 0
    billing: WooAddress | None = None
    shipping: WooAddress | None = None
    line_items: tuple[WooLineItem, ...] = ()
    coupon_lines: tuple[WooCouponLine, ...] = ()
    meta_data: tuple[WooMeta, ...] = ()
    # WooCommerce has no refund webhook: a refund sends order.updated (its `woocommerce_order_refunded` hook)
    # with the order, whose `refunds` lists every refund so far. See _order.
    refunds: tuple[WooRefund, ...] = ()
    cart_hash: str | None = None


class WooTrashedOrder(_Model):
    """An order.deleted payload: `{"id": <order id>}`. The id is the hook's first argument, which WooCommerce
    accepts as an integer or a string of digits (WC_Webhook::is_valid_post_action), so either is read."""

    id: Annotated[int, Field(ge=1, le=_MAX_ID)]


class WooCustomer(_Model):
    id: Annotated[int, Field(ge=1, le=_MAX_ID)]
    email: LenientEmail = None
    first_name: str | None = None
    last_name: str | None = None
    date_created_gmt: GmtDatetime | None = None
    date_modified_gmt: GmtDatetime | None = None
    billing: WooAddress | None = None
    shipping: WooAddress | None = None
    meta_data: tuple[WooMeta, ...] = ()


def _text(*candidates: str | None) -> str | None:
    # WooCommerce sends "" for every field nobody filled in; an empty string is not a fact about anyone.
    for value in candidates:
        if value is not None and value.strip():
            return value.strip()
    return None


def _customer(
    *,
    customer_id: int,
    email: str | None,
    first_name: str | None,
    last_name: str | None,
    billing: WooAddress | None,
    shipping: WooAddress | None,
    placed_order_id: str | None = None,
    accepts_marketing: bool | None = None,
) -> Customer:
    # Billing is what the buyer typed about themselves; shipping may be a gift's recipient, so it only fills
    # what billing leaves empty.
    bill = billing or WooAddress()
    ship = shipping or WooAddress()
    return Customer(
        store_customer_id=str(customer_id) if customer_id > 0 else None,
        email=_text(email, bill.email),
        placed_order_id=placed_order_id,
        first_name=fitting.clipped(_text(first_name, bill.first_name, ship.first_name)),
        last_name=fitting.clipped(_text(last_name, bill.last_name, ship.last_name)),
        phone=fitting.phone(_text(bill.phone, ship.phone)),
        city=fitting.clipped(_text(bill.city, ship.city)),
        country=fitting.clipped(_text(bill.country, ship.country)),
        # WooCommerce core records no marketing consent: only the store's opt-in meta field (if it names
        # one) says anything; None leaves what another source said untouched.
        accepts_marketing=accepts_marketing,
    )


# The address WordPress writes in place of a person's (wp_privacy_anonymize_data). WooCommerce's order eraser
# (WC_Privacy_Erasers::remove_order_personal_data: on an erasure request when the store removes orders'
# personal data, and by its retention of old orders) writes it as the billing email, zeroes `customer_id`,
# writes "[deleted]" (translated) in the names and address, zeros in the phone, and saves the order: an
# order.updated. Not a buyer: every anonymised order carries it.
ANONYMISED_EMAIL = "deleted@site.invalid"


def _anonymised(order: WooOrder) -> bool:
    email = order.billing.email if order.billing else None
    return email is not None and email.strip().lower() == ANONYMISED_EMAIL


def _order_customer(
    order: WooOrder, *, placed_order_id: str | None = None, consent: ConsentField | None = None
) -> Customer:
    if _anonymised(order):
        # The store removed the buyer's details from this order: it still names its order (whose customer the
        # segmenter knows by it), and nothing about anyone. Read as a customer, the placeholder would join
        # every anonymised order's customer into one profile, and its "[deleted]" would replace their names.
        return Customer(placed_order_id=str(order.id))
    return _customer(
        customer_id=order.customer_id,
        email=None,
        first_name=None,
        last_name=None,
        billing=order.billing,
        shipping=order.shipping,
        placed_order_id=placed_order_id,
        accepts_marketing=consent.read(order.meta_data) if consent else None,
    )


def _line_item(item: WooLineItem) -> LineItem:
    if item.product_id > 0:
        product_id = str(item.product_id)
    elif item.variation_id > 0:
        product_id = str(item.variation_id)
    else:
        # The product was deleted since (WooCommerce then reports 0); the line item id keeps it distinct.
        product_id = f"line:{item.id}"
    if item.price is not None:
        price = item.price
    elif item.total is not None:
        price = _cents(item.total / item.quantity)
    else:
        price = Decimal("0")
    return LineItem(
        product_id=product_id,
        variant_id=str(item.variation_id) if item.variation_id > 0 else None,
        sku=fitting.clipped(_text(item.sku)),
        # The REST API returns product names HTML-escaped ("Hoodie &ndash; Blue").
        title=fitting.clipped(html.unescape(title), TITLE_LENGTH) if (title := _text(item.name)) else None,
        quantity=fitting.quantity(item.quantity),
        price=price,
    )


def to_canonical(
    topic: str,
    payload: Any,
    *,
    store_id: str,
    event_id: str,
    received_at: datetime,
    checked: Checked = NOTHING_CHECKED,
    consent: ConsentField | None = None,
) -> StorefrontEvent | None:
    """Translate one webhook; None for a topic (or an order status) we acknowledge but do not use.

    Raises pydantic.ValidationError naming the field when the payload is not what the topic promises.
    `checked`: what the caller knows of the raw body (see sources.base.Checked).
    """
    common: dict[str, Any] = {
        "event_id": event_id,
        "store_id": store_id,
        "received_at": received_at,
        "source": Source.WOOCOMMERCE,
    }
    if topic in ORDER_TOPICS:
        if not _status_is_used(payload):
            # Not a purchase (yet): acknowledged without reading the rest, which a shopper filled in and
            # nobody has paid for (a 422 here would count against the webhook: see fitting).
            return None
        return _order(WooOrder.model_validate(payload, context=checked), common, consent)
    if topic == TRASHED_TOPIC:
        # Restoring the order from the trash (order.restored) does not count it again: see the README.
        trashed = WooTrashedOrder.model_validate(payload, context=checked)
        return deleted_orders.cancellation(trashed.id, common, received_at)
    if topic in CUSTOMER_TOPICS:
        customer = WooCustomer.model_validate(payload, context=checked)
        return CustomerUpsertedEvent(
            **common,
            customer=_customer(
                customer_id=customer.id,
                email=customer.email,
                first_name=customer.first_name,
                last_name=customer.last_name,
                billing=customer.billing,
                shipping=customer.shipping,
                accepts_marketing=consent.read(customer.meta_data) if consent else None,
            ),
            occurred_at=customer.date_modified_gmt or customer.date_created_gmt or received_at,
            payload=CustomerUpserted(created_at=customer.date_created_gmt),
        )
    return None


_USED_STATUSES = PAID_STATUSES | {REFUNDED, CANCELLED}


def _status_is_used(payload: Any) -> bool:
    """Whether `_order` makes an event of this order's status; a status that is missing or not text is left
    to the model, whose 422 names it."""
    status = payload.get("status") if isinstance(payload, dict) else None
    return not isinstance(status, str) or status.removeprefix("wc-") in _USED_STATUSES


def _order(order: WooOrder, common: dict[str, Any], consent: ConsentField | None) -> StorefrontEvent | None:
    # The status decides, whichever of order.created / order.updated carried it: most payment gateways create
    # the order as `pending` and only a later order.updated says `processing`.
    status = order.status.removeprefix("wc-")
    if status in PAID_STATUSES:
        if order.customer_id <= 0 and not _text(order.billing.email if order.billing else None):
            # A guest who left no email (a store may make the field optional): nobody the funnel could know
            # again, acknowledged and not produced. A 422 would count against the webhook (see fitting).
            return None
        # Placed when the buyer checked out, not when the order was last touched: a note added to a year-old
        # order must not look like a fresh purchase (or trigger a post-purchase flow). The segmenter counts an
        # order id once; of its deliveries it keeps the content last modified (an edited order's lines and
        # total), by date_modified_gmt.
        return OrderPlacedEvent(
            **common,
            customer=_order_customer(order, consent=consent),
            occurred_at=order.date_created_gmt,
            payload=OrderPlaced(
                order_id=str(order.id),
                total=order.total,
                currency=order.currency,
                line_items=tuple(_line_item(i) for i in order.line_items),
                cart_id=fitting.clipped(_text(order.cart_hash)),
                discount_codes=tuple(
                    fitting.clipped(code) for c in order.coupon_lines if (code := _text(c.code))
                ),
                updated_at=order.date_modified_gmt,
                # A partial refund leaves the order's status as it was: the refunds it lists say it.
                # wc_create_refund sets the order's date_modified, so each refund comes with a new version.
                refunds=tuple(
                    OrderRefundLine(refund_id=str(r.id), amount=r.total) for r in order.refunds if r.total > 0
                )
                or None,
            ),
        )
    if status in (REFUNDED, CANCELLED):
        # WooCommerce moves an order to `refunded` only once it is refunded in full (a partial refund leaves
        # the status alone), so the order total is the amount. `cancelled` also ends unpaid orders whose hold
        # timed out; the segmenter ignores a refund of an order id it never counted. placed_order_id lets
        # it find the customer of a guest order that has no email.
        return OrderRefundedEvent(
            **common,
            customer=_order_customer(order, placed_order_id=str(order.id)),
            occurred_at=order.date_modified_gmt or order.date_created_gmt,
            payload=OrderRefunded(
                order_id=str(order.id),
                amount=order.total,
                currency=order.currency,
                cancelled=status == CANCELLED,
            ),
        )
    return None
