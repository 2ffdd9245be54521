"""The segmenter process: the consumer, the outbox relay, the timers and the read API for marketing tools.
Start-up, readiness and shutdown are shared with the notifier (shared/service_app.py)."""

from __future__ import annotations

import gc

from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

from services.segmenter.adapters.event_decoding import decode_decidable
from services.segmenter.adapters.profile_cache import ProfileCache
from services.segmenter.adapters.tables import consumer_progress, outbox
from services.segmenter.entrypoints import routes
from services.segmenter.entrypoints.processor import PROFILE_CACHE_SIZE, FunnelProcessor
from services.segmenter.entrypoints.profiles_ahead import ProfilesAhead
from services.segmenter.entrypoints.timers import TimerWorker
from services.segmenter.settings import SegmenterSettings
from shared.clock import Clock, utcnow
from shared.consumer import LIVE_CATCH_UP_MS, ConsumerPipeline, DlqLimit
from shared.consumer_progress import ReadProgress
from shared.consumer_wait import ConsumerWait
from shared.kafka import FUNNEL_EVENTS, STOREFRONT_EVENTS, build_consumer, dlq_topic
from shared.outbox import OutboxRelay
from shared.registry_checks import sha256_hex
from shared.service_app import Runtime, Wiring, consuming_service_app

OUTBOX_LOCK_KEY = 0x5E6_0001  # advisory lock id of the segmenter's outbox relay
SEGMENTER_GC_THRESHOLD = 200_000  # allocations between two young-generation collections


def segmenter_consumer(settings: SegmenterSettings) -> AIOKafkaConsumer:
    """The consumer of storefront events, in the segmenter's group, with its fetch size."""
    return build_consumer(
        settings,
        settings.segmenter_group_id,
        [STOREFRONT_EVENTS],
        "segmenter",
        max_partition_fetch_bytes=settings.segmenter_fetch_bytes,
    )


def create_app(settings: SegmenterSettings, *, clock: Clock = utcnow) -> FastAPI:
    def wire(app: FastAPI, runtime: Runtime) -> Wiring:
        # A backlog batch keeps some hundred thousand young objects alive (events, profiles, rows), and at
        # the services' default first threshold (shared/cli.py) the collector walked them every few
        # thousand events: a tenth of a 3,000-event batch's time in-process, none of it garbage.
        gc.set_threshold(SEGMENTER_GC_THRESHOLD, *gc.get_threshold()[1:])
        # The key the notifier presents to read product complements (ServiceAuthSettings).
        service_key = settings.effective_service_api_key()
        app.state.service_key_sha256 = sha256_hex(service_key) if service_key else None
        relay = OutboxRelay(
            name="segmenter",
            engine=runtime.engine,
            table=outbox,
            producer=lambda: runtime.producer,
            lock_key=OUTBOX_LOCK_KEY,
            hold_connection=True,
        )
        # Timers fire in rounds of 100: a round runs on the consumer's event loop, and a round of 500
        # held a live event's batch back for the best part of 100 ms. The worker goes on at once while
        # its rounds are full, so a backlog drains as fast.
        # One cache of the profiles this process wrote, for the consumer and the timers alike.
        profile_cache = ProfileCache(PROFILE_CACHE_SIZE)
        # The customers a batch decided ahead is reading, which the timers leave for a later round, and those
        # a timer round holds, which such a batch waits for (profiles_ahead.py).
        profiles_ahead = ProfilesAhead()
        # How far this member's consumer has read its partitions, which each timer round records and
        # waits for with every member's (shared/consumer_progress.py, shared/consumer_wait.py).
        progress = ReadProgress()
        timers = TimerWorker(
            runtime.engine,
            runtime.stores,
            clock,
            batch_size=100,
            on_outbox_written=relay.wake,
            profile_cache=profile_cache,
            profiles_ahead=profiles_ahead,
            consumer=ConsumerWait(
                "timers",
                consumer_progress,
                STOREFRONT_EVENTS,
                lambda: pipeline.read_before(),
                lambda: pipeline.partition_count(STOREFRONT_EVENTS),
            ),
        )
        # The consumer's batches run one at a time on one connection kept between them; in a backlog, each
        # batch's claim is sent on another while the batch before is handled (claim_ahead.py).
        processor = FunnelProcessor(
            runtime.engine,
            runtime.stores,
            on_outbox_written=relay.wake,
            profile_cache=profile_cache,
            hold_connection=True,
            claim_ahead=True,
            profiles_ahead=profiles_ahead,
        )
        pipeline: ConsumerPipeline[object] = ConsumerPipeline(
            name="segmenter",
            consumer_factory=lambda: segmenter_consumer(settings),
            dlq_producer=lambda: runtime.producer,
            decode=decode_decidable,
            handle=processor,  # type: ignore[arg-type]
            dlq_limit=DlqLimit(settings.segmenter_dlq_max_consecutive_invalid),
            max_records=settings.segmenter_max_batch,
            # While a backlog's batch is handled, the next one is decoded in its waits for the database,
            # whole, and handed over so that its claim is sent ahead. A decoded event holds more than its
            # bytes (1.3 kB allocated as the Structs it decodes): the segmenter's peak over the benchmark's
            # 200,000 events was 151-153 MiB with 1,500 of them decoded ahead, 155-157 with all 3,000.
            prepare=processor.send_ahead,  # type: ignore[arg-type]
            unprepare=processor.drop_ahead,
            # Its claim is sent before that, from the messages' ids (read from the raw bytes), and runs while
            # they are decoded.
            announce=processor.announce,
            # Live traffic: a batch also takes what reached the broker while the previous one was handled.
            catch_up_ms=LIVE_CATCH_UP_MS,
            progress=progress,
        )
        return Wiring(
            pipeline=pipeline,
            topics=[STOREFRONT_EVENTS, FUNNEL_EVENTS, dlq_topic(STOREFRONT_EVENTS)],
            workers=[("timers", timers.run_forever)],
            workers_once_connected=[("outbox-relay", relay.run_forever)],
            close=[processor.close, relay.close],
        )

    return consuming_service_app(
        settings,
        name="segmenter",
        title="Loyalty Funnel segmenter",
        description="Each customer's place in the loyalty funnel, kept in real time from storefront events.",
        clock=clock,
        wire=wire,
        routers=[routes.router],
        custom_plans=True,
    )
