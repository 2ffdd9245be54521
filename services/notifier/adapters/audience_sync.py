"""Push sync of audiences to a store's endpoint (a bridge to Meta Custom Audiences, Google Customer Match...).

One POST per batch, JSON:

    {"batch_id": "<uuid>", "store_id": "demo", "audience": "win_back", "created_at": "<ISO 8601>",
     "added":   [{"email_sha256": "<hex>", "phone_sha256": "<hex>", "phone_e164_sha256": "<hex>"}, ...],
     "removed": [{"email_sha256": "<hex>"}, ...]}

`added` and `removed` each hold at most the store's batch_size (<= 10,000) members, the platforms' limit per
call; a member's entry has the hashes known for them (email: trimmed, lower-cased; phone_sha256: digits with
country code, as Meta wants; phone_e164_sha256: E.164 with '+', as Google wants). A member whose email
changed appears in `removed` with the old hashes and in `added` with the new ones.

Headers: `X-LoyaltyFunnel-Signature: sha256=<hex of HMAC-SHA256(secret, body)>` and
`Idempotency-Key: <batch_id>`. A retried batch carries the same bytes and the same batch_id, so the receiver
dedupes it. Only a 2xx counts as delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from shared.audience_rules import AudienceSync

SIGNATURE_HEADER = "X-LoyaltyFunnel-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode_sync_body(
    *,
    batch_id: str,
    store_id: str,
    audience: str,
    created_at: datetime,
    added: Sequence[dict[str, str]],
    removed: Sequence[dict[str, str]],
) -> bytes:
    document: dict[str, Any] = {
        "batch_id": batch_id,
        "store_id": store_id,
        "audience": audience,
        "created_at": created_at.isoformat(),
        "added": list(added),
        "removed": list(removed),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class SyncFailed(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class AudienceSyncClient:
    """Posts one batch, retrying a few times at once on 5xx, 408, 429 and network errors; the worker backs off
    for longer (durably, in the database) when these quick retries are not enough."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        attempts: int = 3,
        first_wait_seconds: float = 0.5,
        max_wait_seconds: float = 5.0,
    ) -> None:
        self._client = client
        self._attempts = attempts
        self._first_wait = first_wait_seconds
        self._max_wait = max_wait_seconds

    async def deliver(self, sync: AudienceSync, batch_id: str, body: bytes) -> None:
        """Return once the endpoint answered 2xx; raise SyncFailed otherwise."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(
                multiplier=self._first_wait, max=self._max_wait, jitter=self._first_wait
            ),
            retry=retry_if_exception(lambda exc: isinstance(exc, SyncFailed) and exc.retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._post_once(sync, batch_id, body)

    async def _post_once(self, sync: AudienceSync, batch_id: str, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": batch_id,
            SIGNATURE_HEADER: sign(sync.secret.get_secret_value(), body),
        }
        try:
            response = await self._client.post(
                str(sync.url), content=body, headers=headers, timeout=sync.timeout_seconds
            )
        except httpx.HTTPError as exc:
            # Lost on the way or in the answer: the batch_id makes sending it again safe.
            raise SyncFailed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in (408, 425, 429)
        raise SyncFailed(f"endpoint answered {status}", retryable=retryable)
