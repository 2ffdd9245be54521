"""What every source mapper shares: the platforms' signature scheme and the base of their payload models."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from shared.events import reject_nul


def hmac_sha256_base64(secret: str, body: bytes) -> str:
    """Shopify's X-Shopify-Hmac-Sha256 and WooCommerce's X-WC-Webhook-Signature: base64 HMAC-SHA256 of the
    raw body, keyed with the webhook secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def signature_matches(secret: str, body: bytes, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(hmac_sha256_base64(secret, body).encode(), presented.strip().encode())


class SourceModel(BaseModel):
    """Platforms add fields over API versions and plugins; we read what we need and ignore the rest.

    NUL characters are refused here, so the 422 names the source's own field."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return reject_nul(value)
