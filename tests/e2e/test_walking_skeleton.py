"""A signed Shopify order becomes exactly one personalised email, through real Kafka, Postgres and SMTP."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.ingest.sources import shopify
from shared.kafka import STOREFRONT_EVENTS
from tests.e2e.conftest import RunningServices
from tests.examples import source_example
from tests.fixtures.stack import SmtpServer
from tests.kafka_helpers import end_offsets
from tests.polling import eventually

pytestmark = pytest.mark.e2e

API = {"Authorization": "Bearer demo-api-key"}


def _order_for_new_customer() -> tuple[str, str, bytes]:
    """A realistic orders/create body for a customer no other test uses: (customer id, email, body)."""
    payload = source_example("shopify", "orders.create__order_with_customer")
    customer_id = str(uuid.uuid4().int % 10**17)
    email = f"maria.{customer_id}@example.com"
    payload["id"] = int(customer_id) + 1
    payload["email"] = email
    payload["customer"].update(
        {"id": int(customer_id), "email": email, "first_name": "María", "last_name": "Ortega"}
    )
    payload["customer"]["default_address"]["city"] = "Valencia"
    # A live order is minutes old; a stale one is (rightly) never emailed, as a backfill would not be.
    now = datetime.now(UTC).isoformat()
    payload.update(created_at=now, processed_at=now, updated_at=now)
    return customer_id, email, json.dumps(payload).encode()


def _signed(
    body: bytes, *, secret: str = "demo-shopify-secret", event_id: str | None = None
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify.sign(secret, body),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-API-Version": "2026-10",
    }


def _to(smtp: SmtpServer, email: str) -> list[str]:
    return [m["Subject"] for m in smtp.messages if m["To"] == email]


async def _metric(client: httpx.AsyncClient, url: str, name: str) -> float:
    text = (await client.get(f"{url}/metrics")).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_signed_order_sends_exactly_one_personalised_email(
    services: RunningServices, smtp_server: SmtpServer
) -> None:
    customer_id, email, body = _order_for_new_customer()
    headers = _signed(body)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
        assert response.status_code == 200, response.text

        async def one_email() -> bool:
            return len(_to(smtp_server, email)) >= 1

        await eventually(one_email, 10, "the welcome email reached the SMTP server")
        [subject] = _to(smtp_server, email)
        assert "María" in subject
        [message] = [m for m in smtp_server.messages if m["To"] == email]
        text = message.get_body(preferencelist=("plain",))
        assert text is not None
        assert "Hi María," in text.get_content()
        assert "Valencia" in text.get_content()

        # The same delivery again (Shopify retries with the same X-Shopify-Event-Id): still one email.
        duplicates_before = await _metric(client, services.segmenter, "segmenter_duplicate_events_total")
        again = await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
        assert again.status_code == 200

        async def redelivery_seen() -> bool:
            now = await _metric(client, services.segmenter, "segmenter_duplicate_events_total")
            return now > duplicates_before

        await eventually(redelivery_seen, 10, "the segmenter saw the redelivered event")
        await asyncio.sleep(1.0)  # give a (wrong) second email time to arrive
        assert len(_to(smtp_server, email)) == 1

        profile = await client.get(
            f"{services.segmenter}/v1/stores/demo/customers/{customer_id}", headers=API
        )
        assert profile.status_code == 200
        assert profile.json()["stage"] == "first_time"
        assert profile.json()["orders_count"] == 1
        assert [(t["dimension"], t["to_value"]) for t in profile.json()["transitions"]] == [
            ("stage", "first_time")
        ]

        notes = await client.get(
            f"{services.notifier}/v1/stores/demo/customers/{customer_id}/notifications", headers=API
        )
        assert notes.status_code == 200
        # The order also schedules the delayed review request and follow-up (30 and 60 s in development).
        assert sorted((n["flow"], n["status"]) for n in notes.json()) == [
            ("follow_up", "pending"),
            ("review_request", "pending"),
            ("welcome", "sent"),
        ]


async def test_every_service_reports_its_event_loop_lag(services: RunningServices) -> None:
    # shared/loop_lag.py, started by each service's lifespan: a sample every 0.1 s from the start.
    async with httpx.AsyncClient(timeout=10) as client:
        for url in (services.ingest, services.segmenter, services.notifier):

            async def sampled(url: str = url) -> bool:
                return await _metric(client, url, "event_loop_lag_seconds_count") >= 3

            await eventually(sampled, 10, f"{url} observed its event loop's lag")
            text = (await client.get(f"{url}/metrics")).text
            assert 'event_loop_lag_seconds_bucket{le="0.001"}' in text


async def test_the_database_backed_services_report_their_databases_collation(
    services: RunningServices,
) -> None:
    # shared/db_collation.py, started by the segmenter's and the notifier's lifespan: the stack's database is
    # created in C (deploy/devstack/postgres.py), so the metric says its text keys are compared byte by byte.
    name = 'database_collation_info{collation="C",compares_bytes="true",provider="libc"}'
    async with httpx.AsyncClient(timeout=10) as client:
        for url in (services.segmenter, services.notifier):

            async def reported(url: str = url) -> bool:
                return await _metric(client, url, name) == 1.0

            await eventually(reported, 10, f"{url} reported its database's collation")
            assert 'compares_bytes="false"' not in (await client.get(f"{url}/metrics")).text


async def test_bad_signature_gets_401_and_nothing_reaches_kafka(
    services: RunningServices, kafka_bootstrap: str
) -> None:
    _, _, body = _order_for_new_customer()
    before = await end_offsets(kafka_bootstrap, STOREFRONT_EVENTS)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{services.ingest}/webhooks/shopify",
            content=body,
            headers=_signed(body, secret="not-the-secret"),
        )
    assert response.status_code == 401
    assert await end_offsets(kafka_bootstrap, STOREFRONT_EVENTS) == before


async def test_store_api_requires_the_stores_key(services: RunningServices) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        wrong = await client.get(
            f"{services.segmenter}/v1/stores/demo/customers/1", headers={"Authorization": "Bearer x"}
        )
        unknown_store = await client.get(f"{services.segmenter}/v1/stores/nope/customers/1", headers=API)
        unknown_customer = await client.get(
            f"{services.notifier}/v1/stores/demo/customers/nobody/notifications", headers=API
        )
    assert wrong.status_code == 401
    assert unknown_store.status_code == 404
    assert unknown_customer.status_code == 404


async def test_a_customers_redact_webhook_erases_personal_data_in_both_services(
    services: RunningServices, smtp_server: SmtpServer
) -> None:
    customer_id, email, body = _order_for_new_customer()
    async with httpx.AsyncClient(timeout=10) as client:
        assert (
            await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=_signed(body))
        ).status_code == 200

        async def emailed() -> bool:
            return bool(_to(smtp_server, email))

        await eventually(emailed, 10, "the welcome email")
        redact = json.dumps(
            {
                "shop_id": 1,
                "shop_domain": "demo.myshopify.com",
                "customer": {"id": int(customer_id), "email": email},
            }
        ).encode()
        headers = {**_signed(redact), "X-Shopify-Topic": "customers/redact"}
        assert (
            await client.post(f"{services.ingest}/webhooks/shopify", content=redact, headers=headers)
        ).status_code == 200

        async def erased() -> bool:
            profile = await client.get(
                f"{services.segmenter}/v1/stores/demo/customers/{customer_id}", headers=API
            )
            return bool(profile.json().get("erased"))

        await eventually(erased, 10, "the segmenter erased the profile")
        profile = (
            await client.get(f"{services.segmenter}/v1/stores/demo/customers/{customer_id}", headers=API)
        ).json()
        assert (profile["email"], profile["first_name"], profile["city"]) == (None, None, None)
        assert profile["orders_count"] == 1  # aggregates are kept
        by_email = await client.get(
            f"{services.segmenter}/v1/stores/demo/customers", params={"email": email}, headers=API
        )
        assert by_email.json() == []

    engine = create_async_engine(services.env["DATABASE_URL"])
    try:

        async def notifier_forgot() -> bool:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text(
                            "SELECT c.email, c.phone, c.profile::text, m.to_address "
                            "FROM notifier.customers c JOIN notifier.messages m "
                            "USING (store_id, customer_id) WHERE c.store_id = 'demo' AND c.customer_id = :c"
                        ),
                        {"c": customer_id},
                    )
                ).all()
            # One row per message (the welcome and the delayed flows the order scheduled).
            return len(rows) >= 1 and all(tuple(r) == (None, None, "{}", None) for r in rows)

        await eventually(notifier_forgot, 10, "the notifier forgot the address")
    finally:
        await engine.dispose()


async def test_a_customers_redact_webhook_reaches_the_guest_checkout_merged_into_the_customer(
    services: RunningServices,
) -> None:
    """A guest checkout (customer id "email:<address>" in both services) later merged into an account: the
    account's erasure also makes the notifier forget what it holds under the guest's id."""
    account_id, email, _ = _order_for_new_customer()
    guest = source_example("shopify", "orders.create__order_with_customer")
    now = datetime.now(UTC).isoformat()
    # Shopify's guest checkout: the order has no customer, only its email (REST Admin API, Order resource).
    guest.update(id=int(account_id) + 1, email=email, customer=None, created_at=now, processed_at=now)
    guest["shipping_address"] = {**guest.get("shipping_address", {}), "city": "Bergen", "first_name": "Gil"}
    account = source_example("shopify", "customers.create__new_customer")
    account.update(id=int(account_id), email=email, created_at=now, updated_at=now, first_name="Gil")
    guest_id = f"email:{email}"
    engine = create_async_engine(services.env["DATABASE_URL"])

    async def notifier_row() -> tuple[str | None, str]:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT email, profile::text FROM notifier.customers "
                        "WHERE store_id = 'demo' AND customer_id = :c"
                    ),
                    {"c": guest_id},
                )
            ).first()
        return (row.email, row.profile) if row is not None else (None, "")

    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def post(topic: str, payload: dict[str, object]) -> None:
                body = json.dumps(payload).encode()
                headers = {**_signed(body), "X-Shopify-Topic": topic}
                response = await client.post(
                    f"{services.ingest}/webhooks/shopify", content=body, headers=headers
                )
                assert response.status_code == 200, response.text

            await post("orders/create", guest)

            async def notifier_knows_the_guest() -> bool:
                return (await notifier_row())[0] == email

            await eventually(notifier_knows_the_guest, 10, "the notifier's row for the guest")
            await post("customers/create", account)

            async def merged() -> bool:
                found = await client.get(
                    f"{services.segmenter}/v1/stores/demo/customers/{guest_id}", headers=API
                )
                return found.status_code == 200 and found.json()["customer_id"] == account_id

            await eventually(merged, 10, "the guest merged into the account")
            redact = {"shop_id": 1, "shop_domain": "demo.myshopify.com", "customer": {"id": int(account_id)}}
            await post("customers/redact", redact)

            async def notifier_forgot_the_guest() -> bool:
                return await notifier_row() == (None, "{}")

            await eventually(notifier_forgot_the_guest, 10, "the notifier forgot the guest's row")
        async with engine.connect() as conn:
            tombstone = (
                await conn.execute(
                    text(
                        "SELECT email, merged_into, facts::text AS facts FROM segmenter.profiles "
                        "WHERE store_id = 'demo' AND customer_id = :c"
                    ),
                    {"c": guest_id},
                )
            ).one()
        assert (tombstone.email, tombstone.merged_into) == (None, account_id)
        assert "Gil" not in tombstone.facts
        assert "Bergen" not in tombstone.facts
    finally:
        await engine.dispose()
