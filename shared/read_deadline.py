"""A deadline on reading each HTTP request, which uvicorn does not have.

uvicorn times out only an idle kept-alive connection between requests. A client that opens a connection and
sends nothing, or a request's headers or body a few bytes at a time (slowloris), holds its connection and a
file descriptor for as long as it likes: a few thousand of them exhaust the process's descriptors and nobody
else can connect. Behind a proxy its own timeouts apply; ingest takes webhooks and browsers directly, and the
notifier's unsubscribe links are opened by anyone.

So each request must arrive whole (headers and body) within `timeout` seconds of its first byte, or, for a
connection's first request, of the connection. Otherwise the connection is closed, as nginx does for a
request's headers (`client_header_timeout`, 60 s by default). A client that had begun a request is told
why first (408); one that sent nothing (a browser's preconnected socket, say) is only closed, as uvicorn
closes an idle kept-alive connection, since a 408 it did not ask for could be read as the answer to a request
it sends at that moment. The application, if it was waiting for the body, sees the client gone. The
response's time is not counted: a request being answered slowly (a broker down, say) is the service's to
answer, within its own limits.

One timer per server looks over its connections every `timeout / 4` seconds (at most every second), rather
than one per request: a request only notes when it began (a timer armed and cancelled per request cost
2.3 µs under uvloop, about 1 % of a webhook's time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Set
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_BODY = b"the request did not arrive whole in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n"
    b"\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class RequestReadDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request (see the module)."""

    # Set per process from HTTP_REQUEST_READ_TIMEOUT_SECONDS (`configure`), before any connection is made:
    # uvicorn makes the protocol per connection from the class, in each worker process.
    timeout: ClassVar[float] = 30.0

    # When the request being read began (before the first, when the connection was made); None while none is.
    _since: float | None = None
    _reading = False  # a request has begun and has not arrived whole yet
    _headers_read = False  # ...and its headers have (then `cycle` is its own)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        _watch(self.loop, self.connections, self.timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True
        self._headers_read = False
        # The connection's first request keeps the time the connection was made; a later one (kept alive or
        # pipelined) starts from its first byte.
        if self._since is None:
            self._since = self.loop.time()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._headers_read = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = False
        self._since = None

    def overdue(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self.timeout

    def cut_off(self) -> None:
        """Close the connection, telling a request begun why, unless the application has answered it already
        or begun to (it may answer before reading the body: a 413, say)."""
        self._since = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answered = self._headers_read and cycle is not None and cycle.response_started
        if self._reading and not answered:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


# id() of each server's set of connections that a timer is watching (the timer holds the set, so its id is
# not reused while it is here).
_watched: set[int] = set()


def _watch(loop: asyncio.AbstractEventLoop, connections: Set[object], timeout: float) -> None:
    if id(connections) not in _watched:
        _watched.add(id(connections))
        loop.call_later(min(1.0, timeout / 4), _sweep, loop, connections, timeout)


def _sweep(loop: asyncio.AbstractEventLoop, connections: Set[object], timeout: float) -> None:
    now = loop.time()
    for connection in [c for c in connections if isinstance(c, RequestReadDeadline) and c.overdue(now)]:
        connection.cut_off()
    if connections:
        loop.call_later(min(1.0, timeout / 4), _sweep, loop, connections, timeout)
    else:  # idle: the next connection starts the timer again
        _watched.discard(id(connections))


def configure(timeout_seconds: float) -> type[RequestReadDeadline]:
    """The protocol class for uvicorn's `http`, with this process's deadline."""
    RequestReadDeadline.timeout = timeout_seconds
    return RequestReadDeadline
