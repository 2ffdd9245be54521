"""Outbound webhooks: SMS or WhatsApp providers and the store's support desk, HMAC-signed.

The receiver checks `X-LoyaltyFunnel-Signature: sha256=<hex of HMAC-SHA256(secret, body)>` and dedupes on
`Idempotency-Key`, so a retried delivery after a lost answer does not reach the customer twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from services.notifier.adapters.smtp import DeliveryError
from shared.notifier_rules import SignedWebhook

SIGNATURE_HEADER = "X-LoyaltyFunnel-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(self, hook: SignedWebhook, payload: dict[str, Any], idempotency_key: str) -> None:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            SIGNATURE_HEADER: signature(hook.secret.get_secret_value(), body),
        }
        try:
            response = await self._client.post(str(hook.url), content=body, headers=headers)
        except httpx.ConnectError as exc:
            raise DeliveryError(f"cannot connect to webhook: {exc}", retryable=True) from exc
        except httpx.HTTPError as exc:
            # The provider may have acted before the answer was lost; its idempotency key makes a retry safe.
            raise DeliveryError(f"webhook failed: {type(exc).__name__}: {exc}", retryable=True) from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise DeliveryError(f"webhook answered {response.status_code}", retryable=True)
        if response.status_code >= 400:
            raise DeliveryError(f"webhook refused with {response.status_code}", retryable=False)
