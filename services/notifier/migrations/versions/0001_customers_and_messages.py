"""Customers' contact state and the messages table with its at-most-once constraint.

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

SCHEMA = "notifier"


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(400), primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("accepts_marketing", sa.Boolean),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(400), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("trigger_event_id", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False, server_default="email"),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("skip_reason", sa.String(64)),
        sa.Column("to_address", sa.String(320)),
        sa.Column("context", postgresql.JSONB, nullable=False),
        sa.Column("subject", sa.Text),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("store_id", "customer_id", "flow", "trigger_event_id", name="uq_messages_once"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_messages_due",
        "messages",
        ["due_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_messages_customer", "messages", ["store_id", "customer_id", "created_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("messages", schema=SCHEMA)
    op.drop_table("customers", schema=SCHEMA)
