"""What a service's process imports to serve: what it never runs there stays out of its memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.compiled import REPO_ROOT


@pytest.mark.parametrize("service", ["ingest", "segmenter", "notifier"])
def test_serving_does_not_import_the_migration_tool(service: str) -> None:
    # Migrations run in `python -m services.<name> migrate`, a process of its own (the compose file's
    # `migrate` step, the local stack's); why serving must not load Alembic: shared/db.py.
    probe = (
        f"import sys, services.{service}.__main__\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'mako'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
