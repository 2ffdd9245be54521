"""Retargeting audiences: memberships with their sync state, time-based re-evaluations, push-sync batches.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifier"


def upgrade() -> None:
    op.create_table(
        "audience_members",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("audience", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(400), primary_key=True),
        sa.Column("member", sa.Boolean, nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("contact", postgresql.JSONB),
        sa.Column("synced_contact", postgresql.JSONB),
        sa.Column("inflight_contact", postgresql.JSONB),
        sa.Column("sync_batch_id", sa.String(36)),
        sa.Column("sync_pending", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_audience_members_sync_pending",
        "audience_members",
        ["store_id", "audience"],
        schema=SCHEMA,
        postgresql_where=sa.text("sync_pending"),
    )
    op.create_index(
        "ix_audience_members_sync_batch",
        "audience_members",
        ["sync_batch_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("sync_batch_id IS NOT NULL"),
    )
    op.create_table(
        "audience_reevaluations",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(400), primary_key=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_audience_reevaluations_due", "audience_reevaluations", ["due_at"], schema=SCHEMA)
    op.create_table(
        "audience_sync_batches",
        sa.Column("batch_id", sa.String(36), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("audience", sa.String(64), nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("added", sa.Integer, nullable=False),
        sa.Column("removed", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_audience_sync_batches_due",
        "audience_sync_batches",
        ["next_attempt_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("audience_sync_batches", schema=SCHEMA)
    op.drop_table("audience_reevaluations", schema=SCHEMA)
    op.drop_table("audience_members", schema=SCHEMA)
