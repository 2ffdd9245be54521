"""The notifier's tables, in its own schema `notifier` (kept in step with migrations/versions)."""

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
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.consumer_wait import consumer_progress_table

SCHEMA = "notifier"
metadata = MetaData(schema=SCHEMA)
MONEY = Numeric(14, 2)

# The latest we know of each customer from the funnel events, plus what only the notifier knows: the
# unsubscribe token, the unsubscription itself, and addresses suppressed after a permanent failure.
customers = Table(
    "customers",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("customer_id", String(400), primary_key=True),
    Column("email", String(320)),
    Column("phone", String(40)),
    Column("accepts_marketing", Boolean),
    Column("stage", String(20), nullable=False),
    Column("health", String(20), nullable=False, server_default="active"),
    Column("profile", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("last_order_at", DateTime(timezone=True)),
    Column("last_cart_abandoned_at", DateTime(timezone=True)),
    Column("unsubscribe_token", String(64)),
    Column("unsubscribed_at", DateTime(timezone=True)),
    Column("suppressed_at", DateTime(timezone=True)),
    Column("suppressed_reason", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("consent_updated_at", DateTime(timezone=True)),
    Index("uq_customers_unsubscribe_token", "unsubscribe_token", unique=True),
)

# One row per (store, customer, flow, trigger): the unique constraint is what makes a message at most once.
# status: pending -> sending -> sent | failed, or skipped (with the reason). A delayed message is a pending
# row whose due_at lies ahead. A claim (claim_id) is sent in lanes, one message at a time per lane
# (lane, lane_position), under a lease the sender renews (lease_until); see domain/delivery.py for what a
# claim whose lease ran out means. resent_at: a transactional message of unknown fate, sent once more.
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
    Column("marketing", Boolean, nullable=False, server_default="false"),
    Column("trigger_at", DateTime(timezone=True)),
    Column("send_before", DateTime(timezone=True)),
    Column("claimed_at", DateTime(timezone=True)),
    Column("coupon_code", String(40)),
    Column("converted_at", DateTime(timezone=True)),
    Column("converted_order_id", String(200)),
    Column("revenue", MONEY),
    Column("claim_id", String(36)),
    Column("lane", SmallInteger),
    Column("lane_position", Integer),
    Column("lease_until", DateTime(timezone=True)),
    Column("resent_at", DateTime(timezone=True)),
    UniqueConstraint("store_id", "customer_id", "flow", "trigger_event_id", name="uq_messages_once"),
    # The sender takes due messages transactional first, then by due time (see repository.due_messages).
    Index(
        "ix_messages_due_by_kind", "marketing", "due_at", "id", postgresql_where=text("status = 'pending'")
    ),
    Index("ix_messages_customer", "store_id", "customer_id", "created_at"),
    Index("ix_messages_sending_lease", "lease_until", postgresql_where=text("status = 'sending'")),
    Index("ix_messages_sending_claim", "claim_id", postgresql_where=text("status = 'sending'")),
    Index(
        "ix_messages_marketing_claims",
        "store_id",
        "customer_id",
        "claimed_at",
        postgresql_where=text("marketing AND claimed_at IS NOT NULL"),
    ),
    Index("ix_messages_provisioning", "claimed_at", postgresql_where=text("status = 'provisioning'")),
)

coupons = Table(
    "coupons",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("customer_id", String(400), nullable=False),
    Column("flow", String(64), nullable=False),
    Column("trigger_event_id", String(200), nullable=False),
    Column("message_id", BigInteger),
    Column("code", String(40), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("value", MONEY, nullable=False),
    Column("currency", String(3)),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("redeemed_at", DateTime(timezone=True)),
    Column("redeemed_order_id", String(200)),
    Column("redeemed_by", String(400)),
    # Where the coupon lives (shopify | woocommerce | webhook; NULL: ours alone), its id there, whether it
    # is a code or store credit, and when the platform confirmed it. No message goes out before that.
    Column("platform", String(20)),
    Column("platform_id", String(200)),
    Column("delivery", String(20), nullable=False, server_default="code"),
    Column("confirmed_at", DateTime(timezone=True)),
    Column("platform_attempts", Integer, nullable=False, server_default="0"),
    UniqueConstraint("store_id", "code", name="uq_coupons_code"),
    UniqueConstraint("store_id", "customer_id", "flow", "trigger_event_id", name="uq_coupons_once"),
    Index("ix_coupons_customer", "store_id", "customer_id"),
)

orders = Table(
    "orders",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("order_id", String(200), primary_key=True),
    Column("customer_id", String(400), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("total", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("discount_codes", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("attributed_message_id", BigInteger),
)

# What sells: the fallback recommendations when a customer's own history and the complements say nothing.
products = Table(
    "products",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("product_id", String(200), primary_key=True),
    Column("title", Text),
    Column("category", String(255)),
    Column("price", MONEY),
    Column("orders_count", Integer, nullable=False, server_default="0"),
    Column("last_ordered_at", DateTime(timezone=True)),
)

# Retargeting audiences. One row per (store, audience, customer) while the customer is a member, or while
# the sync endpoint still has to hear of their removal. `contact` holds the hashes a member may be exported
# with (NULL without marketing consent or contact details); `synced_contact` what the endpoint was last told
# (after its 2xx), `inflight_contact` what the batch `sync_batch_id` on its way tells it. `sync_pending`:
# contact and synced_contact differ and no batch is in flight, so the worker has something to push.
audience_members = Table(
    "audience_members",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("audience", String(64), primary_key=True),
    Column("customer_id", String(400), primary_key=True),
    Column("member", Boolean, nullable=False),
    Column("joined_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    Column("contact", JSONB(none_as_null=True)),
    Column("synced_contact", JSONB(none_as_null=True)),
    Column("inflight_contact", JSONB(none_as_null=True)),
    Column("sync_batch_id", String(36)),
    Column("sync_pending", Boolean, nullable=False, server_default="false"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_audience_members_sync_pending", "store_id", "audience", postgresql_where=text("sync_pending")),
    Index(
        "ix_audience_members_sync_batch",
        "sync_batch_id",
        postgresql_where=text("sync_batch_id IS NOT NULL"),
    ),
)

# When time alone changes a customer's membership of some audience (a 7-day window closing or opening):
# the audience worker re-evaluates due customers with one indexed query instead of rescanning everyone.
audience_reevaluations = Table(
    "audience_reevaluations",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("customer_id", String(400), primary_key=True),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Index("ix_audience_reevaluations_due", "due_at"),
)

# Push-sync batches: the exact body is kept until the endpoint answers 2xx, so a retry resends the same
# bytes under the same batch_id and the receiver can dedupe it. next_attempt_at doubles as the lease of
# the instance delivering it.
audience_sync_batches = Table(
    "audience_sync_batches",
    metadata,
    Column("batch_id", String(36), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("audience", String(64), nullable=False),
    Column("body", Text),
    Column("added", Integer, nullable=False),
    Column("removed", Integer, nullable=False),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_audience_sync_batches_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
)

# Per store and platform: whether the last call worked, and why not (a revoked token, a missing scope).
store_connections = Table(
    "store_connections",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("platform", String(20), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("reason", Text),
    Column("last_ok_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Unsubscriptions, complaints and permanent bounces on their way to the store's platform (an outbox: the
# change is recorded with the unsubscription, and a worker tells the platform, retrying until it answers).
consent_changes = Table(
    "consent_changes",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("customer_id", String(400), nullable=False),
    Column("platform", String(20), nullable=False),
    Column("subscribed", Boolean, nullable=False),
    Column("reason", String(40), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Index("ix_consent_changes_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
)

# How far the consumer has read each partition of funnel-events: the senders take only messages that came due
# before every partition's bound (shared/consumer_wait.py, migration 0007).
consumer_progress = consumer_progress_table(metadata)
