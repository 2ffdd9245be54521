"""Segment's HTTP Tracking API, so any Segment library (or RudderStack, or a CDP forwarding to Segment)
can send to us unchanged: point its host at ingest and use the store's write key."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal, cast

import orjson
from fastapi import APIRouter, Header, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import Counter
from pydantic import BaseModel

from services.ingest.accept import check_rate, publish, reject_implausible_times
from services.ingest.body import parse_json, read_limited_body
from services.ingest.context import IngestContext, context
from services.ingest.cors import check_origin
from services.ingest.sources import segment, segment_browser
from services.ingest.sources.base import Checked
from shared.events import CartUpdatedEvent, PublishableEvent, StorefrontEvent
from shared.ratelimit import Network, client_address, limit_key, parse_networks
from shared.stores import StoreConfig, WriteKeyKind
from shared.web import ApiError, DirectHandler, ErrorBody, FieldError

CALLS = Counter("ingest_segment_calls_total", "Segment API calls, by kind and outcome", ["kind", "outcome"])
BROWSER_REFUSED = Counter(
    "ingest_segment_browser_key_refused_total", "Calls refused because they need the server write key"
)

router = APIRouter(prefix="/v1", tags=["segment"])

Kind = Literal["identify", "track", "page", "screen", "alias", "group"]
# analytics.js posts to `<apiHost>/<first letter of the call>`, and in batching mode to `<apiHost>/b`, as do
# analytics-kotlin and analytics-swift; apiHost includes `/v1`.
SHORT_PATHS: dict[str, Kind] = {
    "i": "identify",
    "t": "track",
    "p": "page",
    "s": "screen",
    "a": "alias",
    "g": "group",
}


class SegmentOk(BaseModel):
    success: bool = True


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "body is not JSON (or not gzip when it says so), or nests deeper than ingest reads",
    },
    401: {"model": ErrorBody, "description": "no or unknown write key"},
    403: {
        "model": ErrorBody,
        "description": "the page's origin is not in the store's allowed_origins, or the call (named event "
        "or field: orders, refunds, surveys, consent, recovery links off the store's origins) needs the "
        "server write key and came with the public browser key",
    },
    413: {
        "model": ErrorBody,
        "description": "over 32 KB per event, 500 KB per batch or 2,500 events per batch",
    },
    415: {"model": ErrorBody, "description": "a Content-Encoding other than gzip"},
    422: {
        "model": ErrorBody,
        "description": "a field is invalid (each bad field, and batch index, is named)",
    },
    429: {
        "model": ErrorBody,
        "description": "the write key (or, with the browser key, the client address) is over its rate; "
        "retry after Retry-After",
    },
    503: {"model": ErrorBody, "description": "Kafka did not acknowledge; retry after Retry-After"},
}

# The request body of each path, for the OpenAPI document (bodies are read raw: gzip and size limits).
REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/v1/identify": segment.IdentifyCall,
    "/v1/track": segment.TrackCall,
    "/v1/page": segment.PageCall,
    "/v1/screen": segment.ScreenCall,
    "/v1/alias": segment.AliasCall,
    "/v1/group": segment.GroupCall,
    "/v1/batch": segment.BatchRequest,
}


@dataclass(frozen=True)
class _Sender:
    store: StoreConfig
    key_kind: WriteKeyKind


def _write_key(authorization: str | None, payload: Any) -> str | None:
    # Segment's libraries send the write key as the Basic auth user name with an empty password;
    # analytics-kotlin and analytics-swift put it in the body only.
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except ValueError:
            # Not base64 (binascii.Error), not UTF-8 once decoded, or a header byte beyond ASCII: HTTP
            # headers arrive as latin-1, and b64decode refuses such a str with a bare ValueError.
            return None
        return decoded.partition(":")[0] or None
    return segment.write_key_from_body(payload)


def _sender(request: Request, ctx: IngestContext, payload: Any) -> _Sender:
    key = _write_key(request.headers.get("authorization"), payload)
    found = ctx.stores.resolve_write_key(key) if key else None
    if found is None:
        raise ApiError(
            401,
            "unknown_write_key",
            "a known write key is required (Basic auth user, or `writeKey` in the body)",
        )
    store, kind = found
    check_origin(request, store.allows_origin)
    return _Sender(store, kind)


def _unprocessable(exc: segment.SegmentError) -> ApiError:
    errors = [FieldError(field=field, message=message) for field, message in exc.errors]
    return ApiError(
        422, "invalid_event", "; ".join(f"{e.field}: {e.message}" for e in errors[:5]), errors=errors
    )


def _refused(exc: segment_browser.BrowserKeyRefused) -> ApiError:
    BROWSER_REFUSED.inc()
    errors = [FieldError(field=field, message=why) for field, why in exc.problems]
    return ApiError(
        403,
        "server_key_required",
        "; ".join(f"{e.field}: {e.message}" for e in errors[:5]),
        errors=errors,
    )


@lru_cache(maxsize=8)
def _trusted_proxies(spec: str) -> tuple[Network, ...]:
    return parse_networks(spec)


def _check_browser_rate(request: Request, ctx: IngestContext, sender: _Sender, cost: int) -> None:
    store_id = sender.store.store_id
    check_rate(
        ctx.browser_key_limiter,
        store_id,
        "segment",
        cost,
        what=f"the browser write key of store {store_id!r}",
    )
    # The address as the shared per-client limit sees it (X-Forwarded-For believed from trusted proxies only);
    # this bucket is tighter and for the public key only, since one visitor sends a few events a minute.
    client = client_address(
        request.client.host if request.client else None,
        request.headers.getlist("x-forwarded-for"),
        _trusted_proxies(ctx.settings.trusted_proxies),
    )
    check_rate(
        ctx.browser_client_limiter,
        store_id,
        "segment",
        cost,
        key=f"{store_id}\x00{limit_key(client)}",
        what="this client address",
    )


def _without_foreign_links(events: Sequence[StorefrontEvent], store: StoreConfig) -> list[StorefrontEvent]:
    """With the browser key, a cart's recovery link taken from the page (context.page.url) is kept only on
    the store's own origins; elsewhere the email falls back to the store's own cart link."""
    kept: list[StorefrontEvent] = []
    for event in events:
        if isinstance(event, CartUpdatedEvent) and event.payload.recovery_url:
            origin = segment_browser.url_origin(event.payload.recovery_url)
            if origin is None or not store.allows_origin(origin):
                event = event.model_copy(
                    update={"payload": event.payload.model_copy(update={"recovery_url": None})}
                )
        kept.append(event)
    return kept


async def _deliver(
    request: Request,
    ctx: IngestContext,
    kind: str,
    sender: _Sender,
    events: Sequence[PublishableEvent],
) -> SegmentOk:
    cost = max(1, len(events))
    if sender.key_kind is WriteKeyKind.BROWSER:
        _check_browser_rate(request, ctx, sender, cost)
        # The browser key's events are models (see _batch): their links are checked, and kept or not.
        events = _without_foreign_links(cast(Sequence[StorefrontEvent], events), sender.store)
    else:
        check_rate(ctx.limiter, sender.store.store_id, "segment", cost)
    await publish(ctx.publisher, events, "segment")
    CALLS.labels(kind, "accepted").inc()
    return SegmentOk()


async def _single(request: Request, kind: Kind) -> SegmentOk:
    ctx = context(request)
    body = await read_limited_body(request, ctx.settings.segment_max_event_bytes)
    payload = parse_json(body)
    sender = _sender(request, ctx, payload)
    if sender.key_kind is WriteKeyKind.BROWSER:
        try:
            segment_browser.check_call(kind, payload, sender.store.allows_origin)
        except segment_browser.BrowserKeyRefused as exc:
            CALLS.labels(kind, "refused").inc()
            raise _refused(exc) from exc
    received_at = ctx.clock()
    try:
        events = segment.to_canonical(
            kind,
            payload,
            store_id=sender.store.store_id,
            received_at=received_at,
            checked=Checked.body(body),
        )
    except segment.SegmentError as exc:
        CALLS.labels(kind, "invalid").inc()
        raise _unprocessable(exc) from exc
    reject_implausible_times(events, received_at)
    return await _deliver(request, ctx, kind, sender, events)


def _doc(path: str, summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "response_model": SegmentOk,
        "responses": ERRORS,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    media: {"schema": {"$ref": f"#/components/schemas/{REQUEST_MODELS[path].__name__}"}}
                    # analytics.js and analytics-kotlin send text/plain (no CORS preflight for the type).
                    for media in ("application/json", "text/plain")
                },
            }
        },
    }


AuthHeader = Annotated[
    str | None, Header(description="Basic auth with the write key as user name (or `writeKey` in the body)")
]

CALL_DOCS: dict[Kind, str] = {
    "identify": "Who a user is (traits). With both userId and anonymousId it also links the two "
    "identities, so the visitor's anonymous views and cart become the known customer's.",
    "track": "What a user did. Ecommerce v2 events (Order Completed, Checkout Started, Product "
    'Added/Removed, Cart Viewed, Product Viewed, Order Refunded, Order Cancelled) and "Survey Answered" '
    "feed the funnel; any other event is kept as a custom event for flows. With the browser key, only "
    "browsing and cart events (Ecommerce v2) are accepted.",
    "page": "A page view, kept as a custom event.",
    "screen": "A mobile screen view, kept like a page view.",
    "alias": "Links a previous id (usually the anonymous one) to the user id.",
    "group": 'Accepted, validated and counted (`ingest_segment_calls_total{kind="group"}`), not stored: '
    "the funnel follows people, not accounts, so group traits do not reach any profile.",
}


def _add_call_route(path: str, kind: Kind, summary: str) -> None:
    async def endpoint(request: Request, authorization: AuthHeader = None) -> SegmentOk:
        return await _single(request, kind)

    endpoint.__doc__ = CALL_DOCS[kind]
    router.add_api_route(
        path, endpoint, methods=["POST"], name=f"segment_{path.strip('/')}", **_doc(f"/v1/{kind}", summary)
    )


for _kind in CALL_DOCS:
    _add_call_route(f"/{_kind}", _kind, f"Segment `{_kind}` call")
for _short, _kind in SHORT_PATHS.items():
    _add_call_route(f"/{_short}", _kind, f"Segment `{_kind}` call (analytics.js short path)")


async def _batch(request: Request) -> SegmentOk:
    ctx = context(request)
    settings = ctx.settings
    body = await read_limited_body(request, settings.segment_max_batch_bytes)
    payload = parse_json(body)
    sender = _sender(request, ctx, payload)
    _check_event_sizes(payload, settings.segment_max_event_bytes)
    if sender.key_kind is WriteKeyKind.BROWSER:
        try:
            segment_browser.check_batch(payload, sender.store.allows_origin)
        except segment_browser.BrowserKeyRefused as exc:
            CALLS.labels("batch", "refused").inc()
            raise _refused(exc) from exc
    received_at = ctx.clock()
    # The server key's events go out as written straight to bytes (segment_records.py); the browser key's
    # are models, whose cart links _without_foreign_links may still drop.
    to_events = (
        segment.batch_to_canonical if sender.key_kind is WriteKeyKind.BROWSER else segment.batch_to_records
    )
    try:
        events: Sequence[PublishableEvent] = to_events(
            payload,
            store_id=sender.store.store_id,
            received_at=received_at,
            max_events=settings.segment_max_batch_events,
            checked=Checked.body(body),
        )
    except segment.SegmentError as exc:
        CALLS.labels("batch", "invalid").inc()
        if any(field == "batch" and "limit" in message for field, message in exc.errors):
            raise ApiError(413, "too_many_events", exc.errors[0][1]) from exc
        raise _unprocessable(exc) from exc
    reject_implausible_times(events, received_at, field_prefix="batch")
    # The parsed body (about ten times the body's size in objects) is not needed while Kafka acknowledges:
    # freed now, while it is still in the CPU's caches, rather than after the wait, when the other
    # requests' work has pushed it out (and with less memory held by the requests waiting).
    del payload, body
    return await _deliver(request, ctx, "batch", sender, events)


BATCH_DOC = """Up to 2,500 calls of any kind in one request (500 KB, 32 KB each). All or nothing: if any
call is invalid the whole batch is rejected, naming each bad call's index and field. `/v1/b` is the path
analytics.js (batching mode), analytics-kotlin and analytics-swift post to; `/v1/import` the one of
analytics-ruby, analytics-java (as `/v1/import/`), analytics.NET and Segment's classic mobile libraries."""


