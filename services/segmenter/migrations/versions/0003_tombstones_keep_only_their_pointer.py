"""A profile merged into another keeps only its pointer; the ids merged into a customer are indexed.

Until now a merged-away profile (a tombstone: `merged_into` set) kept the document it had when it was
merged: email, names, phone, city, carts, identifiers. Everything in it had gone to its survivor, so the
copy served nothing, and the survivor's erasure did not reach it: a customer erased after a merge kept
their personal data in the tombstone. The segmenter now writes a tombstone as its pointer alone
(`domain.funnel.tombstone`); this migration makes the tombstones already stored the same: the document a
new tombstone gets, and the projections a profile without facts has.

The partial index finds the profiles merged into a customer, so that a customer's erasure also tells the
notifier to forget what it heard under each id merged into them (`repository.load_merged_into`). It holds
the tombstones only: the rows of live profiles (merged_into NULL) are not in it, and their updates stay
HOT-eligible (migration 0002).

Not reversible in its data: the downgrade drops the index only; what the tombstones held is gone.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "segmenter"

# The document the segmenter writes for a tombstone at this revision: every field of an empty profile, as its
# encoder writes them (null, [], {}), with the tombstone's own keys and pointer. Built by jsonb_build_object,
# not from a JSON literal, so that no ":name" in it reads as a bind parameter.
_EMPTY = {
    "identifiers": "'[]'::jsonb", "stage": "'prospect'", "health": "'active'", "email": "NULL",
    "first_name": "NULL", "last_name": "NULL", "phone": "NULL", "locale": "NULL", "city": "NULL",
    "country": "NULL", "timezone": "NULL", "birthday": "NULL", "accepts_marketing": "NULL",
    "contact_at": "'{}'::jsonb", "orders": "'[]'::jsonb", "pending_refunds": "'[]'::jsonb",
    "carts": "'[]'::jsonb", "completed_carts": "'[]'::jsonb", "viewed": "'[]'::jsonb", "survey": "NULL",
    "survey_levels": "'[]'::jsonb", "referrals": "0", "referred": "'[]'::jsonb", "erased": "false",
    "erased_at": "NULL", "merged_into": "merged_into", "transitions": "'[]'::jsonb",
    "health_seen_at": "NULL",
}  # fmt: skip
_DOCUMENT = (
    "jsonb_build_object('store_id', store_id, 'customer_id', customer_id, "
    + ", ".join(f"'{name}', {value}" for name, value in _EMPTY.items())
    + ")"
)

# Every stored tombstone, its projections those of a profile without facts. (A test runs it again, over a
# tombstone as the code before this revision wrote one, with a condition of its own appended.)
TOMBSTONES = (
    f"UPDATE {SCHEMA}.profiles SET "  # noqa: S608 - constants of this module
    "stage = 'prospect', health = 'active', email = NULL, orders_count = 0, total_spent = 0, "
    "first_order_at = NULL, last_order_at = NULL, survey_level = 'none', "
    f"facts = {_DOCUMENT} "
    "WHERE merged_into IS NOT NULL"
)


def upgrade() -> None:
    op.execute(TOMBSTONES)
    op.create_index(
        "ix_profiles_store_merged_into",
        "profiles",
        ["store_id", "merged_into"],
        schema=SCHEMA,
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_profiles_store_merged_into", table_name="profiles", schema=SCHEMA)
