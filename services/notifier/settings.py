from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from shared.settings import REPO_ROOT, ConsumerServiceSettings, SmtpSettings


class NotifierSettings(ConsumerServiceSettings, SmtpSettings):
    notifier_host: str = "127.0.0.1"
    notifier_port: int = 8002
    notifier_group_id: str = "notifier"
    notifier_send_batch: int = Field(default=50, ge=1, le=1000)
    # The most funnel events one planning transaction takes: only a backlog fills it. Every event of a batch
    # is held decoded, with its customer's row and its messages' rows, until the batch commits: 1,000 of
    # them raised the notifier's peak memory by about 14 MiB, 200 by 1 MiB, for the same CPU per event.
    notifier_max_batch: int = Field(default=200, ge=1, le=10_000)
    notifier_max_attempts: int = Field(default=5, ge=1)
    # How long a sender's claim on a batch holds without being renewed (renewed every quarter of it): after
    # a crash, its messages wait this long before another sender (or the restarted one) settles them.
    notifier_send_lease_seconds: float = Field(default=120.0, ge=1.0, le=3600.0)
    # How long a message waits in `provisioning` (its coupon being created in the store's platform) before
    # a sender takes it back after a crash: longer than a platform's slowest answer, or a live sender's
    # create would be repeated by another (the lookup before create still finds it, so no code twice).
    notifier_provisioning_lease_seconds: float = Field(default=120.0, ge=1.0, le=3600.0)
    # Our unsubscribe links: https (RFC 8058); plain http only on loopback, for development.
    notifier_public_url: str = "http://127.0.0.1:8002"
    # The segmenter's REST API, for complementary products in recommendations.
    segmenter_url: str = "http://127.0.0.1:8001"
    # Where the running notifier writes its pid, for `python -m services.notifier reload` (SIGHUP);
    # by default .run/notifier-<port>.pid in the repository.
    notifier_pidfile: Path | None = None

    @property
    def pidfile(self) -> Path:
        return self.notifier_pidfile or REPO_ROOT / ".run" / f"notifier-{self.notifier_port}.pid"

    @field_validator("notifier_public_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("NOTIFIER_PUBLIC_URL must be https (one-click unsubscribe links, RFC 8058)")
        return value.rstrip("/")
