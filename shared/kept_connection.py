"""One database connection kept between the transactions of a worker that runs one at a time (a consumer's
batches, a relay's rounds), instead of one pool checkout per transaction.

Every checkout from the services' pool goes through the pool's bookkeeping and its checks (shared/db.py):
a fixed cost per transaction, which weighs most at steady load, when the transactions are small and many
(it was larger still when each checkout was pinged, three round trips). A kept connection skips them; when
it is found dead at its next use (the server restarted, the backend was ended), the work is done once more
at once on a fresh, checked connection, which is what the pool's checks would have given at checkout.
Failures of a fresh connection, and any other failure, go up unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")


class KeptConnection:
    """Transactions on one connection of `engine`'s pool, kept between them while `keep` (otherwise checked
    out and given back for each, as `engine.begin()` does). Not for concurrent use: one transaction at a
    time. `close` gives the kept connection back to the pool."""

    def __init__(self, engine: AsyncEngine, *, keep: bool = True) -> None:
        self._engine = engine
        self._keep = keep
        self._conn: AsyncConnection | None = None

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work(conn)` in one transaction, committed when it returns (rolled back when it raises)."""
        kept = self._conn is not None
        try:
            return await self._once(work)
        except DBAPIError as exc:
            if not (kept and exc.connection_invalidated):
                raise
            # Found dead: what the pool's ping would have found at checkout. Once more, on a fresh one.
            return await self._once(work)

    async def close(self) -> None:
        """Close the kept connection rather than give it back: it may have died unnoticed since its last
        use, and the pool's ping did not catch such a connection once returned (found in testing)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            await conn.close()

    async def _once(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        conn, self._conn = self._conn, None
        if conn is None:
            conn = await self._engine.connect()
        try:
            async with conn.begin():
                result = await work(conn)
        except BaseException:
            # Back to the pool, which drops a connection found broken; the failure itself goes on up
            # (closing a connection that broke may fail too, and says nothing more).
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        if self._keep:
            self._conn = conn
        else:
            await conn.close()
        return result
