"""A store's request to forget one of its customers: the erasure that Shopify asks for with its
`customers/redact` webhook, for every other store.

WooCommerce sends nothing when a shopper's personal data is erased on the site (WordPress's "Erase Personal
Data" runs WooCommerce's erasers locally; the orders it anonymises come as order.updated, which ingest reads
as naming only themselves), and Segment's HTTP Tracking API has no erasure call. So the store (or its
privacy tool) asks here, with its REST API key, naming the customer as the segmenter's API names them.

The request becomes a `customer_erased` event on `storefront-events`, keyed like the customer's other
events, and takes the path of a Shopify redaction from there: the segmenter forgets the profile's personal
data and tells the notifier, which drops the customer's addresses and consent.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from pydantic import BaseModel, Field, ValidationError

from services.ingest.accept import check_rate, publish
from services.ingest.context import context
from shared.events import SHOP_WIDE, Customer, CustomerErased, CustomerErasedEvent, Source, customer_named
from shared.logging import get_logger
from shared.web import ApiError, ErrorBody, FieldError, StoreDep

log = get_logger(__name__)

router = APIRouter(prefix="/v1/stores/{store_id}", tags=["privacy"])


class ErasureAccepted(BaseModel):
    status: str = Field(description="`accepted`: the erasure is stored in Kafka and will be applied")
    event_id: str = Field(description="the `customer_erased` event's id (the same for a retried request)")


@router.post(
    "/customers/{customer_id}/erasure",
    status_code=202,
    summary="Forget a customer's personal data (for stores whose platform sends no erasure webhook)",
    response_model=ErasureAccepted,
    responses={
        401: {"model": ErrorBody, "description": "missing or wrong API key for this store"},
        404: {"model": ErrorBody, "description": "unknown store"},
        422: {"model": ErrorBody, "description": "the customer id or Idempotency-Key is not one"},
        429: {"model": ErrorBody, "description": "the store is over its rate; retry after Retry-After"},
        503: {"model": ErrorBody, "description": "Kafka did not acknowledge; retry after Retry-After"},
    },
)
async def erase_customer(
    request: Request,
    store: StoreDep,
    customer_id: Annotated[
        str,
        Path(
            description=(
                "as the segmenter's API names the customer: the store's customer id (`17`), or "
                "`email:<address>`, `anon:<anonymous id>`, `order:<order id>` for a customer known only so"
            ),
        ),
    ],
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=128,
            pattern=r"^[\x21-\x7e]+$",
            description="a retried request with the same key is the same erasure, applied once",
        ),
    ] = None,
) -> ErasureAccepted:
    ctx = context(request)
    customer = _customer(customer_id)
    now = ctx.clock()
    event = CustomerErasedEvent(
        event_id=f"api:erasure:{idempotency_key or uuid.uuid4().hex}",
        store_id=store.store_id,
        source=Source.API,
        customer=customer,
        occurred_at=now,
        received_at=now,
        payload=CustomerErased(scope="customer"),
    )
    check_rate(ctx.limiter, store.store_id, Source.API, 1)
    await publish(ctx.publisher, [event], Source.API)
    # An operator can follow it across the services by its ref (shared.logging turns the id into one).
    log.info("erasure_accepted", store_id=store.store_id, customer_id=customer.key)
    return ErasureAccepted(status="accepted", event_id=event.event_id)


def _customer(customer_id: str) -> Customer:
    """The customer a segmenter customer id names; 422 naming `customer_id` for one that names nobody."""
    try:
        customer = customer_named(customer_id)
    except ValidationError as exc:
        raise _invalid(exc.errors()[0]["msg"]) from None
    if customer.store_customer_id == SHOP_WIDE:
        # The shop-wide erasure is Shopify's shop/redact, when a store leaves: not one customer's.
        raise _invalid("names every customer of the store, not one")
    return customer


def _invalid(message: str) -> ApiError:
    return ApiError(
        422,
        "invalid_customer_id",
        f"customer_id: {message}",
        errors=[FieldError(field="customer_id", message=message)],
    )
