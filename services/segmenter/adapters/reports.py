"""Read-side queries for marketing tools: funnel counts, daily transitions, retention, complements."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, and_, cast, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.segmenter.adapters.tables import copurchases, identities, orders, profiles, transitions
from shared.clock import earlier
from shared.raw_sql import fetch_alone


async def funnel_counts(conn: AsyncConnection, store_id: str) -> list[tuple[str, str, int]]:
    stmt = (
        select(profiles.c.stage, profiles.c.health, func.count())
        .where(
            profiles.c.store_id == store_id,
            profiles.c.merged_into.is_(None),
            # Not a customer: refunds waiting for an order not seen yet (see the processor).
            profiles.c.customer_id.not_like("order:%"),
        )
        .group_by(profiles.c.stage, profiles.c.health)
    )
    return [(r[0], r[1], int(r[2])) for r in (await conn.execute(stmt)).all()]


async def daily_transitions(
    conn: AsyncConnection, store_id: str, start: datetime, end: datetime
) -> list[tuple[date, str, str, str, int]]:
    day = cast(func.timezone("UTC", transitions.c.occurred_at), Date)
    stmt = (
        select(day, transitions.c.dimension, transitions.c.from_value, transitions.c.to_value, func.count())
        .where(
            transitions.c.store_id == store_id,
            transitions.c.occurred_at >= start,
            transitions.c.occurred_at < end,
        )
        .group_by(day, transitions.c.dimension, transitions.c.from_value, transitions.c.to_value)
        .order_by(day)
    )
    return [(r[0], r[1], r[2], r[3], int(r[4])) for r in (await conn.execute(stmt)).all()]


async def _active_at(conn: AsyncConnection, store_id: str, at: datetime, window: timedelta) -> int:
    stmt = select(func.count(distinct(orders.c.customer_id))).where(
        orders.c.store_id == store_id,
        orders.c.counts,
        orders.c.placed_at > earlier(at, window),
        orders.c.placed_at <= at,
    )
    return int((await conn.execute(stmt)).scalar_one())


async def retention(
    conn: AsyncConnection, store_id: str, start: datetime, end: datetime, window: timedelta
) -> dict[str, Any]:
    begin = await _active_at(conn, store_id, start, window)
    finish = await _active_at(conn, store_id, end, window)
    # New customers: first order after the start (an order exactly at the start already counts in B).
    firsts = (
        select(orders.c.customer_id, func.min(orders.c.placed_at).label("first"))
        .where(orders.c.store_id == store_id, orders.c.counts)
        .group_by(orders.c.customer_id)
        .subquery()
    )
    new = int(
        (
            await conn.execute(
                select(func.count()).select_from(firsts).where(firsts.c.first > start, firsts.c.first <= end)
            )
        ).scalar_one()
    )
    in_period = and_(
        orders.c.store_id == store_id, orders.c.counts, orders.c.placed_at >= start, orders.c.placed_at <= end
    )
    per_customer = (
        select(
            orders.c.customer_id,
            func.count().label("n"),
            func.sum(orders.c.total - orders.c.refunded).label("v"),
        )
        .where(in_period)
        .group_by(orders.c.customer_id)
        .subquery()
    )
    row = (
        await conn.execute(
            select(
                func.count(),
                func.count().filter(per_customer.c.n >= 2),
                func.coalesce(func.sum(per_customer.c.n), 0),
                func.coalesce(func.sum(per_customer.c.v), 0),
            ).select_from(per_customer)
        )
    ).one()
    buyers, repeaters, order_count, revenue = int(row[0]), int(row[1]), int(row[2]), Decimal(row[3])
    health: dict[str, int] = dict(
        (
            await conn.execute(
                select(profiles.c.health, func.count())
                .where(profiles.c.store_id == store_id, profiles.c.merged_into.is_(None))
                .group_by(profiles.c.health)
            )
        ).all()
    )
    return {
        "B": begin,
        "E": finish,
        "N": new,
        "buyers": buyers,
        "repeaters": repeaters,
        "orders": order_count,
        "revenue": revenue,
        "at_risk": int(health.get("at_risk", 0)),
        "lapsed": int(health.get("lapsed", 0)),
    }


async def customers_by_email(conn: AsyncConnection, store_id: str, email: str) -> list[str]:
    stmt = select(identities.c.customer_id).where(
        identities.c.store_id == store_id, identities.c.identifier == f"email:{email.strip().lower()}"
    )
    return list((await conn.execute(stmt)).scalars())


# Sent straight to asyncpg (shared/raw_sql.py): the notifier asks for every email of a recommending flow,
# and building this select and running it through SQLAlchemy's execute was about two thirds of the route's
# own work at 1,000 events/s. The route's connection runs nothing else, so no BEGIN and ROLLBACK around it.
_COMPLEMENTS = (
    f"SELECT other_product_id, title, orders FROM {copurchases.fullname} "  # noqa: S608
    # A pair an edited order no longer holds may be left at 0.
    "WHERE store_id = $1 AND product_id = $2 AND orders > 0 ORDER BY orders DESC, other_product_id LIMIT $3"
)


async def complements(
    conn: AsyncConnection, store_id: str, product_id: str, limit: int
) -> list[tuple[str, str | None, int]]:
    rows = await fetch_alone(conn, _COMPLEMENTS, store_id, product_id, limit)
    return [(r[0], r[1], int(r[2])) for r in rows]
