"""Which failures are worth retrying: the database or the broker went away, not a bug or a bad message."""

from __future__ import annotations

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError, OSError, TimeoutError, KafkaError)):
        return True
    # asyncpg reports a dropped connection as a DBAPIError whose connection SQLAlchemy has invalidated.
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
