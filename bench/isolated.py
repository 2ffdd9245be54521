"""Run a piece of the benchmark in a process of its own: the load generator must not share a CPU-bound
event loop (or the GIL) with the orchestrator's SMTP sink, nor a client with the server it measures."""

from __future__ import annotations

import inspect
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    result = fn(*args)
    if inspect.iscoroutine(result):
        return uvloop.run(result)
    return result


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a fresh interpreter (spawned, so no state leaks from this one); its result back."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_call, fn, args).result()
