"""Reloading the store registry and the templates without a restart: SIGHUP, or `python -m services.notifier
reload`.

Chosen over an admin endpoint: no new credential to guard, and only someone allowed to signal the process
can send it. The running notifier writes its pid to NOTIFIER_PIDFILE (by default one per port under
.run/) and holds the file locked while it runs, so that a file a crash left behind is known to be stale
(`adapters/pidfile.py`). A reload first loads and validates the new registry and every store's templates;
only when all of it is good are they swapped in, templates first, then the registry (which carries each
store's notifier settings). A reload that fails keeps what is running, logs why, and records the outcome
next to the pidfile (`<pidfile>.reload.json`), where the `reload` command reads it to report and to set its
exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from services.notifier.adapters.pidfile import PidFile, PidFileHeld
from services.notifier.adapters.templates import TemplateProblem, TemplateRenderer
from shared.logging import get_logger
from shared.stores import StoreRegistry, StoreRegistryError

log = get_logger(__name__)


@dataclass(frozen=True)
class ReloadOutcome:
    generation: int
    ok: bool
    at: str
    problems: list[str]


def status_path(pidfile: Path) -> Path:
    return pidfile.with_name(pidfile.name + ".reload.json")


def load_checked(stores_file: Path, *, production: bool, renderer: TemplateRenderer) -> StoreRegistry:
    """The registry at `stores_file` with every store's templates validated; raises with every problem."""
    registry = StoreRegistry.load(stores_file, allow_placeholder_secrets=not production)
    renderer.check(list(registry))
    return registry


class Reloader:
    def __init__(
        self,
        *,
        stores: StoreRegistry,
        renderer: TemplateRenderer,
        stores_file: Path,
        production: bool,
        pidfile: Path | None,
        clock: Callable[[], datetime],
        on_reloaded: Sequence[Callable[[], None]] = (),
    ) -> None:
        self._stores = stores
        self._renderer = renderer
        self._stores_file = stores_file
        self._production = production
        self._pidfile = pidfile
        self._clock = clock
        self._on_reloaded = on_reloaded
        self._generation = 0
        self._lock = threading.Lock()
        self._listening = False
        self._held: PidFile | None = None

    def reload(self) -> ReloadOutcome:
        with self._lock:  # two SIGHUPs in a row reload one after the other
            self._generation += 1
            try:
                registry = StoreRegistry.load(
                    self._stores_file, allow_placeholder_secrets=not self._production
                )
                self._renderer.reload(list(registry))
            except (StoreRegistryError, TemplateProblem) as exc:
                problems = exc.problems if isinstance(exc, TemplateProblem) else [str(exc)]
                # Paths and line numbers only: the registry's errors never quote secret values.
                log.error("reload_failed", generation=self._generation, problems=problems[:50])
                return self._record(ok=False, problems=problems)
            self._stores.adopt(registry)
            for forget in self._on_reloaded:  # what was built from the old settings (platform clients)
                forget()
            log.info("reloaded", generation=self._generation, stores=len(list(registry)))
            return self._record(ok=True, problems=[])

    def _record(self, *, ok: bool, problems: list[str]) -> ReloadOutcome:
        outcome = ReloadOutcome(self._generation, ok, self._clock().isoformat(), problems)
        if self._pidfile is not None:
            target = status_path(self._pidfile)
            temporary = target.with_suffix(".tmp")
            try:
                temporary.write_text(json.dumps(asdict(outcome)))
                temporary.replace(target)  # the command never reads a half-written file
            except OSError as exc:
                log.warning("reload_status_unwritable", error=type(exc).__name__)
        return outcome

    def start(self) -> None:
        """Hold the pidfile and reload on SIGHUP (the validation runs in a thread: it takes a second)."""
        if self._pidfile is not None:
            try:
                self._held = PidFile.acquire(self._pidfile)
                with contextlib.suppress(OSError):  # the command compares it before and after anyway
                    status_path(self._pidfile).unlink(missing_ok=True)
            except PidFileHeld:
                # Another live notifier was given the same file: `reload` keeps signalling that one.
                log.warning("pidfile_held", pidfile=str(self._pidfile))
                self._pidfile = None
            except OSError as exc:
                # A read-only install (a container image): SIGHUP works, only the command cannot find us.
                log.warning("pidfile_unwritable", pidfile=str(self._pidfile), error=type(exc).__name__)
                self._pidfile = None
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._on_hangup()))
            self._listening = True
        except (ValueError, RuntimeError, NotImplementedError):
            # Not the main thread (an app run inside a test client): no signals here, the API still works.
            log.warning("sighup_unavailable")

    async def _on_hangup(self) -> None:
        await asyncio.to_thread(self.reload)

    def stop(self) -> None:
        if self._listening:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._listening = False
        if self._held is not None:
            self._held.release()
            with contextlib.suppress(OSError):  # its verdicts go with it
                status_path(self._held.path).unlink(missing_ok=True)
            self._held = None
