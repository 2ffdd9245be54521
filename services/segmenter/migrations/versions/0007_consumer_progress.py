"""How far the consumer has read each partition, so that timers wait for what was sent before they came due.

After an outage of the database or of the segmenter, the wall clock has moved on while the events sent
meanwhile wait in Kafka: a cart's abandonment timer fired then did not know of the order queued behind it,
and the buyer was sent an abandoned-cart email. Each consumer now records, per partition, a time before
which every record sent has been handled; while every partition is read to within a few seconds of the
clock, timers go by the clock as before, and in a backlog only those that came due before all of them fire
(shared/consumer_wait.py). Once the consumer knows the topic's partitions, nothing is taken until each
has a row.

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

SCHEMA = "segmenter"


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
