"""The sender: takes due messages, checks the guards, claims, renders and delivers them, records the outcome.

One transaction decides for a batch of due messages: their customers are locked (in key order) so the
frequency cap is judged by one sender at a time, then each message is skipped, deferred, or claimed
(`pending` -> `sending`, with its coupon issued). Delivery happens after that commit. A crash after the claim
leaves the row in `sending`, and such a row is never picked up again: a customer may miss a message after a
crash, but never gets two.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from liquid.exceptions import LiquidError
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.notifier.adapters import consent_repository, platform_repository, repository
from services.notifier.adapters.recommendations import Recommender, seed_products, viewed_products
from services.notifier.adapters.smtp import DeliveryError, Envelope, SmtpSender, build_email
from services.notifier.adapters.templates import TemplateProblem, TemplateRenderer
from services.notifier.adapters.webhooks import WebhookSender
from services.notifier.domain import coupons as coupon_rules
from services.notifier.domain import guards
from services.notifier.domain.coupon_platforms import PROVISIONING_LEASE, CouponPlatform, Delivery, placement
from services.notifier.domain.flows import RECOMMENDING_FLOWS, SUPPORT_CHANNEL
from services.notifier.domain.messages import KnownCustomer, Message, trigger_currency, trigger_fields
from services.notifier.domain.personalisation import Coupon, StoreFacts
from services.notifier.domain.samples import data_for
from services.notifier.domain.support import alert_subject, support_alert
from services.notifier.entrypoints.coupon_provisioning import CouponProvisioning, Pending
from shared.clock import Clock
from shared.funnel_events import OrderRecorded
from shared.logging import get_logger
from shared.notifier_rules import Channel, FlowName, FlowRule
from shared.stores import StoreConfig, StoreRegistry
from shared.workers import Poller, backoff

log = get_logger(__name__)

SENT = Counter("notifier_messages_sent_total", "Messages delivered, by flow and channel", ["flow", "channel"])
FAILED = Counter(
    "notifier_messages_failed_total", "Messages that failed, by flow and retryable", ["flow", "retryable"]
)
DECIDED = Counter(
    "notifier_guard_verdicts_total", "Guard verdicts at send time, by flow and verdict", ["flow", "verdict"]
)
DELIVERY_SECONDS = Histogram("notifier_delivery_seconds", "Render and hand-over time of one message")


# A temporary delivery failure waits 30 s, then 1, 2, 4... minutes, at most an hour.
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)


@dataclass(frozen=True)
class Claimed:
    row: Message
    customer: KnownCustomer
    store: StoreConfig
    rule: FlowRule
    coupon: Coupon | None


class MessageSender(Poller):
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        stores: StoreRegistry,
        renderer: TemplateRenderer,
        smtp: SmtpSender,
        webhooks: WebhookSender,
        recommender: Recommender,
        public_url: str,
        clock: Clock,
        batch_size: int,
        max_attempts: int,
        idle_poll_seconds: float = 0.5,
        coupon_provisioning: CouponProvisioning | None = None,
    ) -> None:
        self._engine = engine
        self._stores = stores
        self._renderer = renderer
        self._smtp = smtp
        self._webhooks = webhooks
        self._recommender = recommender
        self._public_url = public_url.rstrip("/")
        self._clock = clock
        super().__init__("sender", batch_size, idle_poll_seconds)
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        # Without it (tests of other concerns), every coupon stays ours alone, as before platforms existed.
        self._provisioning = coupon_provisioning

    async def step(self) -> int:
        return await self.send_due()

    async def send_due(self) -> int:
        now = self._clock()
        pending: list[Pending] = []
        async with self._engine.begin() as conn:
            if self._provisioning is not None:
                await platform_repository.release_stale_provisioning(conn, now, PROVISIONING_LEASE)
            rows = await repository.due_messages(conn, now, self._batch_size)
            claimed = await self._decide(conn, rows, now, pending) if rows else []
        if pending and self._provisioning is not None:
            # The coupon step: only messages whose coupon the store's platform confirmed go on.
            claimed = claimed + await self._provisioning.run(pending)
        delivered = [d for d in await asyncio.gather(*(self._deliver(c) for c in claimed)) if d]
        if delivered:
            # One transaction records the whole batch; a crash before it leaves the rows in `sending`,
            # which are never sent again.
            async with self._engine.begin() as conn:
                await repository.mark_sent_many(conn, delivered, self._clock())
        return len(rows)

    async def _decide(
        self, conn: AsyncConnection, rows: list[Message], now: datetime, pending: list[Pending]
    ) -> list[Claimed]:
        keys = [(r.store_id, r.customer_id) for r in rows]
        customers = await repository.lock_customers(conn, keys)
        recent = await repository.recent_marketing(conn, keys, now - guards.WEEK)
        claimed: list[Claimed] = []
        skipped: list[tuple[int, str]] = []
        deferred: list[tuple[int, datetime, str]] = []
        for row in rows:
            key = (row.store_id, row.customer_id)
            store = self._stores.get(row.store_id)
            customer = customers.get(key)
            if store is None or customer is None or row.flow not in FlowName.__members__.values():
                skipped.append((row.id, "store_or_flow_unknown"))
                DECIDED.labels(row.flow, "skip").inc()
                continue
            rule = store.notifier.flow(FlowName(row.flow))
            verdict = guards.check(
                guards.Candidate(
                    marketing=row.marketing,
                    exit_on_order=rule.exit_on_order,
                    trigger_at=row.trigger_at or row.created_at,
                    send_before=row.send_before or now + timedelta(days=3650),
                ),
                guards.recipient(row, customer),
                [at for message_id, at in recent[key] if message_id != row.id],
                cap=store.notifier.frequency_cap,
                quiet=store.notifier.quiet_hours,
                store_timezone=store.timezone,
                now=now,
            )
            if isinstance(verdict, guards.Skip):
                skipped.append((row.id, verdict.reason))
                DECIDED.labels(row.flow, "skip").inc()
                continue
            if isinstance(verdict, guards.Defer):
                deferred.append((row.id, verdict.until, verdict.reason))
                DECIDED.labels(row.flow, "defer").inc()
                continue
            coupon = await self._coupon(conn, row, customer, store, rule, now)
            if row.marketing:
                recent[key].append((row.id, now))
            DECIDED.labels(row.flow, "send").inc()
            if coupon is not None and self._provisioning is not None:
                where = placement(store, coupon.kind)
                if where.platform != CouponPlatform.OURS:
                    coupon = await _placed(conn, store, coupon, where.platform.value, where.delivery)
                    pending.append(
                        Pending(
                            claimed=Claimed(row, customer, store, rule, coupon),
                            store=store,
                            placement=where,
                            coupon=coupon,
                            customer_id=row.customer_id,
                            email=customer.email,
                            flow=row.flow,
                            message_id=row.id,
                            send_before=row.send_before,
                            claimed_at=now,
                        )
                    )
                    continue
            claimed.append(Claimed(row, customer, store, rule, coupon))
        # One statement per outcome for the whole batch, not one round trip per message.
        await repository.skip_many(conn, skipped)
        await repository.defer_many(conn, deferred)
        await repository.claim_many(
            conn, [(c.row.id, c.coupon.code if c.coupon else None) for c in claimed], now
        )
        await platform_repository.begin_provisioning(
            conn, [(p.message_id, p.coupon.code) for p in pending], now
        )
        return claimed

    async def _coupon(
        self,
        conn: AsyncConnection,
        row: Message,
        customer: KnownCustomer,
        store: StoreConfig,
        rule: FlowRule,
        now: datetime,
    ) -> Coupon | None:
        if rule.coupon is None:
            return None
        trigger = row.trigger
        terms = coupon_rules.terms(
            rule.coupon,
            customer.stage,
            currency=trigger_currency(trigger) or store.currency,
            trigger_order_total=trigger.total if isinstance(trigger, OrderRecorded) else None,
            now=now,
        )
        if terms is None:
            return None
        code = await repository.issue_coupon(conn, row, terms, rule.coupon.prefix, now)
        return Coupon(code, terms.kind, terms.value, terms.currency, terms.expires_at)

    async def _deliver(self, claimed: Claimed) -> tuple[int, str] | None:
        """Hand one message over; (id, subject) when it was accepted, None when it failed (recorded)."""
        row = claimed.row
        try:
            with DELIVERY_SECONDS.time():
                subject = await self._hand_over(claimed)
        except (LiquidError, TemplateProblem) as exc:
            # A template bug fails this message visibly; it does not stop the sender for everyone else.
            await self._record_failure(claimed, DeliveryError(f"template error: {exc}", retryable=False))
            return None
        except DeliveryError as exc:
            await self._record_failure(claimed, exc)
            return None
        SENT.labels(row.flow, row.channel).inc()
        log.info(
            "message_sent",
            message_id=row.id,
            flow=row.flow,
            channel=row.channel,
            store_id=row.store_id,
            customer_id=row.customer_id,
        )
        return row.id, subject

    async def _hand_over(self, claimed: Claimed) -> str:
        row, customer, store = claimed.row, claimed.customer, claimed.store
        trigger = trigger_fields(row.trigger)
        profile = customer.profile
        if row.channel == SUPPORT_CHANNEL:
            hook = store.notifier.support_webhook
            if hook is None:
                raise DeliveryError("the store has no support webhook any more", retryable=False)
            await self._webhooks.post(hook, support_alert(row, customer), f"message-{row.id}")
            return alert_subject(customer)
        recommendations = (
            await self._recommender.recommend(
                store, seed_products(trigger, profile), self._clock(), viewed_products(profile)
            )
            if row.flow in RECOMMENDING_FLOWS
            else []
        )
        locale = profile.get("locale")
        ctx = data_for(
            row.flow,
            StoreFacts.of(store),
            profile,
            trigger,
            claimed.coupon,
            recommendations,
            (
                self.unsubscribe_url(customer.unsubscribe_token)
                if row.marketing and customer.unsubscribe_token
                else None
            ),
            self._renderer.locale_for(row.flow, locale, store),
        )
        rendered = self._renderer.render(row.flow, locale, ctx, store)
        if row.channel == Channel.WEBHOOK.value:
            hook = store.notifier.messaging_webhook
            if hook is None or not customer.phone:
                raise DeliveryError("no messaging webhook or phone number", retryable=False)
            payload = {
                "message_id": row.id,
                "store_id": row.store_id,
                "customer_id": row.customer_id,
                "flow": row.flow,
                "to": customer.phone,
                "text": rendered.text,
            }
            await self._webhooks.post(hook, payload, f"message-{row.id}")
            return rendered.subject
        if not customer.email:  # never true: the guards skip a message without an address
            raise DeliveryError("no email address", retryable=False)
        headers: tuple[tuple[str, str], ...] = (
            (("Reply-To", store.email.reply_to),) if store.email.reply_to else ()
        )
        if row.marketing:
            # RFC 8058 one-click unsubscribe: mailbox providers POST to the URL without asking the user.
            headers += (
                ("List-Unsubscribe", f"<{ctx['unsubscribe_url']}>"),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            )
        envelope = Envelope(store.email.from_address, store.email.from_name, customer.email, headers)
        await self._smtp.send(build_email(envelope, rendered))
        return rendered.subject

    def unsubscribe_url(self, token: str) -> str:
        return f"{self._public_url}/u/{token}"

    async def _record_failure(self, claimed: Claimed, exc: DeliveryError) -> None:
        row = claimed.row
        FAILED.labels(row.flow, str(exc.retryable).lower()).inc()
        log.warning(
            "message_failed", message_id=row.id, flow=row.flow, retryable=exc.retryable, error=str(exc)
        )
        now = self._clock()
        async with self._engine.begin() as conn:
            if exc.retryable and row.attempts + 1 < self._max_attempts:
                due = now + backoff(row.attempts + 1, first=FIRST_RETRY, cap=MAX_RETRY)
                await repository.mark_retry(conn, row.id, due, str(exc))
                return
            await repository.mark_failed(conn, row.id, str(exc))
            if exc.permanent_for_address and row.channel == Channel.EMAIL.value:
                # The address will never accept mail: stop every flow from trying it again.
                await repository.suppress(conn, row.store_id, row.customer_id, str(exc), now)
                await consent_repository.record(
                    conn, claimed.store, row.customer_id, subscribed=False, reason="bounce", at=now
                )


async def _placed(
    conn: AsyncConnection, store: StoreConfig, coupon: Coupon, platform: str, delivery: Delivery
) -> Coupon:
    """The coupon as stored (a message taken again after a deferral keeps its first terms and expiry,
    which is what the platform holds), with where it lives."""
    await platform_repository.place_coupon(conn, store.store_id, coupon.code, platform, delivery.value)
    row = await platform_repository.coupon_row(conn, store.store_id, coupon.code)
    return Coupon(
        row.code,
        coupon.kind,
        row.value,
        row.currency,
        row.expires_at,
        store_credit=row.delivery == Delivery.STORE_CREDIT.value,
    )
