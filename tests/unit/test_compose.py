"""No Docker engine runs on our machines, so this keeps docker-compose.yml honest against DESIGN.md."""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from deploy.devstack.postgres import INITDB_LOCALE
from shared.settings import REPO_ROOT, KafkaSettings

APP_PORTS = {"ingest": 8000, "segmenter": 8001, "notifier": 8002}
NEEDS = {
    "ingest": {"KAFKA_BOOTSTRAP_SERVERS", "STORES_FILE"},
    "segmenter": {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "STORES_FILE"},
    "notifier": {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "STORES_FILE", "SMTP_HOST", "SMTP_PORT"},
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return data


def test_every_component_is_a_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "postgres", "smtp", "migrate", "platforms", *APP_PORTS}


def test_kafka_is_apache_kafka_3_9_in_kraft_mode(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:3.9.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "healthcheck" in kafka


@pytest.mark.parametrize(("name", "port"), APP_PORTS.items())
def test_services_publish_their_design_port_and_variables(
    compose: dict[str, Any], name: str, port: int
) -> None:
    service = compose["services"][name]
    assert f"127.0.0.1:{port}:{port}" in service["ports"]
    env = service["environment"]
    assert NEEDS[name] <= set(env), f"{name} lacks {NEEDS[name] - set(env)}"
    assert env[f"{name.upper()}_PORT"] == str(port)
    assert env["PORT_TO_CHECK"] == str(port)
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["command"] == ["python", "-m", f"services.{name}", "serve"]


@pytest.mark.parametrize("name", APP_PORTS)
def test_services_wait_for_healthy_dependencies(compose: dict[str, Any], name: str) -> None:
    depends = compose["services"][name]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    if name != "ingest":
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_runs_both_histories_after_postgres(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    command = " ".join(migrate["command"])
    assert "services.segmenter migrate" in command
    assert "services.notifier migrate" in command
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_smtp_sink_has_a_web_ui_and_the_notifier_points_at_it(compose: dict[str, Any]) -> None:
    assert "127.0.0.1:8025:8025" in compose["services"]["smtp"]["ports"]
    env = compose["services"]["notifier"]["environment"]
    assert (env["SMTP_HOST"], env["SMTP_PORT"]) == ("smtp", "1025")


def test_the_demo_stores_test_shop_and_site_answer_where_the_registry_points_the_notifier(
    compose: dict[str, Any],
) -> None:
    """The image's registry (STORES_FILE) connects `demo` to http://127.0.0.1:<port>: inside the notifier's
    container that is its own loopback, so the test shop and site must run in its network namespace, on
    those very ports."""
    notifier = compose["services"]["notifier"]
    stores_file = notifier["environment"]["STORES_FILE"]
    assert stores_file.startswith("/app/")
    demo = yaml.safe_load((REPO_ROOT / stores_file.removeprefix("/app/")).read_text())["stores"]["demo"]
    wanted = {
        "--shopify-port": urlsplit(demo["shopify"]["admin_api_url"]),
        "--woocommerce-port": urlsplit(demo["woocommerce"]["api_url"]),
    }
    assert {url.hostname for url in wanted.values()} == {"127.0.0.1"}

    platforms = compose["services"]["platforms"]
    assert platforms["network_mode"] == "service:notifier"
    assert "ports" not in platforms, "a service in another's network namespace publishes through it"
    assert platforms["depends_on"]["notifier"]["condition"] == "service_started"
    command = platforms["command"]
    assert command[:3] == ["python", "-m", "deploy.platforms"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    for option, url in wanted.items():
        assert options[option] == str(url.port)
        # Published on the host's loopback as `make up` does, so the demo's codes can be looked at there.
        assert f"127.0.0.1:{url.port}:{url.port}" in notifier["ports"]
    # Bound on every address of the namespace: the published ports arrive on its network interface.
    assert options["--host"] == "0.0.0.0"  # noqa: S104
    assert "/healthz" in " ".join(platforms["healthcheck"]["test"])


# -- the three-broker override (docker compose -f docker-compose.yml -f docker-compose.kafka-cluster.yml) --

CLUSTER = ("kafka", "kafka-2", "kafka-3")


def _merge(base: Any, override: Any) -> Any:
    """Compose's rule for an override file: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return override


@pytest.fixture(scope="module")
def cluster(compose: dict[str, Any]) -> dict[str, Any]:
    override = yaml.safe_load((REPO_ROOT / "docker-compose.kafka-cluster.yml").read_text())
    assert set(override["services"]) <= set(compose["services"]) | set(CLUSTER)
    merged: dict[str, Any] = _merge(compose, override)
    return merged


def test_the_cluster_has_three_kraft_voters_of_one_cluster(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    envs = [services[name]["environment"] for name in CLUSTER]
    assert [int(env["KAFKA_NODE_ID"]) for env in envs] == [1, 2, 3]
    for name, env in zip(CLUSTER, envs, strict=True):
        assert services[name]["image"].startswith("apache/kafka:3.9.")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert services[name]["restart"] == "unless-stopped"
        assert "healthcheck" in services[name]
    assert {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs} == {
        "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"
    }
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    volumes = {v.split(":")[0] for name in CLUSTER for v in services[name]["volumes"]}
    assert len(volumes) == 3, "each broker keeps its own log directory"
    assert volumes <= set(cluster["volumes"])


def test_every_partition_is_on_three_brokers_and_a_write_on_two(cluster: dict[str, Any]) -> None:
    for name in CLUSTER:
        env = cluster["services"][name]["environment"]
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2


@pytest.mark.parametrize("name", [*APP_PORTS, "migrate"])
def test_the_services_know_every_broker_and_create_replicated_topics(
    cluster: dict[str, Any], name: str
) -> None:
    service = cluster["services"][name]
    env = service["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"].split(",") == [f"{b}:9092" for b in CLUSTER]
    settings = KafkaSettings.model_validate({k.lower(): v for k, v in env.items() if k.startswith("KAFKA_")})
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
    # The rest of the base file's environment survives the override.
    assert NEEDS.get(name, {"DATABASE_URL"}) <= set(env)
    if name != "migrate":
        assert {b: service["depends_on"][b]["condition"] for b in CLUSTER} == dict.fromkeys(
            CLUSTER, "service_healthy"
        )


def test_postgres_is_initialised_with_the_locale_the_local_stack_and_the_tests_use(
    compose: dict[str, Any],
) -> None:
    # The image's default is en_US.utf8: keys compared by the language's rules, orders of text not those
    # the tests and the benchmark saw.
    args = shlex.split(compose["services"]["postgres"]["environment"]["POSTGRES_INITDB_ARGS"])
    assert [a for a in args if a.startswith(("--encoding", "--locale", "--lc-"))] == list(INITDB_LOCALE)
