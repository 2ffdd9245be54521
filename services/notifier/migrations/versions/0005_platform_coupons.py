"""Coupons confirmed by the store's platform before their message goes out; the store's connection status;
consent changes on their way to the platform.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifier"


def upgrade() -> None:
    op.add_column("coupons", sa.Column("platform", sa.String(20)), schema=SCHEMA)
    op.add_column("coupons", sa.Column("platform_id", sa.String(200)), schema=SCHEMA)
    op.add_column(
        "coupons", sa.Column("delivery", sa.String(20), nullable=False, server_default="code"), schema=SCHEMA
    )
    op.add_column("coupons", sa.Column("confirmed_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column(
        "coupons",
        sa.Column("platform_attempts", sa.Integer, nullable=False, server_default="0"),
        schema=SCHEMA,
    )
    # Messages whose coupon is being created in the platform; a crash leaves them here, and the sender
    # takes them back after a lease (nothing was sent yet).
    op.create_index(
        "ix_messages_provisioning",
        "messages",
        ["claimed_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'provisioning'"),
    )
    op.create_table(
        "store_connections",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("platform", sa.String(20), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("last_ok_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "consent_changes",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(400), nullable=False),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("subscribed", sa.Boolean, nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_consent_changes_due",
        "consent_changes",
        ["next_attempt_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    # When the customer last changed their consent in the shop (Shopify's consent_updated_at): a later
    # unsubscribe of ours wins over it, a later opt-in in the shop wins over our unsubscribe.
    op.add_column("customers", sa.Column("consent_updated_at", sa.DateTime(timezone=True)), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("customers", "consent_updated_at", schema=SCHEMA)
    op.drop_index("ix_consent_changes_due", table_name="consent_changes", schema=SCHEMA)
    op.drop_table("consent_changes", schema=SCHEMA)
    op.drop_table("store_connections", schema=SCHEMA)
    op.drop_index("ix_messages_provisioning", table_name="messages", schema=SCHEMA)
    for column in ("platform_attempts", "confirmed_at", "delivery", "platform_id", "platform"):
        op.drop_column("coupons", column, schema=SCHEMA)
