"""Segment's HTTP Tracking API contract: auth, gzip, limits, all-or-nothing batches, rate limit."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.ingest.api import create_app
from services.ingest.producer import PublishUnavailable
from services.ingest.settings import IngestSettings
from shared.events import OrderPlacedEvent, PublishableEvent, StorefrontEvent, decode_event, encode_event
from shared.settings import REPO_ROOT
from tests.examples import source_example

NOW = datetime(2026, 11, 21, 10, 0, 20, tzinfo=UTC)
BASIC = {"Authorization": "Basic " + base64.b64encode(b"demo-write-key:").decode()}


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[StorefrontEvent] = []

    async def connect_forever(self) -> None:
        return None

    async def publish_many(self, events: Sequence[PublishableEvent]) -> None:
        # As the segmenter will read them: a batch's events are written straight to bytes.
        decoded = [decode_event(encode_event(e)) for e in events]
        if any(e.customer.store_customer_id == "kafka-down" for e in decoded):
            raise PublishUnavailable("down")
        self.published.extend(decoded)

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        return None


async def _client(publisher: FakePublisher, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = IngestSettings(stores_file=REPO_ROOT / "deploy" / "stores.dev.yaml", **overrides)
    app = create_app(settings, publisher=publisher, clock=lambda: NOW)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as http,
    ):
        yield http


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(publisher):
        yield http


def _identify() -> dict[str, Any]:
    payload = source_example("segment", "identify__signup")
    payload.pop("writeKey", None)
    return payload


def _track() -> dict[str, Any]:
    payload = source_example("segment", "track__order_completed")
    payload.pop("writeKey", None)
    return payload


async def test_identify_with_basic_auth(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    response = await client.post("/v1/identify", json=_identify(), headers=BASIC)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    assert [e.type for e in publisher.published] == ["customer_upserted", "identity_linked"]
    assert publisher.published[0].event_id == "segment:" + _identify()["messageId"]


async def test_write_key_in_the_body(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    response = await client.post("/v1/track", json={**_track(), "writeKey": "demo-write-key"})
    assert response.status_code == 200, response.text
    assert [e.type for e in publisher.published] == ["order_placed"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"wrong:").decode()},
        {"Authorization": "Basic !!"},
        # Bytes beyond ASCII (a header arrives as latin-1; base64 refuses such text), or credentials that
        # are not UTF-8 once decoded: a 401 like any unknown key, not a 500.
        {b"Authorization": b"Basic \xff\xfe"},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:").decode()},
    ],
)
async def test_no_or_unknown_write_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str] | dict[bytes, bytes]
) -> None:
    response = await client.post("/v1/track", json=_track(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unknown_write_key"


async def test_gzip_bodies_are_accepted(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    body = gzip.compress(json.dumps(_track()).encode())
    headers = {**BASIC, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    response = await client.post("/v1/track", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert len(publisher.published) == 1


async def test_a_gzip_bomb_is_refused_without_inflating_it(client: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b'{"pad": "' + b"0" * 5_000_000 + b'"}')
    assert len(bomb) < 32 * 1024
    headers = {**BASIC, "Content-Encoding": "gzip"}
    response = await client.post("/v1/track", content=bomb, headers=headers)
    assert response.status_code == 413


async def test_broken_gzip_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/track", content=b"not gzip", headers={**BASIC, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "bad_encoding"


async def test_event_over_32_kb_is_413_naming_the_limit(client: httpx.AsyncClient) -> None:
    payload = {**_track(), "properties": {"pad": "x" * 40_000}}
    response = await client.post("/v1/track", json=payload, headers=BASIC)
    assert response.status_code == 413
    assert "32768" in response.json()["detail"]


async def test_invalid_field_is_422_naming_it(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    payload = _track()
    payload["messageId"] = "  "
    response = await client.post("/v1/track", json=payload, headers=BASIC)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["messageId"]
    assert publisher.published == []


async def test_a_call_sent_as_segments_http_api_shows_it_without_a_message_id_is_accepted(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    # The HTTP API's own examples send no messageId (Segment's spec: "Automatically collected by Segment").
    # Sent twice, as a client retrying after a timeout would, it is one event id: applied once downstream.
    payload = _track()
    del payload["messageId"]
    for _ in range(2):
        response = await client.post("/v1/track", json=payload, headers=BASIC)
        assert response.status_code == 200, response.text
    first, again = (event.event_id for event in publisher.published)
    assert first == again
    assert first.startswith("segment:sha256:")
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert "messageId" not in schema["TrackCall"].get("required", [])


async def test_a_lone_surrogate_escape_is_422_naming_the_field(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    # Valid JSON (an escape), but not text: it could never be stored or forwarded as UTF-8.
    payload = _track()
    payload["properties"]["products"][0]["name"] = "\udf58"
    response = await client.post("/v1/track", content=json.dumps(payload).encode(), headers=BASIC)
    assert response.status_code == 422
    assert "properties.products[0].name" in [e["field"] for e in response.json()["errors"]]
    assert publisher.published == []


async def test_a_lone_surrogate_in_a_property_no_one_reads_is_422_not_500(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    # Custom properties travel on unread; one that is not text used to fail only at publish, as a 500.
    payload = _track()
    payload["properties"]["note"] = "\udf58"
    response = await client.post("/v1/track", content=json.dumps(payload).encode(), headers=BASIC)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "properties.note"
    assert publisher.published == []


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/track", content=b'{"type": "track",', headers=BASIC)
    assert response.status_code == 400


async def test_a_timestamp_more_than_a_day_ahead_is_refused(client: httpx.AsyncClient) -> None:
    payload = {**_track(), "timestamp": (NOW + timedelta(days=2)).isoformat()}
    response = await client.post("/v1/track", json=payload, headers=BASIC)
    assert response.status_code == 422
    assert any(e["field"].endswith("timestamp") for e in response.json()["errors"])


@pytest.mark.parametrize(
    "timestamp",
    ["0001-01-01T00:00:00Z", "0001-01-05T12:00:00+00:00", "1969-12-31T23:59:59.999Z", "1066-10-14"],
)
async def test_a_timestamp_before_1970_is_refused_naming_it(
    client: httpx.AsyncClient, publisher: FakePublisher, timestamp: str
) -> None:
    """Segment's `timestamp` is the caller's to set (a historical import), so anyone with the write key from a
    store's pages can date an event in year 1; the segmenter could not work out a birthday reminder from it
    (issue 14, round 19)."""
    for path, body, field in (
        ("/v1/identify", _identify_with_birthday(timestamp), "timestamp"),
        (
            "/v1/batch",
            {"batch": [{**_track(), "messageId": "m-0"}, _identify_with_birthday(timestamp)]},
            None,
        ),
    ):
        response = await client.post(path, json=body, headers=BASIC)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "time_out_of_range"
        fields = [e["field"] for e in response.json()["errors"]]
        assert fields == [field or "batch[1].timestamp"], path
    assert publisher.published == []


async def test_a_timestamp_from_1970_on_is_taken(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    response = await client.post(
        "/v1/identify", json=_identify_with_birthday("1970-01-01T00:00:00Z"), headers=BASIC
    )
    assert response.status_code == 200, response.text
    assert [e.occurred_at for e in publisher.published] == [datetime(1970, 1, 1, tzinfo=UTC)]


def _identify_with_birthday(timestamp: str) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": "u-1",
        "messageId": "m-1",
        "traits": {"email": "ann@example.com", "birthday": "0001-01-03"},
        "timestamp": timestamp,
    }


def _batch(n: int) -> dict[str, Any]:
    track = _track()
    return {"batch": [{**track, "messageId": f"m-{i}"} for i in range(n)]}


async def test_batch_is_published_whole(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    response = await client.post(
        "/v1/batch", json=source_example("segment", "batch__server_session"), headers=BASIC
    )
    assert response.status_code == 200, response.text
    assert len(publisher.published) >= 3


async def test_a_batch_with_bad_events_is_rejected_whole_listing_each(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    payload = _batch(5)
    payload["batch"][1]["messageId"] = ""
    payload["batch"][3]["userId"] = None
    payload["batch"][3].pop("anonymousId", None)
    response = await client.post("/v1/batch", json=payload, headers=BASIC)
    assert response.status_code == 422
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(f.startswith("batch[1]") for f in fields)
    assert any(f.startswith("batch[3]") for f in fields)
    assert publisher.published == []


async def test_batch_over_2500_events_is_413(publisher: FakePublisher) -> None:
    async for client in _client(publisher, segment_max_batch_bytes=5_000_000):
        response = await client.post("/v1/batch", json=_batch(2501), headers=BASIC)
        assert response.status_code == 413
        assert "2500" in response.json()["detail"]


async def test_batch_over_500_kb_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/batch", json=_batch(400), headers=BASIC)
    assert len(json.dumps(_batch(400))) > 500 * 1024
    assert response.status_code == 413


async def test_over_the_rate_is_429_with_retry_after(publisher: FakePublisher) -> None:
    async for client in _client(publisher, ingest_rate_limit_per_second=1, ingest_rate_limit_burst=3):
        responses = [await client.post("/v1/batch", json=_batch(2), headers=BASIC) for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 429, 429]
        assert int(responses[-1].headers["Retry-After"]) >= 1
        # One token is left: a single event still fits.
        assert (await client.post("/v1/track", json=_track(), headers=BASIC)).status_code == 200


async def test_kafka_down_is_503(client: httpx.AsyncClient) -> None:
    payload = {**_track(), "userId": "kafka-down"}
    response = await client.post("/v1/track", json=payload, headers=BASIC)
    assert response.status_code == 503
    assert "Retry-After" in response.headers


async def test_openapi_documents_the_segment_bodies_and_survey_properties(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in ("/v1/identify", "/v1/track", "/v1/page", "/v1/alias", "/v1/batch"):
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.split("/")[-1] in spec["components"]["schemas"]
    text = json.dumps(spec)
    for name in ("survey_id", "statement_id", "csat", "ces", "nps"):
        assert name in text


async def test_a_nul_in_a_batch_call_is_422(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    payload = _batch(3)
    payload["batch"][2]["properties"]["products"][0]["name"] = "Tea\x00"
    response = await client.post("/v1/batch", json=payload, headers=BASIC)
    assert response.status_code == 422
    # The envelope's list of calls is searched first, so the whole batch is named.
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["batch"]
    assert "NUL" in errors[0]["message"]
    assert publisher.published == []


async def test_a_nul_in_a_utf16_body_is_422_too(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    # json.loads reads UTF-16 bodies: there the \u0000 escape is not the bytes the fast check looks for.
    payload = _track()
    payload["properties"]["products"][0]["name"] = "Tea\x00"
    body = json.dumps(payload).encode("utf-16")
    response = await client.post("/v1/track", content=body, headers=BASIC)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["properties"]
    assert publisher.published == []


async def test_an_escaped_backslash_before_u0000_is_text_not_nul(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    payload = _track()
    payload["properties"]["products"][0]["name"] = "Tea \\u0000"
    response = await client.post("/v1/track", json=payload, headers=BASIC)
    assert response.status_code == 200, response.text
    event = publisher.published[0]
    assert isinstance(event, OrderPlacedEvent)
    assert event.payload.line_items[0].title == "Tea \\u0000"
