"""Delivering email over SMTP with aiosmtplib, and telling apart what may be retried."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import socket
import time
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import lru_cache

import aiosmtplib
from aiosmtplib.email import quote_address
from prometheus_client import Histogram

from services.notifier.adapters.templates import RenderedMessage
from shared.settings import SmtpSettings

# How long messages wait for one of the SMTP_CONNECTIONS: when it stays high, more connections (or notifier
# instances) would send sooner; when it is low, the time is spent elsewhere (rendering, the conversation).
WAIT_SECONDS = Histogram(
    "notifier_smtp_wait_seconds",
    "Time a message waited for a free SMTP connection, by kind (transactional, marketing)",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class DeliveryError(Exception):
    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        permanent_for_address: bool = False,
        fate_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        # The recipient's server said this address will never take mail (5xx to RCPT): suppress it.
        self.permanent_for_address = permanent_for_address
        # The conversation broke after the message's content went out, before the server's answer: it may
        # have been accepted (domain/delivery.py says what then).
        self.fate_unknown = fate_unknown


class SmtpUnavailable(DeliveryError):
    """The SMTP server cannot be reached: an outage of what every email needs, not a fault of this message.
    Nothing was handed over."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


@dataclass(frozen=True)
class Envelope:
    from_address: str
    from_name: str
    to_address: str
    headers: tuple[tuple[str, str], ...] = ()
    # The same on every copy of one message (domain/delivery.py); a fresh one when not given (a test send).
    message_id: str | None = None


def build_email(
    envelope: Envelope, rendered: RenderedMessage, *, boundary: str | None = None, date: str | None = None
) -> Message:
    """multipart/alternative with a text and an HTML part, UTF-8 throughout.

    Built with the compat32 MIME classes: the same bytes on the wire as EmailMessage's, at a fraction of the
    cost (its header registry parsed every header we set, and was the sender's largest expense)."""
    # A boundary of our own: the generator would otherwise make one and scan the whole body for it. The parts
    # are base64, whose alphabet has no "_", so "=_" + random hex cannot occur in them.
    message = MIMEMultipart("alternative", boundary=boundary or _boundary())
    for name, value in _headers(envelope, rendered, date):
        message[name] = value
    message.attach(MIMEText(rendered.text, "plain", "utf-8"))
    message.attach(MIMEText(rendered.html, "html", "utf-8"))
    return message


def _boundary() -> str:
    return f"=_{secrets.token_hex(16)}"


def _headers(envelope: Envelope, rendered: RenderedMessage, date: str | None) -> list[tuple[str, str]]:
    """The message's own headers, after the multipart's Content-Type and MIME-Version, in order."""
    # RFC 2047 encoding for a subject with a name like "Zoë"; plain ASCII stays readable as it is.
    subject = rendered.subject if rendered.subject.isascii() else Header(rendered.subject, "utf-8").encode()
    domain = envelope.from_address.rpartition("@")[2] or None
    return [
        ("From", _from_header(envelope.from_name, envelope.from_address)),
        ("To", envelope.to_address),
        ("Subject", subject),
        ("Date", date or _now_header()),
        ("Message-ID", envelope.message_id or make_msgid(domain=domain)),
        *envelope.headers,
    ]


# The same for every message of a store: its From header, and the MAIL FROM address read back from it (the
# email package's address parser was a third of preparing a message, 1.4 % of the notifier's busy samples).
@lru_cache(maxsize=256)
def _from_header(name: str, address: str) -> str:
    return formataddr((name, address), charset="utf-8")


@lru_cache(maxsize=256)
def _sender_of(from_header: str) -> str:
    return parseaddr(from_header)[1]


def _now_header() -> str:
    """formatdate(usegmt=True) of now: written to the second, so made once a second, not once a message."""
    global _date_header
    second = int(time.time())
    if _date_header[0] != second:
        _date_header = (second, formatdate(second, usegmt=True))
    return _date_header[1]


_date_header: tuple[int, str] = (-1, "")


@dataclass(frozen=True)
class Outgoing:
    """A message ready for the SMTP conversation: MAIL FROM, RCPT TO and the DATA bytes."""

    sender: str
    recipient: str
    data: bytes


