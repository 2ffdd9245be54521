"""The sender's coupon step: between the claim and the send, each coupon is made to exist in the store's
platform, and only messages whose coupon the platform confirmed go on to be sent.

    decide (one transaction): guards pass -> coupon drawn -> message `provisioning`
    provision (no transaction held): create (a coupon's first try) or platform lookup, create only if
                                     absent (a later try)
    record (one transaction): confirmed -> `sending` (then delivered); away -> `pending` again later;
                              refused -> `skipped` as `coupon_unavailable`

A crash anywhere here leaves the message in `provisioning`; after a lease the sender takes it back, and the
lookup before create finds what the platform already made, so nothing is created twice and nothing was sent.
Only a coupon's first try (counted as 1 when its message was claimed, before any call) goes straight to
the create, a call less: no try before it made the code, and should it exist all the same (made by a version
that counted a try only once the platform answered, or by someone else), the platform refuses the duplicate
and the adapter looks it up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import platform_repository
from services.notifier.adapters.coupon_platforms import PlatformClients
from services.notifier.domain.coupon_platforms import (
    COUPON_UNAVAILABLE,
    Confirmed,
    CouponOrder,
    Placement,
    PlatformError,
    PlatformUnavailable,
    Retry,
    StoreWideRefusal,
    after_failure,
)
from services.notifier.domain.personalisation import Coupon
from shared.clock import Clock
from shared.logging import get_logger
from shared.stores import StoreConfig

log = get_logger(__name__)

PROVISIONED = Counter(
    "notifier_coupon_provisioning_total",
    "Coupons made to exist in a store's platform, by platform and outcome",
    ["platform", "outcome"],
)
# A claim's messages that need a coupon wait for this step; its other messages go out meanwhile (sender.py).
STEP_SECONDS = Histogram(
    "notifier_coupon_step_seconds",
    "Time a claim's coupon step took: the platforms' answers and their outcomes recorded",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
UNAVAILABLE = Counter(
    "notifier_coupon_unavailable_total",
    "Messages skipped because the store's platform refused their coupon, by store and platform",
    ["store_id", "platform"],
)


@dataclass(frozen=True)
class Pending:
    """A claimed message waiting for its coupon: `claimed` is the sender's own claim object."""

    claimed: Any
    store: StoreConfig
    placement: Placement
    coupon: Coupon
    customer_id: str
    email: str | None
    flow: str
    message_id: int
    send_before: datetime | None
    claimed_at: datetime
    attempt: int  # which try in the platform this is, from 1 (counted as the message was claimed)


class CouponProvisioning:
    def __init__(self, engine: AsyncEngine, platforms: PlatformClients, clock: Clock) -> None:
        self._engine = engine
        self._platforms = platforms
        self._clock = clock

    async def run(self, pending: Sequence[Pending]) -> list[Any]:
        """The claims whose coupon the platform confirmed, now `sending`; the others are recorded."""
        if not pending:
            return []
        with STEP_SECONDS.time():
            return await self._run(pending)

    async def _run(self, pending: Sequence[Pending]) -> list[Any]:
        results = await asyncio.gather(*(self._ensure(p) for p in pending))
        now = self._clock()
        ready: list[Any] = []
        async with self._engine.begin() as conn:
            for item, outcome in zip(pending, results, strict=True):
                platform = item.placement.platform.value
                code = item.coupon.code
                if isinstance(outcome, Confirmed):
                    PROVISIONED.labels(platform, "created" if outcome.created else "found").inc()
                    await platform_repository.record_connection(
                        conn, item.store.store_id, platform, None, now
                    )
                    if await platform_repository.confirm(
                        conn,
                        item.message_id,
                        item.claimed_at,
                        item.store.store_id,
                        code,
                        outcome.platform_id,
                        now,
                    ):
                        ready.append(item.claimed)
                    continue
                verdict = after_failure(outcome, attempts=item.attempt, now=now, send_before=item.send_before)
                if isinstance(verdict, Retry):
                    PROVISIONED.labels(platform, "deferred").inc()
                    await platform_repository.retry_later(
                        conn, item.message_id, item.claimed_at, verdict.due_at, verdict.reason
                    )
                    log.warning(
                        "coupon_deferred",
                        message_id=item.message_id,
                        store_id=item.store.store_id,
                        platform=platform,
                        reason=verdict.reason,
                        retry_at=verdict.due_at.isoformat(),
                    )
                    continue
                PROVISIONED.labels(platform, COUPON_UNAVAILABLE).inc()
                UNAVAILABLE.labels(item.store.store_id, platform).inc()
                await platform_repository.give_up(conn, item.message_id, item.claimed_at, verdict.reason)
                if isinstance(outcome, StoreWideRefusal):
                    await platform_repository.record_connection(
                        conn, item.store.store_id, platform, outcome.reason, now
                    )
                log.warning(
                    "coupon_unavailable",
                    message_id=item.message_id,
                    store_id=item.store.store_id,
                    platform=platform,
                    reason=verdict.reason,
                )
        return ready

    async def _ensure(self, item: Pending) -> Confirmed | PlatformError:
        order = CouponOrder(
            code=item.coupon.code,
            kind=item.coupon.kind,
            value=item.coupon.value,
            currency=item.coupon.currency,
            starts_at=item.claimed_at,
            expires_at=item.coupon.expires_at,
            customer_id=item.customer_id,
            email=item.email,
            title=f"{item.store.name} · {item.flow.replace('_', ' ')} · {item.coupon.code}",
            delivery=item.placement.delivery,
            store_id=item.store.store_id,
        )
        try:
            # A first try skips the platform's look-up (one call less a coupon; the duplicate answer still
            # finds a code made by a try nobody recorded: coupon_platforms.py).
            return await self._platforms.ensure(
                item.store, item.placement.platform, order, first_try=item.attempt == 1
            )
        except PlatformError as exc:
            return exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # An answer not shaped as the platform documents: not this message's fault, and not a reason to
            # stop the sender for every store. Tried again later; the log says what was odd.
            log.warning("platform_answer_unexpected", store_id=item.store.store_id, error=type(exc).__name__)
            return PlatformUnavailable(f"unexpected answer from the platform ({type(exc).__name__})")
