"""The notifier's REST API for marketing tools: a customer's messages and coupons, and per-flow results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifier.adapters import repository
from services.notifier.domain.delivery import UNCERTAIN
from services.notifier.domain.messages import WAITING, MessageStatus
from shared.notifier_rules import FlowName
from shared.web import COMMON_ERROR_RESPONSES, ApiError, FieldError, PageDep, StoreDep, query_instant

router = APIRouter(prefix="/v1/stores/{store_id}", responses=COMMON_ERROR_RESPONSES)


class Notification(BaseModel):
    id: int
    flow: str
    channel: str
    status: MessageStatus = Field(
        description="pending (possibly delayed or deferred), sending, sent, failed or skipped"
    )
    skip_reason: str | None = Field(
        description="why it was not sent: trigger_too_old, no_email, no_marketing_consent, unsubscribed, "
        "exited_ordered, frequency_capped, expired, suppressed, uncertain (a stopped sender may or may not "
        "have handed it over), ..."
    )
    subject: str | None
    trigger_event_id: str
    attempts: int
    due_at: datetime
    coupon_code: str | None
    created_at: datetime
    sent_at: datetime | None
    resent_at: datetime | None = Field(
        default=None, description="when a copy of unknown fate was sent again (same Message-ID)"
    )
    converted_order_id: str | None = Field(description="the order attributed to this message, if any")
    revenue: Decimal | None


class CouponOut(BaseModel):
    code: str
    flow: str
    kind: str = Field(description="percent, fixed, free_shipping or cashback")
    value: Decimal = Field(description="percent: the percentage; fixed and cashback: an amount")
    currency: str | None
    issued_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    redeemed_order_id: str | None


class FlowReport(BaseModel):
    flow: str
    enabled: bool
    planned: int = Field(description="messages planned, whatever became of them")
    sent: int
    pending: int = Field(description="waiting: delayed, deferred by quiet hours or the frequency cap")
    failed: int
    skipped: dict[str, int] = Field(description="skipped messages by reason")
    resent: int = Field(
        description="transactional messages of unknown fate (a sender stopped with it on an SMTP connection, "
        "or the connection broke during DATA), sent once more with the same Message-ID"
    )
    uncertain: int = Field(
        description="marketing messages of unknown fate (as for resent), not sent again (also under skipped)"
    )
    converted: int = Field(description="messages to which an order was attributed")
    revenue: Decimal = Field(description="total of the orders attributed to this flow")
    coupons_issued: int
    coupons_redeemed: int


async def _customer_rows(
    request: Request,
    store_id: str,
    customer_id: str,
    query: Callable[[AsyncConnection, str, str], Awaitable[Any]],
) -> Any:
    """Rows of one customer, or 404 when the notifier has never heard of them."""
    async with request.app.state.engine.connect() as conn:
        if not await repository.customer_known(conn, store_id, customer_id):
            # The id is not echoed: a guest's id is their email address.
            raise ApiError(404, "customer_not_found", f"no such customer in store {store_id!r}")
        return await query(conn, store_id, customer_id)


@router.get(
    "/customers/{customer_id}/notifications",
    tags=["customers"],
    response_model=list[Notification],
    summary="Every message planned for a customer: sent, pending, skipped (with the reason) or failed",
)
async def customer_notifications(
    store: StoreDep, customer_id: str, request: Request, response: Response, page: PageDep
) -> list[Notification]:
    """Oldest first, a page at a time (`limit`, `offset`); a full page names the next in `Link`."""
    rows = await _customer_rows(
        request,
        store.store_id,
        customer_id,
        partial(repository.list_messages, limit=page.limit, offset=page.offset),
    )
    response.headers.update(page.next_link(request, len(rows)))
    return [Notification.model_validate(r, from_attributes=True) for r in rows]


@router.get(
    "/customers/{customer_id}/coupons",
    tags=["customers"],
    response_model=list[CouponOut],
    summary="The customer's coupons: issued by which flow, their terms, and whether an order used them",
)
async def customer_coupons(
    store: StoreDep, customer_id: str, request: Request, response: Response, page: PageDep
) -> list[CouponOut]:
    """Oldest first, a page at a time (`limit`, `offset`); a full page names the next in `Link`."""
    rows = await _customer_rows(
        request,
        store.store_id,
        customer_id,
        partial(repository.list_coupons, limit=page.limit, offset=page.offset),
    )
    response.headers.update(page.next_link(request, len(rows)))
    return [CouponOut.model_validate(r, from_attributes=True) for r in rows]


@router.get(
    "/flows",
    tags=["flows"],
    response_model=list[FlowReport],
    summary="Per flow: messages sent, pending, failed, skipped by reason, converted, revenue and coupons",
)
async def flows(
    store: StoreDep,
    request: Request,
    since: Annotated[datetime | None, Query(description="only messages created from this time")] = None,
) -> list[FlowReport]:
    if since is not None and since.tzinfo is None:
        raise ApiError(
            422,
            "validation_failed",
            "since needs a time zone",
            errors=[FieldError(field="since", message="give a time zone, e.g. 2026-11-01T00:00:00Z")],
        )
    if since is not None:
        since = query_instant(since, "since")
    async with request.app.state.engine.connect() as conn:
        counts = await repository.flow_counts(conn, store.store_id, since)
        coupons = {r.flow: r for r in await repository.coupon_counts(conn, store.store_id, since)}
    reports = {
        name.value: FlowReport(
            flow=name.value,
            enabled=store.notifier.flow(name).enabled,
            planned=0,
            sent=0,
            pending=0,
            failed=0,
            skipped={},
            resent=0,
            uncertain=0,
            converted=0,
            revenue=Decimal("0"),
            coupons_issued=coupons[name.value].issued if name.value in coupons else 0,
            coupons_redeemed=coupons[name.value].redeemed if name.value in coupons else 0,
        )
        for name in FlowName
    }
    for row in counts:
        report = reports.get(row.flow)
        if report is None:
            continue
        report.planned += row.n
        report.converted += row.converted
        report.resent += row.resent
        report.revenue += row.revenue
        if row.status == MessageStatus.SENT:
            report.sent += row.n
        elif row.status in WAITING:
            report.pending += row.n
        elif row.status == MessageStatus.FAILED:
            report.failed += row.n
        elif row.status == MessageStatus.SKIPPED:
            reason = row.skip_reason or "unknown"
            report.skipped[reason] = report.skipped.get(reason, 0) + row.n
            if reason == UNCERTAIN:
                report.uncertain += row.n
    return list(reports.values())
