"""Run an ASGI app on a loopback port in a background thread (tests), or in the foreground (make up)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serving(app: Any, port: int = 0, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` in a thread until the block ends; yields its base URL (`http://127.0.0.1:<port>`)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test platform server did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def hold(seconds: float, still: Callable[[], bool]) -> None:
    """Wait up to `seconds` while `still()` holds: a test server's late answer that the test can let go.
    Polled, since the test flips it from its own thread (an asyncio.Event belongs to this server's loop)."""
    for _ in range(max(1, round(seconds / _POLL))):
        if not still():
            return
        await asyncio.sleep(_POLL)


_POLL = 0.05
