"""The sender against a real Postgres and a real SMTP server when things go wrong: a sender that died with a
claim, a message whose data breaks its preparation or its decision, an SMTP server that cannot be reached."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.devstack.ports import free_ports
from services.notifier.adapters import repository
from services.notifier.adapters.smtp import SmtpUnavailable
from services.notifier.adapters.tables import customers, messages
from services.notifier.domain import delivery
from shared.funnel_events import FunnelEvent
from tests.builders import funnel_event
from tests.fixtures.stack import SmtpServer
from tests.integration.notifier_harness import Clock, Notifier, dev_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
FIRST_ORDER = {"from_stage": "prospect", "to_stage": "first_time", "reason": "test"}
SECOND_ORDER = {"from_stage": "first_time", "to_stage": "repeat", "reason": "test"}
ORDER = {
    "order_id": "o-1",
    "total": "40.00",
    "currency": "EUR",
    "items": [{"product_id": "p-kit", "title": "Pour-Over Kit", "quantity": 1, "price": "40.00"}],
}


@pytest.fixture
async def notifier(engine: AsyncEngine, smtp_server: SmtpServer, store_id: str) -> AsyncIterator[Notifier]:
    harness = Notifier(engine, dev_store(store_id), Clock(T0), smtp_server.host, smtp_server.port)
    yield harness
    await harness.http.aclose()


def event(n: Notifier, kind: str, customer_id: str, payload: dict[str, Any]) -> FunnelEvent:
    return funnel_event(kind, n.store.store_id, customer_id, n.clock.now, payload)


def mails_to(smtp_server: SmtpServer, customer_id: str) -> list[Any]:
    return [m for m in smtp_server.messages if m["To"] == f"{customer_id}@example.com"]


async def test_a_dead_senders_claim_is_settled_once_its_lease_runs_out(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    """Lane 0 had a welcome on its connection and another waiting; lane 1 a repeat milestone (marketing) and
    another waiting. Once the lease has run out: the welcome goes out again with the same Message-ID, the
    marketing one is skipped as uncertain, and the two never started are sent as if never claimed."""
    sid = notifier.store.store_id
    who = {name: f"{name}-{sid}" for name in ("w1", "w2", "m1", "m2")}
    await notifier.plan(
        [event(notifier, "stage_changed", who[n], FIRST_ORDER) for n in ("w1", "w2")]
        + [event(notifier, "stage_changed", who[n], SECOND_ORDER) for n in ("m1", "m2")]
    )
    row = {name: r for name in who for r in await notifier.rows(who[name])}
    dead_claim = str(uuid.uuid4())
    places = {"w1": (0, 0), "m1": (1, 0), "w2": (0, 1), "m2": (1, 1)}
    async with notifier.engine.begin() as conn:
        await repository.claim_many(
            conn,
            dead_claim,
            [repository.ClaimSlot(row[n].id, None, *places[n]) for n in places],
            T0,
            T0 + timedelta(minutes=2),
        )

    assert await notifier.send() == 0  # the lease still holds: the claim is its sender's
    assert smtp_server.messages == [] or all(mails_to(smtp_server, c) == [] for c in who.values())

    notifier.clock.advance(timedelta(minutes=3))
    await notifier.send()
    after = {name: r for name in who for r in await notifier.rows(who[name])}
    assert {n: (r.status, r.skip_reason, r.resent_at is not None, r.attempts) for n, r in after.items()} == {
        "w1": ("sent", None, True, 2),
        "w2": ("sent", None, False, 1),
        "m1": ("skipped", delivery.UNCERTAIN, False, 1),
        "m2": ("sent", None, False, 1),
    }
    assert mails_to(smtp_server, who["m1"]) == []
    [resent] = mails_to(smtp_server, who["w1"])
    assert resent["Message-ID"] == delivery.message_id(
        sid, who["w1"], "welcome", row["w1"].trigger_event_id, "demo-store.example"
    )
    [other] = mails_to(smtp_server, who["w2"])
    assert other["Message-ID"] != resent["Message-ID"]

    # The dead sender, were it only cut off, can no longer record anything for its claim.
    async with notifier.engine.begin() as conn:
        assert not await repository.mark_sent(conn, row["w2"].id, dead_claim, "late", notifier.clock.now)


async def test_a_message_of_unknown_fate_is_resent_only_once(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    sid = notifier.store.store_id
    await notifier.plan([event(notifier, "stage_changed", f"twice-{sid}", FIRST_ORDER)])
    [row] = await notifier.rows(f"twice-{sid}")
    for _ in range(2):  # two senders in turn die with it on their connection
        async with notifier.engine.begin() as conn:
            await repository.claim_many(
                conn,
                str(uuid.uuid4()),
                [repository.ClaimSlot(row.id, None, 0, 0)],
                notifier.clock.now,
                notifier.clock.now + timedelta(minutes=2),
            )
        notifier.clock.advance(timedelta(minutes=3))
        assert await notifier.sender().settle_expired_claims() == 1
    [row] = await notifier.rows(f"twice-{sid}")
    assert (row.status, row.skip_reason) == ("skipped", delivery.UNCERTAIN)
    assert row.resent_at is not None


async def test_an_address_with_cr_lf_fails_its_message_and_the_sender_goes_on(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    """The row is made bad at the notifier itself: whatever ingest lets through, the sender survives it."""
    sid = notifier.store.store_id
    bad, good = f"crlf-{sid}", f"fine-{sid}"
    await notifier.plan([event(notifier, "stage_changed", c, FIRST_ORDER) for c in (bad, good)])
    async with notifier.engine.begin() as conn:
        await conn.execute(
            update(customers)
            .where(customers.c.store_id == sid, customers.c.customer_id == bad)
            .values(email=f"{bad}@example.com\r\nBcc: everyone@example.net")
        )
    assert await notifier.send() == 2
    [failed] = await notifier.rows(bad)
    assert (failed.status, failed.last_error) == ("failed", "could not be prepared: HeaderParseError")
    [sent] = await notifier.rows(good)
    assert sent.status == "sent"
    assert len(mails_to(smtp_server, good)) == 1
    assert not [e for e in smtp_server.envelopes if any("everyone@" in r for r in e.rcpt_tos)]


async def test_data_that_breaks_the_decision_fails_only_its_own_message(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    """A follow-up's cashback coupon takes the trigger order's currency: one the coupons table cannot hold
    breaks the batch's decision; the batch is decided again one message at a time, and only that one fails."""
    sid = notifier.store.store_id
    notifier.store = dev_store(sid, flows={"review_request": {"enabled": False}, "follow_up": {"delay": 60}})
    bad, good = f"total-{sid}", f"ok-{sid}"
    await notifier.plan([event(notifier, "order_placed", c, ORDER) for c in (bad, good)])
    [planned] = [r for r in await notifier.rows(bad) if r.flow == "follow_up"]
    async with notifier.engine.begin() as conn:
        context = (
            await conn.execute(select(messages.c.context).where(messages.c.id == planned.id))
        ).scalar_one()
        broken = {**context, "trigger": {**context["trigger"], "currency": "EUROS"}}
        await conn.execute(update(messages).where(messages.c.id == planned.id).values(context=broken))
    notifier.clock.advance(timedelta(seconds=61))
    assert await notifier.send() == 2
    [failed] = [r for r in await notifier.rows(bad) if r.flow == "follow_up"]
    assert (failed.status, failed.last_error) == ("failed", "could not be decided: DBAPIError")
    [sent] = [r for r in await notifier.rows(good) if r.flow == "follow_up"]
    assert sent.status == "sent"
    assert sent.coupon_code
    assert len(mails_to(smtp_server, good)) == 1
    assert mails_to(smtp_server, bad) == []