@router.post("/batch", **_doc("/v1/batch", "Segment batch"))
async def batch(request: Request, authorization: AuthHeader = None) -> SegmentOk:
    return await _batch(request)


@router.post("/b", **_doc("/v1/batch", "Segment batch (analytics.js and mobile libraries' short path)"))
async def batch_short(request: Request, authorization: AuthHeader = None) -> SegmentOk:
    return await _batch(request)


# Segment's older name for the batch endpoint, which its Ruby, Java and .NET server libraries still post to
# (analytics-ruby's `Defaults::Request::PATH = '/v1/import'`; analytics-java's `DEFAULT_PATH =
# "/v1/import/"`, with the slash, served as it is: the router's redirect to the path without it is not
# followed for a POST by every OkHttp version analytics-java has shipped with).
@router.post("/import", **_doc("/v1/batch", "Segment batch (Segment's server libraries' import path)"))
async def batch_import(request: Request, authorization: AuthHeader = None) -> SegmentOk:
    return await _batch(request)


@router.post("/import/", include_in_schema=False)
async def batch_import_slash(request: Request, authorization: AuthHeader = None) -> SegmentOk:
    return await _batch(request)


batch.__doc__ = batch_short.__doc__ = batch_import.__doc__ = BATCH_DOC

# SegmentOk() as FastAPI renders it for the declared routes (tests/unit/test_direct_routes.py).
_OK_BODY = b'{"success":true}'


