"""The notifier's pidfile names its process only while that process lives: a file a crash left behind is
stale, and `reload` never signals the process whose pid the kernel has since given out again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.notifier.adapters.pidfile import NoRunningProcess, PidFile, PidFileHeld, running_pid
from shared.settings import REPO_ROOT
from tests.notifier_cli import run_reload


def test_the_holder_is_the_running_pid_until_it_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "run" / "notifier.pid"
    held = PidFile.acquire(path)
    assert path.read_text() == f"{os.getpid()}\n"
    assert running_pid(path) == os.getpid()
    held.release()
    assert not path.exists()
    with pytest.raises(NoRunningProcess, match="cannot read"):
        running_pid(path)


def test_a_second_process_given_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notifier.pid"
    held = PidFile.acquire(path)
    try:
        # flock treats each open of the file apart, so a second open in this process stands for another.
        with pytest.raises(PidFileHeld):
            PidFile.acquire(path)
        assert running_pid(path) == os.getpid()
    finally:
        held.release()


def test_a_file_overwritten_by_a_successor_is_not_removed_by_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "notifier.pid"
    first = PidFile.acquire(path)
    path.unlink()  # an operator's clean-up; a new notifier then makes the file anew
    second = PidFile.acquire(path)
    first.release()
    assert running_pid(path) == os.getpid()
    second.release()
    assert not path.exists()


def _holder(path: Path) -> subprocess.Popen[str]:
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from services.notifier.adapters.pidfile import PidFile
        PidFile.acquire(Path({str(path)!r}))
        print("held", flush=True)
        time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_file_left_by_a_killed_notifier_is_stale_and_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "notifier.pid"
    child = _holder(path)
    try:
        assert running_pid(path) == child.pid
    finally:
        child.kill()  # SIGKILL: no clean-up runs, the file stays
        child.wait(timeout=30)
    assert path.read_text().strip() == str(child.pid)
    with pytest.raises(NoRunningProcess, match=f"stale.*{child.pid}"):
        running_pid(path)
    successor = PidFile.acquire(path)
    try:
        assert running_pid(path) == os.getpid()
    finally:
        successor.release()


def test_reload_leaves_alone_the_process_a_stale_pidfile_names(tmp_path: Path) -> None:
    # The pid of a notifier that crashed, now some other process's: here, a sleep.
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        pidfile = tmp_path / "notifier.pid"
        pidfile.write_text(f"{bystander.pid}\n")
        env = {
            **os.environ,
            "NOTIFIER_PIDFILE": str(pidfile),
            "STORES_FILE": str(REPO_ROOT / "deploy" / "stores.dev.yaml"),
        }
        done = run_reload(env, wait_seconds=2)
        assert done.returncode == 2, done.stderr
        assert "stale" in done.stderr
        assert bystander.poll() is None, "reload signalled a process the notifier's stale pidfile named"
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait(timeout=30)
