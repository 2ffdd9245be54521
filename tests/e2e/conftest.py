"""The three services as separate processes, as `make up` runs them, against the test session's own
Kafka, PostgreSQL and SMTP server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import PostgresServer
from deploy.devstack.process import ManagedProcess
from deploy.platforms import shopify_admin, woocommerce
from deploy.platforms.server import serving
from shared.settings import REPO_ROOT
from tests.fixtures.stack import SmtpServer

SERVICES = ("ingest", "segmenter", "notifier")


@dataclass(frozen=True)
class Platforms:
    """The demo store's test shop and site (deploy/platforms), on free ports, with their state."""

    shopify_url: str
    shop: shopify_admin.ShopState
    woocommerce_url: str
    site: woocommerce.SiteState


@pytest.fixture(scope="session")
def platforms() -> Iterator[Platforms]:
    shop, site = shopify_admin.ShopState(), woocommerce.SiteState()
    with (
        serving(shopify_admin.create_app(shop)) as shopify_url,
        serving(woocommerce.create_app(site)) as woocommerce_url,
    ):
        yield Platforms(shopify_url, shop, woocommerce_url, site)


def registry_for(platforms: Platforms, directory: Path) -> Path:
    """The development registry with the demo store pointed at this session's test shop and site (make up
    runs them on fixed ports; tests take free ones)."""
    document = yaml.safe_load((REPO_ROOT / "deploy" / "stores.dev.yaml").read_text())
    demo = document["stores"]["demo"]
    demo["shopify"]["admin_api_url"] = f"{platforms.shopify_url}/admin/api/2025-10/graphql.json"
    demo["woocommerce"]["api_url"] = f"{platforms.woocommerce_url}/wp-json/wc/v3/"
    if demo.get("templates_dir"):  # relative to the registry file, which moves here
        demo["templates_dir"] = str(REPO_ROOT / "deploy" / demo["templates_dir"])
    path = directory / "stores.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass(frozen=True)
class RunningServices:
    ingest: str
    segmenter: str
    notifier: str
    env: dict[str, str]
    logs: dict[str, Path]


@pytest.fixture(scope="session")
def services(
    kafka_bootstrap: str,
    postgres_server: PostgresServer,
    smtp_server: SmtpServer,
    platforms: Platforms,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServices]:
    run_dir = tmp_path_factory.mktemp("services")
    # A database of their own: the running services' relay and sender must not take the integration
    # tests' outbox rows and messages.
    database_url = postgres_server.create_database("e2e")
    ports = dict(zip(SERVICES, free_ports(3), strict=True))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": database_url,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "STORES_FILE": str(registry_for(platforms, run_dir)),
        "ENVIRONMENT": "test",
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        "SEGMENTER_URL": f"http://127.0.0.1:{ports['segmenter']}",
        "NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{ports['notifier']}",
    }
    for name in ("segmenter", "notifier"):
        subprocess.run(
            [sys.executable, "-m", f"services.{name}", "migrate"], env=env, cwd=REPO_ROOT, check=True
        )
    processes = {
        name: ManagedProcess(name, run_dir / f"{name}.pid", run_dir / f"{name}.log") for name in SERVICES
    }
    try:
        for name, process in processes.items():
            process.start(
                [sys.executable, "-m", f"services.{name}", "serve"],
                env=env,
                cwd=REPO_ROOT,
                die_with_parent=True,
            )
        for name, process in processes.items():
            process.wait_for_http(f"http://127.0.0.1:{ports[name]}/readyz", timeout=90)
        yield RunningServices(
            **{name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
            env=env,
            logs={name: p.logfile for name, p in processes.items()},
        )
    finally:
        for process in reversed(processes.values()):
            process.stop(timeout=15)
