"""A real PostgreSQL's databases tell their collation (shared.db_collation), a service reads it as soon as
the server answers, and `migrate` warns when a database is not in C."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import (
    HOST,
    ROLE,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    PostgresServer,
    start_postgres,
)
from shared.db_collation import COLLATION, Collation, read_collation, report_database_collation
from shared.settings import REPO_ROOT

pytestmark = pytest.mark.integration


def _create(server: PostgresServer, name: str, locale_clause: str) -> str:
    server.psql(
        f"DROP DATABASE IF EXISTS {name};\n"
        f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE template0 ENCODING 'UTF8' {locale_clause};\n"
    )
    return server.database_url(name)


async def _read(url: str) -> Collation:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        return await read_collation(engine)
    finally:
        await engine.dispose()


async def test_the_stacks_database_is_in_c(engine: AsyncEngine) -> None:
    collation = await read_collation(engine)
    assert collation == Collation("C", "libc")
    assert collation.compares_bytes


async def test_an_icu_database_and_a_libc_c_utf8_one_are_told_apart_from_c(
    postgres_server: PostgresServer,
) -> None:
    icu = _create(postgres_server, "collation_icu", "LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    c_utf8 = _create(postgres_server, "collation_c_utf8", "LOCALE 'C.UTF-8'")
    on_icu, on_c_utf8 = await _read(icu), await _read(c_utf8)
    assert on_icu == Collation("en-US", "icu")
    assert on_c_utf8 == Collation("C.UTF-8", "libc")
    assert not on_icu.compares_bytes
    assert not on_c_utf8.compares_bytes


def _sample(collation: str, provider: str, compares_bytes: str) -> float | None:
    labels = {"collation": collation, "provider": provider, "compares_bytes": compares_bytes}
    return REGISTRY.get_sample_value("database_collation_info", labels)


async def test_a_service_reports_the_collation_once_a_late_database_answers(stack_dir: Path) -> None:
    run_dir = stack_dir / "pg-collation-late"
    [port] = free_ports(1)
    # As the superuser, on the database initdb makes: both exist from the moment the server accepts logins.
    # The stack's role and database are created a moment later (start_postgres), and a worker that logged
    # in between would be refused for a role that does not exist yet, which is not an outage.
    url = f"postgresql+asyncpg://{SUPERUSER}:{SUPERUSER_PASSWORD}@{HOST}:{port}/postgres"
    engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 2})
    COLLATION.clear()
    # The worker starts first, as in a service whose database is not up yet: it must wait, not fail.
    worker = asyncio.create_task(report_database_collation(engine, wait_for_outages=True))
    try:
        await asyncio.sleep(1.0)
        assert not worker.done()
        server = await asyncio.to_thread(start_postgres, run_dir, port, fast=True, die_with_parent=True)
        try:
            await asyncio.wait_for(worker, 30)
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        worker.cancel()
        await engine.dispose()
    assert _sample("C", "libc", "true") == 1.0


def _migrate_output(database_url: str) -> list[dict[str, object]]:
    env = {**os.environ, "DATABASE_URL": database_url, "ENVIRONMENT": "test", "LOG_LEVEL": "INFO"}
    done = subprocess.run(
        [sys.executable, "-m", "services.segmenter", "migrate"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


async def test_migrate_warns_when_the_database_is_not_in_c(postgres_server: PostgresServer) -> None:
    icu = _create(
        postgres_server, "collation_migrate_icu", "LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    )
    plain = _create(postgres_server, "collation_migrate_c", "LOCALE 'C'")
    on_icu = await asyncio.to_thread(_migrate_output, icu)
    on_c = await asyncio.to_thread(_migrate_output, plain)
    [warning] = [line for line in on_icu if line.get("event") == "database_collation_not_c"]
    assert (warning["collation"], warning["provider"], warning["level"]) == ("en-US", "icu", "warning")
    assert not [line for line in on_c if line.get("event") == "database_collation_not_c"]
    assert [line["collation"] for line in on_c if line.get("event") == "database_collation"] == ["C"]
