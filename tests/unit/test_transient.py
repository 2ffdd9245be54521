"""Which database errors are outages to wait out, and which are bad data to dead-letter."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from shared.transient import is_bad_data, is_transient


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _db_error(sqlstate: str) -> DBAPIError:
    return DBAPIError("statement", {}, _PgError(sqlstate))


@pytest.mark.parametrize("sqlstate", ["57P01", "57P03", "08006", "40P01", "40001"])
def test_shutdown_connection_loss_and_deadlocks_are_transient(sqlstate: str) -> None:
    assert is_transient(_db_error(sqlstate))
    assert not is_bad_data(_db_error(sqlstate))


@pytest.mark.parametrize("sqlstate", ["22021", "23505"])
def test_refused_data_is_not_transient(sqlstate: str) -> None:
    assert not is_transient(_db_error(sqlstate))
    assert is_bad_data(_db_error(sqlstate))


def test_a_bug_is_neither() -> None:
    assert not is_transient(_db_error("42P01"))
    assert not is_transient(ValueError("bug"))
