"""Apache Kafka 3.9 in KRaft mode from the jars deploy/kafka/pom.xml fetches from Maven Central."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import fcntl
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from deploy.devstack.process import ManagedProcess, StackError, ensure_port_free, port_is_open, run_checked
from deploy.devstack.system import ensure_apt_packages

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_DIR = REPO_ROOT / "deploy" / "kafka"
DEFAULT_LIBS_DIR = REPO_ROOT / ".run" / "kafka-libs"
POM = KAFKA_DIR / "pom.xml"
SERVER_PROPERTIES = KAFKA_DIR / "server.properties"
LOG4J_PROPERTIES = KAFKA_DIR / "log4j.properties"
HOST = "127.0.0.1"
# A broker needs far less than the JVM's default quarter of RAM; tests run it next to Postgres and pytest.
JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
_STAMP = ".pom.sha256"

T = TypeVar("T")


@dataclass(frozen=True)
class KafkaBroker:
    process: ManagedProcess
    port: int
    controller_port: int
    run_dir: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def stop(self, timeout: float = 30.0) -> bool:
        return self.process.stop(timeout)


def _ensure_java_and_maven() -> None:
    if shutil.which("java") is None:
        ensure_apt_packages(["openjdk-17-jre-headless"], why="Kafka needs a Java runtime")
    if shutil.which("mvn") is None:
        ensure_apt_packages(["maven"], why="Kafka's jars are fetched with Maven")


def ensure_kafka_jars(libs_dir: Path = DEFAULT_LIBS_DIR) -> Path:
    """Fetch the broker's jars into libs_dir unless the jars for the current pom.xml are there already."""
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()
    stamp = libs_dir / _STAMP
    libs_dir.parent.mkdir(parents=True, exist_ok=True)
    # `make up` and a test session may both get here on a fresh clone; one fetches, the other waits.
    with (libs_dir.parent / f".{libs_dir.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (
            stamp.is_file()
            and stamp.read_text().strip() == pom_hash
            and any(libs_dir.glob("kafka_2.13-*.jar"))
        ):
            return libs_dir
        _fetch_jars(libs_dir)
        stamp.write_text(pom_hash + "\n")
    return libs_dir


def _fetch_jars(libs_dir: Path) -> None:
    _ensure_java_and_maven()
    # A version bump must not leave the old jars on the classpath next to the new ones.
    if libs_dir.exists():
        shutil.rmtree(libs_dir)
    libs_dir.mkdir(parents=True)
    run_checked(
        ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={libs_dir}"],
        what="fetching Kafka jars with Maven",
        timeout=900,
    )
    if not any(libs_dir.glob("kafka_2.13-*.jar")):
        raise StackError(f"Maven finished but no kafka_2.13 jar is in {libs_dir}")


def kafka_process(run_dir: Path, log_file: Path | None = None) -> ManagedProcess:
    """The handle for the broker of run_dir, whether or not it is running (for status and down)."""
    return ManagedProcess("kafka", run_dir / "kafka.pid", log_file or run_dir / "kafka.log")


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node (broker and controller in one process) of a cluster, by its id and ports."""

    node_id: int
    port: int
    controller_port: int


def replication_for(nodes: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a cluster of `nodes`: every partition on every node,
    and an acknowledged write on all but one of them, so one node may die without losing or stopping."""
    return nodes, max(1, nodes - 1)


def _render_properties(
    run_dir: Path, node: KafkaNode, voters: Sequence[KafkaNode], internal_partitions: int
) -> Path:
    text = SERVER_PROPERTIES.read_text()
    replication, min_isr = replication_for(len(voters))
    for key, value in {
        "@NODE_ID@": str(node.node_id),
        "@VOTERS@": ",".join(f"{v.node_id}@{HOST}:{v.controller_port}" for v in voters),
        "@PORT@": str(node.port),
        "@CONTROLLER_PORT@": str(node.controller_port),
        "@LOG_DIR@": str(run_dir / "data"),
        "@INTERNAL_PARTITIONS@": str(internal_partitions),
        "@REPLICATION@": str(replication),
        "@MIN_ISR@": str(min_isr),
    }.items():
        text = text.replace(key, value)
    target = run_dir / "server.properties"
    target.write_text(text)
    return target


