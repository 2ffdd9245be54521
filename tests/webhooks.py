"""Signed webhooks of the development registry's `demo` store (deploy/stores.dev.yaml), as its platforms send
them: the route and the headers for a body."""

from __future__ import annotations

from services.ingest.sources import shopify, woocommerce


def signed_shopify(body: bytes, topic: str, event_id: str = "ev-1") -> tuple[str, dict[str, str]]:
    return "/webhooks/shopify", {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "demo.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify.sign("demo-shopify-secret", body),
        "X-Shopify-Event-Id": event_id,
    }


def signed_woocommerce(body: bytes, topic: str, delivery_id: str = "d-1") -> tuple[str, dict[str, str]]:
    return "/webhooks/woocommerce", {
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": "https://demo-woo.example.com/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Signature": woocommerce.sign("demo-woo-secret", body),
        "X-WC-Webhook-Delivery-ID": delivery_id,
    }