def prepare_email(
    envelope: Envelope, rendered: RenderedMessage, *, boundary: str | None = None, date: str | None = None
) -> Outgoing:
    """What `SmtpSender.send(build_email(...))` hands over, byte for byte, written directly when every header
    is plain ASCII on one short line (the usual case): the email package's generator folds each header
    through its Header class, most of the 0.86 ms a welcome took to build and flatten. Anything else (an
    encoded subject, a line break, a long line, runs of white space, an empty part) goes through build_email,
    which is also what the unit tests compare this with."""
    boundary = boundary or _boundary()
    headers = _headers(envelope, rendered, date)
    if not (rendered.text and rendered.html and all(_plain(name, value) for name, value in headers)):
        return _outgoing(build_email(envelope, rendered, boundary=boundary, date=date))
    lines = [f'Content-Type: multipart/alternative; boundary="{boundary}"', "MIME-Version: 1.0"]
    lines += [f"{name}: {value}" for name, value in headers]
    head = "\r\n".join(lines)
    data = (
        f"{head}\r\n\r\n--{boundary}\r\n{_PLAIN_PART}{_base64_lines(rendered.text)}"
        f"\r\n--{boundary}\r\n{_HTML_PART}{_base64_lines(rendered.html)}\r\n--{boundary}--\r\n"
    )
    return Outgoing(_sender_of(headers[0][1]), envelope.to_address, data.encode("ascii"))


_PART = 'charset="utf-8"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\n'
_PLAIN_PART = f"Content-Type: text/plain; {_PART}"
_HTML_PART = f"Content-Type: text/html; {_PART}"
_NOT_PLAIN = re.compile(r"[\r\n]|\s\s|^\s|\s$")


def _plain(name: str, value: str) -> bool:
    """A header compat32 writes as `name: value`, unchanged: ASCII, one short line, no runs of white space."""
    return value.isascii() and len(name) + len(value) < 900 and not _NOT_PLAIN.search(value)


def _base64_lines(text: str) -> str:
    # 57 bytes a line (76 characters), as the email package's base64 body encoding; CRLF on the wire.
    return base64.encodebytes(text.encode("utf-8")).decode("ascii").replace("\n", "\r\n")


def _outgoing(message: Message) -> Outgoing:
    # Flattened here rather than by aiosmtplib, whose compat32 policy folds lines at 78 characters: a long
    # List-Unsubscribe URL would move to a continuation line, which strict one-click parsers dislike.
    data = message.as_bytes(policy=_WIRE)
    return Outgoing(parseaddr(str(message["From"]))[1], str(message["To"]), data)


_WIRE = compat32.clone(max_line_length=998, linesep="\r\n")
_SMTP_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)
_CLOSING = 421
_QUIT_SECONDS = 2.0  # a polite goodbye, not worth holding a send slot or a shutdown for


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = 0.0