async def receive_batch(request: Request) -> Response:
    """`/v1/batch` and `/v1/b` answered directly (see shared.web.serve_directly): FastAPI's routing, its
    dependency solving for the documented Authorization header and the response model's validation and
    rendering cost about 200 µs a request, ~2 µs an event of a batch of 100 (in process)."""
    await _batch(request)
    return Response(_OK_BODY, media_type="application/json")


def _receive_call(kind: Kind) -> DirectHandler:
    """A single call's route answered directly, as `receive_batch`: analytics.js posts each call alone
    unless batching is on, so there the same cost is paid per event."""

    async def receive_call(request: Request) -> Response:
        await _single(request, kind)
        return Response(_OK_BODY, media_type="application/json")

    return receive_call


def _declared(path: str) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.path == path)


# Served by their direct handlers (api.py): the declared routes above document them.
DIRECT_ROUTES: tuple[tuple[APIRoute, DirectHandler], ...] = (
    (_declared("/v1/batch"), receive_batch),
    (_declared("/v1/b"), receive_batch),
    (_declared("/v1/import"), receive_batch),
    (_declared("/v1/import/"), receive_batch),
    *((_declared(f"/v1/{kind}"), _receive_call(kind)) for kind in CALL_DOCS),
    *((_declared(f"/v1/{short}"), _receive_call(kind)) for short, kind in SHORT_PATHS.items()),
)


def _check_event_sizes(payload: Any, limit: int) -> None:
    items = payload.get("batch") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return
    too_big = [
        FieldError(field=f"batch[{i}]", message=f"event exceeds {limit} bytes")
        for i, item in enumerate(items)
        if _over_limit(item, limit)
    ]
    if too_big:
        raise ApiError(
            413, "event_too_large", f"events over the {limit}-byte limit per event", errors=too_big
        )


def _over_limit(item: Any, limit: int) -> bool:
    """Whether `item` as compact, ASCII-escaped JSON (`json.dumps(item, separators=(",", ":"))`, the measure
    of the per-event limit) is longer than `limit`.

    `json.dumps` of every call was a tenth of a batch's time; orjson writes the same JSON several times
    faster but as UTF-8, and at most 3 times shorter than `json.dumps` (a 2-4 byte character becomes a
    6-12 byte escape; Infinity and NaN, which orjson writes as `null`, at most double; an exponent gains
    one character). So when three times orjson's size is within the limit, the call is too."""
    try:
        if 3 * len(orjson.dumps(item)) <= limit:
            return False
    except orjson.JSONEncodeError:  # integers past 64 bits, lone surrogates: measure the slow way
        pass
    return len(json.dumps(item, separators=(",", ":"))) > limit
