"""A segmenter database whose tables were analyzed nearly empty and grew since without an ANALYZE, as on a new
store in its first minutes: the statistics the segmenter's statements are planned from before the first
automatic ANALYZE, which they must not read whole tables under."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deploy.devstack.postgres import PostgresServer
from shared.db import build_engine, upgrade_to_head
from shared.settings import REPO_ROOT, DatabaseSettings

Fill = Callable[[AsyncConnection], Awaitable[None]]


@asynccontextmanager
async def grown_after_analyze(
    server: PostgresServer, name: str, tables: Sequence[str], early: Fill, later: Fill | None = None
) -> AsyncIterator[AsyncEngine]:
    """A database of its own (`name` and a random suffix) at the segmenter's head revision: `early` writes
    its first rows, `tables` are analyzed, then `later` (if any) writes the rest. Read and written through
    custom plans, as the segmenter's connections are."""
    url = server.create_database(f"{name}_{uuid.uuid4().hex[:10]}")
    # Alembic's env.py runs an event loop of its own: in a thread.
    await asyncio.to_thread(upgrade_to_head, REPO_ROOT / "services" / "segmenter" / "migrations", url)
    engine = build_engine(DatabaseSettings(database_url=url), custom_plans=True)  # as the segmenter's
    try:
        async with engine.begin() as conn:
            await early(conn)
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in tables:
                await autocommit.execute(text(f"ANALYZE segmenter.{table}"))
        if later is not None:
            async with engine.begin() as conn:
                await later(conn)
        yield engine
    finally:
        await engine.dispose()
