"""The notifier process killed (SIGKILL) in the middle of a batch, against a real SMTP server and Postgres.

The SMTP server lets the first message of each lane through, then holds every DATA command: it has the
message (as a real server that accepted it and whose "250" never came back) but does not answer. It knows
the lanes' first messages by their recipients (the claim's first four, round robin), not by arrival: on a
busy machine a lane can send its second message before another lane's first reaches the server. With every
lane waiting on the server, the notifier is killed, then started again. What must hold: every transactional
message arrives, none twice under two Message-IDs, and no marketing message arrives twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import PostgresServer
from deploy.devstack.process import ManagedProcess
from services.notifier.adapters.tables import messages
from shared.db import upgrade_to_head
from shared.settings import REPO_ROOT
from tests.builders import funnel_event
from tests.integration.notifier_harness import Clock, Notifier, dev_store
from tests.polling import eventually

pytestmark = pytest.mark.integration

LANES = 4  # SMTP_CONNECTIONS of the notifier under test
WELCOMES = 6  # transactional: the claim's first six, so lanes 0 and 1 hold one on the wire at the kill
MILESTONES = 18  # marketing
LEASE_SECONDS = 10


@dataclass(frozen=True)
class Mail:
    to: str
    message_id: str
    subject: str


class HoldingHandler:
    """Keeps every message; holds each DATA not addressed to `let_through` until released."""

    _parser = BytesParser(policy=policy.default)

    def __init__(self, let_through: set[str]) -> None:
        self._let_through = let_through
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.mails: list[Mail] = []
        self.held = 0

    def release(self) -> None:
        self._released.set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content or b""
        parsed = self._parser.parsebytes(content if isinstance(content, bytes) else content.encode())
        with self._lock:
            # The server has the message once DATA is in: it counts as received whatever happens next.
            mail = Mail(str(parsed["To"]), str(parsed["Message-ID"]), str(parsed["Subject"]))
            self.mails.append(mail)
            hold = mail.to not in self._let_through and not self._released.is_set()
            if hold:
                self.held += 1
        if hold:
            await asyncio.to_thread(self._released.wait, 300)
        return "250 Message accepted for delivery"


@pytest.fixture
async def database(postgres_server: PostgresServer) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A database of its own: the notifier process sends every due message it finds."""
    url = postgres_server.create_database(f"crash_{uuid.uuid4().hex[:10]}")
    await asyncio.to_thread(upgrade_to_head, REPO_ROOT / "services" / "notifier" / "migrations", url)
    engine = create_async_engine(url)
    yield url, engine
    await engine.dispose()


