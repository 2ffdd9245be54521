"""The supervisor behind `make up` restarts a component that died, with backoff; real (sleeping) processes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from deploy.devstack.process import ManagedProcess, StackError
from deploy.devstack.supervisor import MAX_DELAY, STABLE_AFTER, Supervised, Supervisor, backoff

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sleeper(tmp_path: Path, name: str = "sleeper") -> tuple[ManagedProcess, Supervised]:
    process = ManagedProcess(name, tmp_path / f"{name}.pid", tmp_path / f"{name}.log")

    def start() -> None:
        # A fresh handle, as the stack's starters make: the supervisor only shares the pidfile with it.
        ManagedProcess(name, process.pidfile, process.logfile).start(SLEEPER)

    start()
    return process, Supervised(process, start)


def _kill(process: ManagedProcess) -> int:
    pid = process.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process.is_running()
    return pid


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_backoff_doubles_up_to_a_ceiling() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(50) == MAX_DELAY


def test_a_killed_process_is_started_again_after_its_delay_and_counted(
    tmp_path: Path, clock: FakeClock
) -> None:
    process, component = _sleeper(tmp_path)
    supervisor = Supervisor([component], tmp_path / "state.json", clock=clock, log=lambda _: None)
    try:
        clock.now += STABLE_AFTER + 1
        supervisor.tick()
        assert component.restarts == 0  # alive: nothing to do
        old = _kill(process)
        supervisor.tick()  # notices the death, schedules the restart
        assert not process.is_running()
        clock.now += backoff(1)
        supervisor.tick()
        supervisor.wait_for_restarts()
        new = process.pid()
        assert new is not None
        assert new != old
        assert component.restarts == 1
        supervisor.tick()
        state = json.loads((tmp_path / "state.json").read_text())
        assert state["components"]["sleeper"] == {"restarts": 1, "pid": new, "last_error": None}
    finally:
        process.stop(timeout=5)


def test_dying_again_soon_waits_longer_each_time(tmp_path: Path, clock: FakeClock) -> None:
    process, component = _sleeper(tmp_path)
    supervisor = Supervisor([component], tmp_path / "state.json", clock=clock, log=lambda _: None)
    try:
        for attempt in (1, 2, 3):
            _kill(process)
            supervisor.tick()
            clock.now += backoff(attempt) - 0.01
            supervisor.tick()
            assert not process.is_running(), f"restarted before its delay on death {attempt}"
            clock.now += 0.02
            supervisor.tick()
            supervisor.wait_for_restarts()
            assert process.is_running()
        assert component.restarts == 3
        # A minute up: the next death counts as a first one again.
        clock.now += STABLE_AFTER
        _kill(process)
        supervisor.tick()
        assert component.next_attempt == pytest.approx(clock.now + backoff(1))
    finally:
        process.stop(timeout=5)


def test_a_failed_start_is_retried_later(tmp_path: Path, clock: FakeClock) -> None:
    process, component = _sleeper(tmp_path)
    real_start = component.start
    refusals = [StackError("port 8000 is already in use")]

    def flaky() -> None:
        if refusals:
            raise refusals.pop()
        real_start()

    component.start = flaky
    supervisor = Supervisor([component], tmp_path / "state.json", clock=clock, log=lambda _: None)
    try:
        _kill(process)
        supervisor.tick()
        clock.now += backoff(1)
        supervisor.tick()
        supervisor.wait_for_restarts()
        assert not process.is_running()
        assert component.last_error == "port 8000 is already in use"
        clock.now += backoff(2)
        supervisor.tick()
        supervisor.wait_for_restarts()
        assert process.is_running()
        assert component.restarts == 1
        assert component.last_error is None, "a success clears the last error"
    finally:
        process.stop(timeout=5)
