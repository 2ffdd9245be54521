"""The store's platform connection as the notifier sees it, and spam complaints from the store's mail
provider (which withdraw consent here and in the store's platform)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select, update

from services.notifier.adapters import consent_repository, platform_repository
from services.notifier.adapters.tables import customers
from services.notifier.domain.coupon_platforms import consent_platform, placement
from shared.notifier_rules import CouponKind
from shared.web import COMMON_ERROR_RESPONSES, ApiError, StoreDep

router = APIRouter(prefix="/v1/stores/{store_id}", responses=COMMON_ERROR_RESPONSES, tags=["store"])


class PlatformStatus(BaseModel):
    platform: str
    status: str = Field(description="ok, or refused (with the reason) after the platform's last answer")
    reason: str | None
    last_ok_at: datetime | None
    updated_at: datetime


class Connection(BaseModel):
    coupons_in: str = Field(
        description="where this store's coupons are created: shopify, woocommerce, "
        "webhook, or ours (not connected: a real checkout refuses the codes)"
    )
    consent_in: str | None = Field(description="the platform told about unsubscriptions, if any")
    credential_problems: list[str] = Field(description="platform credentials named but not readable")
    platforms: list[PlatformStatus]
    last_event_at: datetime | None = Field(
        description="when the notifier last heard of this store's customers"
    )


@router.get(
    "/connection", response_model=Connection, summary="The store's platform connection and its status"
)
async def connection(store: StoreDep, request: Request) -> Connection:
    async with request.app.state.engine.connect() as conn:
        rows = await platform_repository.connections(conn, store.store_id)
        last = (
            await conn.execute(
                select(func.max(customers.c.updated_at)).where(customers.c.store_id == store.store_id)
            )
        ).scalar_one_or_none()
    consent = consent_platform(store)
    return Connection(
        coupons_in=placement(store, CouponKind.PERCENT).platform.value,
        consent_in=consent.value if consent else None,
        credential_problems=list(request.app.state.stores.credentials(store.store_id).problems),
        platforms=[PlatformStatus.model_validate(r, from_attributes=True) for r in rows],
        last_event_at=last,
    )


class ComplaintAccepted(BaseModel):
    status: str = "unsubscribed"


@router.post(
    "/customers/{customer_id}/complaint",
    status_code=202,
    response_model=ComplaintAccepted,
    summary="A spam complaint (from the mail provider's feedback loop): unsubscribes the customer here and "
    "in the store's platform, and stops every email to the address",
)
async def complaint(store: StoreDep, customer_id: str, request: Request) -> ComplaintAccepted:
    now: datetime = request.app.state.clock()
    async with request.app.state.engine.begin() as conn:
        found = await conn.execute(
            update(customers)
            .where(customers.c.store_id == store.store_id, customers.c.customer_id == customer_id)
            .values(
                unsubscribed_at=func.coalesce(customers.c.unsubscribed_at, now),
                suppressed_at=func.coalesce(customers.c.suppressed_at, now),
                suppressed_reason=func.coalesce(customers.c.suppressed_reason, "spam complaint"),
            )
            .returning(customers.c.customer_id)
        )
        if found.first() is None:
            raise ApiError(404, "unknown_customer", "no such customer in this store")
        await consent_repository.record(
            conn, store, customer_id, subscribed=False, reason="complaint", at=now
        )
    return ComplaintAccepted()
