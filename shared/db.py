"""Database helpers: the engine factory, a readiness probe, and Alembic runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.settings import DatabaseSettings


def build_engine(settings: DatabaseSettings, *, custom_plans: bool = False) -> AsyncEngine:
    """custom_plans: plan every execution for its parameters. For statements whose text never changes
    (batches passed as arrays), PostgreSQL otherwise settles on a generic plan after five executions,
    made from the statistics of that moment: on a fresh database, scans of tables then nearly empty,
    which a growing table turns into seconds per batch until the next ANALYZE."""
    connect_args: dict[str, object] = {"timeout": 5, "command_timeout": 30}
    if custom_plans:
        connect_args["server_settings"] = {"plan_cache_mode": "force_custom_plan"}
    return create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        pool_pre_ping=True,
        # A dead server must fail a request quickly, not hang it.
        connect_args=connect_args,
    )


async def database_reachable(engine: AsyncEngine, within_seconds: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(within_seconds), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except (TimeoutError, OSError, DBAPIError, OperationalError):
        return False


def alembic_config(script_location: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(script_location: Path, database_url: str) -> None:
    """Run a service's Alembic history up to head (synchronous: call it outside any running event loop)."""
    command.upgrade(alembic_config(script_location, database_url), "head")
