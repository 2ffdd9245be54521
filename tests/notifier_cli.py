"""`python -m services.notifier reload` run as an operator runs it: a process of its own, its output kept."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from shared.settings import REPO_ROOT


def run_reload(env: Mapping[str, str], *, wait_seconds: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.notifier", "reload", "--wait-seconds", str(wait_seconds)],
        env=dict(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
