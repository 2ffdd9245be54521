"""Segment's HTTP Tracking API, so any Segment library (or RudderStack, or a CDP forwarding to Segment)
can send to us unchanged: point its host at ingest and use the store's write key."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Request
from prometheus_client import Counter
from pydantic import BaseModel

from services.ingest.accept import check_rate, publish, reject_future
from services.ingest.body import parse_json, read_limited_body
from services.ingest.context import IngestContext, context
from services.ingest.sources import segment
from services.ingest.sources.base import Checked
from shared.events import StorefrontEvent
from shared.stores import StoreConfig
from shared.web import ApiError, ErrorBody, FieldError

CALLS = Counter("ingest_segment_calls_total", "Segment API calls, by kind and outcome", ["kind", "outcome"])

router = APIRouter(prefix="/v1", tags=["segment"])

Kind = Literal["identify", "track", "page", "alias"]


class SegmentOk(BaseModel):
    success: bool = True


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "body is not JSON (or not gzip when it says so)"},
    401: {"model": ErrorBody, "description": "no or unknown write key"},
    413: {
        "model": ErrorBody,
        "description": "over 32 KB per event, 500 KB per batch or 2,500 events per batch",
    },
    422: {
        "model": ErrorBody,
        "description": "a field is invalid (each bad field, and batch index, is named)",
    },
    429: {"model": ErrorBody, "description": "the store is over its rate; retry after Retry-After"},
    503: {"model": ErrorBody, "description": "Kafka did not acknowledge; retry after Retry-After"},
}

# The request body of each path, for the OpenAPI document (bodies are read raw: gzip and size limits).
REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/v1/identify": segment.IdentifyCall,
    "/v1/track": segment.TrackCall,
    "/v1/page": segment.PageCall,
    "/v1/alias": segment.AliasCall,
    "/v1/batch": segment.BatchRequest,
}


def _write_key(authorization: str | None, payload: Any) -> str | None:
    # Segment's libraries send the write key as the Basic auth user name with an empty password.
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return segment.write_key_from_body(payload)


def _store(ctx: IngestContext, authorization: str | None, payload: Any) -> StoreConfig:
    key = _write_key(authorization, payload)
    store = ctx.stores.by_write_key(key) if key else None
    if store is None:
        raise ApiError(
            401,
            "unknown_write_key",
            "a known write key is required (Basic auth user, or `writeKey` in the body)",
        )
    return store


def _unprocessable(exc: segment.SegmentError) -> ApiError:
    errors = [FieldError(field=field, message=message) for field, message in exc.errors]
    return ApiError(
        422, "invalid_event", "; ".join(f"{e.field}: {e.message}" for e in errors[:5]), errors=errors
    )


async def _deliver(
    ctx: IngestContext, kind: str, store: StoreConfig, events: Sequence[StorefrontEvent]
) -> SegmentOk:
    check_rate(ctx.limiter, store.store_id, "segment", max(1, len(events)))
    await publish(ctx.publisher, events, "segment")
    CALLS.labels(kind, "accepted").inc()
    return SegmentOk()


async def _single(request: Request, kind: Kind, authorization: str | None) -> SegmentOk:
    ctx = context(request)
    body = await read_limited_body(request, ctx.settings.segment_max_event_bytes)
    payload = parse_json(body)
    store = _store(ctx, authorization, payload)
    received_at = ctx.clock()
    try:
        events = segment.to_canonical(
            kind, payload, store_id=store.store_id, received_at=received_at, checked=Checked.body(body)
        )
    except segment.SegmentError as exc:
        CALLS.labels(kind, "invalid").inc()
        raise _unprocessable(exc) from exc
    reject_future(events, received_at)
    return await _deliver(ctx, kind, store, events)


def _doc(kind: str) -> dict[str, Any]:
    return {
        "summary": f"Segment `{kind}` call",
        "response_model": SegmentOk,
        "responses": ERRORS,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{REQUEST_MODELS[f'/v1/{kind}'].__name__}"}
                    }
                },
            }
        },
    }


AuthHeader = Annotated[str | None, Header(description="Basic auth with the write key as user name")]


@router.post("/identify", **_doc("identify"))
async def identify(request: Request, authorization: AuthHeader = None) -> SegmentOk:
    """Who a user is (traits). With both userId and anonymousId it also links the two identities."""
    return await _single(request, "identify", authorization)


@router.post("/track", **_doc("track"))
async def track(request: Request, authorization: AuthHeader = None) -> SegmentOk:
    """What a user did. Ecommerce v2 events (Order Completed, Checkout Started, Product Added/Removed, Cart
    Viewed, Product Viewed, Order Refunded, Order Cancelled) and "Survey Answered" feed the funnel; any other
    event is kept as a custom event for flows."""
    return await _single(request, "track", authorization)


@router.post("/page", **_doc("page"))
async def page(request: Request, authorization: AuthHeader = None) -> SegmentOk:
    """A page view, kept as a custom event."""
    return await _single(request, "page", authorization)


@router.post("/alias", **_doc("alias"))
async def alias(request: Request, authorization: AuthHeader = None) -> SegmentOk:
    """Links a previous id (usually the anonymous one) to the user id."""
    return await _single(request, "alias", authorization)


@router.post("/batch", **_doc("batch"))
async def batch(request: Request, authorization: AuthHeader = None) -> SegmentOk:
    """Up to 2,500 calls of any kind in one request (500 KB, 32 KB each). All or nothing: if any call is
    invalid the whole batch is rejected, naming each bad call's index and field."""
    ctx = context(request)
    settings = ctx.settings
    body = await read_limited_body(request, settings.segment_max_batch_bytes)
    payload = parse_json(body)
    store = _store(ctx, authorization, payload)
    _check_event_sizes(payload, settings.segment_max_event_bytes)
    received_at = ctx.clock()
    try:
        events = segment.batch_to_canonical(
            payload,
            store_id=store.store_id,
            received_at=received_at,
            max_events=settings.segment_max_batch_events,
            checked=Checked.body(body),
        )
    except segment.SegmentError as exc:
        CALLS.labels("batch", "invalid").inc()
        if any(field == "batch" and "limit" in message for field, message in exc.errors):
            raise ApiError(413, "too_many_events", exc.errors[0][1]) from exc
        raise _unprocessable(exc) from exc
    reject_future(events, received_at, field_prefix="batch")
    return await _deliver(ctx, "batch", store, events)


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
