from __future__ import annotations

from pydantic import Field

from shared.settings import ClientRateLimitSettings, KafkaSettings, RuntimeSettings, StoresSettings


class IngestSettings(KafkaSettings, StoresSettings, ClientRateLimitSettings, RuntimeSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8000
    # Processes serving the port (uvicorn workers). One by default: on a 2-core machine a second one
    # competes with Kafka for the CPU; more suit more cores.
    ingest_workers: int = Field(default=1, ge=1, le=64)
    # Shopify gives up after 5 s; answer 503 well before that so the sender retries.
    ingest_publish_timeout_seconds: float = Field(default=2.5, gt=0, le=4.5)
    # Shopify caps webhook bodies far below this; anything larger is refused before it is read in full.
    ingest_max_body_bytes: int = Field(default=512 * 1024, ge=1024)
    # Segment's documented limits for its HTTP Tracking API.
    segment_max_event_bytes: int = Field(default=32 * 1024, ge=1024)
    segment_max_batch_bytes: int = Field(default=500 * 1024, ge=1024)
    segment_max_batch_events: int = Field(default=2500, ge=1)
    # Per store and per ingest instance; a batch costs one token per event. Webhooks and the server write key.
    ingest_rate_limit_per_second: float = Field(default=5000, gt=0)
    ingest_rate_limit_burst: float = Field(default=10000, ge=1)
    # The public browser write key has a bucket of its own, so a flood sent with it (anyone can read it)
    # cannot crowd out the store's orders and webhooks...
    ingest_browser_key_rate_limit_per_second: float = Field(default=1000, gt=0)
    ingest_browser_key_rate_limit_burst: float = Field(default=2000, ge=1)
    # ...and each client address sending with it has one too: one visitor's browser sends a few events a
    # minute, so one address cannot take the whole key's rate either.
    ingest_browser_client_rate_limit_per_second: float = Field(default=20, gt=0)
    ingest_browser_client_rate_limit_burst: float = Field(default=200, ge=1)
    # Where browsers and apps reach ingest (e.g. https://collect.example.com), for the `apiHost` of the
    # Segment settings document; unset, the scheme and host the settings request itself came to.
    ingest_public_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+/?$")
