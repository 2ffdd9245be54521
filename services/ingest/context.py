"""What the routes share, built once in the lifespan and reached through the request."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.ingest.producer import Publisher
from services.ingest.ratelimit import RateLimiter
from services.ingest.settings import IngestSettings
from shared.clock import Clock
from shared.stores import StoreRegistry


@dataclass(frozen=True)
class IngestContext:
    settings: IngestSettings
    stores: StoreRegistry
    publisher: Publisher
    limiter: RateLimiter
    clock: Clock
    # The public browser write key: per store, and per (store, client address). See IngestSettings.
    browser_key_limiter: RateLimiter
    browser_client_limiter: RateLimiter


def context(request: Request) -> IngestContext:
    ctx: IngestContext = request.app.state.ingest
    return ctx
