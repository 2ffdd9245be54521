"""The claim (adapters/repository.claim_events) answers a batch whose keys are all new with one row of NULLs
instead of its keys: whatever mix of new, already processed and repeated keys a batch holds, it must
answer the keys seen for the first time, exactly, and record each key once."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.segmenter.adapters.repository import claim_events
from services.segmenter.adapters.tables import processed_events

pytestmark = pytest.mark.integration


async def _claim(engine: AsyncEngine, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    async with engine.begin() as conn:
        return await claim_events(conn, pairs)


async def _recorded(engine: AsyncEngine, store_id: str) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(processed_events)
        return int((await conn.scalar(query.where(processed_events.c.store_id == store_id))) or 0)


async def test_new_old_repeated_and_other_stores_keys_are_told_apart(
    engine: AsyncEngine, store_id: str
) -> None:
    other = f"{store_id}-b"
    # Every key new, one of them twice in the batch.
    assert await _claim(engine, [("e1", store_id), ("e2", store_id), ("e1", store_id)]) == {
        (store_id, "e1"),
        (store_id, "e2"),
    }
    # Every key processed before.
    assert await _claim(engine, [("e2", store_id), ("e1", store_id)]) == set()
    # A mix, and the same event id in another store (a key of its own).
    assert await _claim(engine, [("e1", store_id), ("e3", store_id), ("e3", store_id), ("e1", other)]) == {
        (store_id, "e3"),
        (other, "e1"),
    }
    # One new key alone.
    assert await _claim(engine, [("e4", store_id)]) == {(store_id, "e4")}
    assert await _claim(engine, []) == set()
    assert await _recorded(engine, store_id) == 4
    assert await _recorded(engine, other) == 1
