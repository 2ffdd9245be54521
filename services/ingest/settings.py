from __future__ import annotations

from pydantic import Field

from shared.settings import KafkaSettings, RuntimeSettings, StoresSettings


class IngestSettings(KafkaSettings, StoresSettings, RuntimeSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8000
    # Shopify gives up after 5 s; answer 503 well before that so the sender retries.
    ingest_publish_timeout_seconds: float = Field(default=2.5, gt=0, le=4.5)
    # Shopify caps webhook bodies far below this; anything larger is refused before it is read in full.
    ingest_max_body_bytes: int = Field(default=512 * 1024, ge=1024)
