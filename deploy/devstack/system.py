"""Installing what the stack needs from Debian's packages, on a fresh machine where we are root."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Sequence

from deploy.devstack.process import StackError, run_checked

_updated = False


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_apt_packages(packages: Sequence[str], *, why: str) -> None:
    global _updated
    if not is_root() or shutil.which("apt-get") is None:
        raise StackError(f"{why}: install {' '.join(packages)} (could not do it: not root, or no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        run_checked(["apt-get", "update"], what="apt-get update", env=env, timeout=600)
        _updated = True
    run_checked(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        what=f"apt-get install {' '.join(packages)}",
        env=env,
        timeout=900,
    )


def ensure_system_user(name: str) -> str:
    """An unprivileged system account to run daemons that refuse root (PostgreSQL); created if absent."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        run_checked(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            what=f"creating the system user {name}",
        )
    return name
