"""The notifier against a real Postgres and a real SMTP server, with an injected clock: every flow, exits,
caps, coupons, attribution, the webhook channels, and the at-most-once guarantee."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import repository
from services.notifier.adapters.webhooks import signature
from services.notifier.domain.coupons import CouponTerms
from shared.funnel_events import FunnelEvent
from shared.notifier_rules import CouponKind
from tests.builders import funnel_event
from tests.fixtures.stack import SmtpServer
from tests.integration.notifier_harness import Clock, Notifier, dev_store, webhook_receiver

pytestmark = pytest.mark.integration

# A weekday afternoon in UTC; the development registry has no quiet hours, tests that need them set them.
T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
ORDER = {
    "order_id": "o-1",
    "total": "59.90",
    "currency": "EUR",
    "items": [{"product_id": "p-kit", "title": "Pour-Over Kit", "quantity": 1, "price": "59.90"}],
}
CART = {
    "cart_id": "k-1",
    "items": [{"product_id": "p-kit", "title": "Pour-Over Kit", "quantity": 1, "price": "59.90"}],
    "total": "59.90",
    "currency": "EUR",
    "recovery_url": "https://demo-store.example/cart/k-1",
    "last_activity_at": (T0 - timedelta(hours=1)).isoformat(),
    "source": "timer",
}


@pytest.fixture
async def notifier(engine: AsyncEngine, smtp_server: SmtpServer, store_id: str) -> AsyncIterator[Notifier]:
    harness = Notifier(engine, dev_store(store_id), Clock(T0), smtp_server.host, smtp_server.port)
    yield harness
    await harness.http.aclose()


def mails_to(smtp_server: SmtpServer, customer_id: str) -> list[Any]:
    return [m for m in smtp_server.messages if m["To"] == f"{customer_id}@example.com"]


def event(n: Notifier, kind: str, customer_id: str, payload: dict[str, Any], **profile: Any) -> FunnelEvent:
    return funnel_event(kind, n.store.store_id, customer_id, n.clock.now, payload, **profile)


def stage(to_stage: str, from_stage: str = "prospect") -> dict[str, str]:
    return {"from_stage": from_stage, "to_stage": to_stage, "reason": "test"}


# Every email flow with its trigger, the wall time it needs, and words its subject must carry.
FLOWS: list[tuple[str, str, dict[str, Any], timedelta, str]] = [
    ("welcome", "stage_changed", stage("first_time"), timedelta(0), "Thank you for your order, Ines!"),
    ("abandoned_cart", "cart_abandoned", CART, timedelta(0), "Ines, your cart is waiting: 10% off inside"),
    (
        "review_request",
        "order_placed",
        ORDER,
        timedelta(seconds=30),
        "Ines, how do you like your Pour-Over Kit?",
    ),
    ("follow_up", "order_placed", ORDER, timedelta(seconds=60), "Did we win you over, Ines?"),
    ("repeat_milestone", "stage_changed", stage("repeat", "first_time"), timedelta(0), "Ines, you came back"),
    ("vip", "stage_changed", stage("loyal", "repeat"), timedelta(0), "Ines, welcome to our VIP circle"),
    ("referral", "stage_changed", stage("advocate", "loyal"), timedelta(0), "Ines, a gift for your friends"),
    (
        "win_back",
        "health_changed",
        {"from_health": "active", "to_health": "at_risk", "reason": "r"},
        timedelta(0),
        "We miss you, Ines: 15% off",
    ),
    (
        "birthday",
        "birthday_due",
        {"birthday": "1990-11-30", "days_before": 7},
        timedelta(0),
        "Happy birthday, Ines!",
    ),
    (
        "survey_thanks",
        "survey_scored",
        {"survey_id": "s1", "level": "conative", "csat": 5},
        timedelta(0),
        "Thank you for your answers, Ines: here is your reward",
    ),
]


@pytest.mark.parametrize(("flow", "kind", "payload", "wait", "subject"), FLOWS, ids=[f[0] for f in FLOWS])
async def test_every_flow_reaches_the_smtp_server_personalised(
    notifier: Notifier,
    smtp_server: SmtpServer,
    flow: str,
    kind: str,
    payload: dict[str, Any],
    wait: timedelta,
    subject: str,
) -> None:
    customer = f"{flow}-{notifier.store.store_id}"
    if flow == "follow_up":  # else the review request, due first, would hold the frequency cap
        notifier.store = dev_store(
            notifier.store.store_id, flows={"review_request": {"enabled": False}, "follow_up": {"delay": 60}}
        )
    await notifier.plan([event(notifier, kind, customer, payload)])
    notifier.clock.advance(wait)
    await notifier.send()
    [row] = [r for r in await notifier.rows(customer) if r.flow == flow]
    assert row.status == "sent", row
    [mail] = [m for m in mails_to(smtp_server, customer) if m["Subject"] == row.subject]
    assert mail["Subject"].startswith(subject)
    marketing = flow not in ("welcome", "survey_thanks")
    assert (mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click") is marketing
    if marketing:
        assert mail["List-Unsubscribe"].startswith("<https://notify.loyalty-funnel.test/u/")
    body = mail.get_body(("plain",)).get_content()
    assert "Hi Ines," in body
    if row.coupon_code:
        assert row.coupon_code in body


async def test_a_delayed_flow_waits_for_its_time(notifier: Notifier, smtp_server: SmtpServer) -> None:
    await notifier.plan([event(notifier, "order_placed", "c-delay", ORDER)])
    assert await notifier.send() == 0
    notifier.clock.advance(timedelta(seconds=31))
    assert await notifier.send() == 1
    assert [r.flow for r in await notifier.rows("c-delay") if r.status == "sent"] == ["review_request"]


async def test_a_redelivered_funnel_event_sends_nothing_new(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    trigger = event(notifier, "stage_changed", "c-dup", stage("first_time"))
    await notifier.plan([trigger, trigger])  # a duplicate inside one batch...
    await notifier.plan([trigger])  # ...and redelivered in a later one
    assert await notifier.send() == 1
    assert await notifier.send() == 0
    assert len(mails_to(smtp_server, "c-dup")) == 1
    assert [(r.flow, r.status, r.attempts) for r in await notifier.rows("c-dup")] == [("welcome", "sent", 1)]


async def test_a_permanent_refusal_suppresses_the_address_for_every_flow(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    who = {"email": "bounce-c@example.com"}
    await notifier.plan([event(notifier, "stage_changed", "c-bounce", stage("first_time"), **who)])
    await notifier.send()
    await notifier.plan([event(notifier, "stage_changed", "c-bounce", stage("repeat", "first_time"), **who)])
    await notifier.send()
    rows = await notifier.rows("c-bounce")
    assert [(r.flow, r.status, r.skip_reason) for r in rows] == [
        ("welcome", "failed", None),
        ("repeat_milestone", "skipped", "suppressed"),
    ]


async def test_an_order_before_the_send_exits_the_abandoned_cart_flow(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    await notifier.plan([event(notifier, "cart_abandoned", "c-exit", CART)])
    notifier.clock.advance(timedelta(minutes=1))
    # The customer completes the purchase before the sender gets to the message.
    ordered = event(notifier, "order_placed", "c-exit", ORDER, last_order_at=notifier.clock.now.isoformat())
    await notifier.plan([ordered])
    await notifier.send()
    [cart] = [r for r in await notifier.rows("c-exit") if r.flow == "abandoned_cart"]
    assert (cart.status, cart.skip_reason) == ("skipped", "exited_ordered")
    assert mails_to(smtp_server, "c-exit") == []
    assert await notifier.coupons() == []


async def test_the_frequency_cap_defers_the_second_marketing_email(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    await notifier.plan([event(notifier, "stage_changed", "c-cap", stage("repeat", "first_time"))])
    await notifier.send()
    notifier.clock.advance(timedelta(hours=1))
    await notifier.plan([event(notifier, "cart_abandoned", "c-cap", CART)])
    await notifier.send()
    cart = next(r for r in await notifier.rows("c-cap") if r.flow == "abandoned_cart")
    assert (cart.status, cart.due_at) == ("pending", T0 + timedelta(hours=16))
    assert cart.last_error == "deferred: frequency_cap"
    assert len(mails_to(smtp_server, "c-cap")) == 1
    notifier.clock.now = T0 + timedelta(hours=16)
    await notifier.send()
    assert len(mails_to(smtp_server, "c-cap")) == 2


async def test_quiet_hours_defer_rather_than_drop(
    engine: AsyncEngine, smtp_server: SmtpServer, store_id: str
) -> None:
    store = dev_store(store_id, quiet_hours={"start": "21:00", "end": "08:00"})
    night = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)  # 23:30 in Paris
    n = Notifier(engine, store, Clock(night), smtp_server.host, smtp_server.port)
    await n.plan([funnel_event("cart_abandoned", store_id, "c-night", night, CART)])
    await n.send()
    [row] = await n.rows("c-night")
    assert (row.status, row.due_at) == ("pending", datetime(2026, 11, 24, 7, 0, tzinfo=UTC))  # 08:00 Paris
    n.clock.now = row.due_at
    await n.send()
    assert [r.status for r in await n.rows("c-night")] == ["sent"]
    await n.http.aclose()


async def test_coupons_stay_unique_under_concurrent_senders(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    customers = [f"c-many-{i}" for i in range(40)]
    await notifier.plan(
        [event(notifier, "cart_abandoned", c, {**CART, "cart_id": f"k-{c}"}) for c in customers]
    )
    senders = [notifier.sender(batch_size=7) for _ in range(4)]

    async def drain(sender: Any) -> None:
        while await sender.send_due():
            pass

    await asyncio.gather(*(drain(s) for s in senders))
    codes = [c.code for c in await notifier.coupons()]
    assert len(codes) == len(set(codes)) == 40
    assert sorted(len(mails_to(smtp_server, c)) for c in customers) == [1] * 40
    # The same message's coupon asked for concurrently is still one coupon.
    row = (await notifier.rows(customers[0]))[0]
    terms = CouponTerms(CouponKind.PERCENT, Decimal(10), None, T0 + timedelta(days=3))

    async def issue() -> str:
        async with notifier.engine.begin() as conn:
            return await repository.issue_coupon(conn, row, terms, "CART", T0)

    assert len(set(await asyncio.gather(*(issue() for _ in range(10))))) == 1


async def test_an_order_using_the_code_redeems_it_and_is_attributed_to_the_flow(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    await notifier.plan([event(notifier, "cart_abandoned", "c-win", CART)])
    await notifier.send()
    [coupon] = await notifier.coupons()
    notifier.clock.advance(timedelta(days=1))
    order = {**ORDER, "order_id": "o-win", "discount_codes": [coupon.code.lower()]}
    placed = event(notifier, "order_placed", "c-win", order)
    await notifier.plan([placed, placed])
    [coupon] = await notifier.coupons()
    assert (coupon.redeemed_order_id, coupon.redeemed_by) == ("o-win", "c-win")
    cart = next(r for r in await notifier.rows("c-win") if r.flow == "abandoned_cart")
    assert (cart.converted_order_id, cart.revenue) == ("o-win", Decimal("59.90"))
    async with notifier.engine.connect() as conn:
        counts = await repository.flow_counts(conn, notifier.store.store_id, None)
        coupon_counts = await repository.coupon_counts(conn, notifier.store.store_id, None)
    [report] = [r for r in counts if r.flow == "abandoned_cart"]
    assert (report.n, report.converted, report.revenue) == (1, 1, Decimal("59.90"))
    assert [(c.flow, c.issued, c.redeemed) for c in coupon_counts] == [("abandoned_cart", 1, 1)]


async def test_an_order_after_the_attribution_window_is_not_credited(notifier: Notifier) -> None:
    await notifier.plan([event(notifier, "stage_changed", "c-late", stage("repeat", "first_time"))])
    await notifier.send()
    notifier.clock.advance(timedelta(days=5, minutes=1))
    await notifier.plan([event(notifier, "order_placed", "c-late", {**ORDER, "order_id": "o-late"})])
    milestone = next(r for r in await notifier.rows("c-late") if r.flow == "repeat_milestone")
    assert milestone.converted_order_id is None


async def test_low_csat_calls_the_support_webhook_signed_and_flagged_priority_for_loyal_customers(
    engine: AsyncEngine, smtp_server: SmtpServer, store_id: str
) -> None:
    with webhook_receiver(statuses=[503]) as (url, received):
        store = dev_store(store_id, support_webhook={"url": url, "secret": "support-secret-value"})
        n = Notifier(engine, store, Clock(T0), smtp_server.host, smtp_server.port)
        scored = {"survey_id": "s1", "level": "none", "csat": 1}
        await n.plan([funnel_event("survey_scored", store_id, "c-sad", T0, scored, stage="loyal")])
        await n.send()  # the desk answers 503 first: retried after the backoff
        n.clock.advance(timedelta(minutes=1))
        await n.send()
        await n.http.aclose()
    assert len(received) == 2
    alert = received[-1]
    assert alert.headers["X-LoyaltyFunnel-Signature"] == signature("support-secret-value", alert.body)
    assert alert.json()["priority"] is True
    assert alert.json()["survey"]["csat"] == 1
    rows = {r.flow: r for r in await n.rows("c-sad")}
    assert rows["support_alert"].status == "sent"
    assert rows["survey_thanks"].status == "sent"


async def test_a_flow_on_the_messaging_webhook_reaches_the_sms_provider(
    engine: AsyncEngine, smtp_server: SmtpServer, store_id: str
) -> None:
    with webhook_receiver() as (url, received):
        store = dev_store(
            store_id,
            messaging_webhook={"url": url, "secret": "sms-secret-value"},
            flows={"birthday": {"channel": "webhook"}},
        )
        n = Notifier(engine, store, Clock(T0), smtp_server.host, smtp_server.port)
        due = {"birthday": "1990-11-30", "days_before": 7}
        await n.plan([funnel_event("birthday_due", store_id, "c-sms", T0, due, phone="+33612345678")])
        await n.send()
        await n.http.aclose()
    [sms] = received
    body = sms.json()
    assert body["to"] == "+33612345678"
    assert "BDAY-" in body["text"]
    assert sms.headers["Idempotency-Key"] == f"message-{body['message_id']}"
    assert sms.headers["X-LoyaltyFunnel-Signature"] == signature("sms-secret-value", sms.body)
    assert mails_to(smtp_server, "c-sms") == []


async def test_a_backlog_sends_transactional_messages_before_marketing_ones(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    """A sender behind on its work sends the welcome a customer is waiting for before a review request that
    has been due longer."""
    sid = notifier.store.store_id
    await notifier.plan([event(notifier, "order_placed", f"early-{sid}", ORDER, accepts_marketing=True)])
    notifier.clock.advance(timedelta(seconds=40))  # the review request (30 s) is due
    await notifier.plan([event(notifier, "stage_changed", f"late-{sid}", stage("first_time"))])
    sender = notifier.sender(batch_size=1)
    assert await sender.send_due() == 1
    assert [m["To"] for m in smtp_server.messages[-1:]] == [f"late-{sid}@example.com"]
    assert await sender.send_due() == 1
    assert [m["To"] for m in smtp_server.messages[-1:]] == [f"early-{sid}@example.com"]