def _configured_port(run_dir: Path) -> int | None:
    try:
        text = (run_dir / "server.properties").read_text()
    except FileNotFoundError:
        return None
    found = re.search(r"^listeners=PLAINTEXT://[^:]+:(\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _cluster_id(run_dir: Path) -> str:
    """A stable cluster id per run_dir, in the form StorageTool expects (url-safe base64 of a UUID)."""
    path = run_dir / "cluster-id"
    if path.is_file():
        return path.read_text().strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    path.write_text(cluster_id + "\n")
    return cluster_id


def _java_env() -> dict[str, str]:
    env = dict(os.environ)
    # Kafka's own scripts honour these; the plain `java` command below must not pick up a user's settings.
    for name in ("KAFKA_OPTS", "KAFKA_HEAP_OPTS", "JAVA_TOOL_OPTIONS", "CLASSPATH"):
        env.pop(name, None)
    return env


def _run_in_fresh_loop(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion even when the caller is itself inside a running event loop."""

    async def main() -> T:
        return await factory()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def _broker_answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient  # deferred: only the readiness check needs aiokafka

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) != -1
    except Exception:
        return False
    finally:
        await admin.close()


def broker_answers(bootstrap: str) -> bool:
    """True when the broker serves metadata with itself registered and a controller elected."""
    host, _, port = bootstrap.rpartition(":")
    if not port_is_open(host, int(port)):
        return False
    return _run_in_fresh_loop(lambda: _broker_answers(bootstrap))


def start_kafka(
    run_dir: Path,
    port: int,
    controller_port: int,
    *,
    libs_dir: Path = DEFAULT_LIBS_DIR,
    log_file: Path | None = None,
    internal_partitions: int = 10,
    timeout: float = 120.0,
    die_with_parent: bool = False,
) -> KafkaBroker:
    """Start (or find already running) the broker whose state lives in run_dir; return once it answers."""
    run_dir = run_dir.resolve()
    node = KafkaNode(1, port, controller_port)
    broker = _launch(run_dir, run_dir, node, [node], libs_dir, log_file, internal_partitions, die_with_parent)
    broker.process.wait_until(
        lambda: broker_answers(broker.bootstrap_servers), "the broker answered", timeout
    )
    return broker


def cluster_node_dir(run_dir: Path, node_id: int) -> Path:
    return run_dir.resolve() / f"node-{node_id}"


def kafka_node_process(run_dir: Path, node_id: int, log_file: Path | None = None) -> ManagedProcess:
    """The handle for node node_id of the cluster in run_dir (named kafka-<id>)."""
    node_dir = cluster_node_dir(run_dir, node_id)
    return ManagedProcess(f"kafka-{node_id}", node_dir / "kafka.pid", log_file or node_dir / "kafka.log")


def start_kafka_cluster(
    run_dir: Path,
    nodes: Sequence[KafkaNode],
    *,
    only: int | None = None,
    libs_dir: Path = DEFAULT_LIBS_DIR,
    log_files: dict[int, Path] | None = None,
    internal_partitions: int = 10,
    timeout: float = 120.0,
    die_with_parent: bool = False,
) -> list[KafkaBroker]:
    """Start (or find running) a KRaft cluster of len(nodes) nodes under run_dir/node-<id>/, every node a
    controller voter; return once each answers. only: (re)start that node alone, the others running.

    Every node is launched before any is waited for: none answers until a majority of voters is up."""
    run_dir = run_dir.resolve()
    brokers = []
    for node in nodes:
        if only is not None and node.node_id != only:
            continue
        log_file = (log_files or {}).get(node.node_id)
        brokers.append(
            _launch(
                cluster_node_dir(run_dir, node.node_id),
                run_dir,
                node,
                nodes,
                libs_dir,
                log_file,
                internal_partitions,
                die_with_parent,
                name=f"kafka-{node.node_id}",
            )
        )
    for broker in brokers:
        broker.process.wait_until(
            lambda b=broker: broker_answers(b.bootstrap_servers),  # type: ignore[misc]
            "the broker answered",
            timeout,
        )
    return brokers


def _launch(
    run_dir: Path,
    cluster_dir: Path,
    node: KafkaNode,
    voters: Sequence[KafkaNode],
    libs_dir: Path,
    log_file: Path | None,
    internal_partitions: int,
    die_with_parent: bool,
    name: str = "kafka",
) -> KafkaBroker:
    """Start node's process unless it runs already; do not wait for it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess(name, run_dir / "kafka.pid", log_file or run_dir / "kafka.log")
    broker = KafkaBroker(process, node.port, node.controller_port, run_dir)
    if process.is_running():
        running_port = _configured_port(run_dir)
        if running_port != node.port:
            raise StackError(
                f"the broker of {run_dir} is already running, on port {running_port}, not {node.port}"
            )
        return broker
    ensure_port_free(HOST, node.port, name)
    ensure_port_free(HOST, node.controller_port, f"{name} controller")
    ensure_kafka_jars(libs_dir)
    properties = _render_properties(run_dir, node, voters, internal_partitions)
    classpath = f"{libs_dir.resolve()}/*"
    java = ["java", *JVM_OPTIONS, f"-Dlog4j.configuration=file:{LOG4J_PROPERTIES}", "-cp", classpath]
    if not (run_dir / "data" / "meta.properties").is_file():
        run_checked(
            # `--cluster-id=ID`, not `-t ID`: a base64 id may start with '-', taken for an option.
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={_cluster_id(cluster_dir)}",
                "-c",
                str(properties),
            ],
            what="formatting the Kafka log directory",
            env=_java_env(),
            timeout=120,
        )
    process.start(
        [*java, "kafka.Kafka", str(properties)], env=_java_env(), cwd=run_dir, die_with_parent=die_with_parent
    )
    return broker
