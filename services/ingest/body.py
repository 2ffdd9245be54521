"""Reading request bodies within limits, enforced while streaming, before the whole body is in memory.

Segment's libraries may gzip their bodies; the limit applies to the decompressed size too, so a small
compressed "bomb" cannot expand into memory.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import msgspec
from fastapi import Request
from pydantic_core import from_json
from starlette.requests import ClientDisconnect

from shared.web import ApiError, FieldError, field_path


def _too_large(limit: int, what: str) -> ApiError:
    return ApiError(413, "payload_too_large", f"{what} exceeds the limit of {limit} bytes")


# What a body may be encoded with: none, or gzip (Segment's libraries' only one; x-gzip is its old name,
# which RFC 9110 asks recipients to take as gzip).
_IDENTITY = frozenset({"", "identity"})
_GZIP = frozenset({"gzip", "x-gzip"})


async def read_limited_body(request: Request, limit: int) -> bytes:
    declared, encoding = _body_headers(request.scope["headers"])
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, f"body of {declared} bytes")
    coding = (encoding or "").strip().lower()
    gzipped = coding in _GZIP
    if not gzipped and coding not in _IDENTITY:
        # Read as it came, a compressed body would only be "not valid JSON": say what is not understood.
        raise ApiError(
            415,
            "unsupported_encoding",
            "Content-Encoding must be gzip, or none",
            errors=[FieldError(field="content-encoding", message="only gzip is read")],
        )
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16) if gzipped else None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            if inflater is not None:
                # Never inflate more than the limit allows, whatever the compression ratio.
                chunk = inflater.decompress(chunk, limit + 1 - size)
                if inflater.unconsumed_tail:
                    raise _too_large(limit, "decompressed body")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, "decompressed body" if gzipped else "body")
            chunks.append(chunk)
        if inflater is not None:
            chunks.append(inflater.flush())
    except zlib.error as exc:
        raise ApiError(400, "bad_encoding", f"body is not valid gzip: {exc}") from exc
    except ClientDisconnect:
        # The client went away mid-body (a page closed, a phone out of signal): nothing was read, nothing is
        # published, and nobody is left to answer. A 400 for the metrics, instead of an unhandled exception
        # logged as an error with its traceback.
        raise ApiError(
            400, "client_disconnected", "the client closed the connection before its body"
        ) from None
    return chunks[0] if len(chunks) == 2 and not chunks[1] else b"".join(chunks)


def _body_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """Content-Length and Content-Encoding, the first of each as `request.headers.get` gives it (ASGI header
    names are lower case), in one pass over the raw headers: Starlette's Headers made and searched twice
    took a webhook 3.2 of the 7 µs its body took to read."""
    declared = encoding = None
    for name, value in headers:
        if name == b"content-length":
            if declared is None:
                declared = value.decode("latin-1")
        elif name == b"content-encoding" and encoding is None:
            encoding = value.decode("latin-1")
    return declared, encoding


_decode = msgspec.json.Decoder().decode


def parse_json(body: bytes) -> Any:
    """The body as the standard library's `json.loads` reads it.

    pydantic's parser (jiter) takes half the time of `json.loads` on a webhook and, whenever it succeeds,
    gives the same values (big integers stay integers, unlike orjson's). What it refuses and `json.loads`
    takes (lone surrogates, UTF-16 bodies, deep nesting) goes to `json.loads`, which also words the 400.

    A lone surrogate (`"\\udf58"`) is valid JSON but not text: it can never be written as UTF-8 to Kafka or
    PostgreSQL, so a body holding one anywhere, even in a field we pass on unread, is a 422 naming it.

    msgspec reads first: a Segment batch of the benchmark (100 calls, 100 KB) in 3.1 µs a call where jiter
    takes 4.1, the same values whenever it reads the body (tests/unit/test_ingest_body.py). What it refuses
    (NaN and infinities, lone surrogates, integers of more digits than Python converts, nesting past the
    recursion limit, anything not UTF-8) goes on to jiter and `json.loads` as before."""
    try:
        return _decode(body)
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        return from_json(body)
    except ValueError:
        pass
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and UnicodeDecodeError, and also an integer of more digits than
        # Python converts (4,300), which no storefront sends and which must not become a 500.
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {str(exc)[:200]}") from exc
    # Only bodies jiter refused get here (rare), so the walk costs the hot path nothing.
    at_fault = _lone_surrogates(value)
    if at_fault:
        raise ApiError(
            422,
            "invalid_payload",
            f"{at_fault[0]}: {_NOT_TEXT}",
            errors=[FieldError(field=field, message=_NOT_TEXT) for field in at_fault],
        )
    return value


_NOT_TEXT = "must be Unicode text: a lone surrogate escape (\\ud800-\\udfff) is not a character"
_MAX_REPORTED = 5


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogates(value: Any) -> list[str]:
    """The paths (as in every other 422) of the first few strings or keys that are not text."""
    found: list[str] = []
    pending: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while pending and len(found) < _MAX_REPORTED:
        path, item = pending.pop()
        if isinstance(item, str):
            if not _is_text(item):
                found.append(field_path(path))
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                # A key that is not text is named with its escapes, so the error itself can be written.
                name = key if _is_text(key) else key.encode("utf-8", "backslashreplace").decode()
                if name is not key:
                    found.append(field_path((*path, name)))
                pending.append(((*path, name), child))
        elif isinstance(item, list):
            pending.extend(((*path, i), child) for i, child in reversed(list(enumerate(item))))
    return found[:_MAX_REPORTED]
