"""Flows, guards, coupons and attribution: customers' consent and latest profile, durable send jobs,
coupons, the orders and products the notifier has seen.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifier"
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    for column in (
        sa.Column("phone", sa.String(40)),
        sa.Column("health", sa.String(20), nullable=False, server_default="active"),
        sa.Column("profile", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("last_order_at", sa.DateTime(timezone=True)),
        sa.Column("last_cart_abandoned_at", sa.DateTime(timezone=True)),
        sa.Column("unsubscribe_token", sa.String(64)),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True)),
        sa.Column("suppressed_at", sa.DateTime(timezone=True)),
        sa.Column("suppressed_reason", sa.Text),
    ):
        op.add_column("customers", column, schema=SCHEMA)
    op.create_index(
        "uq_customers_unsubscribe_token", "customers", ["unsubscribe_token"], unique=True, schema=SCHEMA
    )
    for column in (
        sa.Column("marketing", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("trigger_at", sa.DateTime(timezone=True)),
        sa.Column("send_before", sa.DateTime(timezone=True)),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("coupon_code", sa.String(40)),
        sa.Column("converted_at", sa.DateTime(timezone=True)),
        sa.Column("converted_order_id", sa.String(200)),
        sa.Column("revenue", MONEY),
    ):
        op.add_column("messages", column, schema=SCHEMA)
    # The frequency cap counts a customer's recent marketing sends.
    op.create_index(
        "ix_messages_marketing_claims",
        "messages",
        ["store_id", "customer_id", "claimed_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("marketing AND claimed_at IS NOT NULL"),
    )
    op.create_table(
        "coupons",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(400), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("trigger_event_id", sa.String(200), nullable=False),
        sa.Column("message_id", sa.BigInteger),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("value", MONEY, nullable=False),
        sa.Column("currency", sa.String(3)),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True)),
        sa.Column("redeemed_order_id", sa.String(200)),
        sa.Column("redeemed_by", sa.String(400)),
        sa.UniqueConstraint("store_id", "code", name="uq_coupons_code"),
        sa.UniqueConstraint("store_id", "customer_id", "flow", "trigger_event_id", name="uq_coupons_once"),
        schema=SCHEMA,
    )
    op.create_index("ix_coupons_customer", "coupons", ["store_id", "customer_id"], schema=SCHEMA)
    op.create_table(
        "orders",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("customer_id", sa.String(400), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", MONEY, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("discount_codes", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("attributed_message_id", sa.BigInteger),
        schema=SCHEMA,
    )
    op.create_table(
        "products",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("product_id", sa.String(200), primary_key=True),
        sa.Column("title", sa.Text),
        sa.Column("category", sa.String(255)),
        sa.Column("price", MONEY),
        sa.Column("orders_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_ordered_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("products", schema=SCHEMA)
    op.drop_table("orders", schema=SCHEMA)
    op.drop_table("coupons", schema=SCHEMA)
    op.drop_index("ix_messages_marketing_claims", "messages", schema=SCHEMA)
    for name in (
        "marketing", "trigger_at", "send_before", "claimed_at", "coupon_code", "converted_at",
        "converted_order_id", "revenue",
    ):  # fmt: skip
        op.drop_column("messages", name, schema=SCHEMA)
    op.drop_index("uq_customers_unsubscribe_token", "customers", schema=SCHEMA)
    for name in (
        "phone", "health", "profile", "last_order_at", "last_cart_abandoned_at", "unsubscribe_token",
        "unsubscribed_at", "suppressed_at", "suppressed_reason",
    ):  # fmt: skip
        op.drop_column("customers", name, schema=SCHEMA)
