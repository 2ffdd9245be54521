"""The one start-up path of the services that consume a topic and own a schema (segmenter, notifier).

Both load the store registry, build the engine, start their workers at once and their consumer (with a
producer for dead letters and outbox) as soon as Kafka answers, serve /healthz, /readyz and /metrics behind
the same middleware, and stop in the reverse order. Each service says only what is its own: its workers,
its consumer's handler and its routes (`Wiring`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import Clock
from shared.consumer import ConsumerPipeline
from shared.db import build_engine, database_reachable
from shared.db_collation import report_database_collation
from shared.kafka import build_producer, ensure_topics, kafka_reachable, start_forever
from shared.logging import get_logger
from shared.loop_lag import watch_loop_lag
from shared.settings import ConsumerServiceSettings
from shared.stores import StoreRegistry
from shared.web import (
    install_client_rate_limit,
    install_error_handlers,
    install_input_guard,
    install_metrics_middleware,
    ops_router,
)
from shared.workers import WorkerGroup

log = get_logger(__name__)

Task = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Runtime:
    """What the lifespan built, for a service's wiring: clients are made here once and passed down."""

    stores: StoreRegistry
    engine: AsyncEngine
    clock: Clock
    # The process's one producer (dead letters, outbox), None until Kafka first answered.
    producer: AIOKafkaProducer | None = None


@dataclass
class Wiring:
    """A service's own parts: its consumer, the topics it writes to (created once Kafka answers), workers
    started at once and once the producer is connected, and what to close on the way out."""

    pipeline: ConsumerPipeline[Any]
    topics: Sequence[str]
    workers: Sequence[tuple[str, Task]] = ()
    workers_once_connected: Sequence[tuple[str, Task]] = ()
    close: Sequence[Callable[[], Awaitable[object]]] = field(default_factory=list)
    # More for /readyz: a worker that waits out an outage says so (e.g. the notifier's sender).
    ready: Sequence[tuple[str, Callable[[], bool]]] = ()


def consuming_service_app(
    settings: ConsumerServiceSettings,
    *,
    name: str,
    title: str,
    description: str,
    clock: Clock,
    wire: Callable[[FastAPI, Runtime], Wiring],
    routers: Sequence[APIRouter],
    custom_plans: bool = False,
) -> FastAPI:
    """`wire` runs in the lifespan, after the registry and the engine (app.state.stores, .engine, .clock)
    exist; `custom_plans`: see shared.db.build_engine."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stores = StoreRegistry.load(
            settings.stores_file, allow_placeholder_secrets=settings.environment != "production"
        )
        engine = build_engine(settings, custom_plans=custom_plans)
        runtime = Runtime(stores, engine, clock)
        app.state.runtime = runtime
        app.state.stores, app.state.engine, app.state.clock = stores, engine, clock
        wiring = wire(app, runtime)
        app.state.pipeline = wiring.pipeline
        app.state.ready_checks = wiring.ready
        workers = WorkerGroup()
        app.state.workers = workers

        async def connect() -> None:
            producer = await start_forever(lambda: build_producer(settings, name), "producer", log)
            await ensure_topics(settings, wiring.topics)
            runtime.producer = producer
            workers.start("consumer", wiring.pipeline.run_forever())
            for worker, run in wiring.workers_once_connected:
                workers.start(worker, run())

        for worker, run in wiring.workers:
            workers.start(worker, run())
        workers.start("kafka-connect", connect())
        workers.start("loop-lag", watch_loop_lag())
        workers.start("database-collation", report_database_collation(engine, wait_for_outages=True))
        try:
            yield
        finally:
            await workers.stop()
            for close in wiring.close:
                await close()
            if runtime.producer is not None:
                await runtime.producer.stop()
            await engine.dispose()

    app = FastAPI(title=title, version="1", description=description, lifespan=lifespan)
    install_error_handlers(app)
    install_input_guard(app)
    install_client_rate_limit(app, name, settings)
    install_metrics_middleware(app)

    async def readiness() -> dict[str, bool]:
        runtime: Runtime = app.state.runtime
        producer = runtime.producer
        return {
            "postgres": await database_reachable(app.state.engine),
            "kafka": producer is not None and await kafka_reachable(producer),
            "consumer": app.state.pipeline.running,
            **{check: is_ready() for check, is_ready in app.state.ready_checks},
        }

    app.include_router(ops_router(readiness))
    for router in routers:
        app.include_router(router)
    return app
