"""The SMTP sender's reused connections against a real aiosmtpd server: messages share connections, a
connection the server dropped while idle is replaced without losing or doubling the message, and a refusal
still tells a bad address from a temporary one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import REGISTRY

from deploy.devstack.ports import free_ports
from services.notifier.adapters.smtp import DeliveryError, SmtpSender, build_email
from services.notifier.adapters.smtp import Envelope as MailEnvelope
from services.notifier.adapters.templates import RenderedMessage
from shared.settings import SmtpSettings
from tests.polling import eventually


class Recorder:
    def __init__(self) -> None:
        self.greetings = 0
        self.received: list[str] = []
        self.hold: threading.Event | None = None
        self.holding = False

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.greetings += 1  # one EHLO per connection
        session.host_name = hostname  # a handler that answers EHLO records the greeting itself
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("gone"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("busy"):
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.extend(envelope.rcpt_tos)
        if self.hold is not None and not self.hold.is_set():
            self.holding = True
            await asyncio.to_thread(self.hold.wait, 10)
        return "250 accepted"


@pytest.fixture
def server() -> Iterator[tuple[Recorder, int, list[Controller]]]:
    [port] = free_ports(1)
    recorder = Recorder()
    controllers = [Controller(recorder, hostname="127.0.0.1", port=port)]
    controllers[0].start()
    yield recorder, port, controllers
    controllers[-1].stop()


def _message(to: str) -> Any:
    rendered = RenderedMessage(subject="Hello", text="Hi", html="<p>Hi</p>")
    return build_email(MailEnvelope("shop@example.com", "Shop", to), rendered)


def _sender(port: int, **settings: Any) -> SmtpSender:
    return SmtpSender(SmtpSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_timeout_seconds=5, **settings))


async def test_messages_share_a_few_connections(server: tuple[Recorder, int, list[Controller]]) -> None:
    recorder, port, _ = server
    smtp = _sender(port, smtp_connections=2)
    await asyncio.gather(*(smtp.send(_message(f"ann{i}@example.com")) for i in range(20)))
    await smtp.close()
    assert sorted(recorder.received) == sorted(f"ann{i}@example.com" for i in range(20))
    assert recorder.greetings == 2


async def test_a_connection_is_replaced_after_its_message_quota(
    server: tuple[Recorder, int, list[Controller]],
) -> None:
    recorder, port, _ = server
    smtp = _sender(port, smtp_connections=1, smtp_messages_per_connection=3)
    for i in range(7):
        await smtp.send(_message(f"bea{i}@example.com"))
    await smtp.close()
    assert len(recorder.received) == 7
    assert recorder.greetings == 3  # 3 + 3 + 1


async def test_a_connection_dropped_while_idle_is_replaced_and_the_message_sent_once(
    server: tuple[Recorder, int, list[Controller]],
) -> None:
    recorder, port, controllers = server
    smtp = _sender(port, smtp_connections=1)
    await smtp.send(_message("cid@example.com"))
    # The server goes away and comes back: the pooled connection is dead, which only shows at MAIL FROM.
    controllers[0].stop()
    controllers.append(Controller(recorder, hostname="127.0.0.1", port=port))
    controllers[-1].start()
    await smtp.send(_message("dan@example.com"))
    await smtp.close()
    assert recorder.received == ["cid@example.com", "dan@example.com"]
    assert recorder.greetings == 2


async def test_refusals_tell_a_bad_address_from_a_busy_one(
    server: tuple[Recorder, int, list[Controller]],
) -> None:
    recorder, port, _ = server
    smtp = _sender(port, smtp_connections=1)
    with pytest.raises(DeliveryError) as gone:
        await smtp.send(_message("gone@example.com"))
    assert (gone.value.retryable, gone.value.permanent_for_address) == (False, True)
    with pytest.raises(DeliveryError) as busy:
        await smtp.send(_message("busy@example.com"))
    assert (busy.value.retryable, busy.value.permanent_for_address) == (True, False)
    # A refused recipient costs the connection, not the next message.
    await smtp.send(_message("eve@example.com"))
    await smtp.close()
    assert recorder.received == ["eve@example.com"]


async def test_the_wait_for_a_connection_is_measured_by_kind_of_message(
    server: tuple[Recorder, int, list[Controller]],
) -> None:
    recorder, port, _ = server
    release = threading.Event()
    recorder.hold = release  # the server leaves the first message's DATA unanswered until released
    smtp = _sender(port, smtp_connections=1)
    before = {kind: _waits(kind) for kind in ("transactional", "marketing")}
    first = asyncio.create_task(smtp.send(_message("held@example.com")))

    async def holding() -> bool:
        return recorder.holding

    await eventually(holding, 10, "the first message's DATA held", every=0.01)
    second = asyncio.create_task(smtp.send(_message("news@example.com"), marketing=True))
    await asyncio.sleep(0.3)  # the only connection is busy: the marketing message waits for it
    release.set()
    await asyncio.gather(first, second)
    await smtp.close()
    assert recorder.received == ["held@example.com", "news@example.com"]
    transactional, marketing = (_waits(kind) for kind in ("transactional", "marketing"))
    assert transactional[1] - before["transactional"][1] == 1
    assert transactional[0] - before["transactional"][0] < 0.3  # a free connection at once
    assert marketing[1] - before["marketing"][1] == 1
    assert marketing[0] - before["marketing"][0] >= 0.3


def _waits(kind: str) -> tuple[float, float]:
    """(seconds waited in all, messages) of notifier_smtp_wait_seconds for this kind, in this process."""
    labels = {"kind": kind}
    return (
        REGISTRY.get_sample_value("notifier_smtp_wait_seconds_sum", labels) or 0.0,
        REGISTRY.get_sample_value("notifier_smtp_wait_seconds_count", labels) or 0.0,
    )


async def test_no_server_is_a_retryable_failure() -> None:
    [port] = free_ports(1)
    with pytest.raises(DeliveryError) as failed:
        await _sender(port).send(_message("fay@example.com"))
    assert failed.value.retryable
