"""How late the service's event loop runs what became ready: `event_loop_lag_seconds`.

Everything a service does shares one event loop: an answer from PostgreSQL, Kafka or an SMTP server waits,
once it arrived, for the work ahead of it in the loop (and for a CPU, on a busy machine) before the code
that awaited it goes on. A transaction or an email that awaits a dozen such answers waits a dozen times.
So a service can be slow with no single slow step: that wait is what this histogram shows. Measured as the
lateness of a timer (a sleep of `INTERVAL` that returns later than asked), which waits like any other
callback; sampled every `INTERVAL`, a few microseconds of CPU each.

At 1,000 events/s on two shared cores (bench/README.md, issue 14's twenty-eighth round) the notifier's loop
was late by 4-9 ms at the median and 44-70 ms at p99, while idle below 1 ms.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Histogram

INTERVAL = 0.1

LOOP_LAG = Histogram(
    "event_loop_lag_seconds",
    "How late the event loop ran a due timer: the wait of anything ready behind the work ahead of it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


async def watch_loop_lag(interval: float = INTERVAL) -> None:
    """Observe the loop's lateness every `interval` seconds, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        LOOP_LAG.observe(max(0.0, loop.time() - asked))
