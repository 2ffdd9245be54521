from __future__ import annotations

from pydantic import Field

from shared.settings import DatabaseSettings, KafkaSettings, RuntimeSettings, StoresSettings


class SegmenterSettings(KafkaSettings, DatabaseSettings, StoresSettings, RuntimeSettings):
    segmenter_host: str = "127.0.0.1"
    segmenter_port: int = 8001
    segmenter_group_id: str = "segmenter"
    segmenter_max_batch: int = Field(default=1000, ge=1, le=10_000)
    segmenter_dlq_max_consecutive_invalid: int = Field(default=100, ge=1)
