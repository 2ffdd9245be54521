"""One local stack: Kafka (one broker or a KRaft cluster of three), PostgreSQL, an SMTP sink and the three
services, laid out in a directory of its own with its own ports.

`make up` uses the default layout (.run/stack/, the fixed ports of DESIGN.md); `make chaos` builds another
(.run/chaos/, free ports), so the two never touch each other. The layout is saved as layout.json in the
stack's directory: the supervisor, `status` and `down` read it back.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from deploy.devstack.kafka import (
    DEFAULT_LIBS_DIR,
    KafkaNode,
    broker_answers,
    kafka_node_process,
    kafka_process,
    replication_for,
    start_kafka,
    start_kafka_cluster,
)
from deploy.devstack.postgres import postgres_process, server_home, start_postgres
from deploy.devstack.process import (
    ManagedProcess,
    StackError,
    ensure_port_free,
    http_ok,
    port_is_open,
    run_checked,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DEFAULT_STACK_DIR = REPO_ROOT / ".run" / "stack"
DEFAULT_STORES_FILE = REPO_ROOT / "deploy" / "stores.dev.yaml"
SERVICE_NAMES = ("ingest", "segmenter", "notifier")
# Each owns a schema and an Alembic history; ingest has no database.
MIGRATED = ("segmenter", "notifier")
LAYOUT_FILE = "layout.json"
SUPERVISOR_STATE = "supervisor.json"


@dataclass(frozen=True)
class StackLayout:
    """Where a stack lives and which ports it uses. kafka: (port, controller port) per broker."""

    root: Path
    kafka: tuple[tuple[int, int], ...] = ((9092, 9093),)
    postgres_port: int = 55432
    smtp_port: int = 1025
    smtp_ui_port: int = 8025
    service_ports: tuple[int, int, int] = (8000, 8001, 8002)
    # The test shop and site the development registry's `demo` store is connected to (deploy/platforms).
    shopify_port: int = 8010
    woocommerce_port: int = 8011
    # The store registry the services read; None: $STORES_FILE, else deploy/stores.dev.yaml.
    stores_file: str | None = None
    # `make up` lets KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, SMTP_HOST+SMTP_PORT point elsewhere; chaos not.
    honour_env: bool = True
    # Extra environment for the services (e.g. a higher rate limit for a load generator).
    service_env: dict[str, str] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cluster(self) -> bool:
        return len(self.kafka) > 1

    def service_port(self, name: str) -> int:
        return self.service_ports[SERVICE_NAMES.index(name)]

    def service_url(self, name: str) -> str:
        return f"http://{HOST}:{self.service_port(name)}"

    @property
    def kafka_nodes(self) -> list[KafkaNode]:
        return [KafkaNode(i + 1, port, controller) for i, (port, controller) in enumerate(self.kafka)]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{HOST}:{port}" for port, _ in self.kafka)

    def save(self) -> None:
        data = asdict(self) | {"root": str(self.root)}
        (self.root / LAYOUT_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> StackLayout:
        """The layout saved in root, or the default one for root when none was saved yet."""
        try:
            data = json.loads((root / LAYOUT_FILE).read_text())
        except FileNotFoundError:
            return cls(root=root)
        return cls(
            root=Path(data["root"]),
            kafka=tuple((int(p), int(c)) for p, c in data["kafka"]),
            postgres_port=int(data["postgres_port"]),
            smtp_port=int(data["smtp_port"]),
            smtp_ui_port=int(data["smtp_ui_port"]),
            service_ports=tuple(int(p) for p in data["service_ports"]),  # type: ignore[arg-type]
            shopify_port=int(data.get("shopify_port", 8010)),
            woocommerce_port=int(data.get("woocommerce_port", 8011)),
            stores_file=data.get("stores_file"),
            honour_env=bool(data["honour_env"]),
            service_env={str(k): str(v) for k, v in data.get("service_env", {}).items()},
        )


def default_layout() -> StackLayout:
    return StackLayout.load(DEFAULT_STACK_DIR)


class Stack:
    """Start, supervise, inspect and stop the components of one layout. Every process is tracked by a
    pidfile in the layout's directory and stopped by that PID only."""

    def __init__(self, layout: StackLayout, console: Console | None = None) -> None:
        self.layout = layout
        self.console = console or Console(highlight=False)

    # -- handles ---------------------------------------------------------------------------------------

    def kafka_processes(self) -> list[ManagedProcess]:
        root, logs = self.layout.root, self.layout.logs
        if self.layout.cluster:
            return [
                kafka_node_process(root / "kafka", node.node_id, logs / f"kafka-{node.node_id}.log")
                for node in self.layout.kafka_nodes
            ]
        return [kafka_process(root / "kafka", logs / "kafka.log")]

    def postgres(self) -> ManagedProcess:
        return postgres_process(self.layout.root / "postgres", self.layout.logs / "postgres.log")

    def sink(self) -> ManagedProcess:
        root = self.layout.root
        return ManagedProcess("smtp-sink", root / "smtp-sink.pid", self.layout.logs / "smtp-sink.log")

    def platforms(self) -> ManagedProcess:
        root = self.layout.root
        return ManagedProcess("platforms", root / "platforms.pid", self.layout.logs / "platforms.log")

    def service(self, name: str) -> ManagedProcess:
        root = self.layout.root
        return ManagedProcess(name, root / f"{name}.pid", self.layout.logs / f"{name}.log")

    def supervisor(self) -> ManagedProcess:
        root = self.layout.root
        return ManagedProcess("supervisor", root / "supervisor.pid", self.layout.logs / "supervisor.log")

    def components(self) -> list[ManagedProcess]:
        """Every process `up` may have started, in start order (the supervisor last)."""
        return [
            *self.kafka_processes(),
            self.postgres(),
            self.sink(),
            self.platforms(),
            *(self.service(name) for name in SERVICE_NAMES),
            self.supervisor(),
        ]

    @property
    def sink_messages(self) -> Path:
        return self.layout.root / "smtp-sink" / "messages"

    @property
    def postgres_data(self) -> Path:
        return server_home(self.layout.root / "postgres") / "data"

    # -- environment -----------------------------------------------------------------------------------

    def _external(self, *names: str) -> bool:
        return self.layout.honour_env and all(os.environ.get(n) for n in names)

    def stack_env(self) -> dict[str, str]:
        """What the services are told, from the layout (and, for `make up`, the caller's overrides)."""
        layout = self.layout
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": layout.bootstrap_servers,
            "DATABASE_URL": f"postgresql+asyncpg://loyalty:loyalty@{HOST}:{layout.postgres_port}/loyalty",
            "SMTP_HOST": HOST,
            "SMTP_PORT": str(layout.smtp_port),
            "STORES_FILE": layout.stores_file or str(DEFAULT_STORES_FILE),
        }
        if layout.cluster:
            replication, min_isr = replication_for(len(layout.kafka))
            env["KAFKA_REPLICATION_FACTOR"] = str(replication)
            env["KAFKA_MIN_INSYNC_REPLICAS"] = str(min_isr)
        if layout.honour_env:
            for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "STORES_FILE"):
                if os.environ.get(name):
                    env[name] = os.environ[name]
            if self._external("SMTP_HOST", "SMTP_PORT"):
                env["SMTP_HOST"], env["SMTP_PORT"] = os.environ["SMTP_HOST"], os.environ["SMTP_PORT"]
        for index, name in enumerate(SERVICE_NAMES):
            env[f"{name.upper()}_HOST"] = HOST
            env[f"{name.upper()}_PORT"] = str(layout.service_ports[index])
        # How the services reach each other, and the base of the unsubscribe links: this stack's own.
        for name, value in (
            ("SEGMENTER_URL", layout.service_url("segmenter")),
            ("NOTIFIER_PUBLIC_URL", layout.service_url("notifier")),
        ):
            env[name] = os.environ[name] if layout.honour_env and os.environ.get(name) else value
        return env | layout.service_env

    def process_env(self) -> dict[str, str]:
        return {**os.environ, **self.stack_env(), "PYTHONUNBUFFERED": "1"}

    def local(self) -> list[str]:
        """The names of the components this stack runs itself (not pointed elsewhere by the environment)."""
        names = []
        if not self._external("KAFKA_BOOTSTRAP_SERVERS"):
            names += [p.name for p in self.kafka_processes()]
        if not self._external("DATABASE_URL"):
            names.append("postgres")
        if not self._external("SMTP_HOST", "SMTP_PORT"):
            names.append("smtp-sink")
        return [*names, "platforms", *SERVICE_NAMES]

    # -- starting --------------------------------------------------------------------------------------

    def _say(self, process: ManagedProcess, began: float, verb: str = "started") -> None:
        took = time.monotonic() - began
        self.console.print(f"[green]✓[/] {process.name} {verb} (pid {process.pid()}) in {took:.1f} s")

    def _say_running(self, process: ManagedProcess) -> None:
        self.console.print(f"[green]✓[/] {process.name} already running (pid {process.pid()})")

    def start_kafka(self, only: str | None = None) -> None:
        """Start the broker(s) not running; only: just that one (`kafka-2`), for a restart."""
        layout = self.layout
        if not layout.cluster:
            process = self.kafka_processes()[0]
            port, controller = layout.kafka[0]
            start_kafka(
                layout.root / "kafka", port, controller, libs_dir=DEFAULT_LIBS_DIR, log_file=process.logfile
            )
            return
        number = int(only.rpartition("-")[2]) if only else None
        start_kafka_cluster(
            layout.root / "kafka",
            layout.kafka_nodes,
            only=number,
            libs_dir=DEFAULT_LIBS_DIR,
            log_files={n.node_id: layout.logs / f"kafka-{n.node_id}.log" for n in layout.kafka_nodes},
        )

    def start_postgres(self) -> None:
        process = self.postgres()
        start_postgres(self.layout.root / "postgres", self.layout.postgres_port, log_file=process.logfile)

    def start_sink(self) -> None:
        process, layout = self.sink(), self.layout
        if process.is_running():
            return
        ensure_port_free(HOST, layout.smtp_port, "smtp-sink")
        ensure_port_free(HOST, layout.smtp_ui_port, "smtp-sink web UI")
        argv = [sys.executable, "-m", "deploy.devstack.smtp_sink", "--host", HOST]
        argv += ["--smtp-port", str(layout.smtp_port), "--http-port", str(layout.smtp_ui_port)]
        argv += ["--dir", str(self.sink_messages)]
        process.start(argv, cwd=REPO_ROOT)
        process.wait_for_port(HOST, layout.smtp_port, 30)
        process.wait_for_http(f"http://{HOST}:{layout.smtp_ui_port}/healthz", 30)

    def start_platforms(self) -> None:
        """The demo store's Shopify shop and WooCommerce site, so its coupons and consent take effect
        somewhere the demo can show (as the SMTP sink shows its emails)."""
        process, layout = self.platforms(), self.layout
        if process.is_running():
            return
        ensure_port_free(HOST, layout.shopify_port, "test Shopify shop")
        ensure_port_free(HOST, layout.woocommerce_port, "test WooCommerce site")
        argv = [sys.executable, "-m", "deploy.platforms", "--host", HOST]
        argv += ["--shopify-port", str(layout.shopify_port)]
        argv += ["--woocommerce-port", str(layout.woocommerce_port)]
        process.start(argv, cwd=REPO_ROOT)
        process.wait_for_http(f"http://{HOST}:{layout.shopify_port}/healthz", 30)
        process.wait_for_http(f"http://{HOST}:{layout.woocommerce_port}/healthz", 30)

    def start_service(self, name: str, env: Mapping[str, str] | None = None) -> None:
        """Start the service's process (not waiting for it to be ready)."""
        process = self.service(name)
        if process.is_running():
            return
        ensure_port_free(HOST, self.layout.service_port(name), name)
        argv = [sys.executable, "-m", f"services.{name}", "serve"]
        process.start(argv, env=env or self.process_env(), cwd=REPO_ROOT)

    def starter(self, name: str) -> Callable[[], None]:
        """How to (re)start the component called name: what the supervisor calls when it died."""
        if name.startswith("kafka"):
            return lambda: self.start_kafka(only=name)
        if name == "postgres":
            return self.start_postgres
        if name == "smtp-sink":
            return self.start_sink
        if name == "platforms":
            return self.start_platforms
        if name in SERVICE_NAMES:
            return lambda: self.start_service(name)
        raise ValueError(f"no component called {name!r}")

    def migrate(self, name: str, env: Mapping[str, str]) -> None:
        began = time.monotonic()
        log = self.layout.logs / f"migrate-{name}.log"
        try:
            output = run_checked(
                [sys.executable, "-m", f"services.{name}", "migrate"],
                what=f"services.{name} migrate",
                env=env,
                cwd=REPO_ROOT,
                timeout=300,
            )
        except StackError as exc:
            log.write_text(str(exc) + "\n")
            raise
        log.write_text(output)
        self.console.print(f"[green]✓[/] {name} migrations applied in {time.monotonic() - began:.1f} s")

    def up(self, timeout: float = 120.0, *, supervise: bool = True) -> None:
        """Start whatever is not running, return once every service is ready. Raises StackError."""
        layout = self.layout
        layout.logs.mkdir(parents=True, exist_ok=True)
        layout.save()
        local = self.local()
        self._up_dependencies(local)
        env = self.process_env()
        # For people and scripts that want to talk to this stack: `set -a; . .run/stack/env; set +a`.
        (layout.root / "env").write_text("".join(f"{k}={v}\n" for k, v in self.stack_env().items()))
        to_start = [name for name in SERVICE_NAMES if not self.service(name).is_running()]
        for name in to_start:
            ensure_port_free(HOST, layout.service_port(name), name)
        # Every schema is in place before any service starts: one may read what another's events produce.
        for name in to_start:
            if name in MIGRATED:
                self.migrate(name, env)
        started: dict[str, float] = {}
        for name in SERVICE_NAMES:
            if name in to_start:
                self.start_service(name, env)
                started[name] = time.monotonic()
            else:
                self._say_running(self.service(name))
        deadline = time.monotonic() + timeout
        for name in SERVICE_NAMES:
            process = self.service(name)
            process.wait_for_http(f"{layout.service_url(name)}/readyz", max(deadline - time.monotonic(), 1.0))
            if name in started:
                self._say(process, started[name], "ready")
        if supervise:
            self.start_supervisor(local)

    def _up_dependencies(self, local: list[str]) -> None:
        env_names = {"kafka": "KAFKA_BOOTSTRAP_SERVERS", "postgres": "DATABASE_URL", "smtp-sink": "SMTP_HOST"}
        steps: list[tuple[str, list[ManagedProcess], Callable[[], None]]] = [
            ("kafka", self.kafka_processes(), self.start_kafka),
            ("postgres", [self.postgres()], self.start_postgres),
            ("smtp-sink", [self.sink()], self.start_sink),
            ("platforms", [self.platforms()], self.start_platforms),
        ]
        for what, processes, start in steps:
            if processes[0].name not in local:
                self.console.print(f"[cyan]•[/] {what}: using {env_names[what]} from the environment")
                continue
            began = time.monotonic()
            running = [p.name for p in processes if p.is_running()]
            start()
            for process in processes:
                if process.name in running:
                    self._say_running(process)
                else:
                    self._say(process, began)

    def start_supervisor(self, names: list[str]) -> None:
        process = self.supervisor()
        if process.is_running():
            self._say_running(process)
            return
        (self.layout.root / SUPERVISOR_STATE).unlink(missing_ok=True)
        argv = [sys.executable, "-m", "deploy.devstack.supervisor", "--root", str(self.layout.root)]
        for name in names:
            argv += ["--component", name]
        process.start(argv, env=self.process_env(), cwd=REPO_ROOT)
        self.console.print(f"[green]✓[/] supervisor started (pid {process.pid()}): restarts what dies")

    # -- stopping and inspecting ----------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything `up` started: the supervisor first (so it restarts nothing), then in reverse."""
        for process in reversed(self.components()):
            pid = process.pid()
            if process.stop(timeout=30.0):
                self.console.print(f"[green]✓[/] stopped {process.name} (pid {pid})")
            else:
                self.console.print(f"[dim]• {process.name} was not running[/]")

    def readiness(self, process: ManagedProcess) -> tuple[bool, str]:
        layout, name = self.layout, process.name
        if name.startswith("kafka"):
            index = int(name.rpartition("-")[2]) - 1 if layout.cluster else 0
            address = f"{HOST}:{layout.kafka[index][0]}"
            return broker_answers(address), address
        if name == "postgres":
            address = f"{HOST}:{layout.postgres_port}"
            return port_is_open(HOST, layout.postgres_port), address
        if name == "smtp-sink":
            address = f"smtp {HOST}:{layout.smtp_port}, ui :{layout.smtp_ui_port}"
            return http_ok(f"http://{HOST}:{layout.smtp_ui_port}/healthz"), address
        if name == "platforms":
            address = f"shopify :{layout.shopify_port}, woocommerce :{layout.woocommerce_port}"
            return http_ok(f"http://{HOST}:{layout.shopify_port}/healthz"), address
        if name == "supervisor":
            return process.is_running(), str(layout.root / SUPERVISOR_STATE)
        return http_ok(f"{layout.service_url(name)}/readyz"), layout.service_url(name)

    def restarts(self) -> dict[str, int]:
        """Restarts per component since `up`, as the supervisor recorded them."""
        try:
            state = json.loads((self.layout.root / SUPERVISOR_STATE).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {name: int(entry.get("restarts", 0)) for name, entry in state.get("components", {}).items()}

    def all_ready(self) -> bool:
        return all(http_ok(f"{self.layout.service_url(n)}/readyz") for n in SERVICE_NAMES)