async def test_an_unreachable_smtp_server_pauses_the_sender_and_costs_no_attempt(
    notifier: Notifier, smtp_server: SmtpServer
) -> None:
    sid = notifier.store.store_id
    await notifier.plan([event(notifier, "stage_changed", f"down-{sid}", FIRST_ORDER)])
    [closed_port] = free_ports(1)
    sender = notifier.sender(smtp_port=closed_port)
    with pytest.raises(SmtpUnavailable) as raised:
        await sender.send_due()
    assert sender.is_outage(raised.value)  # the worker waits it out (readiness false), it does not crash
    [row] = await notifier.rows(f"down-{sid}")
    assert (row.status, row.attempts, row.due_at, row.claim_id) == ("pending", 0, T0, None)
    assert await notifier.send() == 1  # the server is back
    assert len(mails_to(smtp_server, f"down-{sid}")) == 1


class _DropsDuringData:
    """An SMTP server that takes the first `drops` messages in, then loses the connection before answering."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.mails: list[EmailMessage] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content or b""
        parsed = BytesParser(policy=policy.default).parsebytes(content)
        assert isinstance(parsed, EmailMessage)
        self.mails.append(parsed)
        if self.drops > 0:
            self.drops -= 1
            assert server.transport is not None
            server.transport.close()
        return "250 Message accepted for delivery"


async def test_a_connection_lost_during_data_resends_a_welcome_once_and_never_a_promotion(
    engine: AsyncEngine, store_id: str
) -> None:
    handler = _DropsDuringData(drops=2)
    [port] = free_ports(1)
    server = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="smtp-test.localhost")
    server.start()
    n = Notifier(engine, dev_store(store_id), Clock(T0), "127.0.0.1", port)
    welcome, milestone = f"w-{store_id}", f"m-{store_id}"
    try:
        await n.plan(
            [
                event(n, "stage_changed", welcome, FIRST_ORDER),
                event(n, "stage_changed", milestone, SECOND_ORDER),
            ]
        )
        assert await n.send() == 2  # both go out on two connections, both connections break during DATA
        [w] = await n.rows(welcome)
        [m] = await n.rows(milestone)
        assert (w.status, w.resent_at is not None) == ("pending", True)
        assert (m.status, m.skip_reason) == ("skipped", delivery.UNCERTAIN)
        assert await n.send() == 1  # the welcome, once more
        [w] = await n.rows(welcome)
        assert w.status == "sent"
        assert await n.send() == 0
    finally:
        server.stop()
        await n.http.aclose()
    copies = [m for m in handler.mails if m["To"] == f"{welcome}@example.com"]
    assert len(copies) == 2
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"]
    assert len([m for m in handler.mails if m["To"] == f"{milestone}@example.com"]) == 1
