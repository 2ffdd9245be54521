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
    # What one fetch brings of a partition at most: 2 MiB (about 3,800 of the benchmark's events) instead
    # of aiokafka's 1 MiB. In a backlog one process handled the same batches in less time, the broker,
    # PostgreSQL and the segmenter each spending less CPU an event: +11 % at saturation alone, +6.5 % with
    # the processor's PauseAhead, which two processes need (8 alternated pairs each; bench/README.md,
    # thirty-ninth round); the peak memory 164-168 -> 166-172 MiB. At least Kafka's default largest message
    # (1 MiB), so that a fetch always holds a whole record of a store's largest events; every partition the
    # process holds may buffer this much.
    segmenter_fetch_bytes: int = Field(default=2 * 1024 * 1024, ge=1024 * 1024, le=64 * 1024 * 1024)
    segmenter_dlq_max_consecutive_invalid: int = Field(default=100, ge=1)
