"""The store-and-time indexes of transitions and orders serve only queries that bound the time.

`ix_transitions_store_time` (store_id, occurred_at) and `ix_orders_store_time` (store_id, placed_at) are
there for the reports' date ranges. But they also fit any query on a store alone, and to the planner a
probe for one customer's rows (`store_id = ... AND customer_id = ...`) could be served by them as well as by
the customer's index, reading every row of the store and keeping the customer's. On a new store's tables,
which grow by thousands of rows before their first automatic ANALYZE, the two cost exactly the same to the
planner, and the store's index was taken: replaying the benchmark's mix in batches of 3,000 events, the
first batches' replaced histories took up to 655 ms and their repointing up to 85 ms, against 5-10 and 1-3
ms through the customer's index (bench/README.md, thirty-second round).

Each becomes a partial index `WHERE <time> IS NOT NULL`. The column is NOT NULL, so the index holds every
row, as before. A query that bounds the time with a strict operator (`>=`, `<`, ...) implies the predicate,
so the reports keep the index, with bound parameters too (generic plans); a query that names no time can
no longer pick it. Nothing else changes: the same rows, columns and order.

Each new index is built beside the old one, which then goes and leaves it its name: the build holds writes
to the table (not reads) while it runs, as any index build in a transaction, and the old index's drop holds
reads too, but only from the drop to the commit.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "segmenter"
# index -> (table, its time column)
INDEXES = {
    "ix_transitions_store_time": ("transitions", "occurred_at"),
    "ix_orders_store_time": ("orders", "placed_at"),
}


def _rebuild(index: str, table: str, time: str, where: str | None) -> None:
    """`index` on (store_id, `time`) again, `where` its predicate: built beside the old one, then renamed."""
    op.create_index(f"{index}_new", table, ["store_id", time], schema=SCHEMA, postgresql_where=where)
    op.drop_index(index, table_name=table, schema=SCHEMA)
    op.execute(f"ALTER INDEX {SCHEMA}.{index}_new RENAME TO {index}")


def upgrade() -> None:
    for index, (table, time) in INDEXES.items():
        _rebuild(index, table, time, f"{time} IS NOT NULL")


def downgrade() -> None:
    for index, (table, time) in INDEXES.items():
        _rebuild(index, table, time, None)
