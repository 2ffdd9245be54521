"""A background process we started, tracked by a pidfile, and helpers that wait for it to be useful.

The pidfile records the PID together with the kernel's start time of that process, so a stale pidfile
whose PID has since been reused by an unrelated process is never mistaken for ours (and never signalled).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A component could not be started or did not become ready; the message says why."""


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else f"(log file {path} is empty)"


def _start_time(pid: int) -> str | None:
    """The process start time in clock ticks since boot, or None when there is no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses, so split after its closing one.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _account(user: str | None) -> tuple[int | None, int | None, list[int] | None]:
    """uid, gid and (empty) supplementary groups for Popen, so a child run as `user` keeps none of root's."""
    if user is None:
        return None, None, None
    account = pwd.getpwnam(user)
    return account.pw_uid, account.pw_gid, []


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class ManagedProcess:
    """One background process: started detached in its own session, stopped by the PID it recorded."""

    def __init__(
        self,
        name: str,
        pidfile: Path,
        logfile: Path,
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.pidfile = pidfile
        self.logfile = logfile
        # PostgreSQL treats SIGTERM as "smart" shutdown, which waits for every client to leave.
        self.stop_signal = stop_signal
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid()})"

    def pid(self) -> int | None:
        """The PID when the process recorded in the pidfile is still alive, else None."""
        if self._popen is not None and self._popen.poll() is not None:
            return None
        try:
            pid_text, started = self.pidfile.read_text().split()
            pid = int(pid_text)
        except (FileNotFoundError, ValueError):
            return None
        return pid if _start_time(pid) == started else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        die_with_parent: bool = False,
    ) -> int:
        """Start argv in the background with stdout+stderr appended to the log file; return its PID.

        user: run as that account (PostgreSQL refuses to run as root).
        die_with_parent: have the kernel send the stop signal if this Python process dies, so a test
        session killed hard does not leave brokers behind. Off for `make up`, whose stack outlives it.
        """
        if self.is_running():
            raise StackError(f"{self.name} is already running (pid {self.pid()})")
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        uid, gid, groups = _account(user)
        preexec = self._die_with_parent_hook() if die_with_parent else None
        with self.logfile.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    # Its own session: Ctrl-C in the terminal that ran `make up` must not reach the stack,
                    # and its process group is what stop() cleans up.
                    start_new_session=True,
                    # Only a prctl() call, which is safe between fork and exec.
                    preexec_fn=preexec,
                    user=uid,
                    group=gid,
                    extra_groups=groups,
                )
            except OSError as exc:
                raise StackError(f"{self.name}: could not run {argv[0]}: {exc}") from exc
        started = None
        for _ in range(50):
            started = _start_time(popen.pid)
            if started is not None or popen.poll() is not None:
                break
            time.sleep(0.01)
        if started is None:
            raise StackError(f"{self.name} exited at once:\n{tail(self.logfile)}")
        self.pidfile.write_text(f"{popen.pid} {started}\n")
        self._popen = popen
        return popen.pid

    def _die_with_parent_hook(self) -> Callable[[], None]:
        sig = int(self.stop_signal)
        libc = ctypes.CDLL(None, use_errno=True)

        def hook() -> None:
            libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

        return hook

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the process (stop signal, then SIGKILL after timeout) and whatever is left of its group.

        Returns True when something was running. Safe to call when nothing runs.
        """
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self.stop_signal)
        if not self._wait_gone(timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(5.0)
        # The process was the leader of its own group (start_new_session), so its PID is the group id;
        # anything still in that group was spawned by it and is ours to remove too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return True

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout=0.1)
            if not self.is_running():
                return True
            time.sleep(0.1)
        return not self.is_running()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.logfile, lines)

    def fail(self, message: str) -> StackError:
        return StackError(f"{message}\n--- last lines of {self.logfile} ---\n{self.log_tail()}")

    def wait_until(
        self, check: Callable[[], bool], what: str, timeout: float, interval: float = 0.25
    ) -> float:
        """Poll check() until it is true; fail early if the process died. Returns the seconds waited."""
        began = time.monotonic()
        deadline = began + timeout
        while True:
            if check():
                return time.monotonic() - began
            if not self.is_running():
                raise self.fail(f"{self.name} exited before {what}")
            if time.monotonic() > deadline:
                raise self.fail(f"{self.name}: {what} did not happen within {timeout:.0f} s")
            time.sleep(interval)

    def wait_for_port(self, host: str, port: int, timeout: float = 60.0) -> float:
        what = f"{host}:{port} accepted connections"
        return self.wait_until(lambda: port_is_open(host, port), what, timeout)

    def wait_for_http(self, url: str, timeout: float = 60.0) -> float:
        return self.wait_until(lambda: http_ok(url), f"GET {url} answered 200", timeout)


def ensure_port_free(host: str, port: int, component: str) -> None:
    if port_is_open(host, port):
        raise StackError(
            f"{component}: {host}:{port} is already in use by another process; stop it or choose another port"
        )


def run_checked(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    input_text: str | None = None,
    timeout: float = 300.0,
) -> str:
    """Run a short command to completion; on failure raise StackError carrying its output."""
    uid, gid, groups = _account(user)
    try:
        done = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            check=False,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-40:]
        raise StackError(f"{what} failed (exit {done.returncode}):\n" + "\n".join(output))
    return done.stdout
