"""The sender: claims due messages, renders them, hands them to SMTP, records the outcome.

Claiming (`pending` -> `sending`) commits before the send. A crash after that leaves the row in `sending`,
and such a row is never picked up again: a customer may miss a message after a crash, but never gets two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from liquid.exceptions import LiquidError
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import repository
from services.notifier.adapters.smtp import DeliveryError, Envelope, SmtpSender, build_email
from services.notifier.adapters.templates import TemplateRenderer
from shared.logging import get_logger
from shared.stores import StoreRegistry
from shared.workers import Poller

log = get_logger(__name__)

SENT = Counter("notifier_messages_sent_total", "Messages accepted by the SMTP server", ["flow"])
FAILED = Counter(
    "notifier_messages_failed_total", "Messages that failed, by flow and retryable", ["flow", "retryable"]
)


def retry_delay(attempt: int) -> timedelta:
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempt - 1)))


class MessageSender(Poller):
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        stores: StoreRegistry,
        renderer: TemplateRenderer,
        smtp: SmtpSender,
        clock: Callable[[], datetime],
        batch_size: int,
        max_attempts: int,
        idle_poll_seconds: float = 0.5,
    ) -> None:
        self._engine = engine
        self._stores = stores
        self._renderer = renderer
        self._smtp = smtp
        self._clock = clock
        super().__init__("sender", batch_size, idle_poll_seconds)
        self._batch_size = batch_size
        self._max_attempts = max_attempts

    async def step(self) -> int:
        return await self.send_due()

    async def send_due(self) -> int:
        async with self._engine.begin() as conn:
            claimed = await repository.claim_due(conn, self._clock(), self._batch_size)
        await asyncio.gather(*(self._deliver(row) for row in claimed))
        return len(claimed)

    async def _deliver(self, row: Any) -> None:
        store = self._stores.get(row.store_id)
        try:
            if store is None:
                raise DeliveryError(f"store {row.store_id!r} is no longer registered", retryable=False)
            customer = row.context.get("customer", {})
            rendered = self._renderer.render(
                row.flow,
                customer.get("locale"),
                {"customer": customer, "store": {"name": store.name, "id": store.store_id}},
            )
            envelope = Envelope(store.email.from_address, store.email.from_name, row.to_address)
            await self._smtp.send(build_email(envelope, rendered))
        except LiquidError as exc:
            # A template bug fails this message visibly; it does not stop the sender for everyone else.
            await self._record_failure(row, DeliveryError(f"template error: {exc}", retryable=False))
            return
        except DeliveryError as exc:
            await self._record_failure(row, exc)
            return
        async with self._engine.begin() as conn:
            await repository.mark_sent(conn, row.id, rendered.subject, self._clock())
        SENT.labels(row.flow).inc()
        log.info(
            "message_sent",
            message_id=row.id,
            flow=row.flow,
            store_id=row.store_id,
            customer_id=row.customer_id,
        )

    async def _record_failure(self, row: Any, exc: DeliveryError) -> None:
        FAILED.labels(row.flow, str(exc.retryable).lower()).inc()
        log.warning(
            "message_failed", message_id=row.id, flow=row.flow, retryable=exc.retryable, error=str(exc)
        )
        async with self._engine.begin() as conn:
            if exc.retryable and row.attempts < self._max_attempts:
                await repository.mark_retry(conn, row.id, self._clock() + retry_delay(row.attempts), str(exc))
            else:
                await repository.mark_failed(conn, row.id, str(exc))
