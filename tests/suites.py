"""`make test`'s runner: the unit tests in a pytest process of their own, beside the one that runs the tests
against the real Kafka, PostgreSQL, SMTP server and browser (`python -m tests.suites [pytest options]`).

The two halves wait on different things. The integration and end-to-end tests spend much of their time
waiting for the broker, the database and the services they start; the unit tests are pure CPU (hypothesis
above all). Run one after the other on two cores, the machine idles through the first and the suite took
13–14 minutes; run side by side, the unit tests fill those waits. They run at a lower priority (`nice`), so
that the services under test, whose timeouts are what could fail, keep the cores they need.

The stack's output streams as it runs; the unit tests' is kept and printed after it, so that neither
interleaves with the other. The exit status is the first failing half's (pytest's own codes), 0 when both
pass. Ctrl-C reaches both halves (one process group) and SIGTERM is passed on to them as one: each then
stops what it started (the broker, PostgreSQL, the services) before this runner ends. Should the runner
fail itself, it ends the halves still running.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

TESTS = Path(__file__).resolve().parent
UNIT = TESTS / "unit"
# The unit tests' priority beside the stack's: they get what the stack leaves, and a share when both want
# a core (CFS weights 1024 against 335), so that a slow hour cannot starve their own timers' tests.
UNIT_NICENESS = 5


def _pytest(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


# The unit half's pytest cache (relative to the rootdir), apart from the stack half's: each half saves the
# failures it saw over what it read at its start, so with one cache the half that ended last dropped the
# other's, and `--lf` (or `--ff`) then reran that half whole.
UNIT_CACHE = ".pytest_cache/unit"


def unit_command(options: Sequence[str]) -> list[str]:
    return ["nice", "-n", str(UNIT_NICENESS), *_pytest(str(UNIT), "-o", f"cache_dir={UNIT_CACHE}", *options)]


def stack_command(options: Sequence[str]) -> list[str]:
    # Everything under tests/ but the unit tests: the integration and end-to-end tests, and any directory
    # added later, so that no test is left out of both halves.
    return _pytest(str(TESTS), f"--ignore={UNIT}", *options)


# The halves running now, for the signal handlers.
_running: list[subprocess.Popen[bytes]] = []


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM: interrupt both halves as Ctrl-C does, so that each tears down what it started."""
    for half in _running:
        if half.poll() is None:
            half.send_signal(signal.SIGINT)


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """Ctrl-C: the halves got it too; this runner waits for them to stop. (A handler, not SIG_IGN, which
    the halves would inherit.)"""


def run(options: Sequence[str]) -> int:
    started = time.monotonic()
    with tempfile.TemporaryFile() as unit_output:
        unit = subprocess.Popen(unit_command(options), stdout=unit_output, stderr=subprocess.STDOUT)
        _running.append(unit)
        try:
            stack = subprocess.Popen(stack_command(options))
            _running.append(stack)
            stack_status = stack.wait()
            stack_done = time.monotonic() - started
            unit_status = unit.wait()
        finally:
            for half in _running:
                if half.poll() is None:
                    half.terminate()
                    half.wait()
            _running.clear()
        print(f"\n---- the unit tests, run beside the {stack_done:.0f} s above ----", flush=True)
        unit_output.seek(0)
        shutil.copyfileobj(unit_output, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    print(
        f"---- integration and end to end: exit {stack_status}; unit: exit {unit_status}; "
        f"{time.monotonic() - started:.0f} s in all ----",
        flush=True,
    )
    return stack_status or unit_status


def main(options: Sequence[str]) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _ignore)
    return run(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
