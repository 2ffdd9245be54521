"""The segmenter's read API for marketing tools (store Bearer API key)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from services.segmenter.adapters import reports, repository
from services.segmenter.domain.profile import Profile
from shared.clock import earlier
from shared.events import CONTACT_FIELDS
from shared.funnel import Health, LoyaltyStage, SurveyLevel
from shared.funnel_events import ProductRef
from shared.web import (
    COMMON_ERROR_RESPONSES,
    DEFAULT_PAGE_SIZE,
    MAX_OFFSET,
    MAX_PAGE_SIZE,
    ApiError,
    FieldError,
    Page,
    StoreDep,
    query_instant,
)

router = APIRouter(prefix="/v1/stores/{store_id}", responses=COMMON_ERROR_RESPONSES)


class TransitionOut(BaseModel):
    dimension: str = Field(description="`stage` or `health`")
    from_value: str
    to_value: str
    reason: str
    occurred_at: datetime
    event_id: str = Field(
        description="the storefront event (or timer) that caused it; `refund:<id>` for a refund that a "
        "platform lists in its order (WooCommerce's partial refunds), by the platform's refund id"
    )


class CartOut(BaseModel):
    cart_id: str
    items: int
    total: Decimal
    currency: str | None
    recovery_url: str | None
    updated_at: datetime
    abandoned_at: datetime | None


class SurveyOut(BaseModel):
    survey_id: str
    level: SurveyLevel
    answered_at: datetime
    csat: int | None
    ces: int | None
    nps: int | None


class CustomerProfile(BaseModel):
    store_id: str
    customer_id: str
    identifiers: list[str] = Field(
        description="every id the customer is known by: id:, email:, anon:, order:"
    )
    stage: LoyaltyStage
    health: Health
    survey_level: SurveyLevel
    email: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    locale: str | None
    city: str | None
    country: str | None
    timezone: str | None
    birthday: date | None
    accepts_marketing: bool | None
    orders_count: int = Field(
        description="orders placed, each order id once, cancelled and fully refunded ones not"
    )
    total_spent: Decimal = Field(description="sum of order totals less refunds")
    currency: str | None
    average_order_value: Decimal | None
    first_order_at: datetime | None
    last_order_at: datetime | None
    median_days_between_orders: float | None
    favourite_categories: list[str]
    last_products: list[ProductRef]
    carts: list[CartOut]
    survey: SurveyOut | None
    referrals: int
    erased: bool
    transitions: list[TransitionOut]


_PLAIN_FIELDS = {"store_id", "customer_id", "stage", "health", *CONTACT_FIELDS, "referrals", "erased"}


def _out(profile: Profile, history: list[TransitionOut]) -> CustomerProfile:
    p = profile
    return CustomerProfile(
        **p.model_dump(include=_PLAIN_FIELDS),
        identifiers=list(p.identifiers),
        survey_level=p.survey_level,
        orders_count=p.orders_count,
        total_spent=p.total_spent,
        currency=p.currency,
        average_order_value=p.average_order_value,
        first_order_at=p.first_order_at,
        last_order_at=p.last_order_at,
        median_days_between_orders=p.median_days_between_orders,
        favourite_categories=list(p.favourite_categories),
        last_products=list(p.last_products),
        carts=[
            CartOut(
                cart_id=c.cart_id,
                items=sum(i.quantity for i in c.items),
                total=c.total,
                currency=c.currency,
                recovery_url=c.recovery_url,
                updated_at=c.updated_at,
                abandoned_at=c.abandoned_at,
            )
            for c in p.carts
        ],
        survey=SurveyOut(**p.survey.model_dump(exclude={"agreed"})) if p.survey else None,
        transitions=history,
    )


@router.get("/customers/{customer_id}", tags=["customers"], response_model=CustomerProfile)
async def get_customer(
    store: StoreDep,
    customer_id: str,
    request: Request,
    response: Response,
    transitions_limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"transitions per page, at most {MAX_PAGE_SIZE}")
    ] = DEFAULT_PAGE_SIZE,
    transitions_offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="transitions to skip (oldest first)")
    ] = 0,
) -> CustomerProfile:
    """A customer's profile, stage, health and the history of their transitions.

    `customer_id` is the store's customer id, or any identifier the customer is known by (`anon:<id>`,
    `email:<address>`); an id merged into another profile answers with the surviving profile. Transitions
    come oldest first, a page at a time (`transitions_limit`, `transitions_offset`); a full page names the
    next in `Link`."""
    page = Page(transitions_limit, transitions_offset)
    async with request.app.state.engine.connect() as conn:
        profile = await repository.get_profile(conn, store.store_id, customer_id)
        if profile is None:
            # The id is not echoed: a guest's id is their email address.
            raise ApiError(404, "customer_not_found", f"no such customer in store {store.store_id!r}")
        history = await repository.get_transitions(
            conn, store.store_id, profile.customer_id, limit=page.limit, offset=page.offset
        )
    response.headers.update(page.next_link(request, len(history), prefix="transitions_"))
    return _out(profile, [TransitionOut(**t.model_dump()) for t in history])


@router.get("/customers", tags=["customers"], response_model=list[CustomerProfile])
async def find_customers(
    store: StoreDep, request: Request, email: Annotated[str, Query(min_length=3, max_length=320)]
) -> list[CustomerProfile]:
    """Customers by email (trimmed, case-insensitive): one customer per email in a store, or none."""
    found: list[CustomerProfile] = []
    async with request.app.state.engine.connect() as conn:
        for customer_id in await reports.customers_by_email(conn, store.store_id, email):
            profile = await repository.get_profile(conn, store.store_id, customer_id)
            if profile is not None:
                history = await repository.get_transitions(
                    conn, store.store_id, profile.customer_id, limit=DEFAULT_PAGE_SIZE
                )
                found.append(_out(profile, [TransitionOut(**t.model_dump()) for t in history]))
    return found


class FunnelCell(BaseModel):
    stage: LoyaltyStage
    health: Health
    customers: int


class DailyTransitions(BaseModel):
    date: date
    dimension: str
    from_value: str
    to_value: str
    count: int


class FunnelReport(BaseModel):
    store_id: str
    customers: int
    by_stage: dict[LoyaltyStage, int]
    by_health: dict[Health, int]
    cells: list[FunnelCell] = Field(description="customers per stage x health, now")
    start: datetime
    end: datetime
    transitions: list[DailyTransitions] = Field(description="transitions per UTC day in [start, end)")


def _period(
    request: Request, start: datetime | None, end: datetime | None, default_days: int
) -> tuple[datetime, datetime]:
    now: datetime = request.app.state.clock()
    finish = query_instant(end, "end") if end else now
    begin = query_instant(start, "start") if start else earlier(finish, timedelta(days=default_days))
    if begin >= finish:
        raise ApiError(
            422,
            "invalid_period",
            "start must be before end",
            errors=[FieldError(field="start", message="not before end")],
        )
    return begin, finish


StartQuery = Annotated[datetime | None, Query(description="ISO 8601 date or time (UTC if no offset)")]
EndQuery = Annotated[
    datetime | None, Query(description="ISO 8601 date or time (UTC if no offset); default now")
]


@router.get("/funnel", tags=["funnel"], response_model=FunnelReport)
async def funnel(
    store: StoreDep, request: Request, start: StartQuery = None, end: EndQuery = None
) -> FunnelReport:
    """How many customers stand at each stage and health now, and the daily transitions over a period
    (default: the last 30 days)."""
    begin, finish = _period(request, start, end, 30)
    async with request.app.state.engine.connect() as conn:
        cells = await reports.funnel_counts(conn, store.store_id)
        daily = await reports.daily_transitions(conn, store.store_id, begin, finish)
    by_stage = {s: 0 for s in LoyaltyStage}
    by_health = {h: 0 for h in Health}
    for stage, health, n in cells:
        by_stage[LoyaltyStage(stage)] += n
        by_health[Health(health)] += n
    return FunnelReport(
        store_id=store.store_id,
        customers=sum(n for _, _, n in cells),
        by_stage=by_stage,
        by_health=by_health,
        cells=[FunnelCell(stage=LoyaltyStage(s), health=Health(h), customers=n) for s, h, n in sorted(cells)],
        start=begin,
        end=finish,
        transitions=[
            DailyTransitions(date=d, dimension=dim, from_value=f, to_value=t, count=n)
            for d, dim, f, t, n in daily
        ],
    )


class RetentionReport(BaseModel):
    """Customer retention over [start, end]. A customer *counts* at a date when their last (counted) order
    on or before it is within the store's active window (default 365 days)."""

    store_id: str
    start: datetime
    end: datetime
    active_window_days: int
    B: int = Field(description="customers counting at the start of the period")
    E: int = Field(description="customers counting at the end of the period")
    N: int = Field(description="new customers: first order after the start and on or before the end")
    crr: float | None = Field(description="customer retention rate, (E - N) / B x 100; null when B is 0")
    repeat_purchase_rate: float | None = Field(
        description="share of customers ordering in the period who ordered at least twice in it, in %"
    )
    purchase_frequency: float | None = Field(description="orders per ordering customer in the period")
    average_order_value: Decimal | None = Field(description="revenue (less refunds) per order in the period")
    orders: int = Field(description="orders in the period")
    at_risk: int = Field(description="customers at risk now")
    lapsed: int = Field(description="customers lapsed now")


