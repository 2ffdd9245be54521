"""The CPU a measured window cost each part of the stack, from Linux's /proc: the service's process, the
PostgreSQL server (its postmaster and every backend) and the Kafka broker, in µs an event, and the share of
the machine's cores left idle.

A saturated segmenter's figure is bounded by CPU as much as by waits: on two cores its own process,
PostgreSQL's backends and the broker share what there is. Rounds 38 to 40 measured this by hand (bench/
README.md, "What limits each figure now"); each run now reports it. A process's count includes its threads
(/proc/PID/stat is the whole process's) and its children, the live ones read directly and the ended ones
from the parent's `cutime`/`cstime` once it reaped them: PostgreSQL starts a backend for each connection,
and a backend that ends within the window still counts.

The parsers are pure functions, unit-tested on captured text.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# /proc counts CPU time in clock ticks (USER_HZ).
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """One /proc/PID/stat line's fields that matter here (clock ticks)."""

    pid: int
    ppid: int
    own: int  # utime + stime: the process's threads
    children: int  # cutime + cstime: its children that ended and were reaped


def parse_pid_stat(text: str) -> ProcStat:
    """/proc/PID/stat: `pid (comm) state ppid ...`; the command may hold spaces and parentheses, so the
    fields are counted from the last ')'. utime, stime, cutime, cstime are fields 14-17 (proc(5))."""
    head, _, rest = text.rpartition(")")
    if not head:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()  # fields[0] is field 3 (state)
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ProcStat(pid, int(fields[1]), utime + stime, cutime + cstime)


def parse_machine_stat(text: str) -> tuple[int, int]:
    """The first line of /proc/stat (all cores, clock ticks): (busy, all). Idle and iowait are not busy;
    guest time is already inside user time, so it is left out of the sum."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            ticks = [int(f) for f in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
            idle = ticks[3] + ticks[4]
            return sum(ticks) - idle, sum(ticks)
    raise ValueError("no 'cpu ' line in /proc/stat")


def process_seconds(pid: int, proc: Path = PROC) -> float:
    """The process's own CPU time so far (user + system, its threads), in seconds."""
    return parse_pid_stat((proc / str(pid) / "stat").read_text()).own / TICKS_PER_S


def tree_ticks(root: int, stats: Iterable[ProcStat]) -> int:
    """The CPU of `root` and every descendant alive now (each with the children it reaped)."""
    by_parent: dict[int, list[ProcStat]] = {}
    found: dict[int, ProcStat] = {}
    for s in stats:
        found[s.pid] = s
        by_parent.setdefault(s.ppid, []).append(s)
    if root not in found:
        return 0
    total, todo = 0, [found[root]]
    while todo:
        s = todo.pop()
        total += s.own + s.children
        todo.extend(by_parent.get(s.pid, ()))
    return total


@dataclass(frozen=True)
class CpuSample:
    """The machine's busy and total CPU and each named process tree's, at one moment (clock ticks)."""

    machine_busy: int
    machine_all: int
    trees: Mapping[str, int]


def _all_stats(proc: Path) -> list[ProcStat]:
    stats = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stats.append(parse_pid_stat((entry / "stat").read_text()))
            except (OSError, ValueError):
                continue  # ended meanwhile
    return stats


def sample(roots: Mapping[str, Iterable[int]], proc: Path = PROC) -> CpuSample:
    """Each name's process trees (a name may cover several roots: two segmenter processes) now."""
    busy, every = parse_machine_stat((proc / "stat").read_text())
    stats = _all_stats(proc)
    return CpuSample(busy, every, {n: sum(tree_ticks(p, stats) for p in pids) for n, pids in roots.items()})


def sampler(roots: Callable[[], Mapping[str, Iterable[int]]]) -> Callable[[], CpuSample]:
    """A sample of the trees `roots()` names at the moment of the call (the PIDs looked up each time)."""
    return lambda: sample(roots())


def per_event(
    first: CpuSample, last: CpuSample, events: int, ticks_per_s: int = TICKS_PER_S
) -> dict[str, float]:
    """µs of CPU an event of each tree between the two samples, and the machine's idle share of its cores
    (`<name>_us_per_event`, `idle_share`)."""
    out: dict[str, float] = {}
    if events <= 0:
        return out
    for name, ticks in last.trees.items():
        used = ticks - first.trees.get(name, 0)
        out[f"{name}_us_per_event"] = used / ticks_per_s * 1e6 / events
    every = last.machine_all - first.machine_all
    if every > 0:
        out["idle_share"] = 1 - (last.machine_busy - first.machine_busy) / every
    return out
