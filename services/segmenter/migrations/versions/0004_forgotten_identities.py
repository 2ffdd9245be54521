"""Look-ups an erasure forgot are remembered by their digest.

An erasure removes the customer's email and anonymous-id look-ups, so that no identifier heard before it
finds the customer again. But events said before the erasure can reach us after it (a Segment client's
offline queue, a webhook retried late, another partition read later). Naming only such an identifier, one
of them used to start a new customer holding what the erasure had removed: the guest's email, name, cart.
The segmenter now keeps each forgotten look-up as the SHA-256 digest of its text (never the text), with the
customer erased and when. An event that names only unknown identifiers, one of them forgotten by an erasure
at or after the event's time, is the erased customer's, and is forgotten as it would have been had it come
first. Events after the erasure still start a new customer.

Nothing to fill in: erasures before this revision left no digest (send them again to cover late events).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "segmenter"


def upgrade() -> None:
    op.create_table(
        "forgotten_identities",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("digest", sa.LargeBinary, primary_key=True),
        sa.Column("customer_id", sa.String(400), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("forgotten_identities", schema=SCHEMA)
