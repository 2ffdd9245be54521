"""Planned and skipped messages go in by one statement (repository.record_planned): the rows, their order
(ids) and what is returned are those of the former two statements, one a kind, whose skipped rows left
`channel`, `to_address`, `marketing`, `trigger_at` and `send_before` to the columns' defaults."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.adapters import raw_sql, repository
from services.notifier.adapters.tables import messages
from services.notifier.domain.flows import PlannedMessage, Skipped
from services.notifier.domain.messages import MessageStatus
from shared.notifier_rules import FlowName

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

_ONCE = (
    insert(messages)
    .on_conflict_do_nothing(constraint="uq_messages_once")
    .returning(messages.c.flow, messages.c.status)
)
_KEY = ("store_id", "customer_id", "flow", "trigger_event_id", "status")
_FORMER_PLANNED_SQL = raw_sql.unnest_insert(
    messages,
    (*_KEY, "channel", "to_address", "context", "due_at", "marketing", "trigger_at", "send_before"),
    _ONCE,
)
_FORMER_SKIPPED_SQL = raw_sql.unnest_insert(messages, (*_KEY, "skip_reason", "context", "due_at"), _ONCE)


async def _former(conn: Any, items: list[PlannedMessage | Skipped]) -> list[tuple[str, MessageStatus]]:
    """record_planned as it was: a statement for the planned, then one for the skipped."""
    planned = [item for item in items if isinstance(item, PlannedMessage)]
    skipped = [item for item in items if isinstance(item, Skipped)]
    rows: list[Any] = []
    if planned:
        rows += await raw_sql.fetch(
            conn,
            _FORMER_PLANNED_SQL,
            [m.store_id for m in planned],
            [m.customer_id for m in planned],
            [m.flow.value for m in planned],
            [m.trigger_event_id for m in planned],
            [MessageStatus.PENDING.value] * len(planned),
            [m.channel for m in planned],
            [m.to_address for m in planned],
            [json.dumps({"trigger": m.trigger}) for m in planned],
            [m.due_at for m in planned],
            [m.marketing for m in planned],
            [m.trigger_at for m in planned],
            [m.send_before for m in planned],
        )
    if skipped:
        rows += await raw_sql.fetch(
            conn,
            _FORMER_SKIPPED_SQL,
            [m.store_id for m in skipped],
            [m.customer_id for m in skipped],
            [m.flow.value for m in skipped],
            [m.trigger_event_id for m in skipped],
            [MessageStatus.SKIPPED.value] * len(skipped),
            [m.reason for m in skipped],
            ["{}"] * len(skipped),
            [NOW] * len(skipped),
        )
    return [(r["flow"], MessageStatus(r["status"])) for r in rows]


def _batch(store_id: str, trigger: str) -> list[PlannedMessage | Skipped]:
    def planned(customer: str, flow: FlowName, **more: Any) -> PlannedMessage:
        fields: dict[str, Any] = dict(
            store_id=store_id, customer_id=customer, flow=flow, trigger_event_id=f"{trigger}-{customer}",
            trigger_at=NOW - timedelta(seconds=3), due_at=NOW, send_before=NOW + timedelta(days=1),
            marketing=False, channel="email", to_address=f"{customer}@example.com",
            trigger={"type": "stage_changed", "to_stage": "first_time"},
        )  # fmt: skip
        return PlannedMessage(**(fields | more))

    def skipped(customer: str, flow: FlowName, reason: str) -> Skipped:
        return Skipped(store_id, customer, flow, f"{trigger}-{customer}", reason)

    return [
        skipped("c0", FlowName.REVIEW_REQUEST, "no_marketing_consent"),
        planned("c1", FlowName.WELCOME),
        skipped("c2", FlowName.FOLLOW_UP, "trigger_too_old"),
        planned("c3", FlowName.REVIEW_REQUEST, marketing=True, due_at=NOW + timedelta(seconds=30)),
        planned("c4", FlowName.WIN_BACK, channel="webhook", to_address="+33600000000", marketing=True),
        skipped("c5", FlowName.WELCOME, "no_email"),
        # The same key twice in a batch (a redelivered event): the first row stays, as before.
        planned("c1", FlowName.WELCOME, to_address="again@example.com"),
        skipped("c3", FlowName.REVIEW_REQUEST, "no_marketing_consent"),
    ]


async def _rows(engine: AsyncEngine, store_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        found = await conn.execute(
            select(messages).where(messages.c.store_id == store_id).order_by(messages.c.id)
        )
        return [
            {k: v for k, v in row._mapping.items() if k not in ("id", "store_id", "created_at")}
            for row in found
        ]


@pytest.mark.parametrize("kinds", ["both", "planned", "skipped"])
async def test_one_statement_writes_the_rows_two_wrote(
    engine: AsyncEngine, store_id: str, kinds: str
) -> None:
    wanted = {"both": (PlannedMessage, Skipped), "planned": (PlannedMessage,), "skipped": (Skipped,)}[kinds]
    former_store, new_store = f"{store_id}-a", f"{store_id}-b"
    former_items = [i for i in _batch(former_store, "t") if isinstance(i, wanted)]
    new_items = [i for i in _batch(new_store, "t") if isinstance(i, wanted)]
    for _ in range(2):  # and again, as a redelivered batch: nothing new
        async with engine.begin() as conn:
            former = await _former(conn, former_items)
        async with engine.begin() as conn:
            new = await repository.record_planned(conn, new_items, NOW)
        assert new == former
    assert former == []
    assert await _rows(engine, new_store) == await _rows(engine, former_store)
    assert len(await _rows(engine, new_store)) == len({(i.customer_id, i.flow) for i in new_items})


async def test_the_ids_keep_the_order_of_two_statements(engine: AsyncEngine, store_id: str) -> None:
    async with engine.begin() as conn:
        await repository.record_planned(conn, _batch(store_id, "t"), NOW)
    async with engine.connect() as conn:
        found = await conn.execute(
            select(messages.c.customer_id, messages.c.status)
            .where(messages.c.store_id == store_id)
            .order_by(messages.c.id)
        )
        assert [(r.customer_id, r.status) for r in found] == [
            ("c1", "pending"), ("c3", "pending"), ("c4", "pending"),
            ("c0", "skipped"), ("c2", "skipped"), ("c5", "skipped"),
        ]  # fmt: skip
