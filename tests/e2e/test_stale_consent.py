"""A late, older consent changes nothing, through the three running services, real Kafka, Postgres and
SMTP (issue 17): Shopify says "unsubscribed 1 h ago", then a delivery that arrives late says "subscribed
2 h ago"; the customer's abandoned checkout then sends no marketing email."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningServices
from tests.e2e.test_notifier_flows import API, _checkout, _signed
from tests.fixtures.stack import SmtpServer
from tests.polling import eventually

pytestmark = pytest.mark.e2e


def _customer_update(customer_id: int, email: str, state: str, said_at: datetime) -> dict[str, Any]:
    # customers/update as Shopify sends it: the consent carries the time it was given or withdrawn
    # (email_marketing_consent.consent_updated_at), the record its own updated_at.
    return {
        "id": customer_id,
        "email": email,
        "first_name": "Noor",
        "created_at": (said_at - timedelta(days=30)).isoformat(),
        "updated_at": said_at.isoformat(),
        "email_marketing_consent": {
            "state": state,
            "opt_in_level": "single_opt_in",
            "consent_updated_at": said_at.isoformat(),
        },
    }


async def test_a_late_older_subscribe_does_not_undo_an_unsubscribe(
    services: RunningServices, smtp_server: SmtpServer
) -> None:
    customer_id = uuid.uuid4().int % 10**15
    email = f"noor.{customer_id}@example.com"
    now = datetime.now(UTC)
    unsubscribed = _customer_update(customer_id, email, "unsubscribed", now - timedelta(hours=1))
    subscribed_late = _customer_update(customer_id, email, "subscribed", now - timedelta(hours=2))
    # The checkout names the customer but says nothing of consent: only the two updates above decide it.
    checkout = _checkout(customer_id, email)
    checkout["customer"] = {"id": customer_id, "email": email, "first_name": "Noor"}
    checkout.pop("buyer_accepts_marketing", None)
    segmenter_url = f"{services.segmenter}/v1/stores/demo/customers/{customer_id}"
    notifications_url = f"{services.notifier}/v1/stores/demo/customers/{customer_id}/notifications"

    async with httpx.AsyncClient(timeout=10) as client:

        async def post(topic: str, payload: dict[str, Any]) -> None:
            body, headers = _signed(topic, payload)
            answer = await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
            assert answer.is_success, answer.text

        async def consent_is(value: bool) -> bool:
            answer = await client.get(segmenter_url, headers=API)
            return answer.status_code == 200 and answer.json()["accepts_marketing"] is value

        await post("customers/update", unsubscribed)
        await eventually(lambda: consent_is(False), 60, "the unsubscription recorded")
        await post("customers/update", subscribed_late)
        await post("checkouts/create", checkout)

        # The development registry abandons the checkout after 20 s; the flow is marketing.
        async def abandoned_cart_settled() -> bool:
            answer = await client.get(notifications_url, headers=API)
            rows = answer.json() if answer.status_code == 200 else []
            return any(r["flow"] == "abandoned_cart" for r in rows)

        await eventually(abandoned_cart_settled, 90, "the abandoned-cart flow decided")
        rows = {r["flow"]: r for r in (await client.get(notifications_url, headers=API)).json()}
        assert (rows["abandoned_cart"]["status"], rows["abandoned_cart"]["skip_reason"]) == (
            "skipped",
            "no_marketing_consent",
        )
        assert await consent_is(False)
    assert not [m for m in smtp_server.messages if m["To"] == email]
