"""What every HTTP service shares: errors with the field at fault, health/readiness, metrics, store auth."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import LabelledChildren
from shared.ratelimit import ClientRateLimitMiddleware, parse_networks
from shared.registry_checks import sha256_hex
from shared.settings import ClientRateLimitSettings
from shared.stores import StoreConfig, StoreRegistry

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by route template",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
_REQUESTS = LabelledChildren(HTTP_REQUESTS)
_LATENCY = LabelledChildren(HTTP_LATENCY)


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer has this shape: a machine code, a sentence, and the fields at fault."""

    error: str
    detail: str
    errors: list[FieldError] = []


class ApiError(Exception):
    """A business error that knows its HTTP status (raised by routes, rendered by the handler below)."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.body = ErrorBody(error=error, detail=detail, errors=errors or [])
        self.headers = headers


def query_instant(value: datetime, field: str) -> datetime:
    """A date or time given in a query, as the same instant in UTC (taken as UTC when it names no offset).
    422 naming the field when that instant falls outside years 1 to 9999 (0001-01-01T00:00:00+05:00 is in
    year 0 in UTC), which neither Python's datetime nor PostgreSQL's driver can carry."""
    try:
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except OverflowError:
        raise ApiError(
            422,
            "validation_failed",
            f"{field} is out of range",
            errors=[FieldError(field=field, message="outside 0001-01-01 to 9999-12-31 in UTC")],
        ) from None


def error_response(status_code: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status_code, content=body.model_dump(), headers=headers)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("body", "customer", "email")` -> `customer.email`; list indexes become `[i]`."""
    parts: list[str] = []
    for item in loc:
        if item in ("body", "query", "path", "header") and not parts:
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "body"


def validation_errors(raw_errors: Any) -> list[FieldError]:
    return [
        FieldError(field=field_path(e.get("loc", ())), message=str(e.get("msg", "invalid")))
        for e in raw_errors
    ]


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status_code, exc.body, exc.headers)

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = validation_errors(exc.errors())
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        return error_response(422, ErrorBody(error="validation_error", detail=detail, errors=errors))

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        body = ErrorBody(error=_status_code_name(exc.status_code), detail=str(exc.detail))
        return error_response(exc.status_code, body, dict(exc.headers) if exc.headers else None)

    async def on_dependency_down(_: Request, exc: Exception) -> Response:
        # Postgres or Kafka went away mid-request: say so (503) and let the client retry.
        body = ErrorBody(
            error="dependency_unavailable", detail=f"a dependency is unavailable: {type(exc).__name__}"
        )
        return error_response(503, body, {"Retry-After": "5"})

    async def on_data_error(_: Request, exc: Exception) -> Response:
        # Postgres refused a value the request carried (a NUL byte, a number out of range...): the request
        # is at fault, not the database, so 422 rather than "dependency down". No value is echoed back.
        body = ErrorBody(error="invalid_value", detail="a value in the request cannot be stored or looked up")
        return error_response(422, body)

    for transient in (OperationalError, InterfaceError, DBAPIError, OSError, TimeoutError, KafkaError):
        app.add_exception_handler(transient, on_dependency_down)
    # Handlers are looked up along the exception's MRO, so DataError wins over DBAPIError.
    app.add_exception_handler(DataError, on_data_error)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