@router.get("/metrics/retention", tags=["funnel"], response_model=RetentionReport)
async def retention(
    store: StoreDep, request: Request, start: StartQuery = None, end: EndQuery = None
) -> RetentionReport:
    """CRR = (E - N) / B x 100 and the other retention figures marketers expect (default: last 90 days)."""
    begin, finish = _period(request, start, end, 90)
    window = store.funnel.active_window
    async with request.app.state.engine.connect() as conn:
        r = await reports.retention(conn, store.store_id, begin, finish, window)
    buyers = r["buyers"]
    return RetentionReport(
        store_id=store.store_id,
        start=begin,
        end=finish,
        active_window_days=window.days,
        B=r["B"],
        E=r["E"],
        N=r["N"],
        crr=round((r["E"] - r["N"]) / r["B"] * 100, 2) if r["B"] else None,
        repeat_purchase_rate=round(r["repeaters"] / buyers * 100, 2) if buyers else None,
        purchase_frequency=round(r["orders"] / buyers, 3) if buyers else None,
        average_order_value=(r["revenue"] / r["orders"]).quantize(Decimal("0.01")) if r["orders"] else None,
        orders=r["orders"],
        at_risk=r["at_risk"],
        lapsed=r["lapsed"],
    )


class Complement(BaseModel):
    product_id: str
    title: str | None
    orders_together: int


@router.get("/products/{product_id}/complements", tags=["products"], response_model=list[Complement])
async def product_complements(
    store: StoreDep, product_id: str, request: Request, limit: Annotated[int, Query(ge=1, le=50)] = 5
) -> list[Complement]:
    """Products most often bought in the same order as this one, most frequent first."""
    async with request.app.state.engine.connect() as conn:
        rows = await reports.complements(conn, store.store_id, product_id, limit)
    return [Complement(product_id=p, title=t, orders_together=n) for p, t, n in rows]
