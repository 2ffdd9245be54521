from __future__ import annotations

from pydantic import Field

from shared.settings import DatabaseSettings, KafkaSettings, RuntimeSettings, SmtpSettings, StoresSettings


class NotifierSettings(KafkaSettings, DatabaseSettings, StoresSettings, SmtpSettings, RuntimeSettings):
    notifier_host: str = "127.0.0.1"
    notifier_port: int = 8002
    notifier_group_id: str = "notifier"
    notifier_send_batch: int = Field(default=50, ge=1, le=1000)
    notifier_max_attempts: int = Field(default=5, ge=1)
