"""No Docker engine runs on our machines, so this keeps docker-compose.yml honest against DESIGN.md."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from shared.settings import REPO_ROOT

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
    assert set(compose["services"]) == {"kafka", "postgres", "smtp", "migrate", *APP_PORTS}


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
