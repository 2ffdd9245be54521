"""Delivering email over SMTP with aiosmtplib, and telling apart what may be retried."""

from __future__ import annotations

from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formataddr, formatdate, make_msgid, parseaddr

import aiosmtplib

from services.notifier.adapters.templates import RenderedMessage
from shared.settings import SmtpSettings


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool, permanent_for_address: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        # The recipient's server said this address will never take mail (5xx to RCPT): suppress it.
        self.permanent_for_address = permanent_for_address


@dataclass(frozen=True)
class Envelope:
    from_address: str
    from_name: str
    to_address: str
    headers: tuple[tuple[str, str], ...] = ()


def build_email(envelope: Envelope, rendered: RenderedMessage) -> Message:
    """multipart/alternative with a text and an HTML part, UTF-8 throughout.

    Built with the compat32 MIME classes: the same bytes on the wire as EmailMessage's, at a fraction of the
    cost (its header registry parsed every header we set, and was the sender's largest expense)."""
    message = MIMEMultipart("alternative")
    message["From"] = formataddr((envelope.from_name, envelope.from_address), charset="utf-8")
    message["To"] = envelope.to_address
    # RFC 2047 encoding for a subject with a name like "Zoë"; plain ASCII stays readable as it is.
    message["Subject"] = (
        rendered.subject if rendered.subject.isascii() else Header(rendered.subject, "utf-8").encode()
    )
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=envelope.from_address.rpartition("@")[2] or None)
    for name, value in envelope.headers:
        message[name] = value
    message.attach(MIMEText(rendered.text, "plain", "utf-8"))
    message.attach(MIMEText(rendered.html, "html", "utf-8"))
    return message


_WIRE = compat32.clone(max_line_length=998, linesep="\r\n")


class SmtpSender:
    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: Message) -> None:
        s = self._settings
        # Flattened here rather than by aiosmtplib, whose compat32 policy folds lines at 78 characters: a
        # long List-Unsubscribe URL would move to a continuation line, which strict one-click parsers dislike.
        data = message.as_bytes(policy=_WIRE)
        try:
            await aiosmtplib.send(
                data,
                sender=parseaddr(str(message["From"]))[1],
                recipients=[str(message["To"])],
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password,
                timeout=s.smtp_timeout_seconds,
                start_tls=None,  # STARTTLS when the server offers it
            )
        except aiosmtplib.SMTPConnectError as exc:
            # Nothing was handed over: safe to try again later.
            raise DeliveryError(f"cannot connect to SMTP server: {exc}", retryable=True) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            temporary = all(400 <= c < 500 for c in codes)
            raise DeliveryError(
                f"recipient refused: {codes}", retryable=temporary, permanent_for_address=not temporary
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx: the server refused for now and kept nothing; 5xx: it will never accept this message.
            raise DeliveryError(f"SMTP {exc.code}: {exc.message}", retryable=400 <= exc.code < 500) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # A drop mid-conversation may come after the server accepted the message; retrying could
            # send it twice, so this is not retried blindly.
            raise DeliveryError(
                f"SMTP conversation failed: {type(exc).__name__}: {exc}", retryable=False
            ) from exc
