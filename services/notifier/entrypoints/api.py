"""The notifier process: funnel-event consumer, message sender, audiences, and the API for marketing tools.
Start-up, readiness and shutdown are shared with the segmenter (shared/service_app.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from services.notifier.adapters.audience_repository import refresh_memberships
from services.notifier.adapters.coupon_platforms import PlatformClients
from services.notifier.adapters.recommendations import Recommender
from services.notifier.adapters.smtp import SmtpSender
from services.notifier.adapters.tables import consumer_progress
from services.notifier.adapters.templates import TemplateRenderer
from services.notifier.adapters.webhooks import WebhookSender
from services.notifier.entrypoints import platform_routes, preview_routes, routes, unsubscribe
from services.notifier.entrypoints.audience_routes import audience_router
from services.notifier.entrypoints.audience_worker import AudienceWorker
from services.notifier.entrypoints.consent_sync import ConsentSync
from services.notifier.entrypoints.coupon_provisioning import CouponProvisioning
from services.notifier.entrypoints.express import ExpressSender
from services.notifier.entrypoints.processor import MessagePlanner
from services.notifier.entrypoints.reload import Reloader
from services.notifier.entrypoints.sender import MessageSender
from services.notifier.settings import NotifierSettings
from shared.clock import Clock, utcnow
from shared.consumer import LIVE_CATCH_UP_MS, ConsumerPipeline
from shared.consumer_progress import ReadProgress
from shared.consumer_wait import ConsumerWait
from shared.funnel_events import decode_funnel_event
from shared.kafka import FUNNEL_EVENTS, build_consumer, dlq_topic
from shared.service_app import Runtime, Wiring, consuming_service_app


def create_app(settings: NotifierSettings, *, clock: Clock = utcnow) -> FastAPI:
    def wire(app: FastAPI, runtime: Runtime) -> Wiring:
        engine, stores = runtime.engine, runtime.stores
        http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        app.state.refresh_audiences = refresh_memberships
        smtp = SmtpSender(settings)
        platforms = PlatformClients(http, stores)
        # Every store's templates validated before anything is sent: a bad one stops the start, not an email.
        renderer = TemplateRenderer(stores=list(stores))
        recommender = Recommender(
            engine, http, settings.segmenter_url, service_api_key=settings.effective_service_api_key()
        )
        app.state.renderer, app.state.recommender, app.state.smtp = renderer, recommender, smtp
        app.state.public_url = settings.notifier_public_url
        reloader = Reloader(
            stores=stores,
            renderer=renderer,
            stores_file=settings.stores_file,
            production=settings.environment == "production",
            pidfile=settings.pidfile,
            clock=clock,
            on_reloaded=[platforms.forget],
        )
        reloader.start()

        async def stop_reloader() -> None:
            reloader.stop()

        sending: dict[str, Any] = dict(
            engine=engine,
            stores=stores,
            renderer=renderer,
            smtp=smtp,
            webhooks=WebhookSender(http),
            recommender=recommender,
            public_url=settings.notifier_public_url,
            clock=clock,
            batch_size=settings.notifier_send_batch,
            max_attempts=settings.notifier_max_attempts,
            coupon_provisioning=CouponProvisioning(engine, platforms, clock),
            lanes=settings.smtp_connections,
            lease=timedelta(seconds=settings.notifier_send_lease_seconds),
            provisioning_lease=timedelta(seconds=settings.notifier_provisioning_lease_seconds),
        )

        # Each sender takes a message only once every funnel event sent before it came due has been read (by
        # this member's consumer and the others'), so that its guards know of an order queued behind it
        # after an outage (shared/consumer_wait.py).
        # The main sender records this member's progress; the express sender reads it.
        def waiting(worker: str, *, records: bool) -> ConsumerWait:
            return ConsumerWait(
                worker,
                consumer_progress,
                FUNNEL_EVENTS,
                lambda: pipeline.read_before(),
                lambda: pipeline.partition_count(FUNNEL_EVENTS),
                records=records,
            )

        sender = MessageSender(**sending, consumer=waiting("sender", records=True))
        # Transactional messages due while the sender works a claim go out beside it, on the same connections.
        express = ExpressSender(main=sender, **sending, consumer=waiting("express-sender", records=False))

        def messages_due() -> None:
            sender.wake()
            express.wake()

        pipeline: ConsumerPipeline[object] = ConsumerPipeline(
            name="notifier",
            consumer_factory=lambda: build_consumer(
                settings, settings.notifier_group_id, [FUNNEL_EVENTS], "notifier"
            ),
            dlq_producer=lambda: runtime.producer,
            decode=decode_funnel_event,
            handle=MessagePlanner(  # type: ignore[arg-type]
                engine, stores, clock, on_messages_due=messages_due
            ),
            max_records=settings.notifier_max_batch,
            # Live traffic: a batch also takes what reached the broker while the previous one was handled.
            catch_up_ms=LIVE_CATCH_UP_MS,
            # How far this member has read its partitions, which the senders record and wait for.
            progress=ReadProgress(),
        )
        consent = ConsentSync(engine=engine, stores=stores, platforms=platforms, clock=clock)
        audiences = AudienceWorker(engine=engine, stores=stores, clock=clock)
        return Wiring(
            pipeline=pipeline,
            topics=[FUNNEL_EVENTS, dlq_topic(FUNNEL_EVENTS)],
            workers=[
                ("sender", sender.run_forever),
                ("express-sender", express.run_forever),
                ("consent-sync", consent.run_forever),
                ("audiences", audiences.run_forever),
            ],
            close=[stop_reloader, smtp.close, http.aclose],
            # False while the sender waits out an outage (database, SMTP server): mail is not going out.
            ready=[("sender", lambda: sender.ready)],
        )

    return consuming_service_app(
        settings,
        name="notifier",
        title="Loyalty Funnel notifier",
        description="Turns funnel changes into personalised emails, coupons and audiences.",
        clock=clock,
        wire=wire,
        routers=[
            audience_router(),
            routes.router,
            platform_routes.router,
            preview_routes.router,
            unsubscribe.router,
        ],
        # Each execution planned for its parameters, as the segmenter's: the reads of a batch's customers
        # (raw_sql.of_customers) are index lookups then, but a generic plan made while a fresh database's
        # tables were nearly empty (after five executions) kept a sequential scan and a hash join as they
        # grew.
        custom_plans=True,
    )
