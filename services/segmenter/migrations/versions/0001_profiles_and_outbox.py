"""Profiles, processed event ids, stage transitions and the outbox.

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


def upgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "profiles",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(255), primary_key=True),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("health", sa.String(20), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("first_name", sa.String(255)),
        sa.Column("last_name", sa.String(255)),
        sa.Column("phone", sa.String(40)),
        sa.Column("locale", sa.String(35)),
        sa.Column("city", sa.String(255)),
        sa.Column("country", sa.String(255)),
        sa.Column("timezone", sa.String(64)),
        sa.Column("accepts_marketing", sa.Boolean),
        sa.Column("orders_count", sa.Integer, nullable=False),
        sa.Column("total_spent", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(3)),
        sa.Column("first_order_at", sa.DateTime(timezone=True)),
        sa.Column("last_order_at", sa.DateTime(timezone=True)),
        sa.Column("order_ids", postgresql.JSONB, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("ix_profiles_store_email", "profiles", ["store_id", "email"], schema=SCHEMA)
    op.create_table(
        "transitions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("from_stage", sa.String(20), nullable=False),
        sa.Column("to_stage", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_transitions_customer", "transitions", ["store_id", "customer_id", "occurred_at"], schema=SCHEMA
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("outbox", "transitions", "profiles", "processed_events"):
        op.drop_table(table, schema=SCHEMA)
