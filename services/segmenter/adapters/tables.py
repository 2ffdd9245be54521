"""The segmenter's tables, in its own schema `segmenter`. Alembic's history is the source of truth for DDL.

A profile's facts are one JSONB document (the domain model, so a merge or a replay writes it whole); the
columns beside it are projections kept for queries and indexes (funnel counts, email look-ups, retention).
"""

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
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.consumer_wait import consumer_progress_table

SCHEMA = "segmenter"
metadata = MetaData(schema=SCHEMA)

processed_events = Table(
    "processed_events",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

profiles = Table(
    "profiles",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("customer_id", String(400), primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("health", String(20), nullable=False),
    Column("email", String(320)),
    Column("orders_count", Integer, nullable=False),
    Column("total_spent", Numeric(14, 2), nullable=False),
    Column("first_order_at", DateTime(timezone=True)),
    Column("last_order_at", DateTime(timezone=True)),
    Column("survey_level", String(20), nullable=False),
    Column("merged_into", String(400)),
    # Compressed with lz4 where PostgreSQL has it (migration 0006): SQLAlchemy has no word for it.
    Column("facts", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_profiles_store_email", "store_id", "email"),
    Index("ix_profiles_store_stage_health", "store_id", "stage", "health"),
    # The profiles merged into a customer, for its erasure to reach them (migration 0003).
    Index(
        "ix_profiles_store_merged_into",
        "store_id",
        "merged_into",
        postgresql_where=text("merged_into IS NOT NULL"),
    ),
    # Room on each page for a rewritten profile's new version (a HOT update): migration 0002 says why.
    postgresql_with={"fillfactor": 70},
)

# identifier ("id:<store id>", "email:<address>", "anon:<id>", "order:<order id>") -> the customer it names.
identities = Table(
    "identities",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("identifier", String(400), primary_key=True),
    Column("customer_id", String(400), nullable=False),
    Index("ix_identities_customer", "store_id", "customer_id"),
)

# A look-up an erasure forgot (an email or anonymous id heard before it), kept as its SHA-256 digest only,
# like a suppression list's entry: an event dated before the erasure that names it and reaches us after the
# erasure is the erased customer's, and is forgotten as theirs would have been, instead of starting a new
# customer with what the erasure removed. Migration 0004 says more.
forgotten_identities = Table(
    "forgotten_identities",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("digest", LargeBinary, primary_key=True),  # sha256 of the identifier's UTF-8 text
    Column("customer_id", String(400), nullable=False),  # the customer erased
    Column("erased_at", DateTime(timezone=True), nullable=False),
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("customer_id", String(400), nullable=False),
    Column("dimension", String(10), nullable=False),
    Column("from_value", String(20), nullable=False),
    Column("to_value", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Index("ix_transitions_customer", "store_id", "customer_id", "occurred_at"),
    # For date ranges only: a query that names no time cannot take it for a store's rows (migration 0005).
    Index(
        "ix_transitions_store_time",
        "store_id",
        "occurred_at",
        postgresql_where=text("occurred_at IS NOT NULL"),
    ),
)

# Durable timers (health checks, cart abandonment, birthdays): one row per customer and kind, fired by
# wall time from an index on due_at; several instances share them with FOR UPDATE SKIP LOCKED.
timers = Table(
    "timers",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("customer_id", String(400), primary_key=True),
    Column("kind", String(300), primary_key=True),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Index("ix_timers_due", "due_at"),
)

# How far the consumer has read each partition of its topic: the timers take only what came due before every
# partition's bound (shared/consumer_wait.py, migration 0007).
consumer_progress = consumer_progress_table(metadata)

# One row per order, for retention figures over date ranges (a projection of the profiles' facts).
orders = Table(
    "orders",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("order_id", String(255), primary_key=True),
    Column("customer_id", String(400), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("total", Numeric(14, 2), nullable=False),
    Column("refunded", Numeric(14, 2), nullable=False),
    Column("counts", Boolean, nullable=False),
    Index("ix_orders_store_time", "store_id", "placed_at", postgresql_where=text("placed_at IS NOT NULL")),
    Index("ix_orders_customer", "store_id", "customer_id"),
)

# How often two products were bought in the same order, both directions, for recommendations.
copurchases = Table(
    "copurchases",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("product_id", String(255), primary_key=True),
    Column("other_product_id", String(255), primary_key=True),
    Column("orders", Integer, nullable=False),
    Column("title", Text),
    Index("ix_copurchases_rank", "store_id", "product_id", "orders"),
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
