"""Due messages are taken transactional first (welcome, support alerts), then marketing, each by due time:
the index the sender's query walks in that order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifier"


def upgrade() -> None:
    op.create_index(
        "ix_messages_due_by_kind",
        "messages",
        ["marketing", "due_at", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("ix_messages_due", table_name="messages", schema=SCHEMA)


def downgrade() -> None:
    op.create_index(
        "ix_messages_due",
        "messages",
        ["due_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("ix_messages_due_by_kind", table_name="messages", schema=SCHEMA)