async def test_a_sender_killed_mid_batch_loses_no_welcome_and_duplicates_no_promotion(
    database: tuple[str, AsyncEngine], tmp_path: Path
) -> None:
    url, engine = database
    run = uuid.uuid4().hex[:6]
    welcome = [f"w{i}-{run}" for i in range(WELCOMES)]
    milestone = [f"m{i}-{run}" for i in range(MILESTONES)]
    # Each lane's first message (lane i starts with the claim's i-th) goes through; its second is held.
    handler = HoldingHandler(let_through={f"{c}@example.com" for c in welcome[:LANES]})
    [smtp_port, api_port, closed_port] = free_ports(3)
    smtp = Controller(handler, hostname="127.0.0.1", port=smtp_port, server_hostname="smtp-test.localhost")
    smtp.start()

    # The store `demo` of the development registry, which the notifier process loads too.
    now = datetime.now(UTC)
    harness = Notifier(engine, dev_store("demo"), Clock(now), "127.0.0.1", smtp_port)
    first = {"from_stage": "prospect", "to_stage": "first_time", "reason": "test"}
    second = {"from_stage": "first_time", "to_stage": "repeat", "reason": "test"}
    await harness.plan(
        [funnel_event("stage_changed", "demo", c, now, first) for c in welcome]
        + [funnel_event("stage_changed", "demo", c, now, second) for c in milestone]
    )
    await harness.http.aclose()

    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_CONNECTIONS": str(LANES),
        "SMTP_TIMEOUT_SECONDS": "60",  # a held DATA must still be waiting when the kill comes
        "STORES_FILE": str(REPO_ROOT / "deploy" / "stores.dev.yaml"),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port}",  # the sender needs no broker
        "NOTIFIER_PORT": str(api_port),
        # Killed below, it leaves its pidfile behind: here, not in the repository's .run/.
        "NOTIFIER_PIDFILE": str(tmp_path / "notifier-run.pid"),
        "NOTIFIER_SEND_BATCH": "50",
        "NOTIFIER_SEND_LEASE_SECONDS": str(LEASE_SECONDS),
        "ENVIRONMENT": "test",
    }
    notifier = ManagedProcess("notifier", tmp_path / "notifier.pid", tmp_path / "notifier.log")
    command = [sys.executable, "-m", "services.notifier", "serve"]
    try:
        notifier.start(command, env=env, cwd=REPO_ROOT, die_with_parent=True)

        async def every_lane_held() -> bool:
            if not notifier.is_running():
                pytest.fail(f"the notifier exited:\n{notifier.log_tail()}")
            return handler.held >= LANES

        await eventually(every_lane_held, 120, "a message on each of the 4 connections")
        pid = notifier.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: _gone(notifier), 120, "the notifier's death")
        handler.release()

        async with engine.connect() as conn:
            left: dict[str, int] = {s: n for s, n in (await conn.execute(_statuses())).all()}
        assert left.get("sending", 0) == WELCOMES + MILESTONES - LANES  # the whole rest of the claim

        notifier.start(command, env=env, cwd=REPO_ROOT, die_with_parent=True)

        async def all_settled() -> bool:
            async with engine.connect() as conn:
                statuses: dict[str, int] = {s: n for s, n in (await conn.execute(_statuses())).all()}
            return not statuses.get("pending") and not statuses.get("sending")

        await eventually(all_settled, 120, "every message sent or settled")

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as api:
            flows = {
                f["flow"]: f
                for f in (
                    await api.get("/v1/stores/demo/flows", headers={"Authorization": "Bearer demo-api-key"})
                ).json()
            }
            metrics = (await api.get("/metrics")).text

            # The SMTP server goes away: the sender says so in /readyz, loses nothing, and recovers by itself.
            smtp.stop()
            late = Notifier(engine, dev_store("demo"), Clock(datetime.now(UTC)), "127.0.0.1", smtp_port)
            await late.plan([funnel_event("stage_changed", "demo", f"late-{run}", late.clock.now, first)])
            await late.http.aclose()

            async def sender_ready_is(expected: bool) -> bool:
                return bool((await api.get("/readyz")).json().get("sender") is expected)

            await eventually(lambda: sender_ready_is(False), 120, "readiness false while SMTP is away")
            smtp = Controller(
                handler, hostname="127.0.0.1", port=smtp_port, server_hostname="smtp-test.localhost"
            )
            smtp.start()
            await eventually(lambda: sender_ready_is(True), 120, "readiness back once SMTP is")
            await eventually(
                lambda: _arrived(handler, f"late-{run}@example.com"),
                120,
                "the welcome planned during the outage",
            )
    finally:
        notifier.stop(timeout=15)
        smtp.stop()

    received = Counter(m.to for m in handler.mails if not m.to.startswith("late-"))
    ids_per_recipient: dict[str, set[str]] = {}
    for mail in handler.mails:
        ids_per_recipient.setdefault(mail.to, set()).add(mail.message_id)

    # Every welcome arrived; the two that were on a connection at the kill arrived twice, as one message.
    assert {f"{c}@example.com" for c in welcome} <= set(received)
    assert sorted(received[f"{c}@example.com"] for c in welcome) == [1, 1, 1, 1, 2, 2]
    assert all(len(ids) == 1 for ids in ids_per_recipient.values()), ids_per_recipient
    # No promotion twice: the two on a connection at the kill were not sent again; the rest went out once.
    assert [received[f"{c}@example.com"] for c in milestone] == [1] * MILESTONES

    assert flows["welcome"]["resent"] == 2
    assert flows["welcome"]["sent"] == WELCOMES
    assert flows["repeat_milestone"]["uncertain"] == 2
    assert flows["repeat_milestone"]["skipped"] == {"uncertain": 2}
    assert flows["repeat_milestone"]["sent"] == MILESTONES - 2
    assert 'notifier_unknown_fate_total{flow="welcome",outcome="resent"} 2.0' in metrics
    assert 'notifier_unknown_fate_total{flow="repeat_milestone",outcome="uncertain"} 2.0' in metrics
    assert f'notifier_claims_requeued_total{{flow="repeat_milestone"}} {MILESTONES - 2}.0' in metrics


def _statuses() -> Any:
    return select(messages.c.status, func.count()).group_by(messages.c.status)


async def _gone(process: ManagedProcess) -> bool:
    return not process.is_running()


async def _arrived(handler: HoldingHandler, to: str) -> bool:
    return any(m.to == to for m in handler.mails)
