"""A store's erasure request (POST /v1/stores/{store}/customers/{id}/erasure), with a fake publisher standing
in for Kafka; tests/e2e/test_sources.py sends one through the real services."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events import Customer, CustomerErasedEvent, Source, customer_named
from tests.unit.test_ingest_segment_api import FakePublisher, _client

KEY = {"Authorization": "Bearer demo-api-key"}


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(publisher):
        yield http


@pytest.mark.parametrize(
    ("customer_id", "named"),
    [
        ("17", {"store_customer_id": "17"}),
        ("email:Camille.Durand@example.com", {"email": "camille.durand@example.com"}),
        (
            "anon:0c7a6f1e-5b0e-4e59-9d0b-3f1e2a6c8d4b",
            {"anonymous_id": "0c7a6f1e-5b0e-4e59-9d0b-3f1e2a6c8d4b"},
        ),
        ("order:4821", {"placed_order_id": "4821"}),
    ],
)
async def test_an_erasure_is_published_for_the_customer_the_id_names(
    client: httpx.AsyncClient, publisher: FakePublisher, customer_id: str, named: dict[str, str]
) -> None:
    response = await client.post(f"/v1/stores/demo/customers/{customer_id}/erasure", headers=KEY)
    assert response.status_code == 202, response.text
    [event] = publisher.published
    assert isinstance(event, CustomerErasedEvent)
    assert (event.store_id, event.source, event.payload.scope) == ("demo", Source.API, "customer")
    assert event.customer.model_dump(exclude_none=True) == named
    # Keyed like the customer's other events, so it is applied in their order.
    assert event.partition_key == f"demo:{event.customer.key}"
    assert response.json() == {"status": "accepted", "event_id": event.event_id}


async def test_a_retried_request_is_the_same_erasure(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    headers = KEY | {"Idempotency-Key": "privacy-ticket-88"}
    answers = [await client.post("/v1/stores/demo/customers/17/erasure", headers=headers) for _ in range(2)]
    assert [a.json()["event_id"] for a in answers] == ["api:erasure:privacy-ticket-88"] * 2
    assert {e.event_id for e in publisher.published} == {"api:erasure:privacy-ticket-88"}
    without = await client.post("/v1/stores/demo/customers/17/erasure", headers=KEY)
    assert without.json()["event_id"] != "api:erasure:privacy-ticket-88"


@pytest.mark.parametrize(
    ("headers", "store", "status"),
    [
        ({}, "demo", 401),
        ({"Authorization": "Bearer demo-write-key"}, "demo", 401),
        ({"Authorization": "Basic ZGVtby1hcGkta2V5Og=="}, "demo", 401),
        (KEY, "nope", 404),
    ],
)
async def test_only_the_store_s_api_key_may_erase(
    client: httpx.AsyncClient, publisher: FakePublisher, headers: dict[str, str], store: str, status: int
) -> None:
    response = await client.post(f"/v1/stores/{store}/customers/17/erasure", headers=headers)
    assert response.status_code == status, response.text
    assert publisher.published == []


@pytest.mark.parametrize("customer_id", ["email:not-an-address", "email:", "order:", "anon:", "*", "x" * 256])
async def test_an_id_that_names_no_one_customer_is_422_naming_it(
    client: httpx.AsyncClient, publisher: FakePublisher, customer_id: str
) -> None:
    response = await client.post(f"/v1/stores/demo/customers/{customer_id}/erasure", headers=KEY)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["customer_id"]
    assert publisher.published == []


@pytest.mark.parametrize("key", [b"", b"has space", b"x" * 129, "é".encode()])
async def test_a_malformed_idempotency_key_is_422_naming_it(
    client: httpx.AsyncClient, publisher: FakePublisher, key: bytes
) -> None:
    headers = [(b"Authorization", b"Bearer demo-api-key"), (b"Idempotency-Key", key)]
    response = await client.post("/v1/stores/demo/customers/17/erasure", headers=headers)
    assert response.status_code == 422, response.text
    assert "idempotency-key" in response.text.lower()
    assert publisher.published == []


async def test_kafka_down_is_503_and_nothing_is_claimed(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    # The fake publisher's Kafka refuses this customer's events.
    response = await client.post("/v1/stores/demo/customers/kafka-down/erasure", headers=KEY)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert publisher.published == []


async def test_the_route_is_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/stores/{store_id}/customers/{customer_id}/erasure"]["post"]
    assert set(operation["responses"]) >= {"202", "401", "404", "422", "429", "503"}


ID_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)


@given(
    field=st.sampled_from(["store_customer_id", "anonymous_id", "placed_order_id"]),
    value=ID_TEXT.filter(lambda v: v.strip() and not v.startswith(("anon:", "email:", "order:"))),
)
def test_a_customer_key_names_its_customer_again(field: str, value: str) -> None:
    customer = Customer.model_validate({field: value})
    assert customer_named(customer.key) == customer


@pytest.mark.parametrize("email", ["camille.durand@example.com", "a+b@example.co.uk"])
def test_an_email_key_names_the_guest_again(email: str) -> None:
    customer = Customer(email=email)
    assert customer_named(customer.key) == customer
