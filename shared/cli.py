"""Running a service: uvicorn with our JSON logs, and a non-zero exit when a background worker crashed."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI


def serve(app: FastAPI, host: str, port: int) -> None:
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    workers = getattr(app.state, "workers", None)
    if workers is not None and workers.failed:
        sys.exit(1)
