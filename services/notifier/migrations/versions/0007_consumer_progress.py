"""How far the consumer has read each partition of funnel-events, so that the senders wait for what was sent
before a message came due.

After an outage of the database or of the notifier, the wall clock has moved on while the funnel events
sent meanwhile wait in Kafka: a message due then was decided without them, and an abandoned-cart email went
to a buyer whose order was queued behind it (the flow exits on an order, but the order was not read yet).
Each consumer now records, per partition, a time before which every funnel event sent has been handled;
while every partition is read to within a few seconds of the clock, messages go by the clock as before, and
in a backlog only those that came due before all of them (shared/consumer_wait.py). Once the consumer
knows the topic's partitions, nothing is taken until each has a row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifier"


def upgrade() -> None:
    op.create_table(
        "consumer_progress",
        sa.Column("topic", sa.String(249), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("read_before", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("consumer_progress", schema=SCHEMA)
