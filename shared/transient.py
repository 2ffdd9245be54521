"""Which failures are worth retrying: the database or the broker went away, not a bug or a bad message."""

from __future__ import annotations

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError, OSError, TimeoutError, KafkaError)):
        return True
    # asyncpg reports a dropped connection as a DBAPIError whose connection SQLAlchemy has invalidated.
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_bad_data(exc: BaseException) -> bool:
    """The database refused the data itself (SQLSTATE class 22 data exception, 23 integrity violation):
    retrying the same message can never succeed, so it is a poison message, not an outage."""
    code = _sqlstate(exc) if isinstance(exc, DBAPIError) else None
    return code is not None and code[:2] in ("22", "23")
