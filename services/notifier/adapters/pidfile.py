"""The running notifier's pidfile, held under a lock for as long as the process lives.

A pid alone names a process only while it runs: after a crash (SIGKILL, the OOM killer) the file stays, the
kernel hands its pid to some other process, and a `reload` that trusted the file would send that process
SIGHUP, whose default action ends it. So the notifier holds an exclusive `flock` on the file from start to
stop; the kernel drops it when the process ends, however it ends. The `reload` command signals only a pid
whose file is still locked, and calls a file nobody holds stale.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

_ATTEMPTS = 10
_PAUSE_SECONDS = 0.02


class PidFileHeld(Exception):
    """Another live process holds the pidfile (two notifiers given the same NOTIFIER_PIDFILE)."""


class NoRunningProcess(Exception):
    """The pidfile names no running process: missing, unreadable, or left by one that ended."""


class PidFile:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> PidFile:
        """Lock `path` and write our pid to it; raises PidFileHeld when a live process holds it, OSError
        when it cannot be created."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # A `reload` reading the file holds a shared lock for a moment: try again for a little while
            # before calling the file another live process's.
            for attempt in range(_ATTEMPTS):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == _ATTEMPTS - 1:
                        raise PidFileHeld(str(path)) from None
                    time.sleep(_PAUSE_SECONDS)
        except BaseException:
            os.close(fd)
            raise
        # Locked before written: a reader that finds the lock held reads our pid, or, in the instant between
        # the two, an empty file, which it reports as holding no pid yet, never as an earlier holder's.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Remove the file (only while it is still ours) and drop the lock."""
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self._fd), self.path.stat()):  # not a successor's new file
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # closing the last descriptor drops the lock
        self._fd = None


def running_pid(path: Path) -> int:
    """The pid of the live process that holds `path`; raises NoRunningProcess with the reason otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise NoRunningProcess(f"cannot read {path}: {exc.strerror}") from None
    try:
        try:
            # A shared lock is granted only while no process holds the exclusive one.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            # Read only now that a holder is known: read before, the pid could be a crashed notifier's that
            # a successor replaced in between.
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            if not text.isdigit():
                raise NoRunningProcess(f"{path} holds no pid yet (a notifier starting?)") from None
            return int(text)
        named = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        reason = f"{path} is stale: no process holds it"
        raise NoRunningProcess(f"{reason}, so pid {named} is not signalled" if named.isdigit() else reason)
    finally:
        os.close(fd)