def _status_code_name(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(
        status, "error"
    )


def install_metrics_middleware(app: FastAPI) -> None:
    app.add_middleware(_MetricsMiddleware)


def install_input_guard(app: FastAPI) -> None:
    """Refuse a NUL or other control character in the path or the query before any route sees it: no
    identifier, email or date holds one, PostgreSQL text cannot store one, and a route would otherwise
    hand it to the database (which answered with a data error, once mapped to 503)."""
    app.add_middleware(_InputGuardMiddleware)


# A regular expression, not a loop over the characters in Python: this runs on the path of every request
# (5 us a request that way, 0.3 us this way).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _control_character(text: str) -> bool:
    return _CONTROL_CHARACTER.search(text) is not None


class _InputGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = _bad_input_field(scope)
            if field is not None:
                response = error_response(
                    400,
                    ErrorBody(
                        error="bad_request",
                        detail=f"{field}: must not contain control characters",
                        errors=[FieldError(field=field, message="must not contain control characters")],
                    ),
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


def _bad_input_field(scope: Scope) -> str | None:
    if _control_character(scope.get("path", "")):
        return "path"
    query = scope.get("query_string", b"")
    if query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if _control_character(name) or _control_character(value):
                return f"query.{name}" if not _control_character(name) else "query"
    return None


def install_client_rate_limit(app: FastAPI, service: str, settings: ClientRateLimitSettings) -> None:
    """Per client address, before routing, authentication and parsing. Install it before the metrics
    middleware, so that one (added last, outermost) counts the 429s too."""
    if settings.rate_limit_per_client_per_second <= 0:
        return
    app.add_middleware(
        ClientRateLimitMiddleware,
        service=service,
        rate_per_second=settings.rate_limit_per_client_per_second,
        burst=settings.rate_limit_per_client_burst,
        trusted_proxies=parse_networks(settings.trusted_proxies),
    )


class _MetricsMiddleware:
    """Request count and latency per route template. Plain ASGI rather than `@app.middleware("http")`:
    Starlette's BaseHTTPMiddleware runs every request through an extra task group and a re-streamed body,
    which cost ingest about a fifth of its time per webhook."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, record_status)
        finally:
            # The route template, not the raw path: customer ids must not explode metric cardinality.
            template = getattr(scope.get("route"), "path", "unmatched")
            _LATENCY.child(template, scope["method"]).observe(time.perf_counter() - started)
            _REQUESTS.child(template, scope["method"], str(status)).inc()


DirectHandler = Callable[[Request], Awaitable[Response]]


class _RouteTable:
    """The declared routes served directly, by path and method, with their handlers."""

    def __init__(self) -> None:
        self.by_path: dict[str, dict[str, tuple[APIRoute, DirectHandler]]] = {}

    def add(self, route: APIRoute, handler: DirectHandler) -> None:
        methods = self.by_path.setdefault(route.path, {})
        for method in route.methods or ():
            if method in methods:
                raise ValueError(f"{method} {route.path} is served directly already")
            methods[method] = (route, handler)

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self.by_path)


class _DirectRoutes:
    """Answers the requests of declared routes with their `handler(request) -> Response`, without FastAPI's
    per-request machinery: route matching through the included routers, dependency solving, the nested exit
    stacks, and validating and rendering the answer through the response model. On ingest's webhooks that
    machinery was about a third of the process's time per request (bench/README.md, issue 14).

    The innermost of the app's own middleware (every other one, CORS, metrics, rate limits and the input
    guard, sees these requests as before), it finds the route by path and method in a dict and hands the
    request to the app's exception handling (Starlette's ExceptionMiddleware with the handlers FastAPI gives
    its own) around the handler. Until issue 14's sixth round each route was one of the router's routes,
    tried in turn (a Shopify webhook after the 14 Segment paths), behind the exception handling, the exit
    stack and the router: 14 % of a webhook's CPU in process.

    The declared APIRoutes stay in the app, so OpenAPI, `url_path_for` and the 405 for another method are
    their own (those requests go on to the router); a request served here gets its declared APIRoute as
    `scope["route"]`, as the router gives it, so the metrics count it under the same template. The handler
    reads everything itself (headers, body) and returns the final Response: nothing is validated or rendered
    for it."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, routes: _RouteTable) -> None:
        self._app = app
        self._routes = routes.by_path
        self._router = fastapi_app.router
        # What FastAPI.build_middleware_stack gives its ExceptionMiddleware (500 and Exception go to the
        # outermost ServerErrorMiddleware, as for every route).
        handlers = {k: v for k, v in fastapi_app.exception_handlers.items() if k not in (500, Exception)}
        self._handled = ExceptionMiddleware(self._serve, handlers=handlers, debug=fastapi_app.debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # With FastAPI's own telemetry on, the router answers (the declared route: the same answer,
        # test_direct_routes.py) and names the route to the telemetry.
        if scope["type"] == "http" and scope.get("fastapi.telemetry") is None:
            found = self._routes.get(get_route_path(scope), _NO_METHODS).get(scope["method"])
            if found is not None:
                route = found[0]
                scope.setdefault("router", self._router)
                scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {}
                await self._handled(scope, receive, send)
                return
        await self._app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._routes[get_route_path(scope)][scope["method"]][1]
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)


_NO_METHODS: dict[str, tuple[APIRoute, DirectHandler]] = {}


