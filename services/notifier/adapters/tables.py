"""The notifier's tables, in its own schema `notifier`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "notifier"
metadata = MetaData(schema=SCHEMA)

customers = Table(
    "customers",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("customer_id", String(400), primary_key=True),
    Column("email", String(320)),
    Column("accepts_marketing", Boolean),
    Column("stage", String(20), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per (store, customer, flow, trigger): the unique constraint is what makes a message at most once.
# status: pending -> sending -> sent | failed; `sending` left behind by a crash is never retried blindly.
messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("customer_id", String(400), nullable=False),
    Column("flow", String(64), nullable=False),
    Column("trigger_event_id", String(200), nullable=False),
    Column("channel", String(20), nullable=False, server_default="email"),
    Column("status", String(20), nullable=False),
    Column("skip_reason", String(64)),
    Column("to_address", String(320)),
    Column("context", JSONB, nullable=False),
    Column("subject", Text),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
    UniqueConstraint("store_id", "customer_id", "flow", "trigger_event_id", name="uq_messages_once"),
    Index("ix_messages_due", "due_at", postgresql_where=text("status = 'pending'")),
    Index("ix_messages_customer", "store_id", "customer_id", "created_at"),
)
