"""The notifier's plays through all three running services, real Kafka, Postgres and SMTP: an abandoned
checkout gets a coupon email; the order that uses the code redeems it and credits the flow; the email's
one-click unsubscribe works; the second order congratulates the customer."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from services.ingest.sources import shopify
from tests.e2e.conftest import Platforms, RunningServices
from tests.examples import source_example
from tests.fixtures.stack import SmtpServer
from tests.polling import eventually

pytestmark = pytest.mark.e2e

API = {"Authorization": "Bearer demo-api-key"}


def _signed(topic: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify.sign("demo-shopify-secret", body),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
    }


def _customer(customer_id: int, email: str) -> dict[str, Any]:
    return {
        "id": customer_id,
        "email": email,
        "first_name": "Aiko",
        "last_name": "Sato",
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"},
        "default_address": {"city": "Lyon", "country": "France", "country_code": "FR"},
    }


def _checkout(customer_id: int, email: str) -> dict[str, Any]:
    payload = source_example("shopify", "checkouts.create__abandoned_checkout")
    now = datetime.now(UTC).isoformat()
    payload.update(
        id=customer_id + 7,
        token=f"t{customer_id}",
        cart_token=f"cart{customer_id}",
        email=email,
        buyer_accepts_marketing=True,
        created_at=now,
        updated_at=now,
        customer=_customer(customer_id, email),
    )
    return payload


def _order(customer_id: int, email: str, order_id: int, codes: list[str]) -> dict[str, Any]:
    payload = source_example("shopify", "orders.create__order_with_customer")
    now = datetime.now(UTC).isoformat()
    payload.update(
        id=order_id,
        email=email,
        created_at=now,
        processed_at=now,
        updated_at=now,
        customer=_customer(customer_id, email),
        discount_codes=[{"code": c, "amount": "10.00", "type": "percentage"} for c in codes],
    )
    return payload


def _mail(smtp: SmtpServer, email: str, starts: str) -> EmailMessage | None:
    return next((m for m in smtp.messages if m["To"] == email and m["Subject"].startswith(starts)), None)


async def test_abandoned_checkout_coupon_redemption_attribution_and_one_click_unsubscribe(
    services: RunningServices, smtp_server: SmtpServer, platforms: Platforms
) -> None:
    customer_id = uuid.uuid4().int % 10**15
    email = f"aiko.{customer_id}@example.com"
    async with httpx.AsyncClient(timeout=10) as client:
        body, headers = _signed("checkouts/create", _checkout(customer_id, email))
        assert (
            await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
        ).is_success

        # The development registry abandons a cart after 20 s without activity.
        async def cart_email() -> bool:
            return _mail(smtp_server, email, "Aiko, your cart is waiting") is not None

        await eventually(cart_email, 60, "the abandoned-cart email")
        mail = _mail(smtp_server, email, "Aiko, your cart is waiting")
        assert mail is not None
        plain = mail.get_body(("plain",))
        assert plain is not None
        text = plain.get_content()
        [code] = re.findall(r"Your code: (CART-[A-Z0-9]{12})", text)
        assert "recover?key=" in text  # the store's recovery link, with our UTM tags
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        [unsubscribe_url] = re.findall(r"<([^<>\s]+)>", str(mail["List-Unsubscribe"]))
        assert unsubscribe_url.startswith(services.notifier + "/u/")

        # The code exists in the shop before the email arrived, for this customer only, single use.
        gid = f"gid://shopify/Customer/{customer_id}"
        discount = platforms.shop.discounts[code]
        assert discount.customers == [gid]
        assert discount.usage_limit == 1
        checkout = f"{platforms.shopify_url}/_test/checkout"
        someone_else = await client.post(checkout, json={"code": code, "customer_id": "1"})
        assert someone_else.status_code == 422

        # The customer comes back and uses the code at the shop's checkout: the shop takes it once, and the
        # order that carries it redeems it here and credits the flow.
        assert (await client.post(checkout, json={"code": code, "customer_id": str(customer_id)})).is_success
        assert (
            await client.post(checkout, json={"code": code, "customer_id": str(customer_id)})
        ).status_code == 422
        order_id = customer_id + 100
        body, headers = _signed("orders/create", _order(customer_id, email, order_id, [code]))
        assert (
            await client.post(f"{services.ingest}/webhooks/shopify", content=body, headers=headers)
        ).is_success
        coupons_url = f"{services.notifier}/v1/stores/demo/customers/{customer_id}/coupons"

        async def redeemed() -> bool:
            answer = await client.get(coupons_url, headers=API)
            return answer.status_code == 200 and answer.json()[0]["redeemed_order_id"] == str(order_id)

        await eventually(redeemed, 20, "the coupon redeemed by the order")
        [coupon] = (await client.get(coupons_url, headers=API)).json()
        assert (coupon["code"], coupon["flow"], coupon["kind"], coupon["value"]) == (
            code,
            "abandoned_cart",
            "percent",
            "10.00",
        )
        flows = {
            f["flow"]: f
            for f in (await client.get(f"{services.notifier}/v1/stores/demo/flows", headers=API)).json()
        }
        assert flows["abandoned_cart"]["converted"] >= 1
        assert float(flows["abandoned_cart"]["revenue"]) >= 1
        assert flows["abandoned_cart"]["coupons_redeemed"] >= 1

        # One-click unsubscribe, as a mailbox provider does it (RFC 8058); a forged token is refused.
        page = await client.get(unsubscribe_url)
        assert page.status_code == 200
        assert "Unsubscribe" in page.text
        done = await client.post(unsubscribe_url, content=b"List-Unsubscribe=One-Click")
        assert done.status_code == 200
        assert "You are unsubscribed" in done.text
        assert (await client.post(unsubscribe_url[:-4] + "AAAA")).status_code == 404

        # The unsubscription reaches the shop: the store's own newsletters stop too.
        async def shop_consent() -> bool:
            return platforms.shop.consent.get(gid, {}).get("marketingState") == "UNSUBSCRIBED"

        await eventually(shop_consent, 30, "the shop's email marketing consent withdrawn")

        # The order made a first-time customer: the (transactional) welcome still goes; the review request,
        # marketing, due 30 s later in the development registry, is skipped because of the unsubscription.
        notifications_url = f"{services.notifier}/v1/stores/demo/customers/{customer_id}/notifications"

        async def review_settled() -> bool:
            rows = (await client.get(notifications_url, headers=API)).json()
            return any(r["flow"] == "review_request" and r["status"] == "skipped" for r in rows)

        await eventually(review_settled, 60, "the review request skipped")
        rows = {r["flow"]: r for r in (await client.get(notifications_url, headers=API)).json()}
    assert rows["review_request"]["skip_reason"] == "unsubscribed"
    assert rows["welcome"]["status"] == "sent"
    assert rows["abandoned_cart"]["converted_order_id"] == str(order_id)
    assert _mail(smtp_server, email, "Thank you for your order, Aiko!") is not None
