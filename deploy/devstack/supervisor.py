"""Keeps a local stack alive: a component that dies is started again, with backoff, as compose's
`restart: unless-stopped` does in production.

    python -m deploy.devstack.supervisor --root .run/stack --component ingest --component kafka ...

`make up` starts it once everything is ready, `make down` stops it first (so it restarts nothing on the
way down). Every second it looks at each component's pidfile; a dead one is restarted after a delay that
doubles with each death in quick succession (0.5 s, 1 s, 2 s ... 30 s) and resets once the component has
stayed up for a minute. Restarts run in a thread per component, so a broker that takes 20 s to come back
does not delay a service's restart. Counts are kept in <root>/supervisor.json for `make status`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from deploy.devstack.process import ManagedProcess, StackError

FIRST_DELAY = 0.5
MAX_DELAY = 30.0
# Up this long after a restart, a component's next death is treated as a first one again.
STABLE_AFTER = 60.0
POLL_SECONDS = 1.0


@dataclass
class Supervised:
    """One component: its pidfile handle and how to start it again (may block until it is ready)."""

    process: ManagedProcess
    start: Callable[[], None]
    restarts: int = 0
    failures: int = 0  # deaths or failed starts in quick succession, for the backoff
    next_attempt: float | None = None  # when a dead component is started again
    last_started: float = 0.0
    last_error: str | None = None
    started_pids: list[int] = field(default_factory=list)
    worker: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.process.name


def backoff(failures: int) -> float:
    """The wait before restart number `failures` of a crash loop (1 = the first)."""
    return min(MAX_DELAY, FIRST_DELAY * 2.0 ** max(failures - 1, 0))


class Supervisor:
    def __init__(
        self,
        components: list[Supervised],
        state_file: Path,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = print,
    ) -> None:
        self.components = components
        self.state_file = state_file
        self._clock = clock
        self._log = log
        for component in components:
            component.last_started = clock()

    def tick(self) -> None:
        """Look at every component once: schedule a restart for the dead, start the ones due."""
        now = self._clock()
        for component in self.components:
            if component.worker is not None:
                if component.worker.is_alive():
                    continue  # a restart is under way
                component.worker = None
            if component.process.is_running():
                continue
            if component.next_attempt is None:
                if now - component.last_started >= STABLE_AFTER:
                    component.failures = 0
                component.failures += 1
                component.next_attempt = now + backoff(component.failures)
                self._log(f"{component.name} is not running; restart in {backoff(component.failures):.1f} s")
            if now >= component.next_attempt:
                component.worker = threading.Thread(
                    target=self._restart, args=(component,), name=f"restart-{component.name}", daemon=True
                )
                component.worker.start()
        self.save()

    def _restart(self, component: Supervised) -> None:
        began = self._clock()
        _reap(component.process)
        try:
            component.start()
        except (StackError, OSError) as exc:
            component.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            component.failures += 1
            component.next_attempt = self._clock() + backoff(component.failures)
            self._log(f"{component.name} did not start again: {component.last_error}")
            return
        component.restarts += 1
        component.last_started = self._clock()
        component.next_attempt = None
        component.last_error = None
        pid = component.process.pid()
        if pid is not None:
            component.started_pids.append(pid)
        self._log(f"{component.name} restarted (pid {pid}) in {self._clock() - began:.1f} s")

    def wait_for_restarts(self, timeout: float = 60.0) -> None:
        """Join the restarts under way (tests, and a clean exit)."""
        for component in self.components:
            if component.worker is not None:
                component.worker.join(timeout)

    def save(self) -> None:
        state = {
            "pid": os.getpid(),
            "updated_at": time.time(),
            "components": {
                c.name: {"restarts": c.restarts, "pid": c.process.pid(), "last_error": c.last_error}
                for c in self.components
            },
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.tick()
            stop.wait(POLL_SECONDS)


def _reap(process: ManagedProcess) -> None:
    """Collect the exit status of a dead child of ours, so it does not linger as a zombie."""
    with contextlib.suppress(FileNotFoundError, ValueError, ChildProcessError):
        pid = int(process.pidfile.read_text().split()[0])
        os.waitpid(pid, os.WNOHANG)


def main(argv: list[str] | None = None) -> None:
    from deploy.devstack.stack import SUPERVISOR_STATE, Stack, StackLayout

    parser = argparse.ArgumentParser(prog="python -m deploy.devstack.supervisor", description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="the stack's directory (layout.json)")
    parser.add_argument("--component", action="append", default=[], help="a component to keep alive")
    args = parser.parse_args(argv)
    stack = Stack(StackLayout.load(args.root))
    handles = {p.name: p for p in stack.components()}
    components = [Supervised(handles[name], stack.starter(name)) for name in args.component]

    def log(line: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)

    supervisor = Supervisor(components, args.root / SUPERVISOR_STATE, log=log)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"supervising {', '.join(args.component)}")
    supervisor.run(stop)
    log("stopping: the components keep running (`make down` stops them)")


if __name__ == "__main__":
    main()
