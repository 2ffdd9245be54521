"""Which failures are worth retrying: the database or the broker went away, not a bug or a bad message."""

from __future__ import annotations

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

# SQLSTATE classes and codes that say "not now" rather than "never": connection exceptions (08), a server
# shutting down or starting (57P01-57P03), a transaction chosen as deadlock or serialisation victim (40).
_RETRYABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError, OSError, TimeoutError, KafkaError)):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    # asyncpg reports a dropped connection as a DBAPIError whose connection SQLAlchemy has invalidated.
    code = _sqlstate(exc)
    return bool(exc.connection_invalidated) or (code is not None and code.startswith(_RETRYABLE_SQLSTATES))


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


def is_infrastructure(exc: BaseException) -> bool:
    """A failure of what every message needs (the database, the broker, the network), as opposed to a fault of
    the one message being handled: an outage, or a database that refuses more than the data (a missing table,
    a lost permission). Retrying another message cannot help; a worker stops for these, and only these."""
    if is_transient(exc):
        return True
    return isinstance(exc, SQLAlchemyError) and not is_bad_data(exc)
