from __future__ import annotations

from pydantic import Field

from shared.settings import ConsumerServiceSettings


class SegmenterSettings(ConsumerServiceSettings):
    segmenter_host: str = "127.0.0.1"
    segmenter_port: int = 8001
    segmenter_group_id: str = "segmenter"
    # The most events one transaction takes: only a backlog fills it (live traffic comes in small polls).
    # Each batch pays a dozen round trips, a commit and the relay's and timers' turns in between; at 1,000
    # they were about a fifth of a backlog's time.
    segmenter_max_batch: int = Field(default=3000, ge=1, le=10_000)
    segmenter_dlq_max_consecutive_invalid: int = Field(default=100, ge=1)
