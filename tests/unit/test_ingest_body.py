"""Reading bodies fast without reading them differently: the JSON parser and the per-event size limit."""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from services.ingest.body import parse_json, read_limited_body
from services.ingest.routes.segment import _check_event_sizes
from shared.web import ApiError

LIMIT = 32 * 1024


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "b": [true, null, 1.5, -0.0, "\\u00e9\\ud83d\\ude00"], "c": {"d": "e"}}',
        b'{"a": 1, "a": 2}',
        b'{"total": 19.990000000000002, "big": 18446744073709551616}',
        b'{"nan": NaN, "inf": Infinity, "huge": 1e400}',
        '{"utf16": "é"}'.encode("utf-16"),
    ],
)
def test_bodies_parse_as_the_standard_library_reads_them(body: bytes) -> None:
    parsed = parse_json(body)
    expected = json.loads(body)
    assert json.dumps(parsed) == json.dumps(expected)
    assert [type(v) for v in parsed.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (b'{"lone": "\\udf58"}', ["lone"]),
        (
            b'{"batch": [{"properties": {"note": "ok"}}, {"properties": {"note": "a\\ud800b"}}]}',
            ["batch[1].properties.note"],
        ),
        (b'{"context": {"\\udc00k": 1}}', ["context.\\udc00k"]),
    ],
)
def test_a_lone_surrogate_anywhere_is_422_naming_where(body: bytes, fields: list[str]) -> None:
    # Valid JSON, not text: it could never be written to Kafka or PostgreSQL, so it must not reach them
    # (it used to pass here when in a field no source reads, and the publish then failed with a 500).
    with pytest.raises(ApiError) as refused:
        parse_json(body)
    assert refused.value.status_code == 422
    assert [e.field for e in refused.value.body.errors] == fields


def _typed(value: Any) -> Any:
    """A JSON value with every scalar's type beside it, and floats by their bits (so -0.0 is not 0.0)."""
    if isinstance(value, dict):
        return ("dict", [(key, _typed(child)) for key, child in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(child) for child in value])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


NUMBER_TEXT = st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.characters().map(lambda c: c * 3)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


def _texts(value: Any) -> st.SearchStrategy[bytes]:
    return st.sampled_from(
        [
            json.dumps(value).encode(),
            json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            json.dumps(value, indent=1, separators=(" , ", " : ")).encode(),
        ]
    )


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=VALUES.flatmap(_texts) | NUMBER_TEXT.map(str.encode) | st.binary(max_size=20))
@example(body=b'{"a": 1, "a": 2, "b": {"c": 1, "c": [1, 2]}}')
@example(body=b"[" * 200 + b"]" * 200)
@example(body=b"[" * 3000 + b"]" * 3000)
@example(body=b'["\\\\ud800", "\\u00e9\\ud83d\\ude00", "\\ud800", 1e400, -0, -0.0, 4.9e-324]')
@example(body=b"9" * 4300)
@example(body=b"1." + b"9" * 5000)
def test_msgspec_reads_what_it_reads_as_the_standard_library(body: bytes) -> None:
    # parse_json's first reader: whatever msgspec reads, it reads as `json.loads` does (the same types,
    # values, key order, the last of repeated keys); what it refuses goes to the readers after it.
    try:
        fast = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return
    assert _typed(fast) == _typed(json.loads(body))
    assert _typed(parse_json(body)) == _typed(fast)


def test_nan_survives_the_fallback_parser() -> None:
    assert math.isnan(parse_json(b'{"x": NaN}')["x"])


@pytest.mark.parametrize(
    "body",
    [b'{"type": "track",', b"\xff\xfe\x00", b"", b"[" * 100_000, b'{"total": ' + b"9" * 5000 + b"}"],
)
def test_what_is_not_json_is_400(body: bytes) -> None:
    with pytest.raises(ApiError) as raised:
        parse_json(body)
    assert raised.value.status_code == 400
    assert raised.value.body.error == "malformed_json"


def _sized(item: Any) -> int:
    return len(json.dumps(item, separators=(",", ":")))


@pytest.mark.parametrize(
    "text",
    [
        "x" * (LIMIT - 20),  # ASCII: the same size either way
        "é" * ((LIMIT - 20) // 6),  # 2 bytes of UTF-8, 6 characters escaped
        "😀" * ((LIMIT - 20) // 12),  # 4 bytes of UTF-8, a 12-character surrogate pair escaped
    ],
)
def test_the_size_limit_counts_escaped_json_at_the_edge(text: str) -> None:
    within = {"p": text}
    assert _sized(within) <= LIMIT
    _check_event_sizes({"batch": [within]}, LIMIT)
    over = {"p": text, "q": "y" * (LIMIT - _sized(within))}
    assert _sized(over) > LIMIT
    with pytest.raises(ApiError) as raised:
        _check_event_sizes({"batch": [within, over]}, LIMIT)
    assert raised.value.status_code == 413
    assert [e.field for e in raised.value.body.errors] == ["batch[1]"]


def test_the_size_limit_measures_what_orjson_cannot_write() -> None:
    # orjson refuses integers past 64 bits; the exact measure still applies.
    small = {"n": 2**70}
    _check_event_sizes({"batch": [small]}, LIMIT)
    with pytest.raises(ApiError):
        _check_event_sizes({"batch": [{"n": 2**70, "p": "x" * LIMIT}]}, LIMIT)


def test_non_ascii_under_a_third_of_the_limit_in_utf8_is_still_over_it_escaped() -> None:
    # 11,000 "é": 22,000 bytes of UTF-8, within the limit, but 66,000 characters as json.dumps writes them.
    with pytest.raises(ApiError):
        _check_event_sizes({"batch": [{"p": "é" * 11_000}]}, LIMIT)


async def _read(headers: list[tuple[bytes, bytes]], messages: list[dict[str, Any]]) -> bytes:
    """read_limited_body of a request with these raw headers, whose body arrives as these ASGI messages."""

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    request = Request({"type": "http", "method": "POST", "path": "/v1/batch", "headers": headers}, receive)
    return await read_limited_body(request, 1_000)


@pytest.mark.parametrize("coding", [b"gzip", b"x-gzip", b" GZIP "])
async def test_gzip_is_read_by_either_of_its_names(coding: bytes) -> None:
    body = gzip.compress(b'{"batch": []}')
    message = {"type": "http.request", "body": body, "more_body": False}
    assert await _read([(b"content-encoding", coding)], [message]) == b'{"batch": []}'


async def test_identity_is_read_as_it_came() -> None:
    message = {"type": "http.request", "body": b"{}", "more_body": False}
    assert await _read([(b"content-encoding", b"identity")], [message]) == b"{}"


@pytest.mark.parametrize("coding", [b"br", b"deflate", b"zstd", b"gzip, br"])
async def test_another_encoding_is_415_naming_the_header(coding: bytes) -> None:
    # A compressed body read as it came would only be "not valid JSON": the sender is told what is wrong.
    message = {"type": "http.request", "body": b"\x8b\x00", "more_body": False}
    with pytest.raises(ApiError) as caught:
        await _read([(b"content-encoding", coding)], [message])
    assert caught.value.status_code == 415
    assert [e.field for e in caught.value.body.errors] == ["content-encoding"]


async def test_a_client_gone_mid_body_is_a_handled_400() -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"batch": [', "more_body": True},
        {"type": "http.disconnect"},
    ]
    with pytest.raises(ApiError) as caught:
        await _read([], messages)
    assert (caught.value.status_code, caught.value.body.error) == (400, "client_disconnected")
