"""Queries for coupons confirmed by the store's platform and the stores' connection status.
The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifier.adapters.tables import coupons, messages, store_connections
from services.notifier.domain.messages import MessageStatus

PROVISIONING = MessageStatus.PROVISIONING


def _still_ours(message_id: int, claimed_at: datetime) -> tuple[ColumnElement[bool], ...]:
    """The message is still provisioning under this claim: a lease that ran out meanwhile (and gave the
    message to another sender) makes the update match nothing."""
    return (
        messages.c.id == message_id,
        messages.c.status == PROVISIONING,
        messages.c.claimed_at == claimed_at,
    )


async def release_stale_provisioning(conn: AsyncConnection, now: datetime, lease: timedelta) -> int:
    """Messages left in `provisioning` by a crashed sender go back to `pending`: nothing was sent yet, and
    provisioning looks the coupon up before creating it, so trying again creates nothing twice."""
    released = await conn.execute(
        update(messages)
        .where(messages.c.status == PROVISIONING, messages.c.claimed_at < now - lease)
        .values(status=MessageStatus.PENDING, claimed_at=None, last_error="provisioning interrupted; retried")
        .returning(messages.c.id)
    )
    return len(released.all())


async def begin_attempt(conn: AsyncConnection, store_id: str, code: str, platform: str, delivery: str) -> Any:
    """The coupon's next try in its platform begins: where it must exist is set if new (kept once set: a
    retry goes to the same place), the try is counted, and the row comes back (its terms as first issued).

    Counted here, in the transaction that moves its message to `provisioning`, not after the platform
    answers: a try that a crash cut short still counts, so a coupon whose count is 1 has never been sent to
    the platform before, and only such a first try may skip the look-up before the create (the platform
    refuses a code it already holds, and the adapters then look it up: coupon_platforms.py)."""
    fresh = coupons.c.platform.is_(None)
    found = await conn.execute(
        update(coupons)
        .where(coupons.c.store_id == store_id, coupons.c.code == code)
        .values(
            # The right-hand sides read the row as it was (PostgreSQL's UPDATE): its platform before this.
            platform=case((fresh, platform), else_=coupons.c.platform),
            delivery=case((fresh, delivery), else_=coupons.c.delivery),
            platform_attempts=coupons.c.platform_attempts + 1,
        )
        .returning(*coupons.c)
    )
    return found.one()


async def begin_provisioning(
    conn: AsyncConnection, claimed: Sequence[tuple[int, str]], now: datetime
) -> None:
    """`pending` -> `provisioning` for (message id, coupon code); the frequency cap counts it as a claim."""
    if claimed:
        await conn.execute(
            update(messages)
            .where(messages.c.id == bindparam("message_id"))
            .values(status=PROVISIONING, claimed_at=now, coupon_code=bindparam("claimed_coupon")),
            [{"message_id": message_id, "claimed_coupon": code} for message_id, code in claimed],
        )


async def confirm(
    conn: AsyncConnection,
    message_id: int,
    claimed_at: datetime,
    store_id: str,
    code: str,
    platform_id: str | None,
    now: datetime,
) -> bool:
    """The platform holds the coupon: record it, and move the message on to `sending` if it is still ours
    (a sender that outlived its lease finds it taken back, and sends nothing)."""
    await conn.execute(
        update(coupons)
        .where(coupons.c.store_id == store_id, coupons.c.code == code)
        .values(platform_id=platform_id, confirmed_at=now)
    )
    moved = await conn.execute(
        update(messages)
        .where(*_still_ours(message_id, claimed_at))
        .values(status=MessageStatus.SENDING, claimed_at=now, attempts=messages.c.attempts + 1)
        .returning(messages.c.id)
    )
    return moved.first() is not None


async def retry_later(
    conn: AsyncConnection, message_id: int, claimed_at: datetime, due_at: datetime, reason: str
) -> None:
    await conn.execute(
        update(messages)
        .where(*_still_ours(message_id, claimed_at))
        .values(
            status=MessageStatus.PENDING,
            claimed_at=None,
            due_at=due_at,
            last_error=f"coupon deferred: {reason}",
        )
    )


async def give_up(conn: AsyncConnection, message_id: int, claimed_at: datetime, reason: str) -> None:
    await conn.execute(
        update(messages)
        .where(*_still_ours(message_id, claimed_at))
        .values(status=MessageStatus.SKIPPED, skip_reason="coupon_unavailable", last_error=reason[:500])
    )


async def record_connection(
    conn: AsyncConnection, store_id: str, platform: str, reason: str | None, now: datetime
) -> None:
    """The store's connection status: `ok` after a call that worked, `refused` with the reason otherwise."""
    values: dict[str, Any] = {
        "store_id": store_id,
        "platform": platform,
        "status": "ok" if reason is None else "refused",
        "reason": reason,
        "updated_at": now,
    }
    if reason is None:
        values["last_ok_at"] = now
    stmt = insert(store_connections).values(**values)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["store_id", "platform"],
            set_={k: getattr(stmt.excluded, k) for k in values if k not in ("store_id", "platform")},
        )
    )


async def connections(conn: AsyncConnection, store_id: str) -> list[Any]:
    rows = await conn.execute(
        select(store_connections)
        .where(store_connections.c.store_id == store_id)
        .order_by(store_connections.c.platform)
    )
    return list(rows.all())
