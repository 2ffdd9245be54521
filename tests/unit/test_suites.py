"""`make test`'s runner (tests/suites.py): both halves run, the unit tests' report comes after the stack's
whole, a failure in either half fails the run, SIGTERM interrupts both halves as Ctrl-C does (so that each
stops what it started), and the halves do not outlive a runner that failed itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests import suites


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _until_written(*paths: Path) -> None:
    """Until a stand-in half has written each of `paths` (it runs)."""
    deadline = time.monotonic() + 30
    while not all(path.exists() and path.read_text() for path in paths):
        assert time.monotonic() < deadline, "the halves did not start"
        time.sleep(0.02)


@pytest.mark.parametrize(("stack", "unit", "status"), [(0, 0, 0), (1, 0, 1), (0, 1, 1), (2, 1, 2)])
def test_the_run_fails_when_either_half_fails_and_prints_the_unit_report_after_the_stacks(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], stack: int, unit: int, status: int
) -> None:
    # The unit half writes at once and the stack half later: its output must still come first.
    monkeypatch.setattr(suites, "unit_command", lambda _: _python(f"print('unit report'); exit({unit})"))
    monkeypatch.setattr(
        suites,
        "stack_command",
        lambda _: _python(f"import time; time.sleep(0.5); print('stack report'); exit({stack})"),
    )
    assert suites.run([]) == status
    out = capfd.readouterr().out
    assert out.index("stack report") < out.index("unit report")
    assert f"integration and end to end: exit {stack}; unit: exit {unit}" in out


def test_the_options_reach_both_halves_and_the_stack_half_is_all_but_the_unit_tests() -> None:
    unit = suites.unit_command(["-x", "-k", "name"])
    stack = suites.stack_command(["-x", "-k", "name"])
    assert unit[:3] == ["nice", "-n", str(suites.UNIT_NICENESS)]
    assert unit[-3:] == stack[-3:] == ["-x", "-k", "name"]
    assert str(suites.UNIT) in unit
    assert f"--ignore={suites.UNIT}" in stack  # everything else under tests/, directories added later too
    assert str(suites.TESTS) in stack


def test_the_unit_tests_end_with_the_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pid_file = tmp_path / "unit.pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    monkeypatch.setattr(suites, "unit_command", lambda _: _python(sleeper))

    def stack_fails_to_start(_: Sequence[str]) -> list[str]:
        _until_written(pid_file)
        return [str(tmp_path / "no-such-program")]

    monkeypatch.setattr(suites, "stack_command", stack_fails_to_start)
    started = time.monotonic()
    with pytest.raises(FileNotFoundError):
        suites.run([])
    assert time.monotonic() - started < 60  # ended, not waited for
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_sigterm_interrupts_both_halves_as_ctrl_c_does_and_the_runner_waits_for_them(tmp_path: Path) -> None:
    # Each stand-in half says when it runs, and on SIGINT (pytest's KeyboardInterrupt: its fixtures' teardown
    # stops the broker and PostgreSQL it started) says so and exits as pytest does when interrupted.
    half = (
        "import pathlib, signal, sys, time\n"
        "def interrupted(*_):\n"
        "    pathlib.Path(sys.argv[1] + '.interrupted').write_text('')\n"
        "    sys.exit(2)\n"
        "signal.signal(signal.SIGINT, interrupted)\n"
        "pathlib.Path(sys.argv[1] + '.running').write_text('yes')\n"
        "time.sleep(60)\n"
    )
    unit, stack = tmp_path / "unit", tmp_path / "stack"
    runner = (
        "import sys\n"
        "from tests import suites\n"
        f"suites.unit_command = lambda _: [sys.executable, '-c', {half!r}, {str(unit)!r}]\n"
        f"suites.stack_command = lambda _: [sys.executable, '-c', {half!r}, {str(stack)!r}]\n"
        "sys.exit(suites.main([]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", runner], cwd=suites.TESTS.parent, stdout=subprocess.DEVNULL
    )
    try:
        _until_written(unit.with_suffix(".running"), stack.with_suffix(".running"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 2
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert unit.with_suffix(".interrupted").exists()
    assert stack.with_suffix(".interrupted").exists()


def test_each_half_reruns_its_own_last_failures(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A project of two halves, each with a failing and a passing test, run by real pytest processes as
    # `make test` runs them (one rootdir, so one cache unless the runner keeps them apart).
    # Each failing test waits for the other half's to start, so that both halves have read the cache before
    # either saves what it saw (as when `make test`'s halves run for minutes side by side).
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    started = tmp_path / "started"
    started.mkdir()
    tests = tmp_path / "tests"
    (tests / "unit").mkdir(parents=True)
    for path, name in ((tests / "unit" / "test_u.py", "unit"), (tests / "test_s.py", "stack")):
        path.write_text(
            "import time\nfrom pathlib import Path\n\n"
            f"def test_{name}_fails():\n"
            f"    (Path({str(started)!r}) / {name!r}).touch()\n"
            "    deadline = time.monotonic() + 30\n"
            f"    while len(list(Path({str(started)!r}).iterdir())) < 2 and time.monotonic() < deadline:\n"
            "        time.sleep(0.01)\n"
            "    assert False\n\n"
            f"def test_{name}_passes():\n    pass\n"
        )
    monkeypatch.setattr(suites, "TESTS", tests)
    monkeypatch.setattr(suites, "UNIT", tests / "unit")
    assert suites.run(["-q", "-p", "no:randomly"]) == 1
    capfd.readouterr()
    # `--lf`: each half knows its own failure still, whichever half ended last.
    assert suites.run(["-q", "-p", "no:randomly", "--lf"]) == 1
    out = capfd.readouterr().out
    # (A half that lost its failures reruns both of its tests: "1 failed, 1 passed".)
    assert out.count("1 failed in ") == 2, out
    assert "passed" not in out, out
