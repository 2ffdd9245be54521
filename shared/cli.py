"""Running a service: uvicorn with our JSON logs, and a non-zero exit when a background worker crashed."""

from __future__ import annotations

import gc
import sys

import uvicorn
from fastapi import FastAPI

from shared import read_deadline

# The services allocate many short-lived objects per event (pydantic models, rows, dicts). With the
# default thresholds the collector runs every 700 allocations and, every so often, walks every object the
# imports left behind; under load that was a fifth of the segmenter's time.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collector() -> None:
    # What is alive now (modules, routes, schemas) lives as long as the process: keep the collector off it.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(app: FastAPI, host: str, port: int, read_timeout_seconds: float) -> None:
    tune_garbage_collector()
    # proxy_headers off: X-Forwarded-For is weighed by the rate limit's TRUSTED_PROXIES alone
    # (shared/ratelimit.py); uvicorn would otherwise believe it from any loopback peer.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=False,
        http=read_deadline.configure(read_timeout_seconds),
    )
    workers = getattr(app.state, "workers", None)
    if workers is not None and workers.failed:
        sys.exit(1)
