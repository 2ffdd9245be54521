"""The sender: takes due messages, checks the guards, claims, renders and delivers them, records the outcome.

One transaction decides for a batch of due messages: their customers are locked (in key order) so the
frequency cap is judged by one sender at a time, then each message is skipped, deferred, or claimed
(`pending` -> `sending`, with its coupon issued and its place in a lane). The claimed messages go out in
lanes, one lane per SMTP connection: a lane hands over one message, records its outcome (one small statement,
committed), then starts the next. A crash therefore leaves at most one message per lane whose fate is
unknown; domain/delivery.py says what becomes of it and of the rest of the claim once its lease runs out.

One message cannot stop the sender: whatever goes wrong while deciding, preparing or sending it (bad data, a
template error, an address the mail library refuses) fails that message, with the reason, and the others go
on. Only an outage of what every message needs (the database, the SMTP server) pauses the sender, which then
reports itself not ready and tries again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from liquid.exceptions import LiquidError
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.notifier.adapters import consent_repository, platform_repository, repository
from services.notifier.adapters.recommendations import Recommender, seed_products, viewed_products
from services.notifier.adapters.smtp import (
    DeliveryError,
    Envelope,
    SmtpSender,
    SmtpUnavailable,
    prepare_email,
)
from services.notifier.adapters.templates import TemplateProblem, TemplateRenderer
from services.notifier.adapters.webhooks import WebhookSender
from services.notifier.domain import coupons as coupon_rules
from services.notifier.domain import delivery, guards
from services.notifier.domain.coupon_platforms import PROVISIONING_LEASE, CouponPlatform, Delivery, placement
from services.notifier.domain.flows import RECOMMENDING_FLOWS, SUPPORT_CHANNEL
from services.notifier.domain.messages import KnownCustomer, Message, trigger_currency, trigger_fields
from services.notifier.domain.personalisation import Coupon, StoreFacts
from services.notifier.domain.samples import data_for
from services.notifier.domain.support import alert_subject, support_alert
from services.notifier.entrypoints.coupon_provisioning import CouponProvisioning, Pending
from shared.clock import Clock
from shared.consumer_wait import ConsumerWait
from shared.funnel_events import OrderRecorded
from shared.logging import get_logger
from shared.notifier_rules import Channel, FlowName, FlowRule
from shared.stores import StoreConfig, StoreRegistry
from shared.transient import is_infrastructure, is_transient
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
SETTLED = Counter(
    "notifier_unknown_fate_total",
    "Messages whose hand-over may or may not have worked (a sender stopped, or the connection broke during "
    "DATA): resent (transactional, same Message-ID) or uncertain (not sent again)",
    ["flow", "outcome"],
)
REQUEUED = Counter(
    "notifier_claims_requeued_total", "Claimed messages never started, put back in the queue", ["flow"]
)

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


@dataclass
class _Claim:
    """One batch claimed by this sender: what goes straight to sending, what waits for its coupon in the
    store's platform first, and each message's place (lane, position) as recorded in its row."""

    id: str
    claimed: list[Claimed] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    places: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass
class _Batch:
    """A claim being sent: its lanes, which messages were started, and how long its lease surely holds."""

    claim_id: str
    lanes: list[list[Claimed]]
    held_until: float  # time.monotonic() until which no other sender can take the claim over
    outcomes: _OutcomeConnection
    started: set[int] = field(default_factory=set)
    stop: bool = False


class _CouponStep:
    """A claim's coupon step, started at once and awaited by the lanes that come to one of its messages."""

    def __init__(self, provisioning: CouponProvisioning | None, pending: Sequence[Pending]) -> None:
        self._ids = {p.message_id for p in pending}
        self.task: asyncio.Task[list[Any]] | None = None
        if provisioning is not None and pending:
            self.task = asyncio.create_task(provisioning.run(pending))

    def waits_for(self, claimed: Claimed) -> bool:
        return claimed.row.id in self._ids

    async def confirmed(self, claimed: Claimed) -> bool:
        """Whether the platform confirmed its coupon (the message is then `sending`), once the step ends."""
        if self.task is None:
            return False
        # Shielded: one lane stopping must not cancel the step that the others wait for.
        return any(c.row.id == claimed.row.id for c in await asyncio.shield(self.task))

    async def settled(self) -> list[Any]:
        """The messages the step confirmed; none when it failed, or was cancelled because the lanes stopped
        before they needed it (its messages stay `provisioning`, taken back after the provisioning lease)."""
        if self.task is None:
            return []
        if not self.task.done():
            self.task.cancel()
        try:
            return await self.task
        except (asyncio.CancelledError, Exception):  # its failure, if any, reached the lanes that waited
            return []


