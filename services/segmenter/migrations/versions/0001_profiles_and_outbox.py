"""Profiles (facts as JSONB plus query projections), identities, transitions, timers, orders,
co-purchases, processed event ids and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "segmenter"


def _now() -> sa.sql.elements.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        schema=SCHEMA,
    )
    op.create_table(
        "profiles",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(400), primary_key=True),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("health", sa.String(20), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("orders_count", sa.Integer, nullable=False),
        sa.Column("total_spent", sa.Numeric(14, 2), nullable=False),
        sa.Column("first_order_at", sa.DateTime(timezone=True)),
        sa.Column("last_order_at", sa.DateTime(timezone=True)),
        sa.Column("survey_level", sa.String(20), nullable=False),
        sa.Column("merged_into", sa.String(400)),
        sa.Column("facts", postgresql.JSONB, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        schema=SCHEMA,
    )
    op.create_index("ix_profiles_store_email", "profiles", ["store_id", "email"], schema=SCHEMA)
    op.create_index(
        "ix_profiles_store_stage_health", "profiles", ["store_id", "stage", "health"], schema=SCHEMA
    )
    op.create_table(
        "identities",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("identifier", sa.String(400), primary_key=True),
        sa.Column("customer_id", sa.String(400), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_identities_customer", "identities", ["store_id", "customer_id"], schema=SCHEMA)
    op.create_table(
        "transitions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(400), nullable=False),
        sa.Column("dimension", sa.String(10), nullable=False),
        sa.Column("from_value", sa.String(20), nullable=False),
        sa.Column("to_value", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_transitions_customer", "transitions", ["store_id", "customer_id", "occurred_at"], schema=SCHEMA
    )
    op.create_index("ix_transitions_store_time", "transitions", ["store_id", "occurred_at"], schema=SCHEMA)
    op.create_table(
        "timers",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(400), primary_key=True),
        sa.Column("kind", sa.String(300), primary_key=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_timers_due", "timers", ["due_at"], schema=SCHEMA)
    op.create_table(
        "orders",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(400), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Numeric(14, 2), nullable=False),
        sa.Column("refunded", sa.Numeric(14, 2), nullable=False),
        sa.Column("counts", sa.Boolean, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_orders_store_time", "orders", ["store_id", "placed_at"], schema=SCHEMA)
    op.create_index("ix_orders_customer", "orders", ["store_id", "customer_id"], schema=SCHEMA)
    op.create_table(
        "copurchases",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("product_id", sa.String(255), primary_key=True),
        sa.Column("other_product_id", sa.String(255), primary_key=True),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("title", sa.Text),
        schema=SCHEMA,
    )
    op.create_index("ix_copurchases_rank", "copurchases", ["store_id", "product_id", "orders"], schema=SCHEMA)
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    tables = ("outbox", "copurchases", "orders", "timers", "transitions", "identities", "profiles")
    for table in (*tables, "processed_events"):
        op.drop_table(table, schema=SCHEMA)
