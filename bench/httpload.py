"""A lean HTTP/1.1 load generator: keep-alive connections over raw asyncio streams.

General-purpose clients (httpx, aiohttp) spend more CPU per request than the server under test does on
this 2-core machine, so they would measure themselves. Requests are encoded once, before the clock starts;
a response is read by its Content-Length (the services never answer chunked).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

HOST = "127.0.0.1"


def encode_request(path: str, headers: dict[str, str], body: bytes, host: str = HOST) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> int:
        """Send one request, read its whole response; return the status code."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        if length:
            await self._reader.readexactly(length)
        return status

    def close(self) -> None:
        self._writer.close()


@dataclass
class ClosedLoopResult:
    """Requests completed inside the measuring window (after the warm-up)."""

    seconds: float
    requests: int = 0
    events: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


async def closed_loop(
    port: int,
    requests: Sequence[bytes],
    events_per_request: Sequence[int],
    *,
    connections: int,
    seconds: float,
    warmup_seconds: float,
) -> ClosedLoopResult:
    """Each connection sends its next request as soon as the previous answer is in (max throughput).
    The pool of requests is cycled when the run outlasts it."""
    result = ClosedLoopResult(seconds=seconds)
    start = time.perf_counter()
    window_start = start + warmup_seconds
    window_end = window_start + seconds
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        conn = await Connection.open(port)
        try:
            while True:
                i = next_index % len(requests)
                next_index += 1
                sent = time.perf_counter()
                if sent >= window_end:
                    return
                status = await conn.exchange(requests[i])
                done = time.perf_counter()
                if window_start <= sent and done <= window_end:
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if 200 <= status < 300:
                        result.requests += 1
                        result.events += events_per_request[i]
                        result.latencies_ms.append((done - sent) * 1000)
                    else:
                        result.errors += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return result


@dataclass(frozen=True)
class Sent:
    """One request of an open-loop run, in wall-clock seconds (comparable with other processes' clocks)."""

    index: int
    scheduled: float
    answered: float
    status: int


async def open_loop(
    port: int, schedule: Sequence[tuple[float, bytes]], *, max_connections: int = 256
) -> list[Sent]:
    """Send each request at its offset (seconds from now) whatever the server's pace, so a slow answer
    delays no later request: the latency of a steady offered load, not of a polite client."""
    idle: list[Connection] = []
    open_count = 0
    results: list[Sent] = []
    tasks: set[asyncio.Task[None]] = set()
    wall0 = time.time()
    mono0 = time.perf_counter()

    async def send(index: int, scheduled: float, request: bytes) -> None:
        nonlocal open_count
        conn = idle.pop() if idle else None
        reused = conn is not None
        if conn is None:
            open_count += 1
            conn = await Connection.open(port)
        try:
            status = await conn.exchange(request)
        except (OSError, asyncio.IncompleteReadError):
            conn.close()
            if not reused:
                open_count -= 1
                results.append(Sent(index, scheduled, wall0 + time.perf_counter() - mono0, 0))
                return
            # The server closes a keep-alive connection idle for a few seconds (uvicorn: 5 s); like any
            # HTTP client, send again on a fresh one.
            conn = await Connection.open(port)
            try:
                status = await conn.exchange(request)
            except (OSError, asyncio.IncompleteReadError):
                conn.close()
                open_count -= 1
                results.append(Sent(index, scheduled, wall0 + time.perf_counter() - mono0, 0))
                return
        results.append(Sent(index, scheduled, wall0 + time.perf_counter() - mono0, status))
        idle.append(conn)

    for index, (offset, request) in enumerate(schedule):
        delay = mono0 + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while open_count >= max_connections and not idle:  # noqa: ASYNC110 - a cap hit only when overloaded
            await asyncio.sleep(0.001)
        task = asyncio.create_task(send(index, wall0 + offset, request))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    for conn in idle:
        with contextlib.suppress(Exception):
            conn.close()
    return results
