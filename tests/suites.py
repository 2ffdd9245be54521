"""`make test`'s runner: the unit tests in a pytest process of their own, beside the one that runs the tests
against the real Kafka, PostgreSQL, SMTP server and browser (`python -m tests.suites [pytest options]`).

The two halves wait on different things. The integration and end-to-end tests spend much of their time
waiting for the broker, the database and the services they start; the unit tests are pure CPU (hypothesis
above all). Run one after the other on two cores, the machine idles through the first and the suite took
13–14 minutes; run side by side, the unit tests fill those waits. They run at a lower priority (`nice`), so
that the services under test, whose timeouts are what could fail, keep the cores they need.

The stack's output streams as it runs; the unit tests' is kept and printed after it, so that neither
interleaves with the other. The exit status is the first failing half's (pytest's own codes), 0 when both
pass. Ctrl-C reaches both (one process group); any other end of this runner ends the unit tests too.
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


def unit_command(options: Sequence[str]) -> list[str]:
    return ["nice", "-n", str(UNIT_NICENESS), *_pytest(str(UNIT), *options)]


def stack_command(options: Sequence[str]) -> list[str]:
    # Everything under tests/ but the unit tests: the integration and end-to-end tests, and any directory
    # added later, so that no test is left out of both halves.
    return _pytest(str(TESTS), f"--ignore={UNIT}", *options)


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signal.SIGTERM)


def run(options: Sequence[str]) -> int:
    started = time.monotonic()
    with tempfile.TemporaryFile() as unit_output:
        unit = subprocess.Popen(unit_command(options), stdout=unit_output, stderr=subprocess.STDOUT)
        try:
            stack = subprocess.run(stack_command(options), check=False).returncode
            stack_done = time.monotonic() - started
            unit_status = unit.wait()
        finally:
            if unit.poll() is None:
                unit.terminate()
                unit.wait()
        print(f"\n---- the unit tests, run beside the {stack_done:.0f} s above ----", flush=True)
        unit_output.seek(0)
        shutil.copyfileobj(unit_output, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    print(
        f"---- integration and end to end: exit {stack}; unit: exit {unit_status}; "
        f"{time.monotonic() - started:.0f} s in all ----",
        flush=True,
    )
    return stack or unit_status


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    sys.exit(run(sys.argv[1:]))
