"""CORS for the Segment API, so analytics.js on a store's own pages can call ingest from another origin.

analytics.js posts `text/plain` JSON with an `Authorization: Basic` header, so the browser first sends a
preflight (OPTIONS) asking whether the `authorization` header may be sent; a `*` answer does not cover
Authorization, so the origin is echoed. A preflight carries no write key, so it is answered for any origin
that some store lists in `allowed_origins`; the real call then carries the key, and its store's own list
decides (see `mark_origin`): an origin that store does not list gets a 403 without any CORS header, so the
page cannot even read the answer. Calls without an Origin header (servers, mobile apps) are not concerned.

Written as plain ASGI middleware, not Starlette's CORSMiddleware: the allowed origins depend on the write
key inside the request, which Starlette's fixed list cannot express.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from prometheus_client import Counter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.stores import StoreRegistry
from shared.web import ApiError, ErrorBody, error_response

PREFIX = "/v1/"
# What analytics.js, analytics-kotlin and analytics-swift send besides the CORS-safelisted headers.
ALLOWED_HEADERS = ("authorization", "content-type", "content-encoding", "x-retry-count")
# The library reads Retry-After on 429 to wait before retrying; a cross-origin page sees only listed headers.
EXPOSED_HEADERS = "Retry-After"
# Chromium caps a cached preflight at 2 hours; 10 minutes keeps a changed registry effective soon.
MAX_AGE_SECONDS = "600"
_STATE_KEY = "cors_origin_allowed"

PREFLIGHTS = Counter(
    "ingest_cors_preflights_total", "CORS preflights of the Segment API, by outcome", ["outcome"]
)


def mark_origin(request: Request, allowed: bool) -> None:
    """Record the verdict of the call's own store on its Origin (read by the middleware when it answers)."""
    request.state.cors_origin_allowed = allowed


def check_origin(request: Request, allows: Callable[[str], bool]) -> None:
    """For a browser call (it has an Origin header): 403 unless the key's store lists that origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    allowed = allows(origin)
    mark_origin(request, allowed)
    if not allowed:
        raise ApiError(
            403,
            "origin_not_allowed",
            "this store does not allow calls from the page's origin (Origin header); add it to the store's "
            "allowed_origins",
        )


class SegmentCors:
    def __init__(self, app: ASGIApp, stores: Callable[[], StoreRegistry]) -> None:
        self.app = app
        self._stores = stores

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            await self._preflight(scope, origin, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                verdict = scope.get("state", {}).get(_STATE_KEY)
                # Refused before the key was known (too large, not JSON, unknown key): the page may read why
                # if any store lists its origin; otherwise the library would take it for a network failure.
                allowed = verdict if verdict is not None else self._stores().allows_origin_anywhere(origin)
                if allowed:
                    headers = list(message.get("headers", []))
                    headers += [
                        (b"access-control-allow-origin", origin.encode("latin-1")),
                        (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
                        (b"vary", b"Origin"),
                    ]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, origin: str, send: Send) -> None:
        method = (_header(scope, b"access-control-request-method") or "").upper()
        asked = _header(scope, b"access-control-request-headers") or ""
        headers = [h.strip().lower() for h in asked.split(",") if h.strip()]
        unknown = [h for h in headers if h not in ALLOWED_HEADERS]
        response: Response
        if not self._stores().allows_origin_anywhere(origin):
            PREFLIGHTS.labels("origin_not_allowed").inc()
            response = error_response(
                403,
                ErrorBody(error="origin_not_allowed", detail="no store allows calls from this origin"),
            )
        elif method not in ("POST", "GET") or unknown:
            PREFLIGHTS.labels("not_allowed").inc()
            what = f"header(s) {', '.join(unknown)}" if unknown else f"method {method}"
            response = error_response(
                403, ErrorBody(error="cors_not_allowed", detail=f"the Segment API does not accept {what}")
            )
        else:
            PREFLIGHTS.labels("allowed").inc()
            response = Response(
                status_code=204,
                headers={
                    "access-control-allow-origin": origin,
                    "access-control-allow-methods": "POST, GET, OPTIONS",
                    "access-control-allow-headers": ", ".join(ALLOWED_HEADERS),
                    "access-control-max-age": MAX_AGE_SECONDS,
                    "vary": "Origin",
                },
            )

        async def no_body(_: Scope | None = None) -> Message:  # pragma: no cover - a preflight has no body
            return {"type": "http.request", "body": b"", "more_body": False}

        await response(scope, no_body, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
