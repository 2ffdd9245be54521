"""Profiles' facts documents are compressed with lz4 instead of pglz, where PostgreSQL has it.

PostgreSQL compresses a row's largest values when the row passes about 2 kB. Over the benchmark's
200,000-event mix, three in ten profiles pass it (their documents' text 2.3 kB at the 90th percentile), and
each batch that changes one compresses its whole document again: with pglz, PostgreSQL's default, a batch's
profile upsert took 81.6-83.1 ms at the median (batches of 3,000 events, 4 replays); with lz4 72.8-73.7 (4
replays alternated with them; bench/README.md, thirty-third round). The rows and the documents' values are
the same: only how PostgreSQL stores the larger ones changes.

A column's compression applies to the values written after it is set, so existing documents change over as
their profiles are written again; nothing is rewritten here, and the statement takes a moment whatever the
table's size. A server built without lz4 (PostgreSQL's `--with-lz4`; the official images and Debian's
packages have it) refuses the method: the column then keeps its default, and the server logs a warning.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "segmenter"


def upgrade() -> None:
    # feature_not_supported is what a server without lz4 raises (toast_compression.c, NO_LZ4_SUPPORT).
    op.execute(
        "DO $$ BEGIN "
        f"ALTER TABLE {SCHEMA}.profiles ALTER COLUMN facts SET COMPRESSION lz4; "
        "EXCEPTION WHEN feature_not_supported THEN "
        "RAISE WARNING 'this PostgreSQL has no lz4: profiles.facts keeps the default compression'; "
        "END $$"
    )


def downgrade() -> None:
    op.execute(f"ALTER TABLE {SCHEMA}.profiles ALTER COLUMN facts SET COMPRESSION default")