def serve_directly(app: FastAPI, routes: Sequence[tuple[APIRoute, DirectHandler]]) -> None:
    """Serve these declared routes (already included in `app`) through their direct handlers (see
    `_DirectRoutes`). Each handler must answer exactly as its declared endpoint would, so a route with
    dependencies (its own or its router's) or included under a prefix is refused: they would be skipped."""
    declared = {  # by identity: routes compare by value
        id(context.original_route): context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    }
    for route, _ in routes:
        context = declared.get(id(route))
        if context is None or context.path != route.path:
            raise ValueError(f"{route.path} is not a route of this app at that path")
        if route.dependencies or getattr(context, "dependencies", None):
            raise ValueError(f"{route.path} has dependencies, which a direct handler would skip")
    table = direct_routes(app)
    if table is None:
        if app.middleware_stack is not None:
            raise RuntimeError("routes can only be served directly before the app starts")
        table = _RouteTable()
        # Last in the list: the innermost of the app's own middleware (add_middleware puts each new one
        # outside the others).
        app.user_middleware.append(Middleware(_DirectRoutes, fastapi_app=app, routes=table))
    for route, handler in routes:
        table.add(route, handler)


def direct_routes(app: FastAPI) -> _RouteTable | None:
    """The app's routes served directly, if any."""
    for middleware in app.user_middleware:
        factory: object = middleware.cls
        table = middleware.kwargs.get("routes")
        if factory is _DirectRoutes and isinstance(table, _RouteTable):
            return table
    return None


def ops_router(readiness: ReadinessCheck) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up and serving")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: Kafka and Postgres are reachable",
        responses={503: {"description": "a dependency is unreachable"}},
    )
    async def readyz() -> JSONResponse:
        checks = await readiness()
        ready = all(checks.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "unavailable", **checks},
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


_bearer = HTTPBearer(auto_error=False, description="The store's API key")


async def require_store(
    request: Request,
    store_id: str,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> StoreConfig:
    """Resolve `{store_id}` and check the Bearer API key: unknown store 404, wrong or missing key 401.

    A coroutine, though it never waits: FastAPI runs a plain function dependency in a worker thread, and
    that hand-off (a thread woken, the result passed back to the event loop) cost more than the check
    itself on every read request (the notifier asks the segmenter for complements for each email)."""
    registry: StoreRegistry = request.app.state.stores
    store = registry.get(store_id)
    if store is None:
        raise ApiError(404, "store_not_found", f"unknown store {store_id!r}")
    if credentials is None or not (
        store.accepts_api_key(credentials.credentials) or _is_service_key(request, credentials.credentials)
    ):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong API key for this store",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return store


def _is_service_key(request: Request, presented: str) -> bool:
    """Another of our services (the notifier reading complements); set by services that accept it."""
    expected: str | None = getattr(request.app.state, "service_key_sha256", None)
    return expected is not None and hmac.compare_digest(sha256_hex(presented), expected)


StoreDep = Annotated[StoreConfig, Depends(require_store)]

# Lists in the REST API come a page at a time: a customer with years of history, or a scraper, must not
# make one request read and serialise an unbounded number of rows.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_OFFSET = 100_000


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int

    def next_link(self, request: Request, returned: int, prefix: str = "") -> dict[str, str]:
        """RFC 8288 `Link: <...>; rel="next"` when this page was full (there may be more)."""
        if returned < self.limit:
            return {}
        url = request.url.include_query_params(
            **{f"{prefix}offset": self.offset + self.limit, f"{prefix}limit": self.limit}
        )
        return {"Link": f'<{url}>; rel="next"'}


def page(
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"page size, at most {MAX_PAGE_SIZE}")
    ] = DEFAULT_PAGE_SIZE,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="items to skip; a full page names the next in `Link`")
    ] = 0,
) -> Page:
    return Page(limit, offset)


PageDep = Annotated[Page, Depends(page)]


COMMON_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    404: {"model": ErrorBody, "description": "unknown store or resource"},
    422: {"model": ErrorBody, "description": "invalid parameter (the field is named)"},
    429: {"model": ErrorBody, "description": "too many requests from this address; retry after Retry-After"},
    503: {"model": ErrorBody, "description": "a dependency (Kafka or Postgres) is down"},
}


def document_models(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add models to the OpenAPI components, for request bodies a route reads raw (for size limits, gzip or
    signatures) and documents with `openapi_extra` references."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, definitions = models_json_schema(
            [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions.get("$defs", {}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
