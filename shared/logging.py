"""Structured JSON logs for every process.

Logs are for operators: they carry ids (store, event, message) and never personal data such as emails,
names or addresses. A customer id can be personal itself (a guest is `email:<address>`), so every
customer id is logged as `customer_ref`, a stable keyed hash (`customer_ref()`: the same customer gives the
same ref in all three services, so lines can still be followed across them; the API takes the real id).
`scrub_personal_data` is the safety net: it blanks personal keys, turns customer ids into refs, and
removes email addresses and quoted input values from free text (errors, SMTP replies, tracebacks).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_PERSONAL_KEYS = frozenset(
    {"email", "first_name", "last_name", "name", "phone", "address", "address1", "address2", "city", "zip"}
)


# Keys whose value is a customer identifier: logged as a ref, never as is.
_CUSTOMER_ID_KEYS = frozenset({"customer_id", "customer_key", "customer", "previous_id", "recipient"})
# Free-text keys that may quote what a customer or a server wrote (an SMTP reply names the address).
_FREE_TEXT_KEYS = ("event", "error", "reason", "detail", "exception", "message", "exc_info")

_EMAIL = re.compile(r"[^\s<>\"'(),;:@]+@[^\s<>\"'(),;:@]+\.[^\s<>\"'(),;:@]+")
# pydantic's `input_value='...'` and asyncpg's `query argument $1: '...'` quote the offending value.
_QUOTED_INPUT = re.compile(
    r"(input_value=|query argument \$\d+: )('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)"
)

# Set LOG_PSEUDONYM_KEY (the same in every service) so refs cannot be reversed by hashing guessed emails.
_REF_KEY = os.environ.get("LOG_PSEUDONYM_KEY", "").encode()


def customer_ref(customer_id: str) -> str:
    """A stable, non-reversible reference to a customer for logs: `c_` and 16 hex digits."""
    digest = hmac.new(_REF_KEY, customer_id.encode(), hashlib.sha256).hexdigest()
    return f"c_{digest[:16]}"


def redact_text(text: str) -> str:
    """Email addresses and quoted input values out of a free-text message (errors, replies, tracebacks)."""
    text = _EMAIL.sub("[email]", text)
    return _QUOTED_INPUT.sub(r"\1[redacted]", text)


def scrub_personal_data(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _PERSONAL_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    for key in _CUSTOMER_ID_KEYS.intersection(event_dict):
        value = event_dict.pop(key)
        if value is not None:
            event_dict["customer_ref"] = customer_ref(str(value))
    for key in _FREE_TEXT_KEYS:
        value = event_dict.get(key)
        if isinstance(value, str) and ("@" in value or "input" in value or "argument" in value):
            event_dict[key] = redact_text(value)
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    """JSON lines on stdout, one object per event, with the service name on every line."""
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        scrub_personal_data,
    ]
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            # Again, now that a traceback is text: exception messages quote addresses and input values.
            scrub_personal_data,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Route stdlib loggers (uvicorn, aiokafka, sqlalchemy) through the same JSON renderer.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_personal_data,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx and httpcore log every request at INFO with its whole URL: a WooCommerce coupon's look-up puts
    # the code in its query string (a customer's discount, which the site lets whoever types that
    # customer's billing email spend), and a line per platform call is noise next to our own lines, which
    # say what was done and for which message.
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # uvicorn installs its own handlers; make its loggers use ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