@dataclass
class _Sent:
    """An outcome to record: the message, its subject, when it was accepted, and whether the claim held it."""

    message_id: int
    subject: str
    at: datetime
    held: asyncio.Future[bool]


class _OutcomeConnection:
    """One autocommit connection for the `sent` outcomes of a claim, shared by its lanes one statement at a
    time, instead of a connection from the pool for each message: the pool checks each connection it hands
    out with three round trips (BEGIN, a ping, ROLLBACK), which cost more than the UPDATE they preceded (a
    third of recording an outcome, measured in the benchmark's profile). One connection per claim, whatever
    the number of lanes, so a sender never holds more than one while it waits on SMTP.

    The outcomes of lanes that finished while a statement was out are written together by the next one
    (repository.mark_claimed_sent_autocommit), each lane still going on only once its own outcome is
    committed: on a loaded machine, answers from the SMTP server come in bunches, and a statement costs the
    notifier the same CPU for one row as for several. Should that statement fail, only its lane gets the
    error; the others write their own outcomes, as before.

    When that connection broke (the database restarted between two messages), the outcome is recorded once
    more on a fresh connection from the pool, checked as before: a message handed over is never left
    unrecorded for a reason the per-message checkout would have got past."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._queued: list[_Sent] = []

    async def mark_sent(self, message_id: int, claim_id: str, subject: str, now: datetime) -> bool:
        sent = _Sent(message_id, subject, now, asyncio.get_running_loop().create_future())
        self._queued.append(sent)
        async with self._lock:
            if not sent.held.done():  # else written with another lane's, while this one waited
                group, self._queued = self._queued, []
                try:
                    held = await self._write(claim_id, group)
                except BaseException:
                    self._queued[:0] = [other for other in group if other is not sent]
                    raise
                for each in group:
                    each.held.set_result(each.message_id in held)
        return sent.held.result()

    async def _write(self, claim_id: str, group: list[_Sent]) -> set[int]:
        """The ids of `group` the claim still held, now `sent`."""
        sent = [(each.message_id, each.subject, each.at) for each in group]
        try:
            if self._conn is None:
                conn = await self._engine.connect()
                self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await repository.mark_claimed_sent_autocommit(self._conn, claim_id, sent)
        except Exception as exc:
            if not is_transient(exc):
                raise
            await self.close(broken=True)
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await repository.mark_claimed_sent_autocommit(conn, claim_id, sent)

    async def close(self, *, broken: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if broken:  # not back to the pool: its asyncpg connection may have broken under SQLAlchemy
                    await conn.invalidate()
                await conn.close()


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
        lanes: int = 4,
        lease: timedelta = timedelta(minutes=2),
        idle_poll_seconds: float = 0.5,
        coupon_provisioning: CouponProvisioning | None = None,
        provisioning_lease: timedelta = PROVISIONING_LEASE,
        transactional_only: bool = False,
        name: str = "sender",
        consumer: ConsumerWait | None = None,
    ) -> None:
        self._engine = engine
        # In the service: a message is taken once every funnel event sent before it came due has been read,
        # so that its guards know of an order queued behind it in a backlog (shared/consumer_wait.py).
        # Without it (tests of other concerns), by the clock alone.
        self._consumer = consumer
        self._stores = stores
        self._renderer = renderer
        self._smtp = smtp
        self._webhooks = webhooks
        self._recommender = recommender
        self._public_url = public_url.rstrip("/")
        self._clock = clock
        super().__init__(name, batch_size, idle_poll_seconds)
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._lanes = lanes
        self._lease = lease
        self._next_recovery = 0.0  # time.monotonic() of the next look for claims whose lease ran out
        # Without it (tests of other concerns), every coupon stays ours alone, as before platforms existed.
        self._provisioning = coupon_provisioning
        self._provisioning_lease = provisioning_lease
        self._transactional_only = transactional_only
        self._sending = False
        self._on_sending: list[Callable[[], None]] = []
        # A store's facts for its templates, made once per registry entry (a StoreConfig is frozen; a reload
        # brings new ones) instead of once a message (its link hosts worked out again each time).
        self._store_facts: dict[str, tuple[StoreConfig, StoreFacts]] = {}

    @property
    def sending(self) -> bool:
        """True while a claim of this sender is going out (its lanes are running)."""
        return self._sending

    def when_sending(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time a claim starts going out."""
        self._on_sending.append(callback)

    def is_outage(self, exc: BaseException) -> bool:
        return isinstance(exc, SmtpUnavailable) or super().is_outage(exc)

    async def step(self) -> int:
        return await self.send_due()

    async def send_due(self) -> int:
        if time.monotonic() >= self._next_recovery:
            await self.settle_expired_claims()
            self._next_recovery = time.monotonic() + self._lease.total_seconds() / 4
        return await self.claim_and_send()

    async def claim_and_send(self) -> int:
        """Claim the due messages (at most a batch) and send them; returns how many were looked at."""
        now = self._clock()
        claim = _Claim(str(uuid.uuid4()))
        rows = await self._claim(claim, now)
        if claim.places:
            self._sending = True
            for callback in self._on_sending:
                callback()
            try:
                await self._send(claim)
            finally:
                self._sending = False
        return len(rows)

    # -- claiming -----------------------------------------------------------------------------------------

    async def _claim(self, claim: _Claim, now: datetime) -> list[Message]:
        """Decide the due messages, claiming those to send; returns the messages looked at."""
        rows: list[Message] = []
        until = now
        try:
            async with self._engine.begin() as conn:
                recorded: Mapping[TopicPartition, datetime] = {}
                if self._consumer is not None:
                    recorded, until = await self._consumer.until(conn, now)
                if self._provisioning is not None:
                    await platform_repository.release_stale_provisioning(conn, now, self._provisioning_lease)
                rows = await repository.due_messages(
                    conn, until, self._batch_size, transactional_only=self._transactional_only
                )
                pending: list[Pending] = []
                decided = await self._decide(conn, rows, now, pending) if rows else []
                places = await self._record_claim(conn, claim, decided, pending, now)
            if self._consumer is not None:
                self._consumer.committed(recorded)
            claim.claimed += decided
            claim.pending += pending
            claim.places |= places
            return rows
        except Exception as exc:
            if is_infrastructure(exc) or not rows:
                raise
            log.warning("batch_decision_failed", messages=len(rows), error=type(exc).__name__)
        # One message broke the batch's decision (everything above was rolled back): decide them one at a
        # time, so that only the culprit fails.
        for row in rows:
            try:
                async with self._engine.begin() as conn:
                    again = await repository.due_message(conn, row.id, until)
                    pending = []
                    decided = await self._decide(conn, [again], now, pending) if again is not None else []
                    places = await self._record_claim(conn, claim, decided, pending, now)
                claim.claimed += decided
                claim.pending += pending
                claim.places |= places
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                error = _reason("could not be decided", exc)
                log.error("message_failed", message_id=row.id, flow=row.flow, retryable=False, error=error)
                FAILED.labels(row.flow, "false").inc()
                async with self._engine.begin() as conn:
                    await repository.fail_unclaimed(conn, row.id, error)
        return rows

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
                    coupon, attempt = await _placed(conn, store, coupon, where.platform.value, where.delivery)
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
                            attempt=attempt,
                        )
                    )
                    continue
            claimed.append(Claimed(row, customer, store, rule, coupon))
        # One statement per outcome for the whole batch, not one round trip per message.
        await repository.skip_many(conn, skipped)
        await repository.defer_many(conn, deferred)
        await platform_repository.begin_provisioning(
            conn, [(p.message_id, p.coupon.code) for p in pending], now
        )
        return claimed

    async def _record_claim(
        self,
        conn: AsyncConnection,
        claim: _Claim,
        claimed: Sequence[Claimed],
        pending: Sequence[Pending],
        now: datetime,
    ) -> dict[int, tuple[int, int]]:
        """Claim the messages to send, each with its place in a lane (after those the claim already has);
        messages waiting for their coupon get their place now too, and take it once confirmed."""
        first = len(claim.places)
        ids = [c.row.id for c in claimed] + [p.message_id for p in pending]
        places = dict(zip(ids, delivery.lanes(first + len(ids), self._lanes)[first:], strict=True))
        slots = [
            repository.ClaimSlot(c.row.id, c.coupon.code if c.coupon else None, *places[c.row.id])
            for c in claimed
        ]
        await repository.claim_many(conn, claim.id, slots, now, now + self._lease)
        await repository.place_in_lanes(
            conn, claim.id, [(p.message_id, *places[p.message_id]) for p in pending], now + self._lease
        )
        return places

    # -- sending ------------------------------------------------------------------------------------------

    async def _send(self, claim: _Claim) -> None:
        """Send a claim lane by lane, renewing its lease meanwhile; put back what was never started.

        The coupon step (the store's platform confirming the coupons of the messages that wait for one) runs
        while the lanes start: a lane sends its messages in the order of their places, and waits for the step
        only when it comes to a message that waited for its coupon. So a welcome at the head of a lane no
        longer waits for the marketing coupons of its claim. The order within a lane is what a crash's
        settlement relies on (domain/delivery.py), and it is kept."""
        batch = _Batch(claim.id, [], self._lease_deadline(), _OutcomeConnection(self._engine))
        lease = asyncio.create_task(self._keep_lease(batch))
        step = _CouponStep(self._provisioning, claim.pending)
        try:
            waiting = [p.claimed for p in claim.pending]
            lanes: dict[int, list[Claimed]] = {}
            for c in sorted(claim.claimed + waiting, key=lambda c: claim.places[c.row.id][1]):
                lanes.setdefault(claim.places[c.row.id][0], []).append(c)
            batch.lanes = list(lanes.values())
            results = await asyncio.gather(
                *(self._run_lane(batch, lane, step) for lane in batch.lanes), return_exceptions=True
            )
        finally:
            confirmed = await step.settled()
            await batch.outcomes.close()
            lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease
            await self._release_unstarted(batch, claim.claimed + confirmed)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _run_lane(self, batch: _Batch, lane: list[Claimed], step: _CouponStep) -> None:
        for claimed in lane:
            if step.waits_for(claimed):
                try:
                    confirmed = await step.confirmed(claimed)
                except BaseException:
                    batch.stop = True
                    raise
                if not confirmed:
                    continue  # its coupon was refused or deferred: recorded by the step, not sent now
            if batch.stop or time.monotonic() > batch.held_until - self._lease.total_seconds() / 2:
                return  # what is left is released, or settled by whoever finds the lease run out
            batch.started.add(claimed.row.id)
            try:
                outcome = await self._deliver(claimed)
            except SmtpUnavailable:
                batch.started.discard(claimed.row.id)  # nothing was handed over
                batch.stop = True
                raise
            except BaseException:
                batch.stop = True
                raise
            try:
                held = await self._record(batch, claimed, outcome)
            except BaseException:
                batch.stop = True
                raise
            if not held:
                log.error("claim_lost", message_id=claimed.row.id, flow=claimed.row.flow)
                batch.stop = True
                return

    async def _keep_lease(self, batch: _Batch) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 4)
            deadline = self._lease_deadline()
            try:
                async with self._engine.begin() as conn:
                    await repository.renew_lease(conn, batch.claim_id, self._clock() + self._lease)
            except Exception as exc:
                # The lanes stop by themselves before the lease runs out; the claim is settled later.
                log.error("lease_not_renewed", error=type(exc).__name__)
                continue
            batch.held_until = deadline

    def _lease_deadline(self) -> float:
        return time.monotonic() + self._lease.total_seconds()

    async def _release_unstarted(self, batch: _Batch, claimed: list[Claimed]) -> None:
        unstarted = [c.row.id for c in claimed if c.row.id not in batch.started]
        if not unstarted:
            return
        try:
            async with self._engine.begin() as conn:
                await repository.release(conn, batch.claim_id, unstarted)
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            log.error("claim_not_released", messages=len(unstarted), error=type(exc).__name__)

    async def _deliver(self, claimed: Claimed) -> str | DeliveryError:
        """Hand one message over: its subject when it was accepted, else why not.

        Raises only for an outage (the database, the SMTP server unreachable): whatever else goes wrong is
        this message's own fault, and must not stop the others."""
        row = claimed.row
        try:
            with DELIVERY_SECONDS.time():
                return await self._hand_over(claimed)
        except SmtpUnavailable:
            raise
        except DeliveryError as exc:
            return exc
        except (LiquidError, TemplateProblem) as exc:
            return DeliveryError(_reason("template error", exc), retryable=False)
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            # E.g. an address the mail library refuses in a header (CR/LF), data a template cannot use.
            log.error("message_unpreparable", message_id=row.id, flow=row.flow, error=type(exc).__name__)
            return DeliveryError(_reason("could not be prepared", exc), retryable=False)

    async def _record(self, batch: _Batch, claimed: Claimed, outcome: str | DeliveryError) -> bool:
        """Record one outcome, right away; False when the claim no longer holds the message."""
        row = claimed.row
        if isinstance(outcome, DeliveryError):
            async with self._engine.begin() as conn:
                return await self._record_failure(conn, claimed, outcome, batch.claim_id)
        # Autocommit: one statement, no BEGIN/COMMIT round trips, for the outcome of every message sent, on
        # the claim's one connection for outcomes (not one held per lane: lanes wait on SMTP, not on us).
        held = await batch.outcomes.mark_sent(row.id, batch.claim_id, outcome, self._clock())
        if not held:
            return False
        SENT.labels(row.flow, row.channel).inc()
        log.info(
            "message_sent",
            message_id=row.id,
            flow=row.flow,
            channel=row.channel,
            store_id=row.store_id,
            customer_id=row.customer_id,
        )
        return True

    # -- after a crash --------------------------------------------------------------------------------------

    async def settle_expired_claims(self) -> int:
        """Settle the claims of senders that stopped renewing their lease (domain/delivery.py); returns how
        many messages were settled. Safe with several senders: each claim is settled once, under its locks."""
        now = self._clock()
        async with self._engine.connect() as conn:
            claims = await repository.expired_claims(conn, now, limit=20)
        settled = 0
        for claim_id in claims:
            async with self._engine.begin() as conn:
                rows = await repository.lock_expired_claim(conn, claim_id, now)
                plan = delivery.settle(unsettled for unsettled, _ in rows)
                await repository.settle_claim(conn, plan.resend, plan.uncertain, plan.requeue, now)
            flows = {unsettled.id: flow for unsettled, flow in rows}
            for ids, outcome in ((plan.resend, "resent"), (plan.uncertain, delivery.UNCERTAIN)):
                for message_id in ids:
                    SETTLED.labels(flows[message_id], outcome).inc()
            for message_id in plan.requeue:
                REQUEUED.labels(flows[message_id]).inc()
            if rows:
                log.warning(
                    "claim_settled",
                    resent=len(plan.resend),
                    uncertain=len(plan.uncertain),
                    requeued=len(plan.requeue),
                )
            settled += len(rows)
        return settled

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
            self._facts_of(store),
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
        message_id = delivery.message_id(
            row.store_id,
            row.customer_id,
            row.flow,
            row.trigger_event_id,
            store.email.from_address.rpartition("@")[2],
        )
        envelope = Envelope(
            store.email.from_address, store.email.from_name, customer.email, headers, message_id
        )
        await self._smtp.send(prepare_email(envelope, rendered), marketing=row.marketing)
        return rendered.subject

    def _facts_of(self, store: StoreConfig) -> StoreFacts:
        kept = self._store_facts.get(store.store_id)
        if kept is None or kept[0] is not store:
            kept = self._store_facts[store.store_id] = (store, StoreFacts.of(store))
        return kept[1]

    def unsubscribe_url(self, token: str) -> str:
        return f"{self._public_url}/u/{token}"

    async def _record_failure(
        self, conn: AsyncConnection, claimed: Claimed, exc: DeliveryError, claim_id: str
    ) -> bool:
        row = claimed.row
        FAILED.labels(row.flow, str(exc.retryable).lower()).inc()
        log.warning(
            "message_failed", message_id=row.id, flow=row.flow, retryable=exc.retryable, error=str(exc)
        )
        now = self._clock()
        if exc.fate_unknown:
            # As after a crash (domain/delivery.py): a transactional message goes once more, with the same
            # Message-ID; a marketing one is not sent again.
            if not row.marketing and row.resent_at is None:
                SETTLED.labels(row.flow, "resent").inc()
                return await repository.resend_once(conn, row.id, claim_id, now)
            SETTLED.labels(row.flow, delivery.UNCERTAIN).inc()
            return await repository.mark_uncertain(conn, row.id, claim_id, str(exc))
        if exc.retryable and row.attempts + 1 < self._max_attempts:
            due = now + backoff(row.attempts + 1, first=FIRST_RETRY, cap=MAX_RETRY)
            return await repository.mark_retry(conn, row.id, due, str(exc), claim_id)
        if not await repository.mark_failed(conn, row.id, str(exc), claim_id):
            return False
        if exc.permanent_for_address and row.channel == Channel.EMAIL.value:
            # The address will never accept mail: stop every flow from trying it again.
            await repository.suppress(conn, row.store_id, row.customer_id, str(exc), now)
            await consent_repository.record(
                conn, claimed.store, row.customer_id, subscribed=False, reason="bounce", at=now
            )
        return True


def _reason(what: str, exc: BaseException) -> str:
    """Why a message failed, for its row: the kind of error, never its text (which may quote the address)."""
    return f"{what}: {type(exc).__name__}"


async def _placed(
    conn: AsyncConnection, store: StoreConfig, coupon: Coupon, platform: str, delivery: Delivery
) -> tuple[Coupon, int]:
    """The coupon as stored (a message taken again after a deferral keeps its first terms and expiry,
    which is what the platform holds), with where it lives; and which try in the platform this is (from 1,
    counted now: platform_repository.begin_attempt)."""
    row = await platform_repository.begin_attempt(conn, store.store_id, coupon.code, platform, delivery.value)
    placed = Coupon(
        row.code,
        coupon.kind,
        row.value,
        row.currency,
        row.expires_at,
        store_credit=row.delivery == Delivery.STORE_CREDIT.value,
    )
    return placed, int(row.platform_attempts)
