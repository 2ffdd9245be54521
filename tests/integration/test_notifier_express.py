"""The express sender against a real SMTP server and Postgres: a welcome that becomes due while the sender
works a claim of promotions goes out beside that claim, on the same connections, not after it; and while the
sender is idle the express sender leaves every message to it."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import PostgresServer
from services.notifier.entrypoints.express import ExpressSender
from services.notifier.entrypoints.sender import MessageSender
from shared.db import upgrade_to_head
from shared.settings import REPO_ROOT
from tests.builders import funnel_event
from tests.integration.notifier_harness import Clock, Notifier, dev_store
from tests.polling import eventually, now_true

pytestmark = pytest.mark.integration

LANES = 4
PROMOTIONS = 8  # two rounds of the four lanes
FIRST = {"from_stage": "prospect", "to_stage": "first_time", "reason": "test"}
SECOND = {"from_stage": "first_time", "to_stage": "repeat", "reason": "test"}


class SlowPromotions:
    """Answers each promotion's DATA after `delay` seconds, anything else at once; notes the arrival order."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._lock = threading.Lock()
        self.arrived: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipient = envelope.rcpt_tos[0]
        if recipient.startswith("m"):
            await asyncio.sleep(self._delay)
        with self._lock:
            self.arrived.append(recipient)
        return "250 Message accepted for delivery"


@pytest.fixture
async def engine(postgres_server: PostgresServer) -> AsyncIterator[AsyncEngine]:
    """A database of its own: a sender takes every due message it finds, whichever test planned it."""
    url = postgres_server.create_database(f"express_{uuid.uuid4().hex[:10]}")
    await asyncio.to_thread(upgrade_to_head, REPO_ROOT / "services" / "notifier" / "migrations", url)
    engine = create_async_engine(url)
    yield engine
    await engine.dispose()


async def test_a_welcome_due_during_a_claim_goes_out_beside_it(engine: AsyncEngine) -> None:
    handler = SlowPromotions(delay=1.0)
    [port] = free_ports(1)
    smtp = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="smtp-test.localhost")
    smtp.start()
    harness = Notifier(engine, dev_store("demo"), Clock(datetime.now(UTC)), "127.0.0.1", port)
    run = uuid.uuid4().hex[:6]
    promotions = [f"m{i}-{run}" for i in range(PROMOTIONS)]
    await harness.plan(
        [funnel_event("stage_changed", "demo", c, harness.clock.now, SECOND) for c in promotions]
    )
    settings = harness.sender_settings()
    main = MessageSender(**settings | {"lanes": LANES})
    express = ExpressSender(main=main, **settings | {"lanes": LANES})  # the same SMTP connections
    workers = [asyncio.create_task(main.run_forever()), asyncio.create_task(express.run_forever())]
    try:
        await eventually(lambda: now_true(main.sending), 60, "the sender working its claim of promotions")
        welcome = f"w-{run}"
        await harness.plan([funnel_event("stage_changed", "demo", welcome, harness.clock.now, FIRST)])
        express.wake()  # as the planner does once it committed new messages
        await eventually(lambda: now_true(len(handler.arrived) == PROMOTIONS + 1), 120, "every message")
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        smtp.stop()
        await harness.http.aclose()

    # Not after the claim's last promotion, as it would be if it waited for the sender's next claim.
    assert handler.arrived.index(f"{welcome}@example.com") < PROMOTIONS
    rows = {r.customer_id: r for r in await harness.rows()}
    assert rows[welcome].status == "sent"
    assert rows[welcome].claim_id not in {rows[c].claim_id for c in promotions}
    assert len({rows[c].claim_id for c in promotions}) == 1  # the sender's one claim, undisturbed


async def test_the_express_sender_leaves_everything_to_an_idle_sender(engine: AsyncEngine) -> None:
    harness = Notifier(engine, dev_store("demo"), Clock(datetime.now(UTC)), "127.0.0.1", free_ports(1)[0])
    welcome = f"w-{uuid.uuid4().hex[:6]}"
    await harness.plan([funnel_event("stage_changed", "demo", welcome, harness.clock.now, FIRST)])
    main = harness.sender()
    express = ExpressSender(main=main, **harness.sender_settings())
    try:
        assert await express.send_due() == 0
    finally:
        await harness.http.aclose()
    [row] = await harness.rows(welcome)
    assert (row.status, row.claim_id) == ("pending", None)
