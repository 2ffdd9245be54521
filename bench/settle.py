"""Each phase starts without the last one's writes still going to disk.

A phase leaves behind what it wrote into the page cache (the ingest phase: hundreds of MiB of Kafka's logs)
as dirty pages, which the kernel writes out some 30 s later (`vm.dirty_expire_centisecs`), in the middle of
the next phase: that phase's fsyncs (PostgreSQL's WAL) then queue behind them and its figures measure the
phase before. `settle` flushes them (sync(2)) before a phase begins and says how much there was. Durability
is unchanged: it writes what would have been written anyway, earlier.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

MEMINFO = Path("/proc/meminfo")


def unwritten_kib(meminfo: str) -> int:
    """Dirty + Writeback of /proc/meminfo's text, in KiB: the page cache not yet on disk."""
    fields = {}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        fields[name.strip()] = rest.split()
    try:
        return int(fields["Dirty"][0]) + int(fields["Writeback"][0])
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError("no Dirty and Writeback lines in /proc/meminfo") from exc


def settle(meminfo: Path = MEMINFO) -> dict[str, Any]:
    """Flush the page cache's dirty pages to disk; how much there was and how long it took."""
    before = unwritten_kib(meminfo.read_text())
    began = time.monotonic()
    os.sync()
    return {
        "unwritten_kib_before": before,
        "unwritten_kib_after": unwritten_kib(meminfo.read_text()),
        "seconds": round(time.monotonic() - began, 2),
    }
