"""The benchmark's own stack: Kafka, PostgreSQL, an SMTP sink and the services, on free loopback ports
under .run/bench/, so a run never touches the shared `make up` stack (.run/stack) or a test session.

Everything started here dies with the benchmark (PR_SET_PDEATHSIG) and is stopped by PID at the end.
PostgreSQL runs with durable settings, like `make up`'s, plus `track_commit_timestamp`, which the
end-to-end figure read until 2026-11-30 (it now reads the stage change's record on funnel-events, see
bench/e2e_bench.py) and which stays on so that runs compare with earlier ones.

The development registry's `demo` store is connected to a Shopify shop and a WooCommerce site (its coupons are
created there before each email), which `make up` runs on fixed ports. The benchmark runs the same test shop
and site (deploy/platforms) on ports of its own, with the rate limit of the Shopify plan a store of this
traffic has, and gives the services a copy of the registry pointing there: a real deployment places those
coupons, it does not defer them to a shop that is not there.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.smtp_sink import SmtpSink
from deploy.devstack.kafka import KafkaBroker, kafka_process, start_kafka
from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import PostgresServer, postgres_process, remove_server_data, start_postgres
from deploy.devstack.process import ManagedProcess, StackError, run_checked

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / ".run" / "bench"
HOST = "127.0.0.1"
STORES_FILE = REPO_ROOT / "deploy" / "stores.dev.yaml"
# Where the development registry connects the demo store (`make up`'s test shop and site, deploy/platforms).
DEV_PLATFORM_URLS = ("http://127.0.0.1:8010/", "http://127.0.0.1:8011/")
# Shopify Plus's GraphQL Admin rate limit, 1,000 cost points a second (shopify.dev, "GraphQL Admin API rate
# limits"): a store taking 1,000 events a second is on Plus; the test shop's default is a Standard plan's.
SHOPIFY_RESTORE_RATE = 1000.0
SHOPIFY_BUCKET = 2000.0
PARTITIONS = 6
# What a durable server has (PostgreSQL's defaults), and further settings the results report.
DURABLE_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}
REPORTED_SETTINGS = (
    "wal_sync_method",
    "shared_buffers",
    "max_wal_size",
    "wal_compression",
    "wal_level",
    "track_commit_timestamp",
)


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Service:
    name: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def peak_rss_mb(self) -> float:
        pid = self.process.pid()
        return peak_rss_mb(pid) if pid else 0.0


@dataclass
class BenchStack:
    root: Path
    kafka: KafkaBroker
    postgres: PostgresServer
    smtp: SmtpSink
    platforms: ManagedProcess
    stores_file: Path
    lock: IO[str] | None = None
    services: list[Service] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path = BENCH_DIR) -> BenchStack:
        root.mkdir(parents=True, exist_ok=True)
        # Two benchmarks at once would share this directory and stop each other's servers.
        lock = (root / ".lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StackError(f"another benchmark is running (it holds {root / '.lock'})") from None
        for run_dir, process in ((root / "kafka", kafka_process), (root / "postgres", postgres_process)):
            leftover = process(run_dir)
            if leftover.is_running():  # a benchmark killed outright: its own pidfile, its own process
                leftover.stop()
            # Postgres's data may live outside the checkout (a private clone): remove it there too.
            remove_server_data(run_dir)
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        kafka_port, controller_port, pg_port, smtp_port, shop_port, site_port = free_ports(6)
        kafka = start_kafka(
            root / "kafka", kafka_port, controller_port, internal_partitions=4, die_with_parent=True
        )
        try:
            postgres = start_postgres(root / "postgres", pg_port, die_with_parent=True)
            # Only a restart applies it. Kept, though the end-to-end figure no longer reads it, so that runs
            # compare with earlier ones (it adds a few bytes of WAL per commit).
            postgres.psql("ALTER SYSTEM SET track_commit_timestamp = on;")
            postgres.stop()
            postgres = start_postgres(root / "postgres", pg_port, die_with_parent=True)
        except BaseException:
            kafka.stop()
            raise
        smtp = SmtpSink(HOST, smtp_port)
        smtp.start()
        try:
            platforms, stores_file = _start_platforms(root, shop_port, site_port)
        except BaseException:
            smtp.stop()
            postgres.stop()
            kafka.stop()
            raise
        return cls(root, kafka, postgres, smtp, platforms, stores_file, lock=lock)

    def postgres_durability(self) -> dict[str, str]:
        """The server's settings that decide what a commit survives: the benchmark refuses to measure with
        any of them traded for speed (see bench/README.md, "Honest settings")."""
        names = ", ".join(f"'{n}'" for n in (*DURABLE_SETTINGS, *REPORTED_SETTINGS))
        query = f"SELECT name, setting FROM pg_settings WHERE name IN ({names}) ORDER BY name"  # noqa: S608
        rows = self.postgres.psql(query)
        found = dict(line.split("|", 1) for line in rows.splitlines() if "|" in line)
        traded = {k: found.get(k) for k, wanted in DURABLE_SETTINGS.items() if found.get(k) != wanted}
        if traded:
            raise StackError(f"the benchmark's PostgreSQL is not durable: {traded}")
        return found

    def stop(self) -> None:
        for service in self.services:
            service.process.stop()
        self.smtp.stop()
        self.platforms.stop()
        self.postgres.stop()
        self.kafka.stop()
        if self.lock is not None:
            self.lock.close()  # releases the flock

    # -- databases and topics -------------------------------------------------------------------------

    def env(self, database_url: str | None = None, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
            "DATABASE_URL": database_url or self.postgres.url,
            "SMTP_HOST": HOST,
            "SMTP_PORT": str(self.smtp.port),
            "STORES_FILE": str(self.stores_file),
            # The per-store rate limit guards a pipeline against one runaway store: here that store is us.
            "INGEST_RATE_LIMIT_PER_SECOND": "1000000000",
            "INGEST_RATE_LIMIT_BURST": "1000000000",
            # Likewise the per-client-address limit (1,000 requests/s by default): every request of the
            # load generator comes from 127.0.0.1, so it would answer 429 to most webhooks past 1,000/s.
            "RATE_LIMIT_PER_CLIENT_PER_SECOND": "0",
            # A store taking 1,000 events a second sends about 100 welcome emails a second. The sender keeps
            # one message in flight per SMTP connection, and a message is four round trips (MAIL, RCPT, DATA
            # and its content), so 4 connections (the default) carried about 30 a second on this loaded
            # machine (about 100 ms a message, most of it waiting for the event loops of both ends): such a
            # store runs more connections to its relay, as it has the Shopify plan of its traffic.
            "SMTP_CONNECTIONS": "16",
        }
        return env | extra

    def fresh_database(self, name: str, services: tuple[str, ...] = ("segmenter", "notifier")) -> str:
        self.postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")
        url = self.postgres.create_database(name)
        for service in services:
            run_checked(
                [sys.executable, "-m", f"services.{service}", "migrate"],
                what=f"{service} migrate",
                env=self.env(url),
                cwd=REPO_ROOT,
                timeout=300,
            )
        return url

    def recreate_topics(self, topics: list[str]) -> None:
        asyncio.run(_recreate_topics(self.kafka.bootstrap_servers, topics))

    # -- services -------------------------------------------------------------------------------------

    def start_service(
        self, name: str, env: dict[str, str], timeout: float = 90.0, instance: int = 0
    ) -> Service:
        port = free_ports(1)[0]
        env = env | {f"{name.upper()}_HOST": HOST, f"{name.upper()}_PORT": str(port)}
        label = f"{name}-{instance}" if instance else name
        process = ManagedProcess(label, self.root / f"{label}.pid", self.root / "logs" / f"{label}.log")
        process.start(
            [sys.executable, "-m", f"services.{name}", "serve"], env=env, cwd=REPO_ROOT, die_with_parent=True
        )
        service = Service(name, port, process)
        self.services.append(service)
        if timeout > 0:
            process.wait_for_http(f"{service.url}/readyz", timeout)
        return service

    def stop_service(self, service: Service) -> None:
        service.process.stop()
        self.services.remove(service)


def _start_platforms(root: Path, shop_port: int, site_port: int) -> tuple[ManagedProcess, Path]:
    """The test shop and site on free ports, and the development registry pointing at them."""
    process = ManagedProcess("platforms", root / "platforms.pid", root / "logs" / "platforms.log")
    if process.is_running():  # a benchmark killed outright: its own pidfile, its own process
        process.stop()
    argv = [sys.executable, "-m", "deploy.platforms", "--host", HOST]
    argv += ["--shopify-port", str(shop_port), "--woocommerce-port", str(site_port)]
    argv += ["--shopify-restore-rate", str(SHOPIFY_RESTORE_RATE), "--shopify-bucket", str(SHOPIFY_BUCKET)]
    process.start(argv, cwd=REPO_ROOT, die_with_parent=True)
    try:
        process.wait_for_http(f"http://{HOST}:{shop_port}/healthz", 60)
        process.wait_for_http(f"http://{HOST}:{site_port}/healthz", 60)
    except BaseException:
        process.stop()
        raise
    # The registry as the services read it, with the demo store's platform addresses moved to these ports
    # and template folders made absolute (they are relative to the registry file, which moves here).
    registry = yaml.safe_load(STORES_FILE.read_text())
    ports = (shop_port, site_port)
    moved = {url: f"http://{HOST}:{port}/" for url, port in zip(DEV_PLATFORM_URLS, ports, strict=True)}
    for store in registry["stores"].values():
        for platform, key in (("shopify", "admin_api_url"), ("woocommerce", "api_url")):
            url = (store.get(platform) or {}).get(key)
            for dev, here in moved.items():
                if url and url.startswith(dev):
                    store[platform][key] = here + url.removeprefix(dev)
        if store.get("templates_dir"):
            store["templates_dir"] = str(STORES_FILE.parent / store["templates_dir"])
    stores_file = root / "stores.yaml"
    stores_file.write_text(yaml.safe_dump(registry, allow_unicode=True, sort_keys=False))
    return process, stores_file


async def _recreate_topics(bootstrap: str, topics: list[str]) -> None:
    """Delete and create again: each phase starts from empty topics, without restarting the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = [t for t in topics if t in set(await admin.list_topics())]
        if existing:
            await admin.delete_topics(existing)
            for _ in range(100):
                if not set(existing) & set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.1)
        new = [NewTopic(name=t, num_partitions=PARTITIONS, replication_factor=1) for t in topics]
        for attempt in range(50):
            try:
                await admin.create_topics(new)
                return
            except Exception:  # the deletion may still be in progress on the broker
                if attempt == 49:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
