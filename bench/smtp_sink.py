"""The benchmark's SMTP server: it notes when each message was accepted (wall clock) and for whom, and keeps
nothing else.

It stands for the store's mail relay, which in a deployment runs on a machine of its own. Here it shares the
two cores with the services it measures, so it must cost them as little as it can: aiosmtpd, which the tests
and `make up` use, reads a message line by line in Python and parses every address with the standard
library's email parser, about a tenth of a core at the end-to-end load's 150-180 messages a second (py-spy
of the benchmark's process: 70 % of its samples; bench/README.md, sixty-first round). This one reads the
commands a line at a time and the message whole, looking for its end (`<CRLF>.<CRLF>`, RFC 5321 4.1.1.4)
with one `bytes.find` a chunk. It answers what the notifier's client (aiosmtplib) asks as RFC 5321 says a
server answers, with aiosmtpd's extensions (SIZE, 8BITMIME, SMTPUTF8), and takes pipelined commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

_END = b"\r\n.\r\n"
_EHLO = b"250-%s\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP\r\n"  # aiosmtpd's list
# A command line longer than this is refused (RFC 5321 4.5.3.1.4: 512 octets; extensions may add some).
_MAX_LINE = 4096


class _Session(asyncio.Protocol):
    """One client connection: commands until DATA, then the message until its end line."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink
        self._transport: asyncio.Transport | None = None
        self._pending = b""  # a command line not yet ended
        self._message: bytearray | None = None  # in DATA: what came so far, after a CRLF of our own
        self._recipients: list[str] = []
        self._sender = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(b"220 %s ESMTP\r\n" % self._sink.hostname)

    def data_received(self, data: bytes) -> None:
        if self._message is not None:
            data = self._message_data(data)
        data = self._pending + data
        while data:
            end = data.find(b"\r\n")
            if end < 0:
                if len(data) > _MAX_LINE:
                    self._reply(b"500 Error: line too long")
                    data = b""
                break
            line, data = data[:end], data[end + 2 :]
            self._command(line)
            if self._message is not None and data:
                data = self._message_data(data)
        self._pending = data

    def _message_data(self, data: bytes) -> bytes:
        """Take `data` into the message; what follows the message's end (pipelined commands) comes back."""
        message = self._message
        assert message is not None
        start = max(0, len(message) - len(_END) + 1)
        message += data
        end = message.find(_END, start)
        if end < 0:
            return b""
        rest = bytes(message[end + len(_END) :])
        self._message = None
        self._sink.note(tuple(self._recipients))
        self._recipients = []
        self._sender = False
        self._reply(b"250 Message accepted for delivery")
        return rest

    def _command(self, line: bytes) -> None:
        verb = line[:4].upper()
        if verb == b"EHLO":
            self._reset()
            assert self._transport is not None
            self._transport.write(_EHLO % self._sink.hostname)
        elif verb == b"HELO":
            self._reset()
            self._reply(b"250 %s" % self._sink.hostname)
        elif verb == b"MAIL" and line[4:10].upper() == b" FROM:":
            self._reset()
            self._sender = True
            self._reply(b"250 OK")
        elif verb == b"RCPT" and line[4:8].upper() == b" TO:":
            if not self._sender:
                self._reply(b"503 Error: need MAIL command")
                return
            address = line[8:].strip()
            if address.startswith(b"<"):
                address = address[1 : address.find(b">")] if b">" in address else b""
            else:
                address = address.split(b" ", 1)[0]
            if not address:
                self._reply(b"501 Syntax: RCPT TO: <address>")
                return
            self._recipients.append(address.decode("utf-8", "replace"))
            self._reply(b"250 OK")
        elif verb == b"DATA":
            if not self._recipients:
                self._reply(b"503 Error: need RCPT command")
                return
            # Our own CRLF first: a message whose first line is the end line ends there too.
            self._message = bytearray(b"\r\n")
            self._reply(b"354 End data with <CR><LF>.<CR><LF>")
        elif verb == b"RSET":
            self._reset()
            self._reply(b"250 OK")
        elif verb == b"NOOP":
            self._reply(b"250 OK")
        elif verb == b"QUIT":
            self._reply(b"221 Bye")
            assert self._transport is not None
            self._transport.close()
        else:
            self._reply(b"500 Error: command not recognized")

    def _reset(self) -> None:
        self._recipients = []
        self._sender = False

    def _reply(self, reply: bytes) -> None:
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.write(reply + b"\r\n")


class SmtpSink:
    """The server, on its own thread and event loop, on `host`:`port`; `snapshot()` gives what it took."""

    def __init__(self, host: str, port: int, hostname: str = "bench-smtp.localhost") -> None:
        self.host = host
        self.port = port
        self.hostname = hostname.encode()
        self._lock = threading.Lock()
        self._received: list[tuple[float, tuple[str, ...]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def note(self, recipients: tuple[str, ...]) -> None:
        with self._lock:
            self._received.append((time.time(), recipients))

    def snapshot(self) -> list[tuple[float, tuple[str, ...]]]:
        """Each message accepted so far: when (seconds since the epoch) and for whom, in order."""
        with self._lock:
            return list(self._received)

    def start(self) -> None:
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            try:
                server = loop.run_until_complete(
                    loop.create_server(lambda: _Session(self), self.host, self.port)
                )
            except BaseException as exc:  # the port taken: said to start()'s caller
                failed.append(exc)
                loop.close()
                ready.set()
                return
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(server.wait_closed())
                loop.close()

        self._thread = threading.Thread(target=serve, name="bench-smtp-sink", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the SMTP sink did not start within 10 s")
        if failed:
            raise failed[0]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None
