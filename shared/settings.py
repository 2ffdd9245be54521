"""Typed settings pieces shared by every service.

The environment names (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, SMTP_HOST, SMTP_PORT, STORES_FILE) are a
contract with `make up`, docker compose and outside checks, so the pieces read them unprefixed; each
service composes the pieces it needs into one settings class of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.ratelimit import parse_networks
from shared.registry_checks import SecretFacts, secret_problems

REPO_ROOT = Path(__file__).resolve().parent.parent


class _Env(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)


class KafkaSettings(_Env):
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Partitions bound how many consumer instances can share a topic; 6 lets a small cluster scale out.
    kafka_topic_partitions: int = Field(default=6, ge=1)
    # Replicas of each topic a service creates, and how many must have a write before it is acknowledged
    # (acks=all): 3 and 2 on a three-broker cluster, so one broker down loses and stops nothing. Unset, the
    # broker's own min.insync.replicas applies.
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync_replicas: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _isr_within_replicas(self) -> KafkaSettings:
        isr = self.kafka_min_insync_replicas
        if isr is not None and isr > self.kafka_replication_factor:
            raise ValueError(
                f"KAFKA_MIN_INSYNC_REPLICAS ({isr}) exceeds KAFKA_REPLICATION_FACTOR "
                f"({self.kafka_replication_factor}): no write could ever be acknowledged"
            )
        return self


class DatabaseSettings(_Env):
    database_url: str = "postgresql+asyncpg://loyalty:loyalty@127.0.0.1:55432/loyalty"
    database_pool_size: int = Field(default=10, ge=1)


class StoresSettings(_Env):
    stores_file: Path = REPO_ROOT / "deploy" / "stores.dev.yaml"


class SmtpSettings(_Env):
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_seconds: float = 10.0
    # Connections kept open to the server and reused: a new connection (TCP, EHLO, maybe STARTTLS and AUTH)
    # per message was most of a send's time.
    smtp_connections: int = Field(default=4, ge=1, le=64)
    # Recycled after this many messages: many providers cap messages per connection (often 100).
    smtp_messages_per_connection: int = Field(default=100, ge=1)


class ClientRateLimitSettings(_Env):
    """The per-client-address limit every service applies before routing, authentication and parsing
    (shared/ratelimit.py). A client here is an IP address; 0 turns the limit off (the benchmark does)."""

    rate_limit_per_client_per_second: float = Field(default=1000, ge=0)
    rate_limit_per_client_burst: float = Field(default=2000, ge=1)
    # Comma-separated addresses or networks of the load balancers in front of the service. Only a request
    # from one of them has its X-Forwarded-For believed; empty (the default) believes no one.
    trusted_proxies: str = ""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value


# Outside production, notifier and segmenter agree on this without configuration; production refuses it.
DEV_SERVICE_API_KEY = "dev-service-api-key"


class ServiceAuthSettings(_Env):
    """The key one service presents to another's REST API (the notifier reading the segmenter's product
    complements). Store API keys are kept only as digests, so a service cannot borrow a store's key."""

    service_api_key: SecretStr | None = None

    @model_validator(mode="after")
    def _strong_in_production(self) -> ServiceAuthSettings:
        if getattr(self, "environment", "development") == "production" and self.service_api_key is not None:
            facts = SecretFacts.of(self.service_api_key.get_secret_value())
            problems = secret_problems("SERVICE_API_KEY", facts)
            if problems:
                raise ValueError("; ".join(problems))
        return self

    def effective_service_api_key(self) -> str | None:
        """The configured key; outside production a shared development default; in production unset: None
        (the notifier then recommends without the segmenter's complements)."""
        if self.service_api_key is not None:
            return self.service_api_key.get_secret_value()
        if getattr(self, "environment", "development") == "production":
            return None
        return DEV_SERVICE_API_KEY


class RuntimeSettings(_Env):
    environment: Literal["development", "production", "test"] = "development"
    log_level: str = "INFO"
    # Each HTTP request must arrive whole (headers and body) within this long of its first byte, or it is
    # a 408 and its connection closed: a client sending a few bytes at a time holds no connection for long
    # (shared/read_deadline.py). Ample for any body the services take, on the slowest link.
    http_request_read_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)


class ConsumerServiceSettings(
    KafkaSettings,
    DatabaseSettings,
    StoresSettings,
    ClientRateLimitSettings,
    ServiceAuthSettings,
    RuntimeSettings,
):
    """What every service that consumes a topic and owns a schema needs (shared/service_app.py)."""
