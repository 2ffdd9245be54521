"""The segmenter's tables, in its own schema `segmenter`. Alembic's history is the source of truth for DDL."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "segmenter"
metadata = MetaData(schema=SCHEMA)

processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

profiles = Table(
    "profiles",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("customer_id", String(255), primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("health", String(20), nullable=False),
    Column("email", String(320)),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("phone", String(40)),
    Column("locale", String(35)),
    Column("city", String(255)),
    Column("country", String(255)),
    Column("timezone", String(64)),
    Column("accepts_marketing", Boolean),
    Column("orders_count", Integer, nullable=False),
    Column("total_spent", Numeric(14, 2), nullable=False),
    Column("currency", String(3)),
    Column("first_order_at", DateTime(timezone=True)),
    Column("last_order_at", DateTime(timezone=True)),
    Column("order_ids", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_profiles_store_email", "store_id", "email"),
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("from_stage", String(20), nullable=False),
    Column("to_stage", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Index("ix_transitions_customer", "store_id", "customer_id", "occurred_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
