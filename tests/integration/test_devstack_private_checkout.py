"""`make up` from a checkout closed to other users (a clone in root's 0700 home): PostgreSQL, which runs as
an unprivileged account when we are root, keeps its data and socket outside the checkout and starts."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import (
    OUTSIDE_HOMES,
    SYSTEM_USER,
    remove_server_data,
    server_home,
    start_postgres,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another account"),
]


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    """<tmp>/home (0700, root's) / checkout: the shape of `git clone ... /root/x/y`."""
    top = Path(tempfile.mkdtemp(prefix="loyaltyfunnel-private-"))
    home = top / "home"
    home.mkdir(mode=0o700)
    checkout = home / "checkout"
    checkout.mkdir()
    try:
        yield checkout
    finally:
        remove_server_data(checkout / ".run" / "stack" / "postgres")
        shutil.rmtree(top, ignore_errors=True)


def test_postgres_starts_from_a_checkout_its_account_cannot_enter(private_checkout: Path) -> None:
    run_dir = private_checkout / ".run" / "stack" / "postgres"
    server = start_postgres(run_dir, free_ports(1)[0], fast=True, die_with_parent=True)
    try:
        assert server.psql("SELECT current_database()", database="loyalty").strip() == "loyalty"
        home = server_home(run_dir)
        assert home.parent == OUTSIDE_HOMES
        info = home.stat()
        assert info.st_uid == pwd.getpwnam(SYSTEM_USER).pw_uid
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert (home / "data" / "PG_VERSION").is_file()
        # The pidfile and the log stay with the checkout, where `make down` and `make status` look.
        assert server.process.pidfile.parent == run_dir
    finally:
        server.stop()
    remove_server_data(run_dir)
    assert not home.exists()
