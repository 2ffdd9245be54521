"""The benchmark's SMTP sink (bench/smtp_sink.py) against the notifier's client library, aiosmtplib, and raw
sockets: it takes what a client sends as RFC 5321 says (a message's end line wherever the chunks split it,
dot-stuffed lines, pipelined commands) and notes each message once, with its recipients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from email.message import EmailMessage

import aiosmtplib
import pytest

from bench.smtp_sink import SmtpSink
from deploy.devstack.ports import free_ports

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    (port,) = free_ports(1)
    server = SmtpSink(HOST, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _message(to: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "shop@demo.example"
    message["To"] = to
    message["Subject"] = "Welcome"
    message.set_content(body)
    return message


async def test_messages_on_one_connection_are_each_noted_once_with_their_recipients(sink: SmtpSink) -> None:
    before = time.time()
    body = "Hello\n.a line that starts with a dot\n.\nnot the end\n" + "x" * 70_000
    async with aiosmtplib.SMTP(hostname=HOST, port=sink.port) as client:
        assert "smtputf8" in client.esmtp_extensions
        await client.send_message(_message("ana@example.com", body))
        both = ["ben@example.com", "cy@x.org"]
        await client.send_message(_message("ben@example.com", "Hi"), recipients=both)
    received = sink.snapshot()
    assert [r for _, r in received] == [("ana@example.com",), ("ben@example.com", "cy@x.org")]
    assert all(before <= t <= time.time() for t, _ in received)


async def _talk(port: int, chunks: list[bytes], replies: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        lines = [await reader.readline()]
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.02)  # each chunk its own read on the server's side
        while len(lines) < replies + 1:
            line = await asyncio.wait_for(reader.readline(), 5)
            if not line:
                break
            if line[3:4] != b"-":  # the last line of a multi-line reply counts
                lines.append(line)
    finally:
        writer.close()
    return lines


async def test_an_end_line_split_across_reads_and_pipelined_commands(sink: SmtpSink) -> None:
    chunks = [
        b"EHLO client\r\nMAIL FROM:<shop@demo.example>\r\nRCPT TO:<dee@example.com>\r\n",
        b"DATA\r\nSubject: x\r\n",
        b"\r\nbody\r\n..stuffed\r\n",
        b".",
        b"\r",
        b"\nMAIL FROM:<shop@demo.example>\r\nRCPT TO:<eve@example.com>\r\nDATA\r\n.\r\nQUIT\r\n",
    ]
    lines = await _talk(sink.port, chunks, replies=10)
    codes = [line[:3] for line in lines]
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"250", b"250", b"250", b"354", b"250", b"221"]
    assert [r for _, r in sink.snapshot()] == [("dee@example.com",), ("eve@example.com",)]


async def test_commands_out_of_order_are_refused_and_nothing_is_noted(sink: SmtpSink) -> None:
    chunks = [b"HELO client\r\nRCPT TO:<a@b.c>\r\nDATA\r\nMAIL FROM:<s@d.e>\r\nDATA\r\nBOGUS\r\nQUIT\r\n"]
    lines = await _talk(sink.port, chunks, replies=7)
    assert [line[:3] for line in lines] == [b"220", b"250", b"503", b"503", b"250", b"503", b"500", b"221"]
    assert sink.snapshot() == []
