"""Claims with a lease, sent in lanes: after a crash only the message each lane had on its connection has an
unknown fate; the rest of the claim goes back to the queue. A transactional message of unknown fate is sent
once more (resent_at says so).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifier"


def upgrade() -> None:
    for column in (
        sa.Column("claim_id", sa.String(36)),
        sa.Column("lane", sa.SmallInteger),
        sa.Column("lane_position", sa.Integer),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("resent_at", sa.DateTime(timezone=True)),
    ):
        op.add_column("messages", column, schema=SCHEMA)
    # Rows left in `sending` by a sender whose lease ran out: what every sender looks for, often.
    op.create_index(
        "ix_messages_sending_lease",
        "messages",
        ["lease_until"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'sending'"),
    )
    op.create_index(
        "ix_messages_sending_claim",
        "messages",
        ["claim_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'sending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_sending_claim", table_name="messages", schema=SCHEMA)
    op.drop_index("ix_messages_sending_lease", table_name="messages", schema=SCHEMA)
    for name in ("resent_at", "lease_until", "lane_position", "lane", "claim_id"):
        op.drop_column("messages", name, schema=SCHEMA)