class SmtpSender:
    """Delivers over a few connections kept open and reused, at most `smtp_connections` at a time.

    A connection that was idle may have been closed by the server; that shows at MAIL FROM, before anything
    was handed over, so the message goes out on a fresh connection. A failure later in the conversation
    drops the connection and is reported as before: it may come after the server took the message."""

    # Servers close idle connections (RFC 5321 asks them to wait at least 5 minutes); we let go sooner.
    MAX_IDLE_SECONDS = 60.0

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(settings.smtp_connections)
        self._local_hostname: str | None = None

    async def send(self, message: Message | Outgoing, *, marketing: bool = False) -> None:
        """Hand one message over (`marketing` labels its wait for a connection)."""
        outgoing = message if isinstance(message, Outgoing) else _outgoing(message)
        sender, recipient, data = outgoing.sender, outgoing.recipient, outgoing.data
        asked = time.monotonic()
        async with self._slots:
            WAIT_SECONDS.labels("marketing" if marketing else "transactional").observe(
                time.monotonic() - asked
            )
            connection = await self._start(sender)
            try:
                await self._finish(connection, recipient, data)
            except BaseException:
                connection.client.close()
                raise
            connection.sent += 1
            if connection.sent >= self._settings.smtp_messages_per_connection:
                await _quit(connection)
            else:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await _quit(connection)

    async def _start(self, sender: str) -> _Connection:
        """A connection with MAIL FROM accepted: a reused one when it still answers, else a new one."""
        while self._idle:
            connection = self._idle.pop()
            if time.monotonic() - connection.idle_since > self.MAX_IDLE_SECONDS:
                # No QUIT: on a connection the server may have dropped, it could wait out the timeout.
                connection.client.close()
                continue
            try:
                await _mail(connection.client, sender)
                return connection
            except (aiosmtplib.SMTPServerDisconnected, OSError, TimeoutError):
                connection.client.close()  # closed while idle; nothing was handed over
            except aiosmtplib.SMTPResponseException as exc:
                connection.client.close()
                if exc.code != _CLOSING:  # 421: the server is closing this (idle) connection
                    raise _failure(exc) from exc
        connection = await self._connect()
        try:
            await _mail(connection.client, sender)
        except _SMTP_ERRORS as exc:
            connection.client.close()
            raise _failure(exc) from exc
        return connection

    async def _connect(self) -> _Connection:
        s = self._settings
        if self._local_hostname is None:
            # aiosmtplib would look the name up in a thread for every connection.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            timeout=s.smtp_timeout_seconds,
            local_hostname=self._local_hostname,
            start_tls=None,  # STARTTLS when the server offers it
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:  # connect() greets only when it starts TLS or logs in
                await client.ehlo()
        except aiosmtplib.SMTPConnectError as exc:
            # Nothing was handed over: safe to try again later.
            raise SmtpUnavailable(f"cannot connect to SMTP server: {exc}") from exc
        except _SMTP_ERRORS as exc:
            client.close()
            raise _failure(exc) from exc
        return _Connection(client)

    async def _finish(self, connection: _Connection, recipient: str, data: bytes) -> None:
        try:
            await _rcpt(connection.client, recipient)
        except aiosmtplib.SMTPRecipientRefused as exc:
            temporary = 400 <= exc.code < 500
            raise DeliveryError(
                f"recipient refused: [{exc.code}]", retryable=temporary, permanent_for_address=not temporary
            ) from exc
        except _SMTP_ERRORS as exc:
            raise _failure(exc) from exc
        try:
            await connection.client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            raise _failure(exc) from exc  # the server answered: it kept the message or it did not
        except _SMTP_ERRORS as exc:
            raise DeliveryError(
                f"SMTP connection lost during DATA: {type(exc).__name__}", retryable=False, fate_unknown=True
            ) from exc


async def _mail(client: aiosmtplib.SMTP, sender: str) -> None:
    """`client.mail(sender)`, the same command and errors: see _mailbox."""
    if client.is_ehlo_or_helo_needed:  # never after _connect; mail() greets first
        await client.mail(sender)
        return
    response = await client.execute_command(b"MAIL", b"FROM:" + _mailbox(sender))
    if response.code != aiosmtplib.SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def _rcpt(client: aiosmtplib.SMTP, recipient: str) -> None:
    """`client.rcpt(recipient)`, the same command and errors: see _mailbox."""
    if client.is_ehlo_or_helo_needed:
        await client.rcpt(recipient)
        return
    response = await client.execute_command(b"RCPT", b"TO:" + _mailbox(recipient))
    if response.code not in (aiosmtplib.SMTPStatus.completed, aiosmtplib.SMTPStatus.will_forward):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


# Dot-separated atoms of letters, digits, "_", "+" and "-" on both sides of the "@" (the stores' senders and
# the customers' addresses in practice): aiosmtplib's quote_address gives such an address back, in <>.
_SIMPLE_ADDRESS = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _mailbox(address: str) -> bytes:
    """The <address> of MAIL FROM and RCPT TO, as aiosmtplib's mail() and rcpt() write it: their
    quote_address parses every address with the email package's parser (about 12 us an address, two a
    message), which a simple address skips; any other goes through it, with its errors. With the greeting
    check and the options mail() and rcpt() build for nothing, the SMTP conversation took 189 -> 152 us of
    CPU a message (3 alternated pairs, medians, against aiosmtpd in another process)."""
    if _SIMPLE_ADDRESS.fullmatch(address):
        return f"<{address}>".encode("ascii")
    return quote_address(address).encode("ascii")


async def _quit(connection: _Connection) -> None:
    try:
        await connection.client.quit(timeout=_QUIT_SECONDS)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        connection.client.close()


def _failure(exc: Exception) -> DeliveryError:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # 4xx: the server refused for now and kept nothing; 5xx: it will never accept this message.
        return DeliveryError(f"SMTP {exc.code}: {exc.message}", retryable=400 <= exc.code < 500)
    # A drop mid-conversation may come after the server accepted the message; retrying could send it twice,
    # so this is not retried blindly.
    return DeliveryError(f"SMTP conversation failed: {type(exc).__name__}: {exc}", retryable=False)
