"""Delivering email over SMTP with aiosmtplib, and telling apart what may be retried."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

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


def build_email(envelope: Envelope, rendered: RenderedMessage) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((envelope.from_name, envelope.from_address))
    message["To"] = envelope.to_address
    message["Subject"] = rendered.subject
    message["Message-ID"] = make_msgid(domain=envelope.from_address.rpartition("@")[2] or None)
    for name, value in envelope.headers:
        message[name] = value
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


class SmtpSender:
    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> None:
        s = self._settings
        try:
            await aiosmtplib.send(
                message,
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
