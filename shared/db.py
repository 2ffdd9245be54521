"""Database helpers: the engine factory, a readiness probe, and Alembic runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InvalidatePoolError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from shared.settings import DatabaseSettings

if TYPE_CHECKING:
    from alembic.config import Config


def build_engine(settings: DatabaseSettings, *, custom_plans: bool = False) -> AsyncEngine:
    """custom_plans: plan every execution for its parameters. For statements whose text never changes
    (batches passed as arrays), PostgreSQL otherwise settles on a generic plan after five executions,
    made from the statistics of that moment: on a fresh database, scans of tables then nearly empty,
    which a growing table turns into seconds per batch until the next ANALYZE."""
    connect_args: dict[str, object] = {"timeout": 5, "command_timeout": 30}
    if custom_plans:
        connect_args["server_settings"] = {"plan_cache_mode": "force_custom_plan"}
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        # A dead server must fail a request quickly, not hang it.
        connect_args=connect_args,
    )
    # Instead of pool_pre_ping (three round trips per checkout).
    check_pooled_connections(engine)
    return engine


# A connection that waited in the pool longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 10.0
_IDLE_SINCE = "loyalty_idle_since"


def check_pooled_connections(engine: AsyncEngine) -> None:
    """What pool_pre_ping guarded against, for a fraction of its cost.

    pool_pre_ping pings every connection checked out of the pool, and asyncpg's ping is three round trips
    (BEGIN, an empty statement, ROLLBACK): more than many of the transactions it preceded (a segmenter
    batch, a notifier claim). What it catches is a connection the server closed while it sat in the pool,
    above all a PostgreSQL restart. The server then says so (it ends its backends' connections), and asyncpg
    marks the connection closed as soon as the event loop reads that, so asking the connection costs no
    round trip. As pre-ping did on a failed ping, a closed connection invalidates the whole pool (the others
    are as old as it) and the checkout takes a fresh one. A connection idle longer than
    PING_AFTER_IDLE_SECONDS is still pinged, for what the server cannot announce (a network path dropped
    while idle). A connection that breaks between its checkout and its statement fails that statement, as
    it could with pre-ping too, and the disconnect invalidates the pool (SQLAlchemy's own handling)."""
    dialect = engine.dialect

    def on_checkin(_: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def on_checkout(
        dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _: PoolProxiedConnection
    ) -> None:
        driver: Any = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise InvalidatePoolError("the server closed this pooled connection")
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is not None and time.monotonic() - idle_since > PING_AFTER_IDLE_SECONDS:
            try:
                dialect.do_ping(dbapi_connection)
            except dialect.loaded_dbapi.Error as exc:  # as pre-ping: only a disconnect means "reconnect"
                if dialect.is_disconnect(exc, dbapi_connection, None):
                    raise InvalidatePoolError("a ping of an idle pooled connection failed") from exc
                raise

    event.listen(engine.sync_engine, "checkin", on_checkin)
    event.listen(engine.sync_engine, "checkout", on_checkout)


async def database_reachable(engine: AsyncEngine, within_seconds: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(within_seconds), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except (TimeoutError, OSError, DBAPIError, OperationalError):
        return False


# Alembic is imported by the two functions below, not by this module: a service's `serve` process uses this
# module's engine and never migrates (`migrate` does, in a process of its own), and Alembic with what it
# brings (Mako) was 7 MiB of the segmenter's and 6 of the notifier's resident memory, counted in each peak.


def alembic_config(script_location: Path, database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(script_location: Path, database_url: str) -> None:
    """Run a service's Alembic history up to head (synchronous: call it outside any running event loop)."""
    from alembic import command

    command.upgrade(alembic_config(script_location, database_url), "head")
